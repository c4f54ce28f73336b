"""Every benchmark script still runs, in its smallest mode, and prints a table and valid JSON.

These catch rot (an engine API that moved, a CLI flag renamed), not slowness: nothing here
asserts a time. Each script runs as a user runs it, in a subprocess of this environment, offline,
with the session's model cache; belle2-side scripts run in the belle2 environment's test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO

SCRIPTS = REPO / "scripts"
TABLE_RULE = "|---"
#: WhisperS2T's own environment (PyPI's CPU torch beside it), made by hand for benchmarks: see docs/benchmarks.md.
S2T_PYTHON = REPO / ".venv-s2t" / "bin" / "python"

pytestmark = pytest.mark.slow


def run_script(args: list[str], model_cache: Path, tmp_path: Path, corpus: Path) -> str:
    env = {**os.environ, "KLIPNOTE_MODEL_CACHE": str(model_cache), "KLIPNOTE_CORPUS": str(corpus),
           "HF_HUB_OFFLINE": "1", "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=1500,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert TABLE_RULE in done.stdout, done.stdout
    return done.stdout


def results(out: Path, name: str) -> dict[str, Any]:
    data = json.loads((out / f"{name}.json").read_text())
    assert (out / f"{name}.md").read_text().count(TABLE_RULE) >= 1
    return data


def test_cli_latency(model_cache: Path, tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "out"
    run_script([str(SCRIPTS / "bench_cli_latency.py"), "--repeat", "2", "--jobs", "3", "--out", str(out)],
               model_cache, tmp_path, corpus)
    data = results(out, "cli_latency")
    assert data["results"][0]["command"] == "python -c pass"
    assert all(len(r["runs_ms"]) == 2 for r in data["results"])
    assert data["heavy_imports"] == []


def test_spool(model_cache: Path, tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "out"
    stdout = run_script([str(SCRIPTS / "bench_spool.py"), "--sizes", "6,12", "--rounds", "2", "--claims", "2",
                         "--sample", "2", "--tmp", str(tmp_path), "--out", str(out)], model_cache, tmp_path, corpus)
    rows = results(out, "spool")["results"]
    assert [r["size"] for r in rows] == [6, 12]
    assert [r["final_size"] for r in rows] == [12, 18]  # each round: 2 through the library, 1 through the CLI
    assert all(len(r["figures"]["claim_next (ms)"]) == 4 for r in rows)
    assert "12 / 6" in stdout  # the growth table


@pytest.mark.timeout(1800)
def test_throughput(model_cache: Path, tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "out"
    run_script([str(SCRIPTS / "bench_throughput.py"), str(corpus / "jfk.flac"), "--out", str(out)],
               model_cache, tmp_path, corpus)
    data = results(out, "throughput")
    s2t = {"WhisperS2T"} if S2T_PYTHON.is_file() else set()  # its own environment, made by hand (docs/benchmarks.md)
    assert set(data["results"]) == {"klipnote cold", "klipnote cold (align_model auto)",
                                    "klipnote cold (vad_method silero)", "klipnote warm",
                                    "whisperx CLI per file", "whisperx CLI all files", "faster-whisper floor"} | s2t
    for method, runs in data["results"].items():
        assert "country" in runs[0]["texts"][0].lower(), method  # every method really transcribed jfk.flac


@pytest.mark.timeout(900)
def test_rtf_whisperx(model_cache: Path, tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "out"
    run_script([str(SCRIPTS / "bench_rtf.py"), "--only", "whisperx:tiny.en-offline", "--files", "jfk.flac",
                "--whisperx-python", sys.executable, "--out", str(out)], model_cache, tmp_path, corpus)
    (row,) = results(out, "rtf")["results"]
    assert row["engine"] == "whisperx" and row["describe"]["model"] == "tiny.en-offline"
    assert row["cold_s"] > row["first_s"] and "country" in row["text"].lower()


@pytest.mark.timeout(900)
def test_gpu_smoke_whisperx(model_cache: Path, tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "out"
    run_script([str(SCRIPTS / "bench_gpu.py"), "--smoke", "--engines", "whisperx", "--whisperx-python",
                sys.executable, "--cache", str(tmp_path / "models"), "--out", str(out)], model_cache, tmp_path, corpus)
    batches = results(out, "gpu")["results"]["whisperx"]["batches"]
    assert [b["batch"] for b in batches] == [1, 2]
    assert all(b["tokens_decoded"] == 4 for b in batches)  # end-of-text suppressed: a fixed length


def test_bench_runner(model_cache: Path, tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "out"
    stdout = run_script([str(SCRIPTS / "bench"), "--size", "smoke", "--only", "cli_latency", "--out", str(out)],
                        model_cache, tmp_path, corpus)
    assert "## cli_latency" in stdout
    index = json.loads((out / "index.json").read_text())
    assert index["benchmarks"]["cli_latency"]["returncode"] == 0
    assert (out / "cli_latency.json").is_file()


@pytest.mark.belle2
@pytest.mark.timeout(1800)
def test_belle2_side(model_cache: Path, tmp_path: Path, corpus: Path) -> None:
    """The belle2 environment's scripts: the engine in bench_rtf, the random large-v3 path in bench_gpu, its VAD's
    two models, and the engine-against-pipeline comparison."""
    out = tmp_path / "out"
    run_script([str(SCRIPTS / "bench_rtf.py"), "--only", "belle2:whisper-base-transformers", "--files", "zh.wav",
                "--belle2-python", sys.executable, "--out", str(out)], model_cache, tmp_path, corpus)
    (row,) = results(out, "rtf")["results"]
    assert row["engine"] == "belle2" and row["language"] == "zh" and row["segments"] >= 1
    run_script([str(SCRIPTS / "bench_gpu.py"), "--smoke", "--engines", "belle2,belle2-engine", "--belle2-python",
                sys.executable, "--cache", str(tmp_path / "models"), "--out", str(out)], model_cache, tmp_path, corpus)
    gpu = results(out, "gpu")["results"]
    assert all(b["tokens_decoded"] == 4 for b in gpu["belle2"]["batches"])
    engine = gpu["belle2-engine"]["engine_batches"]
    assert [b["batch"] for b in engine] == [1, 2]
    assert all(b["decoder_calls"] > 1 and 0 < b["generate_s"] < b["wall_s"] for b in engine)  # decoded, then aligned
    run_script([str(SCRIPTS / "bench_vad.py"), "--repeat", "1", "--out", str(out), str(corpus / "zh.wav")],
               model_cache, tmp_path, corpus)
    vad = results(out, "vad")["results"]
    assert {r["model"] for r in vad} == {"onnx", "torchscript"}
    assert all(r["regions"] >= 1 and r["same_regions"] for r in vad)
    stdout = run_script([str(SCRIPTS / "bench_belle2.py"), "--repeat", "1", "--pipeline-num-beams", "1",
                         "--cache", str(model_cache), "--json", str(out / "belle2.json"), str(corpus / "zh.wav")],
                        model_cache, tmp_path, corpus)
    assert "engine" in stdout and "pipeline" in stdout
    methods = {r["method"] for r in json.loads((out / "belle2.json").read_text())["results"]}
    assert methods == {"engine", "engine float32", "pipeline"}
