"""Speaker labels end to end: ``submit --diarize``, a real whisperx worker, labelled results.

No model hub is reachable here, so the pyannote pipeline is a local stand-in
(``tests/standins/diarization.py``): a pipeline folder whose ``config.yaml`` names a small pyannote
``Pipeline`` subclass that gives the first half of a file to SPEAKER_00 and the second half to
SPEAKER_01. Everything else is the real path: klipnote's ``diarization_model`` setting,
``whisperx.diarize.DiarizationPipeline`` -> ``pyannote.audio.Pipeline.from_pretrained`` on the local
folder, ``whisperx.assign_word_speakers``, and klipnote's JSON, SRT and VTT writers. What a real
diarization model would say about these recordings is not tested.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .standins.halves import PIPELINE_FOLDER, SPEAKERS, expected_speaker
from .support.e2ekit import WHISPERX_WORKER, cli, job, submit, worker_env

pytestmark = pytest.mark.slow

WORKER = (*WHISPERX_WORKER, "--drain")


def cue_texts(fmt: str, text: str) -> list[str]:
    """The text of each SRT or VTT cue, in order (klipnote writes each cue's text on one line)."""
    if fmt == "vtt":
        assert text.startswith("WEBVTT\n\n")
        text = text[len("WEBVTT\n\n"):]
    skip = 2 if fmt == "srt" else 1  # SRT: number and timing lines; VTT: the timing line
    return ["\n".join(block.split("\n")[skip:]) for block in text.strip("\n").split("\n\n")]


@pytest.fixture(scope="module")
def env(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # The worker imports the stand-in by its dotted name (tests.standins.diarization).
    return worker_env(model_cache, tmp_path_factory.mktemp("home"), KLIPNOTE_DIARIZATION_MODEL=str(PIPELINE_FOLDER))


@pytest.fixture(scope="module")
def run(corpus: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two diarized jobs and one plain job, all done by one draining worker."""
    spool = tmp_path_factory.mktemp("diarize") / "spool"
    mix = corpus / "multitalker-2spk-mix.wav"  # 14 s, two speakers: whisperx makes one segment of it
    ids = {
        "mix": submit(spool, mix, "--diarize", "-f", "vtt", env=env),
        # 84 s: several ~30 s segments, so the labels must change from one segment to the next
        "long": submit(spool, corpus / "whole-earth.wav", "--diarize", "-f", "vtt", env=env),
        "plain": submit(spool, mix, "-f", "vtt", env=env),
    }
    worker = cli(spool, *WORKER, env=env)
    assert worker.returncode == 0, worker.stderr[-3000:]
    return {"worker": worker, "jobs": {name: job(spool, job_id) for name, job_id in ids.items()}}


def done(run: dict, name: str) -> dict:
    got = run["jobs"][name]
    assert got["status"]["state"] == "done", got["status"]
    return got


# ---------------------------------------------------------------------- labels in the JSON result


@pytest.mark.parametrize("name", ["mix", "long"])
def test_every_segment_has_the_speaker_the_pipeline_gave_its_time(run, name):
    result = done(run, name)["result"]
    duration = result["metadata"]["input"]["duration"]
    assert result["segments"]
    for segment in result["segments"]:
        assert segment["speaker"] == expected_speaker(segment["start"], segment["end"], duration), segment
        for word in segment["words"]:
            assert word["speaker"] == segment["speaker"], (word, segment)
            assert word["speaker"] == expected_speaker(word["start"], word["end"], duration), word


def test_a_cut_holding_both_speakers_is_split_where_the_speaker_changes(run):
    segments = done(run, "mix")["result"]["segments"]
    assert [s["speaker"] for s in segments] == list(SPEAKERS)  # one 14 s cut, two turns
    assert segments[0]["end"] <= segments[1]["start"]


def test_labels_change_between_segments_as_the_turns_do(run):
    segments = done(run, "long")["result"]["segments"]
    assert len(segments) >= 3
    assert (segments[0]["speaker"], segments[-1]["speaker"]) == SPEAKERS


def test_the_pipeline_is_loaded_from_the_local_folder_once_per_worker(run):
    stderr = run["worker"].stderr
    assert stderr.count(f"Loading diarization model: {PIPELINE_FOLDER}") == 1, stderr[-3000:]
    ready = run["worker"].stdout.splitlines()
    assert len(ready) == 1 and " ready: " in ready[0]  # pyannote printed nothing on the worker's stdout


# ---------------------------------------------------------------------- labels in subtitles


@pytest.mark.parametrize("name", ["mix", "long"])
@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitle_cues_start_with_their_speaker(run, name, fmt):
    got = done(run, name)
    cues = got["result"]["cues"]
    assert cues and all(c["speaker"] in SPEAKERS for c in cues)
    expected = [f"[{c['speaker']}] {c['text']}" for c in cues]
    if fmt == "vtt":
        expected = [text.replace("-->", "->") for text in expected]
    assert cue_texts(fmt, got["outputs"][fmt]) == expected


# ---------------------------------------------------------------------- without --diarize


def test_a_job_without_diarize_has_no_speakers_and_the_same_words(run):
    plain = done(run, "plain")
    result = plain["result"]
    assert result["segments"]
    assert all("speaker" not in s for s in result["segments"])
    assert all("speaker" not in w for s in result["segments"] for w in s["words"])
    assert all("speaker" not in c for c in result["cues"])
    for fmt in ("srt", "vtt"):
        assert not any(t.startswith("[SPEAKER") for t in cue_texts(fmt, plain["outputs"][fmt]))
    # diarizing the same audio only adds labels and splits at turns: the words are the same
    diarized = done(run, "mix")["result"]["segments"]
    strip = lambda words: [{k: v for k, v in w.items() if k != "speaker"} for w in words]  # noqa: E731
    assert strip(w for s in diarized for w in s["words"]) == [w for s in result["segments"] for w in s["words"]]


# ---------------------------------------------------------------------- no pipeline to load


def test_a_missing_pipeline_folder_fails_the_job_and_the_worker_goes_on(corpus, env, tmp_path):
    spool = tmp_path / "spool"
    missing = tmp_path / "no-such-pipeline"
    env = {**env, "KLIPNOTE_DIARIZATION_MODEL": str(missing)}
    diarize = submit(spool, corpus / "jfk.flac", "--diarize", env=env)
    plain = submit(spool, corpus / "jfk.flac", env=env)
    worker = cli(spool, *WORKER, env=env)
    assert worker.returncode == 0, worker.stderr[-3000:]

    failed = job(spool, diarize)["status"]
    assert (failed["state"], failed["attempt"]) == ("failed", 1), failed
    assert f"diarization_model {missing} is not a folder" in failed["error"]
    following = job(spool, plain)["status"]  # claimed into the same shared batch, and committed alone
    assert following["state"] == "done", following
