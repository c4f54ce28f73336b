"""What a spool is doing right now, gathered once for ``workers``, ``top`` and ``metrics``.

Everything comes from the spool's plain files, so any host that mounts the spool can watch it:

- workers from their registry records (``workers/*.json``), each judged live or not by
  :meth:`~klipnote.registry.WorkerRecord.seen`: its heartbeat against the lease and, on this host,
  whether its process still exists. ``top`` and ``metrics`` show the live ones and those dead for
  less than ``defaults.RECENT_DEAD_WORKERS`` seconds, so restarts under new ids do not pile up
  there; ``workers --all`` lists every record until ``gc`` removes it;
- queued and running counts from tickets: ``queue/<lane>/`` and ``claimed/`` (running jobs read
  one status each), so they cost a listing, not a read per job;
- finished jobs by state and the latest failures from every job's status: O(jobs). A
  :class:`StatusCache` kept between ``top``'s frames re-reads only the statuses whose file changed
  (one ``stat`` a job a frame); ``metrics`` runs once, so it reads each status once (``gc`` keeps
  the count bounded).

A running job's ETA is an estimate from its transcription percent and the time since its claim:
transcription dominates a job, so its percent stands for the whole. Other stages report no
percent worth extrapolating (or one of a stage that started late), so they have no ETA.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klipnote import defaults
from klipnote.errors import KlipnoteError
from klipnote.job import JobState, Lane, Stage, Status, now
from klipnote.registry import Registry, WorkerRecord, WorkerState, lane_workers, unserved_lanes
from klipnote.spool import STATUS, Spool, Ticket


@dataclass(frozen=True)
class RunningJob:
    status: Status
    elapsed: float  # seconds since the claim
    eta: float | None  # seconds left; None outside transcription or before its first percent

    @classmethod
    def of(cls, status: Status, at: float) -> RunningJob:
        elapsed = max(0.0, at - (status.started_at or at))
        percent = status.progress
        measurable = status.stage is Stage.TRANSCRIBING and 0.0 < percent < 100.0
        eta = elapsed * (100.0 - percent) / percent if measurable else None
        return cls(status, elapsed, eta)

    @property
    def worker_id(self) -> str | None:
        return (self.status.worker or {}).get("id")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.status.id, "input": self.status.input, "lane": self.status.lane.value,
                "stage": self.status.stage.value if self.status.stage else None, "progress": self.status.progress,
                "attempt": self.status.attempt, "elapsed": round(self.elapsed, 1),
                "eta": None if self.eta is None else round(self.eta, 1)}


@dataclass(frozen=True)
class WorkerView:
    """A worker as an observer sees it: its record, its vouched-for state and the job it runs."""

    record: WorkerRecord
    state: WorkerState
    offline_reason: str | None
    job: RunningJob | None
    heartbeat_age: float
    uptime: float  # how long it has run (live) or ran until its last heartbeat (stopped, offline)

    @property
    def live(self) -> bool:
        return self.state.live

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {"id": r.id, "model": r.model, "lanes": r.lanes, "host": r.host, "pid": r.pid, "device": r.device,
                "state": self.state.value, "live": self.live, "offline_reason": self.offline_reason,
                "exit_reason": r.exit_reason,
                "current_job": self.job.to_json() if self.job else None, "current_batch": r.current_batch,
                "jobs_done": r.jobs_done,
                "jobs_failed": r.jobs_failed, "audio_seconds": round(r.audio_seconds, 3),
                "processing_seconds": round(r.processing_seconds, 3), "started_at": r.started_at,
                "heartbeat_at": r.heartbeat_at, "heartbeat_age": _ceil_tenth(self.heartbeat_age),
                "uptime": round(self.uptime, 1), "details": r.details}


@dataclass(frozen=True)
class Snapshot:
    root: Path
    taken_at: float
    workers: list[WorkerView]  # live ones, then the dead ones shown (all, or only the recently dead)
    hidden: int  # dead workers left out: their last heartbeat is older than the window
    queues: dict[str, int]  # tickets waiting, by lane
    lane_workers: dict[str, int]  # live workers serving each lane
    jobs: dict[str, int]  # jobs by state: queued and running from tickets, the others from statuses
    running: list[RunningJob]
    failures: list[Status]  # the latest failed jobs, newest first
    unserved: dict[str, str]  # a warning by lane: jobs wait there and no live worker serves it


class StatusCache:
    """Job statuses parsed once and kept while their file is unchanged, for a caller that looks again and again.

    A status file is replaced (never edited in place) on every change, so a new (mtime, inode, size)
    means new content; re-reading only those makes a ``top`` frame cost a ``stat`` per job.
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._seen: dict[str, tuple[tuple[int, int, int], Status]] = {}

    def get(self, job_id: str) -> Status | None:
        """The job's status; None when it is gone or unreadable (finished, removed, damaged)."""
        try:
            st = os.stat(self.spool.job_dir(job_id) / STATUS)
        except OSError:
            self._seen.pop(job_id, None)
            return None
        key = (st.st_mtime_ns, st.st_ino, st.st_size)
        cached = self._seen.get(job_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            status = self.spool.load_status(job_id)
        except KlipnoteError:
            return None
        self._seen[job_id] = (key, status)
        return status

    def all(self) -> list[Status]:
        """Every job's status (O(jobs): a stat each, a read for each that changed); forgets removed jobs."""
        ids = self.spool.job_ids()
        for gone in self._seen.keys() - set(ids):
            del self._seen[gone]
        return [status for status in map(self.get, ids) if status is not None]


def running_jobs(spool: Spool, cache: StatusCache, at: float) -> tuple[int, list[RunningJob]]:
    """The claimed tickets' count, and the jobs that hold a claim and say they run, oldest claim first."""
    try:
        names = os.listdir(spool.claimed)
    except FileNotFoundError:
        return 0, []
    tickets = [ticket for ticket in map(Ticket.parse_claimed, names) if ticket is not None]
    found = []
    for ticket in tickets:
        status = cache.get(ticket.job_id)
        if status is not None and status.state is JobState.RUNNING and status.attempt == ticket.attempt:
            found.append(RunningJob.of(status, at))
    return len(tickets), sorted(found, key=lambda job: job.status.started_at or 0.0)


def waiting_and_running(cache: StatusCache, at: float) -> tuple[dict[str, int], int, list[RunningJob]]:
    """Broker mode: Redis holds the queues and the claims, so the statuses say what waits (by lane) and what runs."""
    queues = {lane.value: 0 for lane in Lane}
    found = []
    for status in cache.all():
        if status.state is JobState.QUEUED:
            queues[status.lane.value] += 1
        elif status.state is JobState.RUNNING:
            found.append(RunningJob.of(status, at))
    return queues, len(found), sorted(found, key=lambda job: job.status.started_at or 0.0)


def worker_views(spool: Spool, running: list[RunningJob], at: float) -> list[WorkerView]:
    """Every registered worker, live ones first. A worker's job is the running job that names it: the one its
    record calls current when it runs a shared batch of several."""
    by_worker: dict[str | None, list[RunningJob]] = {}
    for job in running:
        by_worker.setdefault(job.worker_id, []).append(job)
    views = []
    for record in Registry(spool).records():
        state, reason = record.seen(spool.lease_ttl)
        until = at if state.live else record.heartbeat_at
        mine = by_worker.get(record.id, [])
        current = next((j for j in mine if j.status.id == record.current_job), mine[0] if mine else None)
        views.append(WorkerView(record, state, reason, current, max(0.0, at - record.heartbeat_at),
                                max(0.0, until - record.started_at)))
    return sorted(views, key=lambda v: (not v.live, v.record.id))


def finished_jobs(statuses: list[Status], failures: int) -> tuple[dict[str, int], list[Status]]:
    """Finished jobs by state, and the ``failures`` that failed last (newest first)."""
    counts = {state.value: 0 for state in JobState if state.terminal}
    failed: list[Status] = []
    for status in statuses:
        if status.state.terminal:
            counts[status.state.value] += 1
        if status.state is JobState.FAILED:
            failed.append(status)
    failed.sort(key=lambda s: s.finished_at or s.updated_at, reverse=True)
    return counts, failed[:failures]


def snapshot(spool: Spool, cache: StatusCache | None = None, *, jobs: bool = True,
             failures: int = defaults.RECENT_FAILURES,
             dead_window: float | None = defaults.RECENT_DEAD_WORKERS, broker: bool = False) -> Snapshot:
    """The spool now. ``jobs=False`` skips the O(jobs) part (finished jobs, failures): ``workers`` needs none.

    ``broker``: the spool is dispatched by a broker (docs/broker.md), whose queues and claims are not tickets;
    waiting and running jobs are counted from their statuses (an O(jobs) read whatever ``jobs`` says).

    ``dead_window``: show dead workers whose last heartbeat is at most this old (None: every one).
    ``cache``: the statuses of the previous call, to re-read only the changed ones.
    """
    cache = cache or StatusCache(spool)
    at = now()
    if broker:
        queues, claimed, running = waiting_and_running(cache, at)
    else:
        queues = spool.queue_lengths()
        claimed, running = running_jobs(spool, cache, at)
    views = worker_views(spool, running, at)
    shown = [v for v in views if v.live or dead_window is None or v.heartbeat_age <= dead_window]
    counts = lane_workers(v.record for v in views if v.live)
    by_state: dict[str, int] = {}
    failed: list[Status] = []
    if jobs:
        finished, failed = finished_jobs(cache.all(), failures)
        by_state = {JobState.QUEUED.value: sum(queues.values()), JobState.RUNNING.value: claimed, **finished}
    return Snapshot(spool.root, at, shown, len(views) - len(shown), queues, counts, by_state, running, failed,
                    unserved_lanes(queues, counts))


def _ceil_tenth(seconds: float) -> float:
    """Up to the next tenth: an age shown as 3.0 s must never belong to a worker judged offline for
    a heartbeat older than a 3 s lease."""
    return math.ceil(seconds * 10) / 10
