"""Commands that check and prepare a machine: doctor, models."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from klipnote import render
from klipnote.cli.app import JsonFlag, app, session_of
from klipnote.config import Device
from klipnote.errors import UsageError
from klipnote.humanize import size
from klipnote.job import Model

if TYPE_CHECKING:
    from klipnote.modelstore import Entry, ModelManifest, Problem

models_app = typer.Typer(
    help="Download models before the first job, list what is cached, verify files against their SHA-256.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

ModelNameArg = Annotated[str, typer.Argument(
    metavar="NAME", help="A Whisper name (large-v2), base-offline or tiny.en-offline, a hub id (org/name), "
    "or whisperx, belle2, diarization for the configured model.")]


@app.command()
def doctor(
    ctx: typer.Context,
    model: Annotated[Optional[Model], typer.Option(
        help="Worker kind to check this environment for: whisperx or belle2. Default: the kind whose torch "
        "this environment has.")] = None,
    device: Annotated[Optional[Device], typer.Option(
        help="Default: WHISPER_DEVICE, else auto.")] = None,
    json: JsonFlag = False,
) -> None:
    """Check this machine for a worker, one line per check; exit 1 if any fails.

    ffmpeg, spool, disk, Python and packages against envs/ pins, torch and CUDA, GPU, model cache,
    config file, telemetry; each problem comes with what to do about it.
    """
    from klipnote import doctor as checks

    if model is Model.AUTO:
        raise UsageError("doctor checks for one worker kind: --model whisperx or --model belle2")
    report = checks.run(session_of(ctx).flags, kind=model, device=device)
    if json:
        render.print_json(report.to_json())
    else:
        sys.stdout.write(report.text())
    raise typer.Exit(1 if report.failed else 0)


@models_app.command("pull")
def models_pull(
    ctx: typer.Context,
    name: ModelNameArg,
    revision: Annotated[Optional[str], typer.Option(
        help="Branch, tag or commit to download (default: whisper_model_revision or belle2_model_revision for the "
        "configured models, else main); the commit it resolves to is recorded.")] = None,
    json: JsonFlag = False,
) -> None:
    """Download a model before the first job needs it; record every file's SHA-256.

    Hub models go into the Hugging Face cache the workers read; offline models are assembled.
    """
    from klipnote import modelstore

    settings = session_of(ctx).settings
    ref = modelstore.resolve(name, settings)
    revision = revision or ref.revision
    if ref.repo_id:
        render.error(f"pulling {ref.repo_id}@{revision or 'main'}; large models take minutes")
    manifest = modelstore.pull(ref, revision=revision, token=settings.hf_token)
    if ref.safetensors_only:
        render.warn_lines([w for w in [modelstore.timing_warning(manifest)] if w])
    if json:
        render.print_json(manifest.to_json())
        return
    at = f" at {manifest.commit}" if manifest.commit else ""
    if manifest.pull_request:
        at += f" ({manifest.pull_request}, the hub's safetensors copy: {manifest.revision} holds only pickled weights)"
    sys.stdout.write(f"{manifest.name}: {len(manifest.files)} files, {size(manifest.size)}{at}, "
                     f"SHA-256 recorded, in {manifest.folder}\n")


@models_app.command("list")
def models_list(ctx: typer.Context, json: JsonFlag = False) -> None:
    """Show cached models with sizes, revisions and the state of their last check.

    Lists what klipnote pulled and other copies in the Hugging Face cache that workers would load.
    """
    from klipnote import modelstore

    entries, unreadable = modelstore.list_models(session_of(ctx).settings)
    render.warn_lines(unreadable)
    if json:
        render.print_json([_entry_json(e) for e in entries])
        return
    if not entries:
        sys.stdout.write("no models cached; klipnote models pull NAME downloads one\n")
        return
    render.models_table(entries)


@models_app.command("verify")
def models_verify(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(
        metavar="[NAME]", help="The model to check (as given to pull); default: every pulled model.")] = None,
    json: JsonFlag = False,
) -> None:
    """Re-hash pulled models' files against their recorded SHA-256; exit 1 if any does not match.

    A missing, truncated or altered file is named with the command that fetches it again. An unreadable
    manifest is skipped with a warning, the others still checked, and the exit is 1.
    """
    from klipnote import modelstore

    manifests = modelstore.manifests_for([name] if name else [], session_of(ctx).settings)
    render.warn_lines(manifests.unreadable)
    results = [(m, modelstore.verify(m)) for m in manifests.found]
    if json:
        render.print_json([_verify_json(m, problems) for m, problems in results])
    else:
        _verify_text(results, skipped=bool(manifests.unreadable))
    raise typer.Exit(1 if manifests.unreadable or any(problems for _, problems in results) else 0)


def _entry_json(entry: Entry) -> dict[str, object]:
    return {"name": entry.name, "source": entry.source.value, "repo_id": entry.repo_id, "commit": entry.commit,
            "folder": entry.folder, "size": entry.size, "files": entry.files, "integrity": entry.integrity.value,
            "verified_at": entry.verified_at, **entry.extra}


def _verify_json(manifest: ModelManifest, problems: list[Problem]) -> dict[str, object]:
    return {"name": manifest.name, "folder": manifest.folder, "files": len(manifest.files), "ok": not problems,
            "problems": [{"path": p.path, "reason": p.reason} for p in problems],
            "fix": manifest.pull_command if problems else None}


def _verify_text(results: list[tuple[ModelManifest, list[Problem]]], *, skipped: bool) -> None:
    if not results and not skipped:
        sys.stdout.write("no pulled models to verify; klipnote models pull NAME records their checksums\n")
    for manifest, problems in results:
        if not problems:
            sys.stdout.write(f"ok    {manifest.name}: {len(manifest.files)} files match their SHA-256\n")
            continue
        sys.stdout.write(f"FAIL  {manifest.name}: {len(problems)} of {len(manifest.files)} files do not match; "
                         f"fix: {manifest.pull_command}\n")
        for problem in problems:
            sys.stdout.write(f"      {problem.path}: {problem.reason}\n")
