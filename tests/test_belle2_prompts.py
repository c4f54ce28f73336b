"""The belle2 engine's prompts, in process, on real Mandarin speech (.venv-belle2).

transformers' Whisper ``generate`` takes one ``prompt_ids`` for a whole batch, so the engine puts jobs
with different prompts in different batches (``Job.group``) and times characters with the prompt in
front of each pass, as generate() decoded after it. Without a prompt, Whisper base hears zh.wav's
开放时间早上9点至下午5点 as 太放時間早上9點,墜下5點 (Traditional characters, two words wrong); a
glossary naming 开放 and 下午 spells both right, and the classic "以下是普通话的句子。" prompt makes it
write Simplified characters.

Model: Whisper base as a transformers checkpoint, built offline (see tests/test_belle2.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from klipnote.audio import decode
from klipnote.decoding import Decoding
from klipnote.engines import JobOptions, batching
from klipnote.job import Task

from .support.e2ekit import belle2_checkpoint
from .support.textmetrics import paired_starts

pytestmark = [pytest.mark.slow, pytest.mark.belle2]

GLOSSARY = "开放，下午"
SIMPLIFIED = "以下是普通话的句子。"
TRADITIONAL_ONLY = set("開時間點")
#: Where zh.wav pauses between 早上9点 and 至下午5点 (seconds).
PAUSE_AT = 3.28
#: How far a character's start may move when only the prompt before the speech changed (seconds).
SAME_TIME = 0.1
#: Two readings' characters of the same text this close (seconds) are the same character said.
SAME_CHARACTER = 0.5


def no_progress(stage: Any, percent: float) -> None:
    """batching.run reports progress; these tests do not follow it."""


@pytest.fixture(scope="module")
def engine(model_cache: Path) -> Any:
    from klipnote.config import load_settings
    from klipnote.engines import create
    from klipnote.job import Model

    loaded = create(Model.BELLE2, load_settings({"belle2_model": str(belle2_checkpoint(model_cache))}),
                    device="cpu", batch_size=8)
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def run(engine: Any, corpus: Path) -> dict:
    """zh.wav four times in one run (no prompt twice, the glossary, the Simplified prompt), counting the
    generate() calls and the windows each was given."""
    speech = decode(corpus / "zh.wav")
    asked = {"plain": Decoding(), "glossary": Decoding(prompt=GLOSSARY), "plain-again": Decoding(),
             "simplified": Decoding(hotwords=SIMPLIFIED)}
    requests = {name: batching.Request(speech, JobOptions(decoding=decoding), no_progress)
                for name, decoding in asked.items()}
    calls: list[tuple[int, Any]] = []
    real_generate = engine._model.generate

    def counting(inputs: Any, **kwargs: Any) -> Any:  # a spy: the real generate() runs
        prompt = kwargs.get("prompt_ids")
        calls.append((inputs.shape[0], None if prompt is None else prompt.tolist()))
        return real_generate(inputs, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine._model, "generate", counting)
        finished = {id(f.request): f for f in batching.run(engine, list(requests.values()))}
    return {"calls": calls, "transcripts": {name: finished[id(r)].transcript for name, r in requests.items()}}


def test_a_glossary_spells_the_words_the_model_gets_wrong_without_it(run):
    plain, glossary = run["transcripts"]["plain"].text, run["transcripts"]["glossary"].text
    assert "开放" not in plain and "下午" not in plain, plain  # the model's own mistakes, which the prompt fixes
    assert "开放" in glossary and "下午" in glossary, glossary


def test_a_prompt_in_simplified_characters_makes_the_model_write_them(run):
    assert TRADITIONAL_ONLY & set(run["transcripts"]["plain"].text)
    assert not TRADITIONAL_ONLY & set(run["transcripts"]["simplified"].text)


def test_jobs_with_other_prompts_wait_for_their_own_batch(engine, run):
    tokenizer = engine._processor.tokenizer
    glossary = [tokenizer.convert_tokens_to_ids("<|startofprev|>"),
                *tokenizer.encode(" " + GLOSSARY, add_special_tokens=False)]
    assert run["calls"][:2] == [(2, None), (1, glossary)]  # both unprompted jobs in the first batch
    assert len(run["calls"]) == 3 and run["calls"][2][0] == 1


def test_characters_are_timed_with_the_prompt_in_front(run):
    """Only the text before the speech changed: in 开放时间早上9点, which every run hears alike up to the
    pause, the characters the prompted and the plain run share start where the plain run's do. (The
    alignment heads of base time these the same with or without the prompt in front; the engine puts it
    there because generate() decoded after it.)"""
    plain = [(w.word, w.start) for s in run["transcripts"]["plain"].segments for w in s.words if w.start < PAUSE_AT]
    for name in ("glossary", "simplified"):
        prompted = [(w.word, w.start) for s in run["transcripts"][name].segments for w in s.words
                    if w.start < PAUSE_AT]
        shared = paired_starts(plain, prompted, SAME_CHARACTER)
        assert len(shared) >= 4, (name, prompted)
        assert all(abs(a - b) <= SAME_TIME for a, b in shared), (name, shared)


def test_the_plain_jobs_are_what_they_are_alone(engine, corpus, run):
    alone = batching.transcribe(engine, decode(corpus / "zh.wav"), JobOptions(), no_progress)
    assert run["transcripts"]["plain"].text == run["transcripts"]["plain-again"].text == alone.text


def test_a_translation_fails_its_job_with_one_line(engine, corpus):
    request = batching.Request(decode(corpus / "zh.wav"), JobOptions(decoding=Decoding(Task.TRANSLATE)),
                               no_progress)
    (finished,) = batching.run(engine, [request])
    assert str(finished.error) == ("the belle2 engine only transcribes and this job asks to translate: submit it "
                                   "with --model whisperx")


def test_a_long_prompt_is_cut_and_the_job_says_so(engine, corpus):
    notes: list[str] = []
    request = batching.Request(decode(corpus / "zh.wav"), JobOptions(decoding=Decoding(prompt="开放。" * 300)),
                               no_progress, note=notes.append)
    (finished,) = batching.run(engine, [request])
    assert finished.transcript is not None and finished.transcript.text
    assert len(notes) == 1 and notes[0].startswith("prompt cut to 223 of "), notes
