"""Intake: one validated input enters the spool, all or nothing, and is indexed by its content.

Like Maildir delivery, a job is staged in ``tmp/<id>/`` (input snapshot, manifest, status, each
fsynced), its ticket created, and the folder renamed into ``jobs/``: that rename is the commit.
A claimant that finds a ticket whose folder is still staged skips it. The content index
(``index/sha256/<hash>/<id>``) only speeds up ``submit --skip-existing``; losing an entry loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from klipnote import __version__
from klipnote.decoding import Decoding
from klipnote.fsio import atomic_write_json, fsync_dir
from klipnote.ids import is_job_id, new_job_id
from klipnote.job import InputInfo, JobRequest, JobState, Manifest, Status, now
from klipnote.routing import route_at_submit
from klipnote.spool import MANIFEST, STATUS, Spool, user_at_host


def submit(spool: Spool, info: InputInfo, source: Path, request: JobRequest, *, copy: bool = True) -> Status:
    """Put one validated input into the spool, all or nothing; return its first status."""
    job_id = new_job_id()
    route = route_at_submit(request.model, request.language, Decoding.from_options(request.options).task)
    submitted_at = now()
    stage = spool.tmp / job_id
    ticket = spool.queued_path(route.lane, request.priority, job_id, 1)
    snapshot = f"input{_safe_suffix(info.name)}" if copy else None
    manifest = Manifest(
        id=job_id,
        input=InputInfo(**{**info.__dict__, "snapshot": snapshot}),
        model=request.model,
        lane=route.lane,
        routing_reason=route.reason,
        language=request.language,
        formats=request.formats,
        output_dir=request.output_dir,
        next_to_input=request.next_to_input,
        priority=request.priority,
        submitted_at=submitted_at,
        submitted_by=user_at_host(),
        klipnote_version=__version__,
        options=dict(request.options),
    )
    status = Status(
        id=job_id,
        state=JobState.QUEUED,
        lane=route.lane,
        input=info.path,
        submitted_at=submitted_at,
        attempt_limit=spool.max_attempts,
        message="waiting for a worker",
        routing={
            "requested": request.model.value,
            "decided": route.lane.value,
            "reason": route.reason,
            "language_hint": request.language,
        },
    )
    with spool.io(f"submitting {info.name}"):
        try:
            spool.make_dir(stage)
            if snapshot:
                _snapshot(source, stage / snapshot, spool.file_mode)
            atomic_write_json(stage / MANIFEST, manifest.to_dict(), spool.file_mode)
            status.updated_at = submitted_at
            atomic_write_json(stage / STATUS, status.to_dict(), spool.file_mode)
            spool.create_empty(ticket)
            os.rename(stage, spool.jobs / job_id)  # the commit point
            fsync_dir(spool.jobs)
        except BaseException:
            with contextlib.suppress(OSError):
                ticket.unlink(missing_ok=True)
            shutil.rmtree(stage, ignore_errors=True)
            raise
    with contextlib.suppress(OSError):  # the index only speeds up --skip-existing
        spool.make_dir(spool.index / info.sha256)
        spool.create_empty(spool.index / info.sha256 / job_id)
    return status


def jobs_with_content(spool: Spool, sha256: str) -> list[str]:
    """The jobs whose input had this SHA-256 (take :meth:`Spool.content_lock` before acting on the answer)."""
    try:
        return sorted(n for n in os.listdir(spool.index / sha256) if is_job_id(n))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _snapshot(source: Path, target: Path, mode: int) -> None:
    """Hard-link the input (instant, no extra space); copy when the filesystem will not."""
    try:
        os.link(source, target)
    except OSError:
        with (
            open(source, "rb") as src,
            open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
            st = os.fstat(src.fileno())
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # so a worker can tell it is unchanged


def _safe_suffix(name: str) -> str:
    """The input's extension if it is plain (ffmpeg may use it as a hint), else nothing."""
    suffix = Path(name).suffix.lower()
    return suffix if 1 < len(suffix) <= 10 and suffix[1:].isalnum() and suffix.isascii() else ""
