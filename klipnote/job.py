"""What a job is: its manifest (what was asked, fixed at submit) and its status (what happened).

Both are plain JSON files in the job folder. Unknown keys are kept out of the dataclasses but
tolerated when reading, so a newer klipnote's additions do not break an older reader.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from klipnote import defaults
from klipnote.records import known_fields


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELED)


class Stage(str, Enum):
    """What a running job is doing; reported with a percent of that stage."""

    ROUTING = "routing"
    LOADING = "loading"
    DECODING = "decoding"
    TRANSCRIBING = "transcribing"
    ALIGNING = "aligning"
    ENHANCING = "enhancing"
    WRITING = "writing"


class Model(str, Enum):
    """What a job may ask for: one engine, or ``auto`` to route by language."""

    AUTO = "auto"
    BELLE2 = "belle2"
    WHISPERX = "whisperx"


class Lane(str, Enum):
    """A queue workers serve: belle2 workers take ``belle2``; whisperx workers ``whisperx`` and ``auto``."""

    AUTO = "auto"
    BELLE2 = "belle2"
    WHISPERX = "whisperx"


class ZhScript(str, Enum):
    """Chinese characters of a Chinese transcript, from either engine (:mod:`klipnote.zhscript`)."""

    SIMPLIFIED = "simplified"
    TRADITIONAL = "traditional"
    ORIGINAL = "original"


class Task(str, Enum):
    """What Whisper makes of the speech: text in the language spoken, or English (whisperx only)."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


class SplitBy(str, Enum):
    """How the ``split`` enhancement builds cues (``OPTIMIZER_ENGINE``): from word times, from segment
    times with the text spread evenly, or ``auto`` (words when the engine timed them)."""

    AUTO = "auto"
    WORDS = "words"
    SEGMENTS = "segments"


class OutputFormat(str, Enum):
    SRT = "srt"
    VTT = "vtt"
    TXT = "txt"
    TSV = "tsv"
    JSON = "json"
    HTML = "html"  # the review page (klipnote.review)


#: The formats every job gets (:data:`klipnote.defaults.ALWAYS_WRITTEN_FORMATS`), first in every request.
ALWAYS_WRITTEN = tuple(OutputFormat(f) for f in defaults.ALWAYS_WRITTEN_FORMATS)


def now() -> float:
    """Wall-clock time as stored in the spool (Unix seconds, float)."""
    return time.time()


@dataclass(frozen=True)
class InputInfo:
    """The file a job transcribes, as it was when submitted."""

    path: str  # absolute path of the original
    name: str  # its file name, used to name outputs next to it or in --output-dir
    size: int
    mtime: float
    sha256: str
    duration: float | None
    has_video: bool
    snapshot: str | None  # file name inside the job folder, None with --no-copy

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputInfo:
        return cls(**known_fields(cls, data))


@dataclass(frozen=True)
class Manifest:
    """The request, written once at submit and never changed."""

    id: str
    input: InputInfo
    model: Model
    lane: Lane
    routing_reason: str
    language: str | None = None
    formats: tuple[OutputFormat, ...] = ALWAYS_WRITTEN
    output_dir: str | None = None
    next_to_input: bool = False
    priority: int = 0
    submitted_at: float = 0.0
    submitted_by: str = ""
    klipnote_version: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"] = self.model.value
        data["lane"] = self.lane.value
        data["formats"] = [f.value for f in self.formats]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        values = known_fields(cls, data)
        values["input"] = InputInfo.from_dict(data["input"])
        values["model"] = Model(data["model"])
        values["lane"] = Lane(data["lane"])
        values["formats"] = tuple(OutputFormat(f) for f in data.get("formats", defaults.ALWAYS_WRITTEN_FORMATS))
        return cls(**values)


@dataclass
class Status:
    """Everything a user or script wants to know about a job now; rewritten atomically on change."""

    id: str
    state: JobState
    lane: Lane
    input: str
    submitted_at: float
    attempt: int = 0  # claims consumed so far
    attempt_limit: int = 0  # the job fails when a claim numbered this one is lost
    stage: Stage | None = None
    progress: float = 0.0
    message: str = ""
    engine: str | None = None
    routing: dict[str, Any] = field(default_factory=dict)
    worker: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    error: str | None = None
    outputs: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        data["lane"] = self.lane.value
        data["stage"] = self.stage.value if self.stage else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Status:
        values = known_fields(cls, data)
        values["state"] = JobState(data["state"])
        values["lane"] = Lane(data["lane"])
        values["stage"] = Stage(data["stage"]) if data.get("stage") else None
        return cls(**values)


@dataclass(frozen=True)
class JobRequest:
    """What a user asks of every file in one submit call."""

    model: Model = Model.AUTO
    language: str | None = None
    formats: tuple[OutputFormat, ...] = ALWAYS_WRITTEN
    output_dir: str | None = None
    next_to_input: bool = False
    priority: int = 0
    options: dict[str, Any] = field(default_factory=dict)


#: Outputs in the job folder are named ``transcript.<format>``; copies elsewhere take the input's stem.
OUTPUT_STEM = "transcript"


def output_name(fmt: OutputFormat) -> str:
    return f"{OUTPUT_STEM}.{fmt.value}"
