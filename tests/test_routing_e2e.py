"""Routing end to end: a real whisperx worker and a real belle2 worker, each in its own environment,
on one spool. German stays on whisperx; Mandarin without a hint is detected and handed to belle2;
a Mandarin hint goes to belle2 at submit; without a live belle2 worker, whisperx keeps Mandarin.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import REPO
from .support.e2ekit import WHISPERX_WORKER, belle2_checkpoint, cli, job, submit, worker_env

pytestmark = pytest.mark.slow

BELLE2_PYTHON = REPO / ".venv-belle2" / "bin" / "python"


@pytest.fixture(scope="module")
def env(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return worker_env(model_cache, tmp_path_factory.mktemp("home"),
                      BELLE2_MODEL_NAME=str(belle2_checkpoint(model_cache)))


def status(spool: Path, job_id: str) -> dict:
    return job(spool, job_id)["status"]


def whisperx_drain(spool: Path, env: dict[str, str]) -> None:
    done = cli(spool, *WHISPERX_WORKER, "--drain", env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def test_both_workers_alive_route_each_job_to_its_engine(corpus, env, tmp_path):
    assert BELLE2_PYTHON.exists(), "scripts/bootstrap creates .venv-belle2, the belle2 worker's environment"
    spool = tmp_path / "spool"
    german = submit(spool, corpus / "german.wav", env=env)
    mandarin = submit(spool, corpus / "zh.wav", env=env)
    hinted = submit(spool, corpus / "zh.wav", "-l", "zh-CN", env=env)
    belle2 = subprocess.Popen([str(BELLE2_PYTHON), "-m", "klipnote", "--spool", str(spool), "worker", "--model",
                               "belle2", "--device", "cpu"],  # serves until SIGTERM below
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert " ready: " in belle2.stdout.readline()
        whisperx_drain(spool, env)
        deadline = time.monotonic() + 300
        while status(spool, mandarin)["state"] != "done" or status(spool, hinted)["state"] != "done":
            assert time.monotonic() < deadline and belle2.poll() is None, belle2.stderr.read()[-3000:]
            time.sleep(0.2)
    finally:
        belle2.terminate()
        assert belle2.wait(timeout=60) == 0

    stays = status(spool, german)
    assert (stays["state"], stays["engine"], stays["routing"]["decided"]) == ("done", "whisperx", "whisperx")
    assert stays["routing"]["detected_language"] == "de" and "not Mandarin" in stays["routing"]["reason"]

    handed = status(spool, mandarin)
    assert (handed["engine"], handed["lane"], handed["attempt"]) == ("belle2", "belle2", 1)
    assert handed["routing"]["detected_language"] == "zh" and handed["routing"]["reason"].endswith(
        "handed to belle2")

    at_submit = status(spool, hinted)
    assert (at_submit["engine"], at_submit["routing"]["decided"]) == ("belle2", "belle2")
    assert at_submit["routing"]["reason"] == "language hint 'zh-cn' is Mandarin"


def test_without_a_live_belle2_worker_whisperx_keeps_mandarin(corpus, env, tmp_path):
    spool = tmp_path / "spool"
    mandarin = submit(spool, corpus / "zh.wav", env=env)
    whisperx_drain(spool, env)
    kept = status(spool, mandarin)
    assert (kept["state"], kept["engine"], kept["lane"]) == ("done", "whisperx", "auto")
    assert "no live belle2 worker" in kept["routing"]["reason"]
    result = json.loads((spool / "jobs" / mandarin / "transcript.json").read_text())
    assert result["language"] == "zh" and result["language_probability"] > 0.9
