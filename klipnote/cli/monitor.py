"""Commands that watch the spool: workers, top, metrics.

Each takes a :func:`klipnote.monitor.snapshot` (or part of one) after reaping dead claims, as
``list`` and ``status`` do, so that a dead worker's job shows as queued again, not as running.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from klipnote import defaults, render
from klipnote.cli.app import JsonFlag, app, session_of
from klipnote.config import parse_duration
from klipnote.errors import UsageError
from klipnote.job import now


@app.command()
def workers(
    ctx: typer.Context,
    prune: Annotated[bool, typer.Option(
        "--prune", help="First forget workers that stopped or went offline longer ago than --older-than.")] = False,
    older_than: Annotated[Optional[str], typer.Option(
        metavar="AGE", help=f"With --prune: how long a dead worker stays listed (default {defaults.GC_OLDER_THAN}; "
        "30d, 12h, 90m).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List every registered worker, live or dead, with its state and current job.

    Live states: starting, idle, busy, stopping. Dead: stopped (it exited) or offline (its heartbeat is older
    than the lease, or its process is gone).
    Also shown: job progress, jobs done and failed, uptime, heartbeat age, host, pid, device.
    Lanes whose queued jobs no live worker serves are warned about.
    """
    from klipnote.monitor import live_lanes, running_jobs, worker_views
    from klipnote.registry import Registry, unserved_lanes

    if older_than is not None and not prune:
        raise UsageError("--older-than only applies with --prune")
    try:
        age = parse_duration(older_than or defaults.GC_OLDER_THAN)
    except ValueError as exc:
        raise UsageError(f"--older-than {older_than!r}: {exc}") from None
    spool = session_of(ctx).spool()
    spool.reap()
    pruned = Registry(spool).prune(age) if prune else []
    at = now()
    views = worker_views(spool, running_jobs(spool, at), at)
    warnings = unserved_lanes(spool.queue_lengths(), live_lanes(views))
    if json_out:
        data = {"workers": [view.to_json() for view in views], "unserved": warnings}
        render.print_json({**data, "pruned": pruned} if prune else data)
        return
    if prune:
        render.error(f"pruned {len(pruned)} worker record(s)" + (f": {', '.join(pruned)}" if pruned else ""))
    if views:
        live = sum(1 for view in views if view.live)
        render.console().print(render.workers_table(views, title=f"{live} live of {len(views)} worker(s) in "
                                                                 f"{spool.root}"))
    else:
        render.console().print(f"no workers have registered in {spool.root}", markup=False)
    render.warn_lines(list(warnings.values()))


@app.command()
def top(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(
        min=0.1, metavar="SECONDS", help="Time between refreshes.")] = defaults.TOP_REFRESH_INTERVAL,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (for scripts and tests).")] = False,
) -> None:
    """A live dashboard of queues, workers, running jobs and recent failures.

    Queue lengths per lane, every worker, running jobs with progress bars and an ETA, the latest failures,
    and lanes whose queued jobs no live worker serves. Ctrl-C quits (exit 0).
    """
    from klipnote.monitor import snapshot

    spool = session_of(ctx).spool()

    def frame() -> object:
        spool.reap()
        return render.top_frame(snapshot(spool))

    if once:
        render.console().print(frame())
        return
    from rich.live import Live

    try:
        with Live(frame(), console=render.console(), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass  # the way out of a dashboard, not an error


@app.command()
def metrics(
    ctx: typer.Context,
    textfile: Annotated[Optional[Path], typer.Option(
        "--textfile", metavar="PATH", help="Replace this file atomically instead of printing, for node_exporter's "
        "textfile collector (its folder, a name ending in .prom).")] = None,
) -> None:
    """Print the spool's metrics in the Prometheus text format, or write them for node_exporter.

    Queue lengths per lane, jobs by state, worker liveness, jobs, audio and processing seconds per worker,
    and the real-time factor per model.
    """
    from klipnote import metrics as exposition
    from klipnote.monitor import snapshot

    if textfile is not None and (not textfile.name or textfile.is_dir()):
        raise UsageError(f"--textfile {str(textfile)!r} is a folder: give a file path, such as "
                         "/var/lib/node_exporter/textfile/klipnote.prom")
    spool = session_of(ctx).spool()
    spool.reap()
    text = exposition.exposition(exposition.collect(snapshot(spool, failures=0)))
    if textfile is None:
        typer.echo(text, nl=False)
        return
    if textfile.suffix != ".prom":
        render.error(f"warning: node_exporter's textfile collector reads only *.prom files, not {textfile.name}")
    exposition.write_textfile(textfile, text)
