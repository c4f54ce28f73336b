"""A finished job's files: rendered into its claim's staging folder, then copied where the job asked.

Outputs are staged and become visible only when the claim commits (:meth:`klipnote.claim.Claim.finish`);
copies to ``--output-dir`` or beside the input are made before that commit, so they are at-least-once
like the job itself, and as idempotent as the outputs (a job run twice writes the same files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from klipnote import __version__, review, writers
from klipnote.fsio import atomic_write_text
from klipnote.job import Manifest, OutputFormat, ZhScript, output_name

if TYPE_CHECKING:
    from klipnote.claim import Claim
    from klipnote.decoding import Decoding
    from klipnote.enhance import StepLog
    from klipnote.subtitles import Cue
    from klipnote.transcript import Transcript

#: Mode of the copies delivered outside the spool (beside the input, in --output-dir).
DELIVERED_MODE = 0o644


def metadata(claim: Claim, transcript: Transcript, report: StepLog, engine: dict[str, Any], *, worker: str,
             batch: dict[str, Any], timings: dict[str, float], duration: float, decoding: Decoding,
             notes: list[str], zh_script: ZhScript) -> dict[str, Any]:
    """The result JSON's ``metadata``: what ran, how, and how long it took (``engine`` is its ``describe()``;
    ``notes``: what the engine said about the job, such as a prompt cut to what the model takes;
    ``zh_script``: the Chinese script its text was converted to, ``original`` when it was not)."""
    manifest = claim.manifest
    return {
        "job": claim.job_id,
        "input": {"name": manifest.input.name, "duration": duration, "sha256": manifest.input.sha256},
        **engine,
        **batch,
        "word_timestamps": transcript.word_timing.value,
        "word_timestamps_note": transcript.word_timing_note,
        "decoding": decoding.describe(),
        "zh_script": zh_script.value,
        "notes": list(notes),
        "enhancement": report.steps,
        "routing": claim.status.routing,
        "attempt": claim.attempt,
        "worker": worker,
        "klipnote_version": __version__,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "real_time_factor": round(timings["total"] / duration, 4) if duration else None,
    }


def write(claim: Claim, transcript: Transcript, cues: list[Cue], meta: dict[str, Any],
          file_mode: int) -> dict[str, Path]:
    """Render every format the job asked for into the claim's staging folder; paths by file name."""
    written = {}
    audio = review.Audio(review.sources(claim.job_dir, review.media(claim.manifest, claim.job_dir)))
    for name, text in writers.render(transcript, claim.manifest.formats, meta, cues, audio=audio).items():
        path = claim.output_dir / name
        atomic_write_text(path, text, file_mode)
        written[name] = path
    return written


def deliver(files: dict[str, Path], manifest: Manifest) -> list[str]:
    """Copy outputs to ``--output-dir`` and/or beside the input as ``<input stem>.<format>``.

    Returns a line for each copy that failed (the job still succeeds; its outputs are in the spool).
    """
    targets = []
    if manifest.output_dir:
        targets.append(Path(manifest.output_dir))
    if manifest.next_to_input:
        targets.append(Path(manifest.input.path).parent)
    problems = []
    stem = Path(manifest.input.name).stem
    for folder in targets:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for fmt in manifest.formats:
                source = files[output_name(fmt)]
                text = _page_in(folder, files, manifest) if fmt is OutputFormat.HTML else source.read_text("utf-8")
                atomic_write_text(folder / f"{stem}.{fmt.value}", text, DELIVERED_MODE)
        except OSError as exc:
            problems.append(f"could not copy outputs to {folder}: {exc.strerror or exc}")
    return problems


def _page_in(folder: Path, files: dict[str, Path], manifest: Manifest) -> str:
    """The review page for ``folder``, made again from the result JSON so that it plays the original input
    by a path relative to there (beside the input: its bare name)."""
    result = json.loads(files[output_name(OutputFormat.JSON)].read_text("utf-8"))
    return review.page(result, review.Audio(review.sources(folder, [Path(manifest.input.path)])))
