"""Commands about workers: running one."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from klipnote import defaults
from klipnote.cli.app import app, session_of
from klipnote.config import Device
from klipnote.errors import UsageError
from klipnote.job import Model


@app.command()
def worker(
    ctx: typer.Context,
    model: Annotated[Model, typer.Option(
        help="Which engine this worker runs: whisperx (serves lanes whisperx and auto) or belle2.")],
    device: Annotated[Optional[Device], typer.Option(
        help="Default: WHISPER_DEVICE, else auto (cuda when torch sees a GPU).")] = None,
    gpu: Annotated[Optional[int], typer.Option(min=0, help="Use only this GPU, numbered as nvidia-smi shows "
        "(sets CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER=PCI_BUS_ID).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help="Audio windows decoded together; halved automatically on out-of-memory. Default: "
        "KLIPNOTE_BATCH_SIZE, else 16 (32 for belle2 on a GPU).")] = None,
    batch_jobs: Annotated[Optional[int], typer.Option(
        min=1, help="Waiting jobs claimed at once to share batches (a cron folder of short files fills them); "
        "1 runs one job at a time. Default: KLIPNOTE_BATCH_JOBS, else 16.")] = None,
    batch_audio: Annotated[Optional[str], typer.Option(
        metavar="DURATION", help="Claim no more jobs for one shared batch once they hold this much audio "
        "(480, 8m). Default: KLIPNOTE_BATCH_AUDIO, else 8m.")] = None,
    whisper_model: Annotated[Optional[str], typer.Option(
        help="whisperx model: a name, a local CTranslate2 folder, or base-offline. Default: WHISPER_MODEL.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one job, then exit.")] = False,
    drain: Annotated[bool, typer.Option("--drain", help="Exit 0 once the lanes are empty (for cron).")] = False,
    max_jobs: Annotated[Optional[int], typer.Option(min=1, help="Exit after this many jobs.")] = None,
    idle_exit: Annotated[Optional[float], typer.Option(
        min=0, metavar="SECONDS", help="Exit after this long without a job.")] = None,
    grace: Annotated[float, typer.Option(
        min=0, metavar="SECONDS", help="On SIGTERM/SIGINT, let the current job run this long before handing "
        "it back to the queue.")] = defaults.STOP_GRACE,
    name: Annotated[Optional[str], typer.Option(
        help="Worker id (default: MODEL-HOST-PID). A name a live worker holds is refused (exit 2); a service "
        "that restarts, or a cron drain, should pass a fixed one so that its restarts share one record.")] = None,
) -> None:
    """Run a transcription worker: load the model once, then take jobs from the spool.

    When several jobs wait, it claims up to --batch-jobs of them and decodes their audio windows in
    shared batches; each job still commits, fails or is canceled on its own.
    """
    from klipnote import engines, envcheck, modelstore
    from klipnote.enhance import ALL_STEPS
    from klipnote.registry import Registry, worker_id
    from klipnote.worker import Worker, WorkerOptions, setup_logging

    if model is Model.AUTO:
        raise UsageError("a worker runs one engine: --model whisperx or --model belle2")
    session = session_of(ctx, device=device, whisper_model=whisper_model, batch_size=batch_size,
                         batch_jobs=batch_jobs, batch_audio=batch_audio)
    settings = session.settings
    spool = session.spool(create=True)
    identity = worker_id(model.value, name)
    Registry(spool).check_name_free(identity)  # before torch loads: a taken name fails in a second (exit 2)
    setup_logging()
    ready_line_out, sys.stdout = sys.stdout, sys.stderr  # stdout carries the ready line only; libraries print
    envcheck.select_gpu(gpu)
    resolved, details = envcheck.check(model, settings.device)
    modelstore.refuse_damaged(model.value, settings)  # the last models verify found it damaged: exit 1, the fix
    engine = engines.create(model, settings, device=resolved)
    options = WorkerOptions(lanes=engine.lanes, once=once, drain=drain, max_jobs=max_jobs, idle_exit=idle_exit,
                            grace=grace, device=resolved, details=details,
                            enhance=ALL_STEPS if settings.enable_optimization else (),
                            split_by=settings.optimizer_engine, zh_script=settings.zh_script,
                            batch_jobs=settings.batch_jobs, batch_audio=settings.batch_audio)
    if settings.broker:  # several hosts: a Celery worker on its lanes' queues (docs/broker.md)
        from klipnote.broker.worker import BrokerWorker

        raise typer.Exit(BrokerWorker(spool, engine, options, identity, settings, out=ready_line_out).run())
    raise typer.Exit(Worker(spool, engine, options, identity, out=ready_line_out).run())
