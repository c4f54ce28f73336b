"""Commands that watch the spool: workers, top, metrics.

Each takes a :func:`klipnote.monitor.snapshot` (``workers`` without its O(jobs) part) after reaping dead claims, as
``list`` and ``status`` do, so that a dead worker's job shows as queued again, not as running.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from klipnote import defaults, recovery, render
from klipnote.cli.app import JsonFlag, app, session_of
from klipnote.errors import UsageError
from klipnote.humanize import duration


@app.command()
def workers(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option(
        "--all", help="Also list workers dead for longer than the recent window (every record until `klipnote gc` "
        "removes it).")] = False,
    json_out: JsonFlag = False,
) -> None:
    """List live workers and recently dead ones (see --all), with their state and current job.

    Live states: starting, idle, busy, stopping. Dead: stopped (it exited), failed (an error ended it, e.g. its
    model would not load; the error is shown) or offline (its heartbeat is older than the lease, or its process
    is gone). Also shown: job progress, jobs done and failed, uptime, heartbeat age, host, pid, device.
    Lanes whose queued jobs no live worker serves are warned about. `klipnote gc` forgets dead workers with
    the jobs' retention.
    """
    from klipnote.monitor import snapshot

    session = session_of(ctx)
    spool = session.spool()
    recovery.reap(spool)
    snap = snapshot(spool, jobs=False, dead_window=None if show_all else defaults.RECENT_DEAD_WORKERS,
                    broker=bool(session.settings.broker))
    if json_out:
        render.print_json({"workers": [view.to_json() for view in snap.workers], "hidden": snap.hidden,
                           "unserved": snap.unserved})
        return
    if snap.workers:
        live = sum(1 for view in snap.workers if view.live)
        render.console().print(render.workers_table(snap.workers, title=f"{live} live of {len(snap.workers)} "
                                                                        f"worker(s) in {spool.root}"))
    else:
        render.console().print(f"no workers have registered in {spool.root}", markup=False)
    if snap.hidden:
        window = duration(defaults.RECENT_DEAD_WORKERS)
        render.error(f"{snap.hidden} worker(s) dead for over {window} not shown: `klipnote workers --all` lists them")
    render.warn_lines(list(snap.unserved.values()))


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
    from klipnote.monitor import StatusCache, snapshot

    session = session_of(ctx)
    spool = session.spool()
    cache = StatusCache(spool)  # frames after the first re-read only the statuses that changed

    def frame() -> Any:
        recovery.reap(spool)
        return render.top_frame(snapshot(spool, cache, broker=bool(session.settings.broker)))

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

    Queue lengths per lane, jobs by state (this reads every job's status once), workers by state, worker
    liveness, jobs, audio and processing seconds per worker, and the real-time factor per model. Workers dead
    for longer than `klipnote workers` shows them are left out, so that restarts do not grow the series.
    """
    from klipnote import metrics as exposition
    from klipnote.monitor import snapshot

    if textfile is not None and (not textfile.name or textfile.is_dir()):
        raise UsageError(f"--textfile {str(textfile)!r} is a folder: give a file path, such as "
                         "/var/lib/node_exporter/textfile/klipnote.prom")
    session = session_of(ctx)
    spool = session.spool()
    recovery.reap(spool)
    text = exposition.exposition(exposition.collect(snapshot(spool, failures=0, broker=bool(session.settings.broker))))
    if textfile is None:
        typer.echo(text, nl=False)
        return
    if textfile.suffix != ".prom":
        render.error(f"warning: node_exporter's textfile collector reads only *.prom files, not {textfile.name}")
    exposition.write_textfile(textfile, text)
