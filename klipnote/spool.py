"""The spool: a directory of plain files that holds every job; its layout, paths, locks and reading.

Changes of its jobs live beside it, one concern each: :mod:`klipnote.intake` (submitting),
:mod:`klipnote.claim` (claiming and committing), :mod:`klipnote.actions` (cancel, retry, wait),
:mod:`klipnote.recovery` (reaping dead claims, quarantine) and :mod:`klipnote.retention` (gc).

Layout (all under the spool root)::

    spool.json                    format version and sharing mode
    tmp/<id>/                     a submit being staged (invisible to everyone else)
    jobs/<id>/                    manifest.json, status.json, the input snapshot, outputs
    queue/<lane>/<prio>.<id>.<n>  a ticket: job <id> waits for its claim number <n>
    claimed/<id>.<n>              the same ticket once a worker renamed it here; its mtime is the lease
    quarantine/<id>/              jobs whose manifest could not be read, with REASON
    index/sha256/<hash>/<id>      content index for ``submit --skip-existing``
    workers/<worker>.json         worker heartbeats (written by workers)

Why it is safe:

- A job becomes visible with one ``rename`` of its staged folder into ``jobs/``; its ticket is
  created just before, and a claimant that finds a ticket whose folder is still staged skips it.
- Claiming is ``rename(queue/..., claimed/...)``: exactly one process wins. The claimant first
  takes ``jobs/<id>/.attempt-<n>.lock`` (a ``filelock.FileLock``) and holds it until it lets go,
  so on the same host a free lock beside a claimed ticket means its holder died.
- The claimant touches its ticket every heartbeat. A ticket untouched for the lease TTL is dead
  whatever host held it. Reaping renames it back to the queue with the next claim number (or
  fails the job after the last attempt), so a frozen holder that wakes finds its ticket gone.
- Every change of a job's state happens under ``jobs/<id>/.state.lock``; files that readers see
  are replaced atomically (:mod:`klipnote.fsio`).
- A claim stages its outputs in a folder of its own, ``jobs/<id>/.attempt-<n>-<tag>/`` (a job handed
  back keeps its claim number, and the thread of the claim that handed it back may still write).
  A reaper that proves a holder dead by taking its attempt lock clears what the holder left.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import grp
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from klipnote import __version__, defaults
from klipnote.errors import JobNotFound, KlipnoteError, SpoolError, SpoolFull, UsageError
from klipnote.fsio import atomic_write_json, fsync_dir, probe_write, read_json
from klipnote.ids import ID_LENGTH, check_prefix, is_job_id
from klipnote.job import JobState, Lane, Manifest, Status, now
from klipnote.records import MALFORMED, UNREADABLE, checked

if TYPE_CHECKING:
    from filelock import FileLock

    from klipnote.config import Settings

MANIFEST = "manifest.json"
STATUS = "status.json"
HOSTNAME = socket.gethostname()


@dataclass(frozen=True)
class Ticket:
    """A queue ticket's name, parsed: which job, which claim number, how urgent."""

    job_id: str
    attempt: int
    priority_key: int = 0

    @classmethod
    def parse_queued(cls, name: str) -> Ticket | None:
        parts = name.split(".")
        if len(parts) != 3 or not is_job_id(parts[1]) or not (parts[0].isdigit() and parts[2].isdigit()):
            return None
        return cls(parts[1], int(parts[2]), int(parts[0]))

    @classmethod
    def parse_claimed(cls, name: str) -> Ticket | None:
        parts = name.split(".")
        if len(parts) != 2 or not is_job_id(parts[0]) or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]))

    @staticmethod
    def queued_name(priority: int, job_id: str, attempt: int) -> str:
        return f"{defaults.PRIORITY_MAX - priority:02d}.{job_id}.{attempt}"

    @property
    def claimed_name(self) -> str:
        return f"{self.job_id}.{self.attempt}"


class Spool:
    """One spool directory. Cheap to construct; :meth:`open` checks or creates it."""

    def __init__(
        self,
        root: Path,
        *,
        lease_ttl: float = defaults.LEASE_TTL,
        max_attempts: int = defaults.MAX_ATTEMPTS,
        heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.lease_ttl = lease_ttl
        self.max_attempts = max_attempts
        self.heartbeat_interval = heartbeat_interval
        self.group: str | None = None
        self.tmp = self.root / "tmp"
        self.jobs = self.root / "jobs"
        self.queue = self.root / "queue"
        self.claimed = self.root / "claimed"
        self.quarantine = self.root / "quarantine"
        self.index = self.root / "index" / "sha256"
        self.workers = self.root / "workers"

    # ------------------------------------------------------------------ opening

    @classmethod
    def from_settings(cls, settings: Settings, *, create: bool = True) -> Spool:
        spool = cls(
            settings.spool,
            lease_ttl=settings.lease_ttl,
            max_attempts=settings.max_attempts,
            heartbeat_interval=settings.heartbeat_interval,
        )
        return spool.open(create=create, group=settings.spool_group)

    def open(self, *, create: bool = True, group: str | None = None) -> Spool:
        """Check the format of an existing spool, or create one (private, or shared with ``group``)."""
        marker = self.root / "spool.json"
        if marker.exists():
            try:
                info = read_json(marker)
            except (OSError, ValueError) as exc:
                raise SpoolError(f"{marker} is unreadable ({exc}); is {self.root} a klipnote spool?") from None
            if info.get("format") != defaults.SPOOL_FORMAT:
                raise SpoolError(
                    f"the spool at {self.root} has format {info.get('format')!r}; this klipnote "
                    f"({__version__}) reads format {defaults.SPOOL_FORMAT}: use a matching klipnote "
                    "or point KLIPNOTE_SPOOL at another directory"
                )
            self.group = info.get("group")
            return self
        if not create:
            raise SpoolError(f"no spool at {self.root} yet: submit a job first, or set KLIPNOTE_SPOOL")
        if self.root.is_dir() and any(not _is_layout(p.name) for p in self.root.iterdir()):
            raise SpoolError(f"{self.root} exists and is not a klipnote spool: choose an empty or new directory")
        self.group = group
        with self.io("creating the spool"):
            self.root.parent.mkdir(parents=True, exist_ok=True)
            for path in self.layout:
                self.make_dir(path)
            atomic_write_json(
                marker, {"format": defaults.SPOOL_FORMAT, "created_at": now(), "group": group}, self.file_mode
            )
        return self

    @property
    def dir_mode(self) -> int:
        return 0o2770 if self.group else 0o700

    @property
    def file_mode(self) -> int:
        return 0o660 if self.group else 0o600

    def make_dir(self, path: Path) -> None:
        """A spool folder, with the spool's mode and group."""
        try:
            os.mkdir(path, self.dir_mode)
        except FileExistsError:
            return
        if self.group:
            try:
                gid = grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise SpoolError(f"spool_group {self.group!r} is not a group on this host") from None
            os.chown(path, -1, gid)
            os.chmod(path, self.dir_mode)  # mkdir's mode is filtered by the umask

    @contextlib.contextmanager
    def io(self, action: str) -> Iterator[None]:
        """Turn the OS errors a spool meets (full, read-only, no permission) into one clear line."""
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFull(
                    f"{action} failed: no space left on the disk of the spool {self.root}; "
                    "free some space (klipnote gc) or move the spool (KLIPNOTE_SPOOL)"
                ) from None
            if exc.errno == errno.EROFS:
                raise SpoolError(
                    f"{action} failed: the spool {self.root} is on a read-only filesystem; "
                    "remount it read-write or point KLIPNOTE_SPOOL elsewhere"
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise SpoolError(
                    f"{action} failed: permission denied on {exc.filename or self.root}; check the "
                    "spool's owner and mode, or share it with spool_group"
                ) from None
            raise

    @property
    def layout(self) -> tuple[Path, ...]:
        """Every folder a spool has, parents first: what :meth:`open` creates and doctor checks."""
        return (self.root, self.tmp, self.jobs, self.claimed, self.quarantine, self.index.parent, self.index,
                self.workers, self.queue, *(self.queue / lane.value for lane in Lane))

    def check_writable(self) -> None:
        """Fail now, in one line, if this process cannot write to the spool (read-only, permissions,
        full), rather than after a worker has spent minutes loading its model."""
        with self.io("writing to the spool"):
            probe_write(self.tmp)

    def create_empty(self, path: Path) -> None:
        """Create an empty file (a ticket, an index entry) that must not exist yet, durably."""
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode))
        fsync_dir(path.parent)

    # ------------------------------------------------------------------ paths and locks

    def job_dir(self, job_id: str) -> Path:
        if not is_job_id(job_id):  # the one gate between user text and a path
            raise UsageError(f"{job_id!r} is not a job id")
        return self.jobs / job_id

    def queued_path(self, lane: Lane, priority: int, job_id: str, attempt: int) -> Path:
        return self.queue / lane.value / Ticket.queued_name(priority, job_id, attempt)

    def claimed_path(self, job_id: str, attempt: int) -> Path:
        return self.claimed / Ticket(job_id, attempt).claimed_name

    def staging_dir(self, job_id: str, attempt: int, tag: str) -> Path:
        """Where one claim numbered ``attempt`` writes its outputs until it commits them (hidden from readers)."""
        return self.job_dir(job_id) / f".attempt-{attempt}-{tag}"

    def staging_dirs(self, job_id: str, attempt: int) -> list[Path]:
        """The staging folders of every claim numbered ``attempt``."""
        return list(self.job_dir(job_id).glob(f".attempt-{attempt}-*"))

    def _lock(self, path: Path, timeout: float) -> FileLock:
        from filelock import FileLock  # imported here: costs tens of ms, and read-only commands skip it

        return FileLock(
            path,
            timeout=timeout,
            mode=self.file_mode,
            thread_local=False,
            preserve_lock_file=True,
            fallback_to_soft=False,
        )

    def attempt_lock(self, job_id: str, attempt: int) -> FileLock:
        """Held by whoever runs claim ``attempt`` of the job, from before its claim until it lets go."""
        return self._lock(self.job_dir(job_id) / f".attempt-{attempt}.lock", timeout=0)

    @contextlib.contextmanager
    def state_lock(self, job_id: str) -> Iterator[None]:
        """Serialise every change of one job's state (claim, progress, finish, cancel, reap, retry)."""
        from filelock import Timeout

        lock = self._lock(self.job_dir(job_id) / ".state.lock", timeout=defaults.STATE_LOCK_TIMEOUT)
        try:
            lock.acquire()
        except Timeout:
            raise SpoolError(
                f"job {job_id} stayed locked by another process for {defaults.STATE_LOCK_TIMEOUT:.0f} s; "
                "try again, or look for a hung klipnote process"
            ) from None
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def content_lock(self, sha256: str) -> Iterator[None]:
        """Serialise check-then-submit of one content hash across concurrent cron runs."""
        from filelock import Timeout

        lock = self._lock(self.index / f".{sha256}.lock", timeout=defaults.STATE_LOCK_TIMEOUT)
        try:
            with self.io("checking for an existing job"):
                lock.acquire()
        except Timeout:
            raise SpoolError(f"another submit held the lock on this content for {defaults.STATE_LOCK_TIMEOUT:.0f} s; "
                             "try again") from None
        try:
            yield
        finally:
            lock.release()

    # ------------------------------------------------------------------ reading jobs

    def manifest(self, job_id: str) -> Manifest:
        """The job's manifest; ``ValueError`` when it is not one (truncated, garbage, fields of the wrong type)."""
        path = self.job_dir(job_id) / MANIFEST
        data = read_json(path)
        try:
            return checked(Manifest.from_dict(data))
        except MALFORMED as exc:
            raise ValueError(f"{path} is not a manifest ({type(exc).__name__}: {exc})") from None

    def load_status(self, job_id: str) -> Status:
        """The job's status; :class:`KlipnoteError` when its file is missing or unreadable."""
        path = self.job_dir(job_id) / STATUS
        try:
            return checked(Status.from_dict(read_json(path)))
        except FileNotFoundError:
            raise JobNotFound(f"no job {job_id} in the spool {self.root}") from None
        except UNREADABLE as exc:
            raise KlipnoteError(f"the status of job {job_id} is unreadable ({exc}); see {path}") from None

    def status_or_rebuilt(self, manifest: Manifest) -> Status:
        """The job's status, or a fresh queued one from its manifest when the status file was damaged."""
        try:
            return self.load_status(manifest.id)
        except KlipnoteError:
            return Status(
                id=manifest.id,
                state=JobState.QUEUED,
                lane=manifest.lane,
                input=manifest.input.path,
                submitted_at=manifest.submitted_at,
                attempt_limit=self.max_attempts,
                message="status file was unreadable and has been rebuilt",
            )

    def write_status(self, status: Status) -> None:
        status.updated_at = now()
        atomic_write_json(self.job_dir(status.id) / STATUS, status.to_dict(), self.file_mode)

    def job_ids(self) -> list[str]:
        """Every job id, oldest first (ids sort by submit time)."""
        try:
            names = os.listdir(self.jobs)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_job_id(n))

    def resolve(self, text: str) -> str:
        """The one job id that ``text`` names or begins; quarantined jobs are reported as such."""
        prefix = check_prefix(text)
        if len(prefix) == ID_LENGTH and (self.jobs / prefix).is_dir():
            return prefix
        matches = [job_id for job_id in self.job_ids() if job_id.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
            raise UsageError(f"{text!r} matches {len(matches)} jobs ({shown}): give more characters")
        for path in sorted(self.quarantine.glob(f"{prefix}*")):
            reason = (path / "REASON").read_text(errors="replace").strip() if (path / "REASON").exists() else ""
            raise JobNotFound(f"job {path.name} was quarantined: {reason or 'unreadable'}; its files are in {path}")
        raise JobNotFound(f"no job {text!r} in the spool {self.root}; `klipnote list` shows the jobs")

    def queue_lengths(self) -> dict[str, int]:
        lengths = {}
        for lane in Lane:
            try:
                lengths[lane.value] = sum(1 for n in os.listdir(self.queue / lane.value) if not n.startswith("."))
            except FileNotFoundError:
                lengths[lane.value] = 0
        return lengths

    def find_tickets(self, job_id: str) -> list[Path]:
        """Every ticket of a job, queued or claimed (normally at most one)."""
        found = list(self.claimed.glob(f"{job_id}.*"))
        for lane in Lane:
            found.extend((self.queue / lane.value).glob(f"*.{job_id}.*"))
        return found



_LAYOUT_NAMES = {"spool.json", "tmp", "jobs", "queue", "claimed", "quarantine", "index", "workers"}


def _is_layout(name: str) -> bool:
    """A name a spool holds, counting the temp file of a ``spool.json`` that another process, creating
    the same spool at this moment, is writing."""
    return name in _LAYOUT_NAMES or (name.startswith(".spool.json.") and name.endswith(".tmp"))


def user_at_host() -> str:
    """Who this process acts for, as jobs record it (``submitted_by``, ``canceled by``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{HOSTNAME}"
