"""How jobs look to people (rich tables, colour only on a terminal) and to scripts (stable JSON).

rich is imported inside the functions that draw, so ``--json`` and ``-q`` never pay for it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from klipnote.job import JobState, Status

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


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    ago = time.time() - ts
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return f"{stamp} ({duration(ago)} ago)" if ago >= 0 else stamp


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


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
