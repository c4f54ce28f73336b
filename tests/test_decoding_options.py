"""Decoding options at submit: ``--prompt``, ``--prompt-file``, ``--hotwords``, ``--task`` and speaker counts.

The real CLI in a subprocess against a real spool: what a job asks is kept in its manifest, a
translation never lands in the belle2 lane, and every bad value is one line on stderr with nothing
queued. What the engines do with these options is tested on real speech in
tests/test_decoding_engines.py (whisperx, diarization) and tests/test_belle2.py (belle2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klipnote.decoding import Decoding, Speakers
from klipnote.engines import prompts
from klipnote.job import Task

from .support.privileges import unprivileged


@pytest.fixture
def wav(media: dict[str, Path]) -> str:
    return str(media["wav"])


def manifest(spool_dir: Path, proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)
    return json.loads((spool_dir / "jobs" / entry["id"] / "manifest.json").read_text())


def refused(proc: subprocess.CompletedProcess, spool_dir: Path, says: str) -> None:
    """One ``klipnote: ...`` line naming the problem, exit 2, and no job in the spool."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("klipnote: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert says in proc.stderr, proc.stderr
    assert not (spool_dir / "jobs").exists() or not os.listdir(spool_dir / "jobs")


# ---------------------------------------------------------------------- kept with the job


def test_prompt_hotwords_and_translation_are_kept_in_the_manifest(klipnote, spool_dir, wav):
    job = manifest(spool_dir, klipnote("submit", "--json", "--model", "whisperx", "--task", "translate",
                                       "--prompt", "  Stewart Brand, Menlo Park. ", "--hotwords", "Polaroid, Google",
                                       wav))
    assert job["options"] == {"task": "translate", "prompt": "Stewart Brand, Menlo Park.",
                              "hotwords": "Polaroid, Google"}


def test_a_prompt_file_is_read_at_submit_and_recorded_with_its_path(klipnote, spool_dir, wav, tmp_path):
    glossary = tmp_path / "inbox" / "glossary.txt"
    glossary.parent.mkdir()
    glossary.write_text("Stewart Brand\nWhole Earth Catalog\n", encoding="utf-8")
    job = manifest(spool_dir, klipnote("submit", "--json", "--prompt-file", "glossary.txt", wav,
                                       cwd=glossary.parent))
    glossary.write_text("changed after submit\n", encoding="utf-8")
    assert job["options"] == {"prompt": "Stewart Brand\nWhole Earth Catalog", "prompt_file": str(glossary)}


@pytest.mark.parametrize(("args", "hints"), [
    (["--speakers", "2"], {"speakers": 2}),
    (["--min-speakers", "2"], {"min_speakers": 2}),
    (["--min-speakers", "1", "--max-speakers", "3"], {"min_speakers": 1, "max_speakers": 3}),
])
def test_speaker_counts_imply_diarize(klipnote, spool_dir, wav, args, hints):
    job = manifest(spool_dir, klipnote("submit", "--json", *args, wav))
    assert job["options"] == {**hints, "diarize": True}


def test_a_job_that_asks_nothing_has_no_decoding_options(klipnote, spool_dir, wav):
    assert manifest(spool_dir, klipnote("submit", "--json", "--task", "transcribe", wav))["options"] == {}


@pytest.mark.parametrize("language", [None, "zh", "de"])
def test_auto_keeps_a_translation_on_whisperx_whatever_the_language(klipnote, spool_dir, wav, language):
    hint = ["--language", language] if language else []
    job = manifest(spool_dir, klipnote("submit", "--json", "--task", "translate", *hint, wav))
    assert (job["model"], job["lane"]) == ("auto", "whisperx")
    assert job["routing_reason"] == "translation into English: only whisperx translates"


# ---------------------------------------------------------------------- refused at submit


def test_an_empty_prompt_file_is_refused(klipnote, spool_dir, wav, tmp_path):
    empty = tmp_path / "glossary.txt"
    empty.write_text(" \n\n", encoding="utf-8")
    refused(klipnote("submit", "--prompt-file", str(empty), wav), spool_dir, f"--prompt-file {empty} is empty")


def test_an_unreadable_prompt_file_is_refused(spool_dir, wav, tmp_path):
    locked = tmp_path / "glossary.txt"
    locked.write_text("Stewart Brand", encoding="utf-8")
    locked.chmod(0)
    argv = [*unprivileged(), sys.executable, "-m", "klipnote", "--spool", str(spool_dir), "submit", "--prompt-file",
            str(locked), wav]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    refused(proc, spool_dir, f"--prompt-file {locked}: cannot read it: Permission denied")


def _missing(path: Path) -> None:
    pass


def _not_utf8(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\xfa")


@pytest.mark.parametrize(("make", "says"), [
    (_missing, "cannot read it: No such file or directory"),
    (Path.mkdir, "cannot read it: Is a directory"),
    (_not_utf8, "not UTF-8 text; save it as UTF-8"),
])
def test_a_prompt_file_that_is_not_a_text_file_is_refused(klipnote, spool_dir, wav, tmp_path, make, says):
    path = tmp_path / "glossary.txt"
    make(path)
    refused(klipnote("submit", "--prompt-file", str(path), wav), spool_dir, f"--prompt-file {path}: {says}")


@pytest.mark.parametrize(("args", "says"), [
    (["--speakers", "0"], "--speakers 0: give a whole number of speakers, 1 or more"),
    (["--max-speakers", "-1"], "--max-speakers -1: give a whole number of speakers, 1 or more"),
    (["--min-speakers", "3", "--max-speakers", "2"], "--min-speakers 3 is more than --max-speakers 2"),
    (["--speakers", "2", "--max-speakers", "3"], "give it or --min-speakers/--max-speakers, not both"),
    (["--task", "translate", "--model", "belle2"], "--task translate needs the whisperx engine"),
    (["--prompt", " "], "--prompt is empty"),
    (["--hotwords", ""], "--hotwords is empty"),
    (["--prompt", "x", "--prompt-file", "y"], "give --prompt or --prompt-file, not both"),
])
def test_bad_decoding_options_are_one_line_and_queue_nothing(klipnote, spool_dir, wav, args, says):
    refused(klipnote("submit", *args, wav), spool_dir, says)


def test_belle2_as_the_configured_default_model_refuses_a_translation_too(klipnote, spool_dir, wav):
    refused(klipnote("submit", "--task", "translate", wav, env={"DEFAULT_TRANSCRIPTION_MODEL": "belle2"}),
            spool_dir, "--task translate needs the whisperx engine")


# ---------------------------------------------------------------------- defaults from the config file


@pytest.fixture
def config(tmp_path: Path):
    """Write a config file; returns the environment that makes klipnote read it."""

    def write(text: str) -> dict[str, str]:
        path = tmp_path / "config.toml"
        path.write_text(text, encoding="utf-8")
        return {"KLIPNOTE_CONFIG": str(path)}

    return write


def test_a_cron_folders_glossary_comes_from_the_config_file(klipnote, spool_dir, wav, tmp_path, config):
    glossary = tmp_path / "glossary.txt"
    glossary.write_text("Stewart Brand\n", encoding="utf-8")
    env = config(f'prompt_file = "{glossary}"\nhotwords = "Polaroid"\ntask = "translate"\nspeakers = 2\n')
    job = manifest(spool_dir, klipnote("submit", "--json", wav, env=env))
    assert job["options"] == {"task": "translate", "prompt": "Stewart Brand", "prompt_file": str(glossary),
                              "hotwords": "Polaroid", "speakers": 2, "diarize": True}
    assert job["lane"] == "whisperx"


def test_flags_replace_the_config_files_defaults(klipnote, spool_dir, wav, tmp_path, config):
    env = config(f'prompt_file = "{tmp_path / "missing.txt"}"\nhotwords = "Polaroid"\ntask = "translate"\n'
                 'speakers = 2\n')
    job = manifest(spool_dir, klipnote("submit", "--json", "--prompt", "Menlo Park", "--hotwords", "Google",
                                       "--task", "transcribe", "--min-speakers", "3", wav, env=env))
    assert job["options"] == {"prompt": "Menlo Park", "hotwords": "Google", "min_speakers": 3, "diarize": True}


def test_a_config_file_with_both_prompt_and_prompt_file_is_refused(klipnote, spool_dir, wav, config):
    env = config('prompt = "Menlo Park"\nprompt_file = "/srv/inbox/glossary.txt"\n')
    refused(klipnote("submit", wav, env=env), spool_dir, "the settings prompt and prompt_file are both set")


def test_a_missing_prompt_file_from_the_config_file_names_the_setting_not_a_flag(klipnote, spool_dir, wav,
                                                                                  tmp_path, config):
    env = config(f'prompt_file = "{tmp_path / "gone.txt"}"\n')
    done = klipnote("submit", wav, env=env)
    refused(done, spool_dir, "the prompt_file setting (file ")
    assert "gone.txt: cannot read it" in done.stderr and "--prompt-file" not in done.stderr


@pytest.mark.parametrize(("line", "says"), [
    ("speakers = 0", "invalid speakers = 0"), ('task = "summarise"', "allowed: transcribe, translate"),
])
def test_bad_decoding_defaults_in_the_config_file_are_one_line(klipnote, spool_dir, wav, config, line, says):
    refused(klipnote("submit", wav, env=config(line + "\n")), spool_dir, says)


# ---------------------------------------------------------------------- read back by the worker

counts = st.one_of(st.none(), st.integers(1, 50))


@given(task=st.sampled_from(Task), prompt=st.one_of(st.none(), st.text(min_size=1).filter(str.strip)),
       hotwords=st.one_of(st.none(), st.just("Polaroid, Google")), count=counts, least=counts, most=counts)
def test_what_submit_keeps_reads_back_the_same(task, prompt, hotwords, count, least, most):
    try:
        speakers = Speakers(count, least, most)
    except ValueError:
        return
    decoding = Decoding(task, prompt, None, hotwords, speakers)
    assert Decoding.from_options(json.loads(json.dumps(decoding.options()))) == decoding


@pytest.mark.parametrize(("options", "says"), [
    ({"task": "summarise"}, "task 'summarise' is not one of transcribe, translate"),
    ({"speakers": "2"}, "--speakers '2': give a whole number"),
    ({"min_speakers": 4, "max_speakers": 2}, "--min-speakers 4 is more than --max-speakers 2"),
    ({"prompt": ""}, "--prompt is empty"),
])
def test_a_manifest_edited_into_bad_options_is_refused_when_read(options, says):
    with pytest.raises(ValueError, match=says):
        Decoding.from_options(options)


def test_the_result_describes_the_prompt_by_its_digest():
    described = Decoding(Task.TRANSLATE, "Stewart Brand", "/srv/inbox/glossary.txt", "Polaroid",
                         Speakers(least=2)).describe()
    assert described == {
        "task": "translate",
        "prompt": {"sha256": "3370102a83e3593c0fe700850557984f939e6d3aac18bc0a09672e38ab0a4c28", "characters": 13,
                   "file": "/srv/inbox/glossary.txt"},
        "hotwords": "Polaroid",
        "speakers": {"min_speakers": 2},
    }


# ---------------------------------------------------------------------- the prompt the model reads

START_OF_PREV = 50361
MAX_LENGTH = 448  # Whisper's decoder positions: 223 tokens of prompt at most


def by_word(text: str) -> list[int]:
    """A tokenizer of one token per word (its length), enough to count what is kept and in which order."""
    return [len(word) for word in text.split()]


def test_no_prompt_and_no_hotwords_put_nothing_before_the_speech():
    assert prompts.build(Decoding(Task.TRANSLATE), by_word, START_OF_PREV, MAX_LENGTH) == prompts.Prompt()


def test_hotwords_come_before_the_prompt_after_start_of_previous_text():
    built = prompts.build(Decoding(prompt="ccc dddd", hotwords="a, bb"), by_word, START_OF_PREV, MAX_LENGTH)
    assert built == prompts.Prompt((START_OF_PREV, 2, 2, 3, 4))


@given(hot=st.integers(0, 400), text=st.integers(0, 400))
def test_a_long_prompt_keeps_the_hotwords_then_the_end_of_the_prompt(hot, text):
    decoding = Decoding(prompt=" ".join(["x" * 3] * text) + " end" if text else None,
                        hotwords=" ".join(["y"] * hot) if hot else None)
    built = prompts.build(decoding, by_word, START_OF_PREV, MAX_LENGTH)
    asked = hot + (text + 1 if text else 0)
    if not asked:
        assert built == prompts.Prompt()
        return
    assert built.tokens[0] == START_OF_PREV and len(built.tokens) - 1 == min(asked, 223)
    assert built.tokens[1:1 + min(hot, 223)] == (1,) * min(hot, 223)
    if text and hot < 222:
        assert built.tokens[-1] == 3  # "end", the prompt's last word, nearest the speech
    assert (built.note is None) == (asked <= 223)
    if built.note:
        assert built.note.startswith(f"{'hotwords and prompt' if hot and text else 'hotwords' if hot else 'prompt'} "
                                     f"cut to 223 of {asked} tokens")
