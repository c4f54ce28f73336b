"""Workers announce themselves in ``spool/workers/<id>.json`` and rewrite it as their heartbeat.

Anyone can list them and tell who is alive: a record is live while its heartbeat is younger than
the lease TTL and, on this host, while its process still exists.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from klipnote.fsio import atomic_write_json, read_json
from klipnote.job import JobState, Lane, Status, now
from klipnote.spool import HOSTNAME, Spool


class WorkerState(str, Enum):
    STARTING = "starting"  # loading its model
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"


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
    jobs_done: int = 0
    jobs_failed: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # versions, GPU name and memory, model

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["state"] = WorkerState(data.get("state", "idle"))
        return cls(**known)

    def alive(self, lease_ttl: float) -> bool:
        if self.state is WorkerState.STOPPED or now() - self.heartbeat_at > lease_ttl:
            return False
        if self.host == HOSTNAME:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True  # alive, owned by another user
        return True


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

    def records(self) -> list[WorkerRecord]:
        found = []
        for path in sorted(self.spool.workers.glob("*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                found.append(WorkerRecord.from_dict(read_json(path)))
        return found

    def live(self) -> list[WorkerRecord]:
        return [r for r in self.records() if r.alive(self.spool.lease_ttl)]

    def live_lanes(self) -> set[str]:
        return {lane for r in self.live() for lane in r.lanes}

    def unserved(self, statuses: Iterable[Status]) -> dict[str, str]:
        """A warning for each queued job whose lane no live worker serves: it would wait silently."""
        waiting = [s for s in statuses if s.state is JobState.QUEUED]
        if not waiting:
            return {}
        live = self.live_lanes()
        kind = {Lane.BELLE2: "belle2", Lane.WHISPERX: "whisperx", Lane.AUTO: "whisperx"}
        return {s.id: f"no live worker serves lane {s.lane.value}: start one with "
                      f"`klipnote worker --model {kind[s.lane]}`"
                for s in waiting if s.lane.value not in live}
