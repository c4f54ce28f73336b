"""Commands on jobs: submit, status, list, result, wait, cancel, retry, gc."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from klipnote import actions, defaults, recovery, render, retention
from klipnote.cli.app import DOCS, EXIT_TIMEOUT, IdsArg, JsonFlag, app, session_of
from klipnote.config import parse_duration
from klipnote.errors import KlipnoteError, UsageError
from klipnote.job import (
    ALWAYS_WRITTEN,
    JobRequest,
    JobState,
    Lane,
    Model,
    OutputFormat,
    Status,
    Task,
    ZhScript,
    output_name,
)
from klipnote.registry import Registry
from klipnote.spool import Spool


@app.command()
def submit(
    ctx: typer.Context,
    files: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="FILE...",
            help="Audio or video files; folders with --recursive; - reads paths from "
            "standard input, one a line. Put -- before names that start with a dash.",
        ),
    ] = None,
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive",
            "-r",
            help="Submit every audio or video file under the folders given (found by content, not by extension).",
        ),
    ] = False,
    model: Annotated[
        Optional[Model],
        typer.Option(
            help="Engine: belle2 (Mandarin), whisperx (multi-language), or auto to route by language. "
            "Default: DEFAULT_TRANSCRIPTION_MODEL, else auto."
        ),
    ] = None,
    language: Annotated[
        Optional[str], typer.Option("--language", "-l", help="Language hint such as en, de or zh.")
    ] = None,
    formats: Annotated[
        Optional[list[OutputFormat]],
        typer.Option("--format", "-f", help="Extra output format (repeatable; html: a review page to read and correct "
                     "against the recording); srt and json are always written."),
    ] = None,
    output_dir: Annotated[
        Optional[Path],
        typer.Option("--output-dir", "-o", metavar="DIR", help="Also copy the outputs into this folder."),
    ] = None,
    next_to_input: Annotated[
        bool,
        typer.Option("--next-to-input", help="Also copy the outputs beside each input file (cron folder batches)."),
    ] = False,
    priority: Annotated[
        int,
        typer.Option(
            min=defaults.PRIORITY_MIN,
            max=defaults.PRIORITY_MAX,
            help="Higher runs first; jobs of equal priority run oldest first.",
        ),
    ] = defaults.PRIORITY_DEFAULT,
    diarize: Annotated[bool, typer.Option(
        "--diarize", help=f"Label speakers (whisperx; needs a diarization model: {DOCS['worker']}).")] = False,
    speakers: Annotated[Optional[int], typer.Option(
        "--speakers", metavar="N", help="How many people speak (a hint to diarization; implies --diarize). "
        "Default: the speakers setting.")] = None,
    min_speakers: Annotated[Optional[int], typer.Option(
        "--min-speakers", metavar="N", help="At least this many speak (implies --diarize).")] = None,
    max_speakers: Annotated[Optional[int], typer.Option(
        "--max-speakers", metavar="N", help="At most this many speak (implies --diarize).")] = None,
    task: Annotated[Optional[Task], typer.Option(
        "--task", help="transcribe (the language spoken) or translate (into English; whisperx only). "
        "Default: the task setting, else transcribe.")] = None,
    prompt: Annotated[Optional[str], typer.Option(
        "--prompt", metavar="TEXT", help="Text the model reads before the speech: spelling of names and jargon, "
        "style, punctuation (cut to what the model takes). Default: the prompt or prompt_file setting.")] = None,
    prompt_file: Annotated[Optional[str], typer.Option(  # str: our own one-line error for an unreadable file
        "--prompt-file", metavar="FILE", help="Read the prompt from this UTF-8 file now, at submit "
        "(a glossary kept beside a cron folder).")] = None,
    hotwords: Annotated[Optional[str], typer.Option(
        "--hotwords", metavar='"A, B, C"',
        help="Words and names to favour, put before the prompt. Default: the hotwords setting.")] = None,
    zh_script: Annotated[Optional[ZhScript], typer.Option(
        "--zh-script", help="Chinese characters of Chinese output, either engine (also converts Cantonese, else "
        "left as written). Default: traditional for -l zh-TW/zh-Hant/zh-HK, else the worker's zh_script.")] = None,
    enhance_steps: Annotated[Optional[str], typer.Option(
        "--enhance", metavar="STEPS", help="Enhancement steps after transcription: any of vad,refine,split, or "
        "none. Default: all when ENABLE_OPTIMIZATION (the worker's setting).")] = None,
    max_line_width: Annotated[Optional[int], typer.Option(
        min=10, help="Subtitle characters a line, Latin scripts (default 42; CJK lines hold 16).")] = None,
    max_lines: Annotated[Optional[int], typer.Option(min=1, help="Lines a subtitle cue (default 2).")] = None,
    max_cue_duration: Annotated[Optional[float], typer.Option(
        min=1.0, metavar="SECONDS", help="Longest a subtitle cue stays (default 7).")] = None,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing", help="Do not resubmit a file whose content is already in the spool, in any state "
            "(run a failed or canceled one again with `klipnote retry`)."
        ),
    ] = False,
    no_copy: Annotated[
        bool,
        typer.Option(
            "--no-copy",
            help="Reference the input instead of snapshotting it; the job fails if the file changes before it runs.",
        ),
    ] = False,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Exit 0, silently, when there is nothing to submit "
                           "(a cron job on an empty inbox).")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the jobs to end; exit 0 only if all are done.")
    ] = False,
    json_out: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only job ids, one a line.")] = False,
) -> None:
    """Queue files for transcription. Exit 0 if all were accepted, 1 if any was rejected."""
    from klipnote.submit import Limits, decoding_options, expand, job_options, output_folder, submit_paths

    if not files:
        raise UsageError("no input files: give FILE..., a folder with --recursive, or - to read paths from stdin")
    session = session_of(ctx)
    settings = session.settings
    chosen = (*ALWAYS_WRITTEN, *(formats or ()))
    model = model or settings.default_model
    glossary = Path(prompt_file) if prompt_file is not None else None
    hints = (speakers, min_speakers, max_speakers)
    decoding = decoding_options(model, settings, task, prompt, glossary, hotwords, hints)
    request = JobRequest(
        model=model,
        language=language,
        formats=tuple(dict.fromkeys(chosen)),
        output_dir=output_folder(output_dir),
        next_to_input=next_to_input,
        priority=priority,
        options=job_options(diarize, zh_script, enhance_steps, max_line_width, max_lines, max_cue_duration, decoding),
    )
    spool = session.spool(create=True)
    limits = Limits(settings.max_file_size, settings.max_duration_hours)
    out = None if (json_out or quiet) else render.console()

    def report(outcome) -> None:  # noqa: ANN001 - a Submission; printed as soon as it is known
        if not outcome.accepted:
            render.error(f"{outcome.input}: {outcome.error}")
        elif quiet and not json_out:
            sys.stdout.write(outcome.status.id + "\n")
            sys.stdout.flush()
        elif out is not None:
            verb = f"exists ({outcome.status.state.value})" if outcome.skipped else "queued"
            out.print(
                f"{verb}  [bold]{outcome.status.id}[/]  {outcome.status.lane.value}  {outcome.input}", markup=True
            )

    candidates = expand(files, recursive=recursive, stdin=sys.stdin if "-" in files else None)
    outcomes = submit_paths(
        spool, candidates, request, limits, copy=not no_copy, skip_existing=skip_existing, on_outcome=report
    )
    if settings.broker:  # several hosts: send the new jobs to Redis, or say that they wait (docs/broker.md)
        from klipnote.broker.actions import dispatch_after_submit

        dispatch_after_submit(spool, settings)
    rejected = sum(1 for o in outcomes if not o.accepted)
    empty = not outcomes and not allow_empty
    if empty:
        render.error("no audio or video files found in what was given")
    exit_code = 1 if rejected or empty else 0
    if wait:
        ids = [o.status.id for o in outcomes if o.status is not None]
        statuses = _wait(spool, ids, timeout=None, show=not (json_out or quiet))
        if any(s.state is not JobState.DONE for s in statuses.values()):
            exit_code = 1
        if json_out:
            for outcome in outcomes:
                if outcome.status is not None:
                    outcome.status = statuses[outcome.status.id]
    if json_out:
        render.print_json([o.to_json() for o in outcomes])
    raise typer.Exit(exit_code)


# ---------------------------------------------------------------------- reading


def _resolve_all(spool: Spool, ids: list[str]) -> tuple[list[Status], int]:
    """Statuses of the jobs named; an error line (and a non-zero code) for each that is not one."""
    statuses, code = [], 0
    for text in ids:
        try:
            statuses.append(spool.load_status(spool.resolve(text)))
        except KlipnoteError as exc:
            render.error(str(exc))
            code = max(code, exc.exit_code)
    return statuses, code


@app.command()
def status(ctx: typer.Context, ids: IdsArg, json_out: JsonFlag = False) -> None:
    """Show jobs: state, stage and progress, lane, engine, attempt, worker, times, outputs."""
    spool = session_of(ctx).spool()
    recovery.reap(spool)
    statuses, code = _resolve_all(spool, ids)
    warnings = Registry(spool).unserved(statuses)
    if json_out:
        data = _with_warnings(statuses, warnings)
        if len(ids) > 1:
            render.print_json(data)
        elif data:
            render.print_json(data[0])
    elif len(statuses) == 1:
        render.status_detail(statuses[0], warnings.get(statuses[0].id))
    elif statuses:
        render.status_table(statuses)
        render.warn_lines(sorted(set(warnings.values())))
    raise typer.Exit(code)


def _with_warnings(statuses: list[Status], warnings: dict[str, str]) -> list[dict]:
    """Status objects for --json, with a ``warning`` key where a queued job has no live worker."""
    return [{**s.to_dict(), **({"warning": warnings[s.id]} if s.id in warnings else {})} for s in statuses]


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state: Annotated[Optional[list[JobState]], typer.Option(help="Only jobs in this state (repeatable).")] = None,
    lane: Annotated[Optional[Lane], typer.Option(help="Only jobs of this lane.")] = None,
    limit: Annotated[
        int, typer.Option(min=0, help="Show at most this many, newest first; 0 for all.")
    ] = defaults.LIST_LIMIT,
    json_out: JsonFlag = False,
) -> None:
    """List jobs, newest first."""
    spool = session_of(ctx).spool()
    recovery.reap(spool)
    shown: list[Status] = []
    for job_id in reversed(spool.job_ids()):
        try:
            job = spool.load_status(job_id)
        except KlipnoteError as exc:
            render.error(str(exc))
            continue
        if (state and job.state not in state) or (lane and job.lane is not lane):
            continue
        shown.append(job)
        if limit and len(shown) >= limit:
            break
    registry = Registry(spool)
    unserved = registry.unserved_lanes()  # from the queues, whatever --state, --lane and --limit leave shown
    if json_out:
        render.print_json(_with_warnings(shown, registry.unserved(shown)))
    elif not shown:
        render.console().print("no jobs match" if (state or lane) else f"no jobs in {spool.root}")
    else:
        lengths = spool.queue_lengths()
        render.status_table(
            shown,
            title=f"{len(shown)} job(s) in {spool.root}; waiting: " + ", ".join(f"{k} {v}" for k, v in lengths.items()),
        )
    render.warn_lines(list(unserved.values()))


@app.command()
def result(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(metavar="ID", help="Job id or unique prefix.")],
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Which output to print.")] = OutputFormat.SRT,
    embed_audio: Annotated[bool, typer.Option(
        "--embed-audio", help="With --format html: carry a compact Opus copy of the recording in the page, so "
        "that it plays wherever the page goes.")] = False,
) -> None:
    """Print a finished job's output (SRT by default) to standard output; html: its review page, made now."""
    spool = session_of(ctx).spool()
    recovery.reap(spool)
    job_id = spool.resolve(job)
    current = spool.load_status(job_id)
    if current.state is not JobState.DONE:
        hint = {
            JobState.QUEUED: f"; wait for it with `klipnote wait {job_id}`",
            JobState.RUNNING: f"; wait for it with `klipnote wait {job_id}`",
            JobState.FAILED: f": {current.error}",
            JobState.CANCELED: "",
        }[current.state]
        raise KlipnoteError(
            f"job {job_id} is {render.state_text(current)}, so it has no result yet{hint}"
            if not current.state.terminal
            else f"job {job_id} is {current.state.value}{hint}"
        )
    if fmt is OutputFormat.HTML:
        sys.stdout.buffer.write(_review_page(spool, job_id, embed_audio).encode())
        sys.stdout.flush()
        return
    name = output_name(fmt)
    if name not in current.outputs:
        raise KlipnoteError(
            f"job {job_id} has no {fmt.value} output (it has {', '.join(current.outputs) or 'none'}); "
            f"submit with --format {fmt.value} to get one"
        )
    data = (spool.job_dir(job_id) / name).read_bytes()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _review_page(spool: Spool, job_id: str, embed_audio: bool) -> str:
    """Any finished job's review page, from its result JSON: the player finds the recording relative to the
    current folder (where ``> page.html`` puts the page), or in the page with ``--embed-audio``."""
    from klipnote import review

    job_dir = spool.job_dir(job_id)
    result = json.loads((job_dir / output_name(OutputFormat.JSON)).read_text(encoding="utf-8"))
    media = review.media(spool.manifest(job_id), job_dir)
    if embed_audio:
        duration = result.get("metadata", {}).get("input", {}).get("duration")
        audio = review.embed(next((p for p in media if p.exists()), media[-1]), duration)
    else:
        audio = review.Audio(review.sources(Path.cwd(), media))
    return review.page(result, audio)


# ---------------------------------------------------------------------- waiting


def _wait(spool: Spool, ids: list[str], *, timeout: float | None, show: bool) -> dict[str, Status]:
    """Wait for jobs, with live progress bars on a terminal and one line per ended job elsewhere."""
    if not show or not sys.stderr.isatty():
        ended: set[str] = set()

        def note(statuses: dict[str, Status]) -> None:
            for job_id, st in statuses.items():
                if st.state.terminal and job_id not in ended and show:
                    ended.add(job_id)
                    render.error(f"{job_id} {st.state.value}" + (f": {st.error}" if st.error else ""))

        return actions.wait_for(spool, ids, timeout=timeout, on_poll=note)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=render.console(stderr=True),
        transient=False,
    ) as bars:
        tasks = {job_id: bars.add_task(job_id, total=100) for job_id in ids}

        def draw(statuses: dict[str, Status]) -> None:
            for job_id, st in statuses.items():
                done = 100 if st.state.terminal else st.progress
                bars.update(tasks[job_id], completed=done, description=f"{job_id}  {render.state_text(st):<28}")

        return actions.wait_for(spool, ids, timeout=timeout, on_poll=draw)


@app.command("wait")
def wait_cmd(
    ctx: typer.Context,
    ids: IdsArg,
    timeout: Annotated[
        Optional[str], typer.Option(help="Give up after this long (90, 30s, 15m, 2h); exit 124.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Wait until the jobs end. Exit 0 if all are done, 1 if any failed or was canceled, 124 on timeout."""
    try:
        limit = parse_duration(timeout) if timeout is not None else None
    except ValueError as exc:
        raise UsageError(f"--timeout {timeout!r}: {exc}") from None
    spool = session_of(ctx).spool()
    found, code = _resolve_all(spool, ids)
    if code:
        raise typer.Exit(code)
    statuses = _wait(spool, [s.id for s in found], timeout=limit, show=not json_out)
    if json_out:
        render.print_json([s.to_dict() for s in statuses.values()])
    if not all(s.state.terminal for s in statuses.values()):
        render.error(f"timed out after {timeout} with jobs still queued or running")
        raise typer.Exit(EXIT_TIMEOUT)
    raise typer.Exit(0 if all(s.state is JobState.DONE for s in statuses.values()) else 1)


# ---------------------------------------------------------------------- changing jobs


def _apply(ctx: typer.Context, ids: list[str], action: str, json_out: bool) -> None:
    session = session_of(ctx)
    spool = session.spool()
    change: Callable[[Spool, str], Status] = actions.cancel if action == "cancel" else actions.retry
    if session.settings.broker:  # several hosts: Redis decides, without the spool's file locks (docs/broker.md)
        from klipnote.broker.actions import for_action

        change = for_action(session.settings, action)
    changed, code = [], 0
    for text in ids:
        try:
            job_id = spool.resolve(text)
            changed.append(change(spool, job_id))
        except KlipnoteError as exc:
            render.error(str(exc))
            code = max(code, exc.exit_code)
    if json_out:
        render.print_json([s.to_dict() for s in changed])
    else:
        for st in changed:
            render.console().print(f"{st.id}  {st.state.value}")
    raise typer.Exit(code)


@app.command()
def cancel(ctx: typer.Context, ids: IdsArg, json_out: JsonFlag = False) -> None:
    """Cancel queued or running jobs (a running worker stops at its next heartbeat)."""
    _apply(ctx, ids, "cancel", json_out)


@app.command()
def retry(ctx: typer.Context, ids: IdsArg, json_out: JsonFlag = False) -> None:
    """Queue failed or canceled jobs again, with a fresh allowance of attempts."""
    _apply(ctx, ids, "retry", json_out)


@app.command()
def gc(
    ctx: typer.Context,
    older_than: Annotated[
        str, typer.Option(help="Remove done, failed and canceled jobs that ended, and records of workers that "
                          "stopped or died, longer ago than this (30d, 12h, 90m).")
    ] = defaults.GC_OLDER_THAN,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be removed.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Delete old finished jobs and records of dead workers; queued and running jobs are never touched."""
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than {older_than!r}: {exc}") from None
    spool = session_of(ctx).spool()
    removed = retention.gc(spool, age, dry_run=dry_run)
    removed += [f"workers/{w}" for w in Registry(spool).prune(age, dry_run=dry_run)]
    if json_out:
        render.print_json({"removed": removed, "dry_run": dry_run})
        return
    verb = "would remove" if dry_run else "removed"
    render.console().print(f"{verb} {len(removed)} item(s)" + "".join(f"\n  {r}" for r in removed))
