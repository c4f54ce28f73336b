"""What a job asks of the decoder beyond its audio: a prompt, hotwords, the task, speaker-count hints.

These are the options people bring from the whisperx and openai-whisper command lines. They are
checked at submit (a bad value never queues a job), kept in the manifest's ``options`` under the
keys below, read back and checked again by the worker (a manifest edited by hand fails its job
with one line), and described in the result's metadata, so that a transcript says how it was made.

A prompt file is read at submit, not when the job runs: the job keeps the text it was submitted
with (and the file's path, for the record) even if the glossary beside a cron folder changes later.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from klipnote.errors import UsageError
from klipnote.job import Task

#: Manifest option keys (``Manifest.options``); absent means the default.
PROMPT, PROMPT_FILE, HOTWORDS, TASK = "prompt", "prompt_file", "hotwords", "task"
SPEAKERS, MIN_SPEAKERS, MAX_SPEAKERS = "speakers", "min_speakers", "max_speakers"


@dataclass(frozen=True)
class Speakers:
    """pyannote's speaker-count hints: exactly ``count``, or at least ``least`` and at most ``most``."""

    count: int | None = None
    least: int | None = None
    most: int | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--speakers", self.count), ("--min-speakers", self.least),
                            ("--max-speakers", self.most)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{flag} {value!r}: give a whole number of speakers, 1 or more")
        if self.count is not None and (self.least is not None or self.most is not None):
            raise ValueError("--speakers fixes the number of speakers: give it or --min-speakers/--max-speakers, "
                             "not both")
        if self.least is not None and self.most is not None and self.least > self.most:
            raise ValueError(f"--min-speakers {self.least} is more than --max-speakers {self.most}")

    def __bool__(self) -> bool:
        return (self.count, self.least, self.most) != (None, None, None)

    def options(self) -> dict[str, int]:
        """The manifest keys for these hints (none when there are none)."""
        kept = ((SPEAKERS, self.count), (MIN_SPEAKERS, self.least), (MAX_SPEAKERS, self.most))
        return {key: value for key, value in kept if value is not None}

    def pipeline_arguments(self) -> dict[str, int]:
        """Keyword arguments of whisperx's ``DiarizationPipeline.__call__`` (pyannote's names)."""
        kept = (("num_speakers", self.count), ("min_speakers", self.least), ("max_speakers", self.most))
        return {key: value for key, value in kept if value is not None}


@dataclass(frozen=True)
class Decoding:
    """The decoding options of one job; the defaults are what a job gets when it asks for nothing."""

    task: Task = Task.TRANSCRIBE
    prompt: str | None = None
    prompt_file: str | None = None  # where ``prompt`` was read from at submit (a record only)
    hotwords: str | None = None
    speakers: Speakers = field(default_factory=Speakers)

    def __post_init__(self) -> None:
        for flag, text in (("--prompt", self.prompt), ("--hotwords", self.hotwords)):
            if text is not None and (not isinstance(text, str) or not text.strip()):
                raise ValueError(f"{flag} is empty: give the names and terms the recordings use, or leave it out")

    @property
    def prompted(self) -> bool:
        return bool(self.prompt or self.hotwords)

    def options(self) -> dict[str, Any]:
        """The manifest keys of what differs from the defaults."""
        kept: dict[str, Any] = {TASK: self.task.value} if self.task is not Task.TRANSCRIBE else {}
        kept.update((key, value) for key, value in ((PROMPT, self.prompt), (PROMPT_FILE, self.prompt_file),
                                                   (HOTWORDS, self.hotwords)) if value is not None)
        return {**kept, **self.speakers.options()}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Decoding:
        """Read back from a manifest; :class:`ValueError` names what is wrong with an edited one."""
        task = options.get(TASK, Task.TRANSCRIBE.value)
        try:
            chosen = Task(task)
        except ValueError:
            raise ValueError(f"task {task!r} is not one of {', '.join(t.value for t in Task)}") from None
        speakers = Speakers(options.get(SPEAKERS), options.get(MIN_SPEAKERS), options.get(MAX_SPEAKERS))
        return cls(chosen, options.get(PROMPT), options.get(PROMPT_FILE), options.get(HOTWORDS), speakers)

    def describe(self) -> dict[str, Any]:
        """The result JSON's ``decoding``: the prompt by its digest (a glossary can be long), the rest as asked."""
        prompt = None
        if self.prompt is not None:
            prompt = {"sha256": hashlib.sha256(self.prompt.encode()).hexdigest(), "characters": len(self.prompt),
                      "file": self.prompt_file}
        return {"task": self.task.value, "prompt": prompt, "hotwords": self.hotwords,
                "speakers": self.speakers.options() or None}


def read_prompt_file(path: Path, named: str = "--prompt-file") -> str:
    """A glossary file's text, read now (at submit); an unreadable or empty file is a usage error that
    names where the path came from (``named``: the flag, or the setting and its source)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{named} {path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{named} {path}: cannot read it: {exc.strerror or exc}") from None
    if not text.strip():
        raise UsageError(f"{named} {path} is empty: write the names and terms the recordings use in it")
    return text.strip()
