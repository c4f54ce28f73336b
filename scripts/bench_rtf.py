#!/usr/bin/env python3
"""Real-time factor of klipnote's engines per model and file, cold (process start + load) and warm, with peak memory.

Each (engine, model, file) runs in a fresh process of the engine's environment (whisperx:
``.venv``, belle2: ``.venv-belle2``), built the way the worker builds it:
``klipnote.engines.create(Model.X, settings, device=..., batch_size=...)``, ``.load()``, then
``decode`` (ffmpeg to 16 kHz mono, as a worker does per job) and ``batching.transcribe(engine, audio, JobOptions(),
progress)`` twice on the same file. klipnote's enhancement steps (vad, refine, split) and output
writing are not included: these are the engines' figures.

* ``cold s``: from just before the process is started until the first transcript is back
  (interpreter start, imports, model load, decode, transcribe);
* ``load s``: ``engine.load()`` alone; ``warm s``: the second decode + transcribe in the same process;
* ``RTF``: seconds of compute per second of audio (lower is faster; 0.10 means 10 s of audio in
  1 s), cold and warm; ``x real time`` is its inverse for the warm run;
* ``peak RSS``: ``ru_maxrss`` of the process at the end (MiB); on cuda also the peak GPU memory
  of the process as ``nvidia-smi`` reports it, sampled every 0.2 s (CTranslate2 allocates outside
  torch, so ``torch.cuda.max_memory_allocated`` would miss it; where nvidia-smi shows no pid of
  this container, the whole GPU's use above its level at the start, as the cell says), and
  torch's own peak.

Default matrix (corpus: ``KLIPNOTE_CORPUS`` or ``../shared/corpus``): the whisperx engine on
``base-offline`` (jfk.flac, whole-earth.wav, zh.wav) and ``tiny.en-offline`` (English only:
jfk.flac, whole-earth.wav); the belle2 engine on Whisper base converted to transformers
(``tests/support/e2ekit.py belle2_checkpoint``, since BELLE-2's weights cannot be downloaded here) on the
same three files. belle2 transcribes Mandarin only: on the English files its text is meaningless,
but the compute is the real cost of that much audio. Language: detected (whisperx), zh (belle2).

Usage: ``.venv/bin/python scripts/bench_rtf.py [--device cpu] [--batch-size 16] [--only whisperx:base-offline]
[--files jfk.flac,zh.wav] [--out DIR]``. Stdlib in this process; the children import klipnote and the engine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import (
    BELLE2_PYTHON,
    CORPUS,
    REPO,
    WHISPERX_PYTHON,
    GpuPeak,
    clean_env,
    machine,
    machine_line,
    python_or_current,
    table,
    write_json,
    write_markdown,
)

FILES = {"short": "jfk.flac", "long": "whole-earth.wav", "Mandarin": "zh.wav"}
BELLE2_BASE = "whisper-base-transformers"
#: (engine, model, kinds of file) run by default.
MATRIX = (
    ("whisperx", "base-offline", ("short", "long", "Mandarin")),
    ("whisperx", "tiny.en-offline", ("short", "long")),
    ("belle2", BELLE2_BASE, ("short", "long", "Mandarin")),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="default 16 (klipnote's default)")
    parser.add_argument("--only", help="comma-separated ENGINE:MODEL pairs of the matrix to run (default all)")
    parser.add_argument("--files", help="comma-separated corpus file names to run (default: the matrix's)")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--whisperx-python", default=python_or_current(WHISPERX_PYTHON))
    parser.add_argument("--belle2-python", default=python_or_current(BELLE2_PYTHON))
    parser.add_argument("--out", type=Path, help="also write rtf.json and rtf.md here")
    parser.add_argument("--child", nargs=4, metavar=("ENGINE", "MODEL", "FILE", "SPAWNED_AT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


# ---------------------------------------------------------------------------------------------- child


def child(engine_name: str, model: str, path: str, spawned_at: float, device: str, batch_size: int) -> int:
    """Load, transcribe twice, print one JSON line."""
    gpu = GpuPeak() if device == "cuda" else None
    from benchkit import peak_rss_mib

    from klipnote.audio import SAMPLE_RATE, decode
    from klipnote.config import load_settings
    from klipnote.engines import JobOptions, batching, create
    from klipnote.job import Model

    flags = {"whisper_model": model} if engine_name == "whisperx" else {"belle2_model": model}
    engine = create(Model(engine_name), load_settings(flags), device=device, batch_size=batch_size)
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started

    def once() -> tuple[float, Any, float]:
        began = time.perf_counter()
        audio = decode(Path(path))
        transcript = batching.transcribe(engine, audio, JobOptions(), lambda stage, percent: None)
        if device == "cuda":
            import torch

            torch.cuda.synchronize()
        return time.perf_counter() - began, transcript, len(audio) / SAMPLE_RATE

    first_s, transcript, audio_s = once()
    cold_s = time.time() - spawned_at
    warm_s, transcript, _ = once()
    result = {"load_s": load_s, "first_s": first_s, "cold_s": cold_s, "warm_s": warm_s, "audio_s": audio_s,
              "segments": len(transcript.segments), "language": transcript.language,
              "text": "".join(s.text for s in transcript.segments), "peak_rss_mib": peak_rss_mib(),
              "describe": engine.describe()}
    if gpu is not None:
        import torch

        result["gpu_peak_mib"], result["gpu_peak_counts"] = gpu.stop()
        result["torch_cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result, ensure_ascii=False, default=str))
    return 0


# ---------------------------------------------------------------------------------------------- parent


def belle2_model(python: str, env: dict[str, str]) -> str:
    """The transformers Whisper base checkpoint, built once in klipnote's cache (not timed)."""
    code = ("from klipnote.offline_models import cache_root; from tests.support.e2ekit import belle2_checkpoint; "
            "print(belle2_checkpoint(cache_root()))")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if proc.returncode != 0:
        sys.exit(f"cannot build the belle2 checkpoint:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def run_child(python: str, engine: str, model: str, path: Path, args: argparse.Namespace, env: dict[str, str],
              log: Path) -> dict[str, Any]:
    argv = [python, str(Path(__file__).resolve()), "--device", args.device, "--batch-size", str(args.batch_size),
            "--child", engine, model, str(path), repr(time.time())]
    with open(log, "ab") as err:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO, check=False)
    if proc.returncode != 0:
        sys.exit(f"{engine} {model} {path.name} exited {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def report(rows: list[dict[str, Any]], device: str) -> str:
    headers = ["engine", "model", "file", "audio s", "cold s", "load s", "warm s", "RTF cold", "RTF warm",
               "× real time warm", "peak RSS MiB", "segments"]
    numeric = [False, False, False, *[True] * 9]
    if device == "cuda":
        headers += ["GPU peak MiB (nvidia-smi)", "torch peak MiB"]
        numeric += [True, True]
    lines = []
    for r in rows:
        line = [r["engine"], r["model"], r["file"], f"{r['audio_s']:.1f}", f"{r['cold_s']:.2f}", f"{r['load_s']:.2f}",
                f"{r['warm_s']:.2f}", f"{r['cold_s'] / r['audio_s']:.3f}", f"{r['warm_s'] / r['audio_s']:.3f}",
                f"{r['audio_s'] / r['warm_s']:.1f}", f"{r['peak_rss_mib']:.0f}", r["segments"]]
        if device == "cuda":
            line += [f"{r['gpu_peak_mib']:.0f} ({r['gpu_peak_counts']})", f"{r['torch_cuda_peak_mib']:.0f}"]
        lines.append(line)
    return table(headers, lines, numeric)


def main() -> int:
    args = parse_args()
    if args.child:
        engine, model, path, spawned_at = args.child
        return child(engine, model, path, float(spawned_at), args.device, args.batch_size)
    before = machine()
    only = {p.strip() for p in args.only.split(",")} if args.only else None
    wanted_files = {f.strip() for f in args.files.split(",")} if args.files else None
    scratch = Path(tempfile.mkdtemp(prefix="klipnote-bench-rtf-"))
    rows = []
    try:
        env = clean_env(scratch, PYANNOTE_METRICS_ENABLED="0")
        log = scratch / "log.txt"
        for engine, model, kinds in MATRIX:
            if only is not None and f"{engine}:{model}" not in only:
                continue
            python = args.whisperx_python if engine == "whisperx" else args.belle2_python
            model_arg = belle2_model(python, env) if model == BELLE2_BASE else model
            for kind in kinds:
                name = FILES[kind]
                if wanted_files is not None and name not in wanted_files:
                    continue
                result = run_child(python, engine, model_arg, args.corpus / name, args, env, log)
                rows.append({"engine": engine, "model": model, "file": f"{name} ({kind})", **result})
                print(f"  {engine} {model} {name}: cold {result['cold_s']:.1f} s, warm {result['warm_s']:.1f} s",
                      file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not rows:
        sys.exit("nothing ran: check --only and --files against the matrix")
    header = (f"klipnote engines' real-time factor: device {args.device}, batch size {args.batch_size}, "
              "one fresh process per row (cold = process start to first transcript; warm = the same file again)")
    text = "\n".join([header, machine_line(machine(), before), "", report(rows, args.device)])
    print(text)
    write_markdown(args.out, "rtf", text)
    write_json(args.out, "rtf", {"benchmark": "rtf", "machine": machine(), "started": before, "device": args.device,
                                 "batch_size": args.batch_size, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
