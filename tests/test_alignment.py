"""wav2vec2 word alignment end to end: the ``align_model`` setting, a real whisperx worker, the JSON.

No model hub is reachable here, so the alignment model is a local stand-in
(``tests/standins/wav2vec2.py``): a tiny, seeded, randomly initialised ``Wav2Vec2ForCTC`` with an
English character vocabulary and its ``Wav2Vec2Processor``, built at test time into a folder that
``KLIPNOTE_ALIGN_MODEL`` names. Everything else is the real path: a worker process with Whisper
base (``base-offline``) transcribes jfk.flac, ``whisperx.load_align_model(language, device,
model_name=<folder>)`` loads the stand-in through transformers, ``whisperx.align`` times the words,
and klipnote writes ``metadata.word_timestamps`` and ``metadata.word_timestamps_note``.

``whisperx.align`` also needs NLTK's ``punkt_tab`` sentence splitter data, which it downloads when
it is missing; the download cannot succeed without network access, and no PyPI package installs it
into NLTK's data path. So:

- With the stand-in and the machine's own NLTK data, the expected outcome depends on whether
  ``punkt_tab`` is there, checked with ``nltk.data.find`` in the worker's environment before the run
  (and after it, in case whisperx managed to download it during the run): if it is, words are timed
  by wav2vec2 alignment; if not, the job still succeeds, its words are timed by Whisper's
  cross-attention heads, and the note says that ``whisperx.align`` failed (the model itself loaded)
  for want of ``punkt_tab``.
- With the stand-in and an untrained ``punkt_tab`` model written at test time (``NLTK_DATA``),
  ``whisperx.align`` runs fully offline on every machine: ``word_timestamps`` is
  ``wav2vec2-alignment``, there is no note, every segment has its words, each timed with
  ``start <= end`` inside its segment, in order.
- ``align_model = off``: cross-attention times, and the note says alignment is off.
- ``align_model`` a folder that does not exist: the job is still done with cross-attention times,
  and the note says that the model could not be loaded, naming it.

What this cannot verify: how good the word times of a real alignment model are (the stand-in's
emissions are noise, so its times are valid CTC paths but not where the words are spoken), loading
a real model's weights from a hub or torchaudio's pipeline branch (``align_model = auto``), NLTK's
trained English Punkt parameters, or alignment on a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from .standins.wav2vec2 import build, write_punkt_tab
from .support.e2ekit import WHISPERX_WORKER, cli, worker_env
from .support.textmetrics import wer

pytestmark = pytest.mark.slow

JFK = "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
WORKER = (*WHISPERX_WORKER, "--drain")
NOTE = "no wav2vec2 alignment: "  # how klipnote's note starts when words were not timed by alignment
PUNKT_PROBE = "import nltk.data; nltk.data.find('tokenizers/punkt_tab/english/')"


def punkt_tab_available(env: dict[str, str]) -> bool:
    """Whether NLTK finds English ``punkt_tab`` data in a process with the worker's environment."""
    probe = subprocess.run([sys.executable, "-c", PUNKT_PROBE], capture_output=True, text=True, env=env,
                           timeout=120, check=False)
    return probe.returncode == 0


def transcribe_jfk(corpus: Path, spool: Path, env: dict[str, str]) -> dict:
    """Submit jfk.flac, run one draining worker, and return the worker, the job's status and its JSON."""
    submitted = cli(spool, "submit", "--json", str(corpus / "jfk.flac"), env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)[0]["id"]
    worker = cli(spool, *WORKER, env=env)
    assert worker.returncode == 0, worker.stderr[-3000:]
    folder = spool / "jobs" / job_id
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "done", (status, worker.stderr[-3000:])
    return {"worker": worker, "status": status, "result": json.loads((folder / "transcript.json").read_text())}


@pytest.fixture(scope="module")
def env(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return worker_env(model_cache, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("wav2vec2") / "model", seed=0)


@pytest.fixture(scope="module")
def machine_nltk(corpus: Path, env: dict[str, str], stand_in: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The stand-in model with whatever NLTK data this machine has."""
    env = {**env, "KLIPNOTE_ALIGN_MODEL": str(stand_in)}
    before = punkt_tab_available(env)
    run = transcribe_jfk(corpus, tmp_path_factory.mktemp("machine-nltk") / "spool", env)
    return {**run, "punkt_tab": before or punkt_tab_available(env)}


@pytest.fixture(scope="module")
def offline_punkt(corpus: Path, env: dict[str, str], stand_in: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The stand-in model with an untrained punkt_tab written at test time: whisperx.align can run."""
    nltk_data = write_punkt_tab(tmp_path_factory.mktemp("nltk-data"))
    env = {**env, "KLIPNOTE_ALIGN_MODEL": str(stand_in), "NLTK_DATA": str(nltk_data)}
    assert punkt_tab_available(env)
    return transcribe_jfk(corpus, tmp_path_factory.mktemp("offline-punkt") / "spool", env)


def assert_aligned(result: dict) -> None:
    """What klipnote promises of a result whose words wav2vec2 alignment timed."""
    assert result["metadata"]["word_timestamps"] == "wav2vec2-alignment", result["metadata"]
    assert result["metadata"]["word_timestamps_note"] is None
    assert result["language"] == "en"
    assert wer(JFK, result["text"]) <= 0.10, result["text"]  # alignment keeps Whisper's text
    segments = result["segments"]
    assert segments
    for segment in segments:
        words = segment["words"]
        assert words, segment
        # whisperx times every space-separated word of the text (unknown characters as wildcards)
        assert " ".join(w["word"] for w in words) == segment["text"], segment
        for word in words:
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"], (word, segment)
            assert word["score"] is not None and 0.0 <= word["score"] <= 1.0, word
        assert all(a["end"] <= b["start"] for a, b in pairwise(words)), words
    assert all(a["end"] <= b["start"] for a, b in pairwise(segments))


def assert_cross_attention(result: dict) -> str:
    """What klipnote promises of a result timed by Whisper's heads instead; returns the note."""
    metadata = result["metadata"]
    assert metadata["word_timestamps"] == "whisper-cross-attention", metadata
    assert wer(JFK, result["text"]) <= 0.10, result["text"]
    assert result["segments"]
    for segment in result["segments"]:
        assert segment["words"], segment  # every result has timed words
        for word in segment["words"]:
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"], (word, segment)
    note = metadata["word_timestamps_note"]
    assert isinstance(note, str) and note.startswith(NOTE), note
    return note


# ---------------------------------------------------------------------- the stand-in model


def test_the_stand_in_is_a_wav2vec2_ctc_model_whisperx_can_load(stand_in):
    import whisperx

    model, metadata = whisperx.load_align_model("en", "cpu", model_name=str(stand_in))
    assert metadata["type"] == "huggingface" and metadata["language"] == "en"
    assert metadata["dictionary"]["<pad>"] == 0 and metadata["dictionary"]["|"] == 4
    assert set("abcdefghijklmnopqrstuvwxyz'") <= set(metadata["dictionary"])
    assert model.config.vocab_size == len(metadata["dictionary"])
    assert (stand_in / "model.safetensors").is_file()


def test_the_stand_in_is_the_same_for_the_same_seed(stand_in, tmp_path):
    again = build(tmp_path / "again", seed=0)
    assert (again / "model.safetensors").read_bytes() == (stand_in / "model.safetensors").read_bytes()


# ---------------------------------------------------------------------- through a worker


def test_the_stand_in_with_this_machines_nltk_data(machine_nltk):
    """Alignment if punkt_tab is there; else the job is done all the same, and the note says why."""
    result = machine_nltk["result"]
    if machine_nltk["punkt_tab"]:
        assert_aligned(result)
        return
    note = assert_cross_attention(result)
    # the model loaded (a load failure has no "whisperx.align failed"); aligning needed punkt_tab
    assert note.startswith(f"{NOTE}whisperx.align failed: LookupError"), note
    assert "punkt_tab" in note, note


def test_the_stand_in_aligns_words_offline_with_punkt_tab_written_here(offline_punkt):
    assert_aligned(offline_punkt["result"])


def test_alignment_off_times_words_with_whispers_heads(corpus, env, tmp_path):
    run = transcribe_jfk(corpus, tmp_path / "spool", {**env, "KLIPNOTE_ALIGN_MODEL": "off"})
    assert assert_cross_attention(run["result"]) == f"{NOTE}alignment is off (align_model)"


def test_a_missing_model_folder_falls_back_to_whispers_heads(corpus, env, tmp_path):
    missing = "/nonexistent/folder"
    run = transcribe_jfk(corpus, tmp_path / "spool", {**env, "KLIPNOTE_ALIGN_MODEL": missing})
    note = assert_cross_attention(run["result"])
    assert "whisperx.align failed" not in note  # it is the loading that failed
    assert missing in note and "could not be found" in note, note
    ready = run["worker"].stdout.splitlines()
    assert len(ready) == 1 and " ready: " in ready[0]  # whisperx's printed error went to stderr
