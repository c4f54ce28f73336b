"""Commands of broker mode (several hosts, Celery on Redis): dispatch, flower."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from klipnote import defaults, render
from klipnote.cli.app import JsonFlag, app, session_of
from klipnote.config import Settings, mask_url
from klipnote.errors import BrokerUnavailable, UsageError


def broker_of(settings: Settings) -> str:
    if not settings.broker:
        raise UsageError("no broker is set: set KLIPNOTE_BROKER (or broker in the config file) to a redis:// URL; "
                         "without one the spool needs no dispatch")
    return settings.broker


@app.command()
def dispatch(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Send the jobs waiting in the spool to the broker, and again those it lost (Redis restarted without
    persistence, a worker's lease ran out). Workers do this too, at start and every half lease.

    Exit 0 when nothing is left pending, 1 when the broker cannot be reached (the jobs stay in the spool).
    """
    from klipnote.broker.actions import dispatch as run_dispatch

    session = session_of(ctx)
    broker_of(session.settings)
    report = run_dispatch(session.spool(), session.settings, reconcile=True)
    if json_out:
        render.print_json({"sent": report.sent, "resent": report.resent, "promoted": report.promoted,
                           "pending": report.pending, "error": report.error})
    else:
        render.console().print(f"sent {len(report.sent)}, sent again {len(report.resent)}, "
                               f"commits finished {len(report.promoted)}, pending {report.pending}")
    if report.error:
        raise BrokerUnavailable(report.error)


@app.command()
def flower(
    ctx: typer.Context,
    address: Annotated[str, typer.Option(help="Address Flower listens on; keep it private (docs/broker.md).")]
    = defaults.FLOWER_ADDRESS,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port Flower listens on.")] = defaults.FLOWER_PORT,
    basic_auth: Annotated[Optional[str], typer.Option(
        metavar="USER:PASSWORD", help="Ask for this login (default: FLOWER_BASIC_AUTH from the environment).")]
    = None,
) -> None:
    """Run Flower, Celery's monitor, on the broker: workers, queues (whisperx, auto, belle2) and tasks.

    The same as `celery --broker URL flower --address ADDRESS --port PORT`.
    """
    from klipnote.broker.app import connection_url

    url = broker_of(session_of(ctx).settings)
    if basic_auth:
        os.environ["FLOWER_BASIC_AUTH"] = basic_auth  # not in argv, where `ps` shows it to every user
    render.error(f"flower on http://{address}:{port} for the broker {mask_url(url)}")
    # not in argv either (it may hold the Redis password); rediss:// asks for the server's certificate to be checked
    os.environ["CELERY_BROKER_URL"] = connection_url(url)
    os.execv(sys.executable, [sys.executable, "-m", "celery", "flower", f"--address={address}", f"--port={port}"])
