"""From what a user typed (files, folders, ``-``) to jobs in the spool, one outcome per input.

Each file is checked before it can touch the spool: it exists, is a regular readable non-empty
file within the size limit, ffprobe finds an audio stream, and it is not too long. A rejected
file gets an outcome with a one-line reason; the others are still submitted. The options a submit
asks for (output folder, enhancement steps, subtitle style, decoding options) are checked here too,
before any file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from klipnote import intake, media
from klipnote.decoding import Decoding, Speakers, read_prompt_file
from klipnote.errors import InputRejected, KlipnoteError, UsageError
from klipnote.fsio import sha256_file
from klipnote.humanize import duration, size
from klipnote.job import InputInfo, JobRequest, JobState, Model, Status, Task, ZhScript
from klipnote.spool import Spool

if TYPE_CHECKING:
    from klipnote.config import Settings

STDIN_MARK = "-"
PROBE_THREADS = 4


@dataclass(frozen=True)
class Limits:
    max_file_size: int
    max_duration_hours: float


def output_folder(path: Path | None) -> str | None:
    """``--output-dir`` as the manifest keeps it (absolute), refused now if it is something else than a folder."""
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output-dir {path} exists and is not a folder")
    return os.path.abspath(path)


def decoding_options(model: Model, settings: Settings, task: Task | None, prompt: str | None,
                     prompt_file: Path | None, hotwords: str | None,
                     speakers: tuple[int | None, int | None, int | None] = (None, None, None)) -> Decoding:
    """The decoding options asked for (``speakers``: the count, the least and the most), the settings' for
    what was not (a flag of a pair, --prompt or --prompt-file, and of the speaker flags, replaces the
    whole pair or set), the prompt file read now. A translation is refused for belle2 here, where the
    lane is known; ``auto`` keeps translations on whisperx (:func:`klipnote.routing.route_at_submit`)."""
    if prompt is not None and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    named = "--prompt-file"
    if prompt is None and prompt_file is None:
        if settings.prompt is not None and settings.prompt_file is not None:
            raise UsageError("the settings prompt and prompt_file are both set: keep one (klipnote config show "
                             "says where each comes from)")
        prompt, prompt_file = settings.prompt, settings.prompt_file
        named = f"the prompt_file setting ({settings.sources['prompt_file']})"
    task = task or settings.task
    hotwords = settings.hotwords if hotwords is None else hotwords
    if speakers == (None, None, None):
        speakers = (settings.speakers, None, None)
    if task is Task.TRANSLATE and model is Model.BELLE2:
        raise UsageError("--task translate needs the whisperx engine (belle2 only transcribes Mandarin): submit "
                         "with --model whisperx or --model auto")
    text = read_prompt_file(prompt_file, named) if prompt_file is not None else prompt
    try:
        return Decoding(task, text.strip() if text else text, os.path.abspath(prompt_file) if prompt_file else None,
                        hotwords.strip() if hotwords else hotwords, Speakers(*speakers))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def job_options(diarize: bool, zh_script: ZhScript | None, enhance_steps: str | None, max_line_width: int | None,
                max_lines: int | None, max_cue_duration: float | None,
                decoding: Decoding | None = None) -> dict[str, Any]:
    """What a job asks beyond the defaults, checked at submit so that a bad value never reaches a worker.

    Speaker-count hints imply ``--diarize``: they mean nothing without it.
    """
    from klipnote.enhance import parse_steps
    from klipnote.subtitles import StyleRules

    decoding = decoding or Decoding()
    options: dict[str, Any] = decoding.options()
    if diarize or decoding.speakers:
        options["diarize"] = True
    if zh_script is not None:
        options["zh_script"] = zh_script.value
    if enhance_steps is not None:
        try:
            options["enhance"] = ",".join(step.value for step in parse_steps(enhance_steps)) or "none"
        except ValueError as exc:
            raise UsageError(f"--enhance {enhance_steps!r}: {exc}") from None
    asked = (("max_line_width_latin", max_line_width), ("max_lines", max_lines), ("max_cue_duration", max_cue_duration))
    style: dict[str, Any] = {key: value for key, value in asked if value is not None}
    if style:
        try:
            StyleRules(**style)
        except ValueError as exc:
            raise UsageError(f"subtitle style: {exc}") from None
        options["style"] = style
    return options

@dataclass
class Submission:
    """What became of one input: a new job, an existing one (``skipped``), or a rejection."""

    input: str
    status: Status | None = None
    error: str | None = None
    skipped: bool = False

    @property
    def accepted(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        if self.status is None:
            return {"input": self.input, "error": self.error}
        data: dict[str, Any] = {
            "id": self.status.id,
            "input": self.input,
            "lane": self.status.lane.value,
            "state": self.status.state.value,
        }
        if self.skipped:
            data["skipped"] = True
        return data


@dataclass(frozen=True)
class Candidate:
    """One path to validate; ``from_folder`` ones that hold no audio are passed over, not rejected."""

    text: str
    path: Path
    from_folder: bool = False


def expand(args: Iterable[str], *, recursive: bool, stdin: Iterable[str] | None) -> Iterator[Candidate]:
    """Paths in the order given; ``-`` reads one path a line from ``stdin``; folders need ``recursive``."""
    for arg in args:
        if arg == STDIN_MARK:
            for raw in stdin or ():
                line = raw.rstrip("\r\n")
                if line:
                    yield from _expand_one(line, recursive)
        else:
            yield from _expand_one(arg, recursive)


def _expand_one(text: str, recursive: bool) -> Iterator[Candidate]:
    path = Path(text)
    if recursive and path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    yield Candidate(str(Path(root) / name), Path(root) / name, from_folder=True)
    else:
        yield Candidate(text, path)


def validate(path: Path, limits: Limits) -> InputInfo:
    """Check one file and describe it; raise :class:`InputRejected` with the reason.

    Cheap checks first, hashing last. What cannot be media at all raises
    :class:`~klipnote.media.NotMedia`, so that a folder walk passes it over.
    """
    try:
        os.fsencode(str(path)).decode("utf-8")
    except UnicodeDecodeError:
        raise InputRejected("its name is not valid UTF-8: rename the file") from None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputRejected("no such file") from None
    except OSError as exc:
        raise InputRejected(f"cannot look at it: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputRejected("is a folder: add --recursive to submit the audio and video files inside")
    if not stat.S_ISREG(st.st_mode):
        raise media.NotMedia("not a regular file (a pipe, device or socket cannot be snapshotted)")
    if st.st_size == 0:
        raise media.NotMedia("empty file")
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        raise InputRejected(f"cannot read it: {exc.strerror}") from None
    info = media.probe(path)
    if st.st_size > limits.max_file_size:
        raise InputRejected(
            f"too large: {size(st.st_size, 2)}, the limit is {size(limits.max_file_size, 2)} (MAX_FILE_SIZE)"
        )
    if info.duration is not None and info.duration > limits.max_duration_hours * 3600:
        raise InputRejected(
            f"too long: {duration(info.duration, precise=True)}, the limit is "
            f"{duration(limits.max_duration_hours * 3600, precise=True)} "
            "(MAX_DURATION_HOURS)"
        )
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise InputRejected(f"cannot read it: {exc.strerror}") from None
    absolute = Path(os.path.abspath(path))
    return InputInfo(
        path=str(absolute),
        name=absolute.name,
        size=st.st_size,
        mtime=st.st_mtime,
        sha256=digest,
        duration=info.duration,
        has_video=info.has_video,
        snapshot=None,
    )


def submit_paths(
    spool: Spool,
    candidates: Iterable[Candidate],
    request: JobRequest,
    limits: Limits,
    *,
    copy: bool = True,
    skip_existing: bool = False,
    on_outcome: Callable[[Submission], None] | None = None,
) -> list[Submission]:
    """Validate (in parallel: ffprobe and hashing wait on I/O) and submit, keeping input order."""
    outcomes: list[Submission] = []
    media.ffprobe_binary()  # one clear error up front instead of one per file
    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        checks = pool.map(lambda c: (c, _check(c.path, limits)), candidates)
        for candidate, checked in checks:
            if isinstance(checked, InputRejected):
                if candidate.from_folder and isinstance(checked, media.NotMedia):
                    continue  # a folder's other files are not the user's mistake
                outcome = Submission(candidate.text, error=str(checked))
            else:
                outcome = _submit_one(spool, candidate, checked, request, copy, skip_existing)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    return outcomes


def _check(path: Path, limits: Limits) -> InputInfo | InputRejected:
    try:
        return validate(path, limits)
    except InputRejected as exc:
        return exc


#: Which job ``--skip-existing`` names when several hold the same content. Failed and canceled jobs
#: count too: a cron rerun must not transcribe again, every few minutes, a file that fails or that
#: someone canceled; ``klipnote retry`` is how to run one again.
_SKIP_PREFERENCE = (JobState.DONE, JobState.RUNNING, JobState.QUEUED, JobState.FAILED, JobState.CANCELED)


def _submit_one(
    spool: Spool, candidate: Candidate, info: InputInfo, request: JobRequest, copy: bool, skip_existing: bool
) -> Submission:
    if not skip_existing:
        return Submission(candidate.text, status=intake.submit(spool, info, candidate.path, request, copy=copy))
    with spool.content_lock(info.sha256):
        existing = []
        for job_id in intake.jobs_with_content(spool, info.sha256):
            try:
                existing.append(spool.load_status(job_id))
            except KlipnoteError:  # an unreadable old job must not block a new submit
                continue
        if existing:
            best = min(existing, key=lambda st: _SKIP_PREFERENCE.index(st.state))
            return Submission(candidate.text, status=best, skipped=True)
        return Submission(candidate.text, status=intake.submit(spool, info, candidate.path, request, copy=copy))
