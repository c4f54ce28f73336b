"""What a spool is doing right now, gathered once for ``workers``, ``top`` and ``metrics``.

Everything comes from the spool's plain files, so any host that mounts the spool can watch it:

- workers from their registry records (``workers/*.json``), each judged live or not by
  :meth:`~klipnote.registry.WorkerRecord.seen`: its heartbeat against the lease and, on this host,
  whether its process still exists;
- running jobs from the tickets in ``claimed/`` (one status read each), so ``workers`` stays cheap
  however many jobs the spool keeps;
- queue lengths from the tickets in ``queue/<lane>/``;
- jobs by state and the latest failures from every job's status (one read per job: the price
  ``list`` pays too; ``gc`` keeps it bounded).

A running job's ETA is an estimate from its transcription percent and the time since its claim:
transcription dominates a job, so its percent stands for the whole. Other stages report no
percent worth extrapolating (or one of a stage that started late), so they have no ETA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klipnote import defaults
from klipnote.errors import KlipnoteError
from klipnote.job import JobState, Lane, Stage, Status, now
from klipnote.registry import Registry, WorkerRecord, WorkerState, unserved_lanes
from klipnote.spool import Spool, Ticket


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
                "current_job": self.job.to_json() if self.job else None, "jobs_done": r.jobs_done,
                "jobs_failed": r.jobs_failed, "audio_seconds": round(r.audio_seconds, 3),
                "processing_seconds": round(r.processing_seconds, 3), "started_at": r.started_at,
                "heartbeat_at": r.heartbeat_at, "heartbeat_age": round(self.heartbeat_age, 1),
                "uptime": round(self.uptime, 1), "details": r.details}


@dataclass(frozen=True)
class Snapshot:
    root: Path
    taken_at: float
    workers: list[WorkerView]
    queues: dict[str, int]  # tickets waiting, by lane
    lane_workers: dict[str, int]  # live workers serving each lane
    jobs: dict[str, int]  # jobs by state
    running: list[RunningJob]
    failures: list[Status]  # the latest failed jobs, newest first
    unserved: dict[str, str]  # a warning by lane: jobs wait there and no live worker serves it


def running_jobs(spool: Spool, at: float) -> list[RunningJob]:
    """The jobs that hold a claim and say they run, oldest claim first."""
    try:
        names = os.listdir(spool.claimed)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        ticket = Ticket.parse_claimed(name)
        if ticket is None:
            continue
        try:
            status = spool.load_status(ticket.job_id)
        except KlipnoteError:
            continue  # finished, gone or unreadable since the listing: not running
        if status.state is JobState.RUNNING and status.attempt == ticket.attempt:
            found.append(RunningJob.of(status, at))
    return sorted(found, key=lambda job: job.status.started_at or 0.0)


def worker_views(spool: Spool, running: list[RunningJob], at: float) -> list[WorkerView]:
    """Every registered worker, live ones first. A worker's job is the running job that names it."""
    by_worker = {job.worker_id: job for job in running}
    views = []
    for record in Registry(spool).records():
        state, reason = record.seen(spool.lease_ttl)
        until = at if state.live else record.heartbeat_at
        views.append(WorkerView(record, state, reason, by_worker.get(record.id), max(0.0, at - record.heartbeat_at),
                                max(0.0, until - record.started_at)))
    return sorted(views, key=lambda v: (not v.live, v.record.id))


def live_lanes(workers: list[WorkerView]) -> set[str]:
    return {lane for view in workers if view.live for lane in view.record.lanes}


def scan_jobs(spool: Spool, failures: int) -> tuple[dict[str, int], list[Status]]:
    """Jobs by state, and the ``failures`` that failed last (newest first)."""
    counts = {state.value: 0 for state in JobState}
    failed: list[Status] = []
    for job_id in spool.job_ids():
        try:
            status = spool.load_status(job_id)
        except KlipnoteError:
            continue
        counts[status.state.value] += 1
        if status.state is JobState.FAILED:
            failed.append(status)
    failed.sort(key=lambda s: s.finished_at or s.updated_at, reverse=True)
    return counts, failed[:failures]


def snapshot(spool: Spool, *, failures: int = defaults.RECENT_FAILURES) -> Snapshot:
    at = now()
    running = running_jobs(spool, at)
    workers = worker_views(spool, running, at)
    queues = spool.queue_lengths()
    jobs, failed = scan_jobs(spool, failures)
    lane_workers = {lane.value: sum(1 for v in workers if v.live and lane.value in v.record.lanes) for lane in Lane}
    return Snapshot(spool.root, at, workers, queues, lane_workers, jobs, running, failed,
                    unserved_lanes(queues, live_lanes(workers)))
