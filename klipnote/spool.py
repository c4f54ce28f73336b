"""The spool: a directory of plain files that holds every job, and the rules for changing it.

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
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from klipnote import __version__, defaults
from klipnote.errors import JobNotFound, KlipnoteError, SpoolError, SpoolFull, UsageError
from klipnote.fsio import atomic_write_json, atomic_write_text, fsync_dir, probe_write, read_json
from klipnote.ids import ID_LENGTH, check_prefix, is_job_id, new_job_id
from klipnote.job import InputInfo, JobRequest, JobState, Lane, Manifest, Status, now
from klipnote.records import MALFORMED, UNREADABLE, checked
from klipnote.routing import route_at_submit

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


@dataclass(frozen=True)
class ReapOutcome:
    job_id: str
    action: str  # "requeued", "failed", "dropped" or "quarantined"
    reason: str


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
                self._make_dir(path)
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

    def _make_dir(self, path: Path) -> None:
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

    # ------------------------------------------------------------------ submitting

    def submit(self, info: InputInfo, source: Path, request: JobRequest, *, copy: bool = True) -> Status:
        """Put one validated input into the spool, all or nothing; return its first status."""
        job_id = new_job_id()
        route = route_at_submit(request.model, request.language)
        submitted_at = now()
        stage = self.tmp / job_id
        ticket = self.queued_path(route.lane, request.priority, job_id, 1)
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
            submitted_by=f"{_user()}@{HOSTNAME}",
            klipnote_version=__version__,
            options=dict(request.options),
        )
        status = Status(
            id=job_id,
            state=JobState.QUEUED,
            lane=route.lane,
            input=info.path,
            submitted_at=submitted_at,
            attempt_limit=self.max_attempts,
            message="waiting for a worker",
            routing={
                "requested": request.model.value,
                "decided": route.lane.value,
                "reason": route.reason,
                "language_hint": request.language,
            },
        )
        with self.io(f"submitting {info.name}"):
            try:
                self._make_dir(stage)
                if snapshot:
                    self._snapshot(source, stage / snapshot)
                atomic_write_json(stage / MANIFEST, manifest.to_dict(), self.file_mode)
                status.updated_at = submitted_at
                atomic_write_json(stage / STATUS, status.to_dict(), self.file_mode)
                self._create_empty(ticket)
                os.rename(stage, self.jobs / job_id)  # the commit point
                fsync_dir(self.jobs)
            except BaseException:
                with contextlib.suppress(OSError):
                    ticket.unlink(missing_ok=True)
                shutil.rmtree(stage, ignore_errors=True)
                raise
        with contextlib.suppress(OSError):  # the index only speeds up --skip-existing
            self._make_dir(self.index / info.sha256)
            self._create_empty(self.index / info.sha256 / job_id)
        return status

    def _snapshot(self, source: Path, target: Path) -> None:
        """Hard-link the input (instant, no extra space); copy when the filesystem will not."""
        try:
            os.link(source, target)
        except OSError:
            with (
                open(source, "rb") as src,
                open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode), "wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1024 * 1024)
                dst.flush()
                os.fsync(dst.fileno())
                st = os.fstat(src.fileno())
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # so a worker can tell it is unchanged

    def _create_empty(self, path: Path) -> None:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode))
        fsync_dir(path.parent)

    def jobs_with_content(self, sha256: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.index / sha256) if is_job_id(n))
        except (FileNotFoundError, NotADirectoryError):
            return []

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

    # ------------------------------------------------------------------ user actions

    def cancel(self, job_id: str) -> Status:
        """Cancel a queued or running job; a running worker notices at its next heartbeat."""
        with self.io(f"canceling {job_id}"), self.state_lock(job_id):
            status = self.load_status(job_id)
            if status.state is JobState.CANCELED:
                return status
            if status.state.terminal:
                raise KlipnoteError(f"job {job_id} is already {status.state.value}; nothing to cancel")
            status.state = JobState.CANCELED
            status.finished_at = now()
            status.message = f"canceled by {_user()}@{HOSTNAME}"
            self.write_status(status)
            for ticket in self.find_tickets(job_id):
                ticket.unlink(missing_ok=True)
            return status

    def retry(self, job_id: str) -> Status:
        """Queue a failed or canceled job again, with a fresh allowance of attempts."""
        with self.io(f"retrying {job_id}"), self.state_lock(job_id):
            status = self.load_status(job_id)
            if not status.state.terminal or status.state is JobState.DONE:
                raise KlipnoteError(
                    f"job {job_id} is {status.state.value}; only failed or canceled jobs can be retried"
                )
            manifest = self.manifest(job_id)
            self._create_empty(self.queued_path(status.lane, manifest.priority, job_id, status.attempt + 1))
            status.state = JobState.QUEUED
            status.attempt_limit = status.attempt + self.max_attempts
            status.stage, status.progress, status.error, status.worker = None, 0.0, None, None
            status.started_at = status.finished_at = None
            status.message = "queued again by retry"
            self.write_status(status)
            return status

    # ------------------------------------------------------------------ recovery

    def reap(self) -> list[ReapOutcome]:
        """Put back the jobs of dead claimants. Safe to call from any process at any time."""
        outcomes: list[ReapOutcome] = []
        try:
            names = os.listdir(self.claimed)
        except FileNotFoundError:
            return outcomes
        for name in names:
            ticket = Ticket.parse_claimed(name)
            if ticket is None or not (self.jobs / ticket.job_id).is_dir():
                continue
            try:
                outcome = self._reap_one(ticket)
            except (OSError, KlipnoteError):
                continue  # a read-only view of the spool, or a job busy elsewhere: next pass
            if outcome:
                outcomes.append(outcome)
        return outcomes

    def _reap_one(self, ticket: Ticket) -> ReapOutcome | None:
        from filelock import Timeout

        path = self.claimed_path(ticket.job_id, ticket.attempt)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        try:
            status: Status | None = self.load_status(ticket.job_id)
        except KlipnoteError:
            status = None
        holder = status.worker if status and status.attempt == ticket.attempt else None
        reason = None
        # Free means no live process on this host holds it (on another host it proves nothing).
        lock: FileLock | None = self.attempt_lock(ticket.job_id, ticket.attempt)
        try:
            lock.acquire()
        except Timeout:
            lock = None
        try:
            if lock is not None and holder and holder.get("host") == HOSTNAME:
                reason = f"worker {holder.get('id')} (pid {holder.get('pid')}) exited without finishing"
            age = now() - max(st.st_mtime, st.st_ctime)
            if reason is None and age > self.lease_ttl:
                who = f"worker {holder.get('id')} on {holder.get('host')}" if holder else "its worker"
                reason = f"{who} sent no heartbeat for {age:.0f} s (lease {self.lease_ttl:.0f} s)"
            if reason is None:
                return None
            with self.state_lock(ticket.job_id):
                if not path.exists():
                    return None
                outcome = self._requeue_or_fail(ticket, path, reason)
            if lock is not None and outcome.action != "quarantined":
                # The dead claim's half-written outputs; a frozen holder still owns its lock and cleans up itself.
                for staging in self.staging_dirs(ticket.job_id, ticket.attempt):
                    shutil.rmtree(staging, ignore_errors=True)
            return outcome
        finally:
            if lock is not None:
                lock.release()

    def restore_tickets(self) -> list[ReapOutcome]:
        """Give a queue ticket to every queued or running job that has none; for a restored backup.

        A backup copies job folders and tickets one file at a time while workers run, so it can
        catch a job between two states (its status read before it was claimed, its ticket after);
        restored as is, such a job would wait for ever. Run it before any worker uses the spool.
        """
        outcomes = []
        for job_id in self.job_ids():
            with self.state_lock(job_id):
                try:
                    status = self.load_status(job_id)
                except KlipnoteError:
                    continue  # reap and the commands report it
                if status.state.terminal or self.find_tickets(job_id):
                    continue
                ticket = Ticket(job_id, status.attempt)
                outcomes.append(self._requeue_or_fail(ticket, None, "restored from a backup without its ticket"))
        return outcomes

    def _requeue_or_fail(self, ticket: Ticket, path: Path | None, reason: str) -> ReapOutcome:
        """Called under the state lock with the dead claim's ticket at ``path`` (None: the ticket is lost)."""
        job_dir = self.job_dir(ticket.job_id)
        for orphan in job_dir.glob(f".{STATUS}.*.tmp"):
            orphan.unlink(missing_ok=True)  # every status write holds the state lock: this one's writer died
        try:
            manifest = self.manifest(ticket.job_id)
        except ValueError as exc:
            self.quarantine_job(ticket.job_id, f"manifest unreadable: {exc}")
            return ReapOutcome(ticket.job_id, "quarantined", str(exc))
        status = self.status_or_rebuilt(manifest)
        if status.state.terminal:
            if path is not None:
                path.unlink()
            return ReapOutcome(ticket.job_id, "dropped", f"job already {status.state.value}")
        status.worker, status.stage, status.progress = None, None, 0.0
        if ticket.attempt >= status.attempt_limit:
            status.state = JobState.FAILED
            status.finished_at = now()
            status.error = f"gave up after {ticket.attempt} attempts: {reason}"
            status.message = status.error
            self.write_status(status)
            if path is not None:
                path.unlink()
            return ReapOutcome(ticket.job_id, "failed", reason)
        queued = self.queued_path(status.lane, manifest.priority, ticket.job_id, ticket.attempt + 1)
        if path is None:
            self._create_empty(queued)
        else:
            os.rename(path, queued)
        status.state = JobState.QUEUED
        status.message = f"requeued for attempt {ticket.attempt + 1} of {status.attempt_limit}: {reason}"
        self.write_status(status)
        return ReapOutcome(ticket.job_id, "requeued", reason)

    def quarantine_job(self, job_id: str, reason: str) -> Path:
        """Move a job whose files cannot be read out of the way, with the reason beside it."""
        target = self.quarantine / job_id
        os.rename(self.job_dir(job_id), target)
        atomic_write_text(target / "REASON", reason + "\n", self.file_mode)
        for ticket in self.find_tickets(job_id):
            ticket.unlink(missing_ok=True)
        return target

    def wait_for(
        self,
        job_ids: Sequence[str],
        *,
        timeout: float | None = None,
        on_poll: Callable[[dict[str, Status]], None] | None = None,
    ) -> dict[str, Status]:
        """Poll until every job has ended or ``timeout`` passes; reap dead claims meanwhile.

        Returns the last statuses seen; the caller tells a timeout from ``state.terminal``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.monotonic()
        while True:
            self.reap()
            statuses = {job_id: self.load_status(job_id) for job_id in job_ids}
            if on_poll is not None:
                on_poll(statuses)
            if all(s.state.terminal for s in statuses.values()):
                return statuses
            interval = min(2.0, defaults.WAIT_POLL_INTERVAL + (time.monotonic() - started) / 60.0)
            if deadline is not None:
                if time.monotonic() >= deadline:
                    return statuses
                interval = min(interval, max(0.0, deadline - time.monotonic()))
            time.sleep(interval)

    # ------------------------------------------------------------------ retention

    def gc(self, older_than: float, *, dry_run: bool = False) -> list[str]:
        """Delete finished jobs (done, failed, canceled) that finished over ``older_than`` seconds ago.

        Queued and running jobs are never touched. Leftovers of crashed submits and old
        quarantined jobs go too. Returns what was (or would be) removed.
        """
        cutoff = now() - older_than
        removed: list[str] = []
        for job_id in self.job_ids():
            try:
                status = self.load_status(job_id)
            except KlipnoteError:
                continue
            if not status.state.terminal or (status.finished_at or status.updated_at) > cutoff:
                continue
            removed.append(job_id)
            if not dry_run:
                self._remove_job(job_id, cutoff)
        for folder in (self.quarantine, self.tmp):
            limit = cutoff if folder is self.quarantine else now() - defaults.STALE_STAGING_AGE
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                if path.lstat().st_mtime < limit:
                    removed.append(f"{folder.name}/{path.name}")
                    if not dry_run:
                        shutil.rmtree(path, ignore_errors=True)
        return removed

    def _remove_job(self, job_id: str, cutoff: float) -> None:
        with self.io(f"removing {job_id}"):
            with self.state_lock(job_id):
                status = self.load_status(job_id)  # re-check: a retry may have raced us
                if not status.state.terminal or (status.finished_at or status.updated_at) > cutoff:
                    return
                sha = self.manifest(job_id).input.sha256
                doomed = self.tmp / f"gc-{job_id}"
                os.rename(self.job_dir(job_id), doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            (self.index / sha / job_id).unlink(missing_ok=True)


_LAYOUT_NAMES = {"spool.json", "tmp", "jobs", "queue", "claimed", "quarantine", "index", "workers"}


def _is_layout(name: str) -> bool:
    """A name a spool holds, counting the temp file of a ``spool.json`` that another process, creating
    the same spool at this moment, is writing."""
    return name in _LAYOUT_NAMES or (name.startswith(".spool.json.") and name.endswith(".tmp"))


def _safe_suffix(name: str) -> str:
    """The input's extension if it is plain (ffmpeg may use it as a hint), else nothing."""
    suffix = Path(name).suffix.lower()
    return suffix if 1 < len(suffix) <= 10 and suffix[1:].isalnum() and suffix.isascii() else ""


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
