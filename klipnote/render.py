"""How klipnote looks to people (rich tables, colour only on a terminal, plain aligned columns where
output is grepped) and to scripts (stable JSON). Sizes and durations: :mod:`klipnote.humanize`.

rich is imported inside the functions that draw, so ``--json`` and ``-q`` never pay for it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from klipnote.humanize import duration, size, timestamp, when
from klipnote.job import JobState, Status
from klipnote.registry import WorkerRecord, WorkerState

if TYPE_CHECKING:
    from pathlib import Path

    from klipnote.modelstore import Entry
    from klipnote.monitor import RunningJob, Snapshot, WorkerView

STATE_STYLE = {
    JobState.QUEUED: "cyan",
    JobState.RUNNING: "yellow",
    JobState.DONE: "green",
    JobState.FAILED: "red",
    JobState.CANCELED: "magenta",
}


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=not stderr)


def state_text(status: Status) -> str:
    """``running (transcribing 42%)`` and the like: the state and, while running, what it does."""
    if status.state is JobState.RUNNING and status.stage:
        return f"running ({status.stage.value} {status.progress:.0f}%)"
    return status.state.value


def status_detail(status: Status, warning: str | None = None) -> None:
    """One job, every field a person may want, as a two-column grid."""
    from rich.table import Table

    worker = status.worker or {}
    rows = [
        ("id", status.id),
        ("state", f"[{STATE_STYLE[status.state]}]{state_text(status)}[/]"),
        ("message", status.message or "-"),
        ("input", status.input),
        ("lane", status.lane.value),
        ("engine", status.engine or "-"),
        ("routing", status.routing.get("reason", "-") if status.routing else "-"),
        ("attempt", f"{status.attempt} of {status.attempt_limit}"),
        ("worker", f"{worker.get('id')} on {worker.get('host')} (pid {worker.get('pid')})" if worker else "-"),
        ("submitted", when(status.submitted_at)),
        ("started", when(status.started_at)),
        ("finished", when(status.finished_at)),
        ("outputs", ", ".join(status.outputs) or "-"),
    ]
    if status.error:
        rows.insert(3, ("error", f"[red]{status.error}[/]"))
    if warning:
        rows.insert(2, ("warning", f"[yellow]{warning}[/]"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value)
    console().print(grid)


def status_table(statuses: Iterable[Status], title: str | None = None) -> None:
    from rich.table import Table

    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in ("id", "state", "lane", "attempt", "submitted", "input"):
        table.add_column(column, overflow="fold" if column == "input" else "ellipsis", no_wrap=column != "input")
    for status in statuses:
        table.add_row(
            status.id,
            f"[{STATE_STYLE[status.state]}]{state_text(status)}[/]",
            status.lane.value,
            f"{status.attempt}/{status.attempt_limit}",
            time.strftime("%m-%d %H:%M:%S", time.localtime(status.submitted_at)),
            status.input,
        )
    console().print(table)


def error(message: str) -> None:
    """One line on stderr, prefixed so it is clear which program spoke."""
    sys.stderr.write(f"klipnote: {message}\n")


def warn_lines(lines: Sequence[str]) -> None:
    for line in lines:
        error(f"warning: {line}")


# ---------------------------------------------------------------------- monitoring

WORKER_STATE_STYLE = {
    WorkerState.STARTING: "cyan",
    WorkerState.IDLE: "green",
    WorkerState.BUSY: "yellow",
    WorkerState.STOPPING: "magenta",
    WorkerState.STOPPED: "dim",
    WorkerState.FAILED: "red",
    WorkerState.OFFLINE: "red",
}


def device_text(record: WorkerRecord) -> str:
    """``cuda:1 NVIDIA H200 139.8 GiB`` or ``cpu``: where a worker runs, from its record's details."""
    details = record.details
    gpu = f":{details['cuda_visible_devices']}" if details.get("cuda_visible_devices") else ""
    name = f" {details['gpu']}" if details.get("gpu") else ""
    memory = f" {details['gpu_memory_gib']} GiB" if details.get("gpu_memory_gib") else ""
    return f"{record.device}{gpu}{name}{memory}"


def stage_text(status: Status) -> str:
    """``transcribing 42%``: what a claimed job is doing."""
    return f"{status.stage.value if status.stage else 'claimed'} {status.progress:.0f}%"


def workers_table(views: Sequence[WorkerView], title: str | None = None) -> Any:
    """One row per worker; a dead one says why (offline: how it was seen dead; failed: its error), not its job."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title) if title else None, box=None, header_style="bold", pad_edge=False)
    for column in ("worker", "model", "state", "job", "progress", "done/failed", "uptime", "heartbeat", "host:pid",
                   "device"):
        table.add_column(column, overflow="fold", no_wrap=column in ("worker", "job"), min_width=len(column))
    for view in views:
        record, job = view.record, view.job
        state = f"[{WORKER_STATE_STYLE[view.state]}]{view.state.value}[/]"
        doing = view.offline_reason or record.exit_reason or (stage_text(job.status) if job else "-")
        more = f" +{len(record.current_batch) - 1}" if job and len(record.current_batch) > 1 else ""
        table.add_row(escape(record.id), escape(record.model), state, f"{job.status.id}{more}" if job else "-",
                      escape(doing),
                      f"{record.jobs_done}/{record.jobs_failed}", duration(view.uptime),
                      f"{duration(view.heartbeat_age)} ago", escape(f"{record.host}:{record.pid}"),
                      escape(device_text(record)))
    return table


def running_table(jobs: Sequence[RunningJob]) -> Any:
    """Running jobs with a bar for their stage's progress and an estimate of the time left."""
    from rich.markup import escape
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    table = Table(title="running", title_justify="left", box=None, header_style="bold", pad_edge=False)
    for column in ("job", "worker", "stage", "progress", "elapsed", "eta", "input"):
        table.add_column(column, overflow="fold", no_wrap=column != "input")
    for job in jobs:
        status = job.status
        table.add_row(status.id, escape(job.worker_id or "-"), stage_text(status),
                      ProgressBar(total=100.0, completed=status.progress, width=12), duration(job.elapsed),
                      duration(job.eta) if job.eta is not None else "-", escape(status.input))
    return table


def failures_table(statuses: Sequence[Status]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="recent failures", title_justify="left", box=None, header_style="bold", pad_edge=False)
    for column in ("job", "finished", "input", "error"):
        table.add_column(column, overflow="fold", no_wrap=column in ("job", "finished"))
    for status in statuses:
        table.add_row(status.id, when(status.finished_at), escape(status.input),
                      f"[red]{escape(status.error or status.message)}[/]")
    return table


def top_frame(snap: Snapshot) -> Any:
    """One frame of ``klipnote top``: queues, workers, running jobs, latest failures, lanes nobody serves."""
    from rich.console import Group
    from rich.text import Text

    queues = ", ".join(f"{lane} {count}" for lane, count in snap.queues.items())
    jobs = ", ".join(f"{state} {count}" for state, count in snap.jobs.items() if count) or "none"
    live = sum(1 for view in snap.workers if view.live)
    at = snap.taken_at
    parts: list[Any] = [
        Text.assemble(("klipnote top", "bold"), f"  {snap.root}  {time.strftime('%H:%M:%S', time.localtime(at))}"),
        Text(f"waiting: {queues}   jobs: {jobs}   workers: {live} live of {len(snap.workers)}"
             + (f" ({snap.hidden} long dead not shown)" if snap.hidden else "")),
    ]
    parts.extend(Text(f"warning: {line}", style="yellow") for line in snap.unserved.values())
    parts.append(Text(""))
    parts.append(workers_table(snap.workers) if snap.workers else Text("no workers have registered"))
    if snap.running:
        parts.extend([Text(""), running_table(snap.running)])
    if snap.failures:
        parts.extend([Text(""), failures_table(snap.failures)])
    return Group(*parts)


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain columns, two spaces apart, never wrapped (for grep and cut); the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(f"{cell:<{w}}" for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
            for row in rows]


def models_table(entries: Sequence[Entry]) -> None:
    """Aligned columns, and each model's folder on a line of its own below it: a cache path is longer
    than an 80-column terminal leaves beside the other columns, and is never cut."""
    rows = [("name", "source", "revision", "size", "files", "state")]
    for e in entries:
        state = e.integrity.value + (f" {timestamp(e.verified_at)}" if e.verified_at else "")
        rows.append((e.name, e.source.value, (e.commit or "-")[:12], size(e.size), str(e.files), state))
    lines = []
    for i, line in enumerate(aligned(rows)):
        lines.append(line)
        if i:
            lines.append(f"  {entries[i - 1].folder}")
    sys.stdout.write("\n".join(lines) + "\n")


def settings_table(path: Path, described: dict[str, dict[str, Any]]) -> None:
    """Each setting, its value as a config file spells it, and where it came from; the file read first."""
    rows = [("setting", "value", "source")]
    for name, info in described.items():
        value = "(not set)" if info["value"] is None else _config_spelling(info["value"])
        rows.append((name, value, info["source"] + (f" {info['origin']}" if info["origin"] else "")))
    state = "" if path.exists() else "  (not found: nothing read from a file)"
    sys.stdout.write("\n".join([f"config file: {path}{state}", "", *aligned(rows)]) + "\n")


def _config_spelling(value: object) -> str:
    """Values as a config file spells them: ``true``, not Python's ``True``."""
    return str(value).lower() if isinstance(value, bool) else str(value)
