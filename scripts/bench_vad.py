#!/usr/bin/env python3
"""The belle2 engine's Silero VAD: its ONNX model (onnxruntime, what the engine loads) next to its TorchScript one.

Both come from the same ``silero-vad`` wheel and run through the engine's own
``klipnote.engines.belle2_engine.speech_regions`` on the same decoded audio, in one process, after
one warm-up each, their ``--repeat`` runs alternating (ONNX, TorchScript, ONNX, ...) so that a busy
moment of a shared machine falls on both. Torch's CPU threads are put back after importing
``silero_vad`` (which sets one), as the engine does; the ONNX session runs the single thread
silero-vad gives it.

Columns: ``wall s`` and ``cpu s`` (process CPU seconds, all threads), medians per call; ``regions``:
speech regions found; ``same regions``: whether both models found the same ones within ``--tolerance``
seconds at each edge. The ratio line per file is TorchScript / ONNX.

Inputs (``--corpus``, default ``../shared/corpus``): ``zh-long`` (zh.wav six times with 1.5 s pauses, as
bench_belle2 builds it) and ``whole-earth.wav`` (84 s of English); or the files given.

``.venv-belle2/bin/python scripts/bench_vad.py [--repeat 5] [--out DIR] [FILE ...]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import CORPUS, REPO, machine, machine_line, ratio, table, write_json, write_markdown

sys.path.insert(0, str(REPO))  # klipnote from this checkout, and the helpers in tests/support/

from klipnote.audio import SAMPLE_RATE, decode
from tests.support.speech import long_mandarin

MODELS = {"onnx": True, "torchscript": False}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="audio files (default: zh-long and whole-earth.wav)")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per file and model; median (default 5)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="seconds two region edges may differ by")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--out", type=Path, help="write vad.json and vad.md here")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    import torch

    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad

    from klipnote.engines.belle2_engine import speech_regions

    torch.set_num_threads(threads)
    models = {name: load_silero_vad(onnx=onnx) for name, onnx in MODELS.items()}
    before = machine()
    with tempfile.TemporaryDirectory() as scratch:
        files = ([(path.name, decode(path)) for path in args.files] if args.files else
                 [("zh-long", decode(long_mandarin(args.corpus, Path(scratch) / "zh-long.wav"))),
                  ("whole-earth", decode(args.corpus / "whole-earth.wav"))])
    results: list[dict[str, Any]] = []
    for name, audio in files:
        found = {model: speech_regions(audio, vad) for model, vad in models.items()}  # the warm-up
        walls: dict[str, list[float]] = {model: [] for model in models}
        cpus: dict[str, list[float]] = {model: [] for model in models}
        for _ in range(args.repeat):
            for model, vad in models.items():
                wall, cpu = time.perf_counter(), time.process_time()
                speech_regions(audio, vad)
                walls[model].append(time.perf_counter() - wall)
                cpus[model].append(time.process_time() - cpu)
        same = len(found["onnx"]) == len(found["torchscript"]) and all(
            abs(a.start - b.start) <= args.tolerance and abs(a.end - b.end) <= args.tolerance
            for a, b in zip(found["onnx"], found["torchscript"], strict=True))
        for model in models:
            results.append({"file": name, "audio_s": len(audio) / SAMPLE_RATE, "model": model,
                            "walls_s": walls[model], "wall_s": statistics.median(walls[model]),
                            "cpu_s": statistics.median(cpus[model]), "regions": len(found[model]),
                            "same_regions": same})
    rows = [[r["file"], r["model"], f"{r['audio_s']:.1f}", f"{r['wall_s']:.3f}", f"{r['cpu_s']:.3f}", r["regions"],
             "yes" if r["same_regions"] else "**no**"] for r in results]
    lines = [f"belle2 engine's Silero VAD, ONNX against TorchScript, median of {args.repeat} alternating calls after "
             f"one warm-up, torch threads {torch.get_num_threads()}", machine_line(machine(), before), "",
             table(["file", "model", "audio s", "wall s", "cpu s", "regions", "same regions"], rows,
                   [False, False, True, True, True, True, False]), ""]
    for name, _ in files:
        onnx, script = (next(r for r in results if r["file"] == name and r["model"] == m) for m in MODELS)
        lines.append(f"- {name}: TorchScript {script['wall_s']:.3f} s, ONNX {onnx['wall_s']:.3f} s: ONNX is "
                     f"{ratio(script['wall_s'], onnx['wall_s'])}x TorchScript's speed; CPU seconds "
                     f"{script['cpu_s']:.3f} and {onnx['cpu_s']:.3f}: {ratio(script['cpu_s'], onnx['cpu_s'])}x")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    write_markdown(args.out, "vad", text)
    write_json(args.out, "vad", {"benchmark": "vad", "machine": machine(), "started": before, "results": results})
    return 0 if all(r["same_regions"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
