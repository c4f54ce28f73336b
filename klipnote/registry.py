"""Workers announce themselves in ``spool/workers/<id>.json`` and rewrite it as their heartbeat.

Anyone can list them and tell who is alive: a record is live while its heartbeat is younger than
the lease TTL and, on this host, while its process still exists. A worker that exits says how:
``stopped`` (cleanly) or ``failed`` (an error ended it, e.g. its model would not load, with the
error as ``exit_reason``); one that dies cannot, so observers call it ``offline`` and say why.
Records outlive their workers (a dead worker is worth seeing) until :meth:`Registry.prune`
(``klipnote gc``, with the jobs' retention).

A record is read only if every field has its declared type (:mod:`klipnote.records`) and
its pid is a process id: a file edited by hand or written by another version is skipped, with one
warning per file and process, and never crashes a command or a worker's routing.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from klipnote.errors import UsageError
from klipnote.fsio import atomic_write_json, read_json
from klipnote.job import JobState, Lane, Status, now
from klipnote.records import UNREADABLE, from_json
from klipnote.spool import HOSTNAME, Spool

log = logging.getLogger("klipnote.registry")
#: Records already warned about in this process: a command (or a ``top`` that reads every frame) says it once.
_reported: set[Path] = set()


class WorkerState(str, Enum):
    STARTING = "starting"  # loading its model
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"  # exited cleanly
    FAILED = "failed"  # exited on an error (its model would not load...): the record's exit_reason says which
    OFFLINE = "offline"  # never written by a worker: what observers call one that died or froze

    @property
    def live(self) -> bool:
        return self not in (WorkerState.STOPPED, WorkerState.FAILED, WorkerState.OFFLINE)


@dataclass
class WorkerRecord:
    id: str
    model: str
    lanes: list[str]
    host: str
    pid: int
    device: str
    started_at: float
    heartbeat_at: float = 0.0
    state: WorkerState = WorkerState.STARTING
    current_job: str | None = None
    current_batch: list[str] = field(default_factory=list)  # every job of the shared batch it runs
    jobs_done: int = 0
    jobs_failed: int = 0
    audio_seconds: float = 0.0  # audio of the jobs done, summed: with processing_seconds, the real-time factor
    processing_seconds: float = 0.0  # their processing time (decode to written outputs), summed
    details: dict[str, Any] = field(default_factory=dict)  # versions, GPU name and memory, model
    exit_reason: str | None = None  # why a failed worker exited

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerRecord:
        """The record in ``data``; TypeError or ValueError when it is not one (a wrong type, a pid <= 0)."""
        record = from_json(cls, data, state=WorkerState(data.get("state", "idle")))
        if record.pid <= 0:  # os.kill(0 or -1, 0) signals a group and succeeds: such a worker would live forever
            raise ValueError(f"pid {record.pid} is not a process id")
        return record

    def seen(self, lease_ttl: float) -> tuple[WorkerState, str | None]:
        """The state an observer can vouch for, and why a worker it calls offline is thought dead."""
        if self.state in (WorkerState.STOPPED, WorkerState.FAILED):
            return self.state, None
        if self.host == HOSTNAME:  # the surer sign, where it can be had
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return WorkerState.OFFLINE, f"its process {self.pid} on this host is gone"
            except PermissionError:
                pass  # alive, owned by another user
        age = now() - self.heartbeat_at
        if age > lease_ttl:
            return WorkerState.OFFLINE, f"no heartbeat for {age:.0f} s (lease {lease_ttl:.0f} s)"
        return self.state, None

    def alive(self, lease_ttl: float) -> bool:
        return self.seen(lease_ttl)[0].live


def worker_id(model: str, name: str | None = None) -> str:
    """A readable id unique on this host: ``whisperx-gpubox-4242``, or the name given."""
    raw = name or f"{model}-{HOSTNAME}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", raw)[:100]


class Registry:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def write(self, record: WorkerRecord) -> None:
        record.heartbeat_at = now()
        atomic_write_json(self.spool.workers / f"{record.id}.json", record.to_dict(), self.spool.file_mode)

    def _read(self, path: Path) -> WorkerRecord | None:
        """The record in ``path``; None when it is gone or, with a warning, when it is not a record."""
        try:
            return WorkerRecord.from_dict(read_json(path))
        except FileNotFoundError:
            return None  # removed (gc) since the listing
        except UNREADABLE as exc:
            if path not in _reported:
                _reported.add(path)
                log.warning("warning: skipping the worker record %s: %s", path, exc)
            return None

    def _entries(self) -> list[tuple[Path, WorkerRecord]]:
        found = []
        for path in sorted(self.spool.workers.glob("*.json")):
            record = self._read(path)
            if record is not None:
                found.append((path, record))
        return found

    def records(self) -> list[WorkerRecord]:
        return [record for _, record in self._entries()]

    def prune(self, older_than: float, *, dry_run: bool = False) -> list[str]:
        """Forget workers that stopped or died over ``older_than`` seconds ago; returns their ids.

        Every restart under the default id (model-host-pid) leaves a record, so they pile up; a
        dead worker stays visible for the retention so that its death can be noticed first.
        """
        cutoff = now() - older_than
        removed = []
        for path, record in self._entries():
            if record.heartbeat_at < cutoff and not record.alive(self.spool.lease_ttl):
                removed.append(record.id)
                if not dry_run:
                    with self.spool.io(f"removing worker record {path.name}"):
                        path.unlink(missing_ok=True)
        return removed

    def check_name_free(self, worker_id: str) -> None:
        """UsageError when a live worker other than this process holds ``worker_id``.

        Two live workers under one id would overwrite each other's record, each hiding the other.
        """
        holder = self._read(self.spool.workers / f"{worker_id}.json")
        if holder is None or (holder.host, holder.pid) == (HOSTNAME, os.getpid()):
            return
        if holder.alive(self.spool.lease_ttl):
            raise UsageError(f"the worker name {worker_id} is held by a live worker (pid {holder.pid} on "
                             f"{holder.host}): give another --name, or stop that worker first")

    def live(self) -> list[WorkerRecord]:
        return [r for r in self.records() if r.alive(self.spool.lease_ttl)]

    def lane_workers(self) -> dict[str, int]:
        return lane_workers(self.live())

    def live_lanes(self) -> set[str]:
        return {lane for lane, count in self.lane_workers().items() if count}

    def unserved(self, statuses: Iterable[Status]) -> dict[str, str]:
        """A warning for each queued job whose lane no live worker serves: it would wait silently."""
        waiting = [s for s in statuses if s.state is JobState.QUEUED]
        if not waiting:
            return {}
        live = self.live_lanes()
        return {s.id: unserved_warning(s.lane) for s in waiting if s.lane.value not in live}

    def unserved_lanes(self) -> dict[str, str]:
        """A warning for each lane whose queue holds tickets that no live worker serves, whatever a command shows."""
        return unserved_lanes(self.spool.queue_lengths(), self.lane_workers())


def lane_workers(live: Iterable[WorkerRecord]) -> dict[str, int]:
    """How many of the ``live`` workers serve each lane: the one count behind live lanes and unserved warnings."""
    counts = {lane.value: 0 for lane in Lane}
    for record in live:
        for lane in record.lanes:
            if lane in counts:
                counts[lane] += 1
    return counts


def unserved_lanes(queue_lengths: dict[str, int], lane_counts: dict[str, int]) -> dict[str, str]:
    """A warning for each lane with queued jobs (``queue_lengths`` by lane) that no live worker serves."""
    return {lane: f"{unserved_warning(Lane(lane))} ({count} queued job(s))"
            for lane, count in queue_lengths.items() if count and not lane_counts.get(lane)}


def unserved_warning(lane: Lane) -> str:
    kind = {Lane.BELLE2: "belle2", Lane.WHISPERX: "whisperx", Lane.AUTO: "whisperx"}
    return f"no live worker serves lane {lane.value}: start one with `klipnote worker --model {kind[lane]}`"
