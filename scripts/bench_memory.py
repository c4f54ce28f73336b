#!/usr/bin/env python3
"""Memory per batch size of the belle2 engine: a formula, checked against measurements on small shapes.

The belle2 worker's default batch size has to fit a 24 GB GPU with BELLE-2 (large-v3: d_model 1280,
32 encoder and 32 decoder layers, 128 mel bins, 51,866 tokens) in float16. No GPU and no BELLE-2
weights are here, so this script

1. states the memory of one ``decode_batch`` (generate with SDPA and a KV cache, then the one
   teacher-forced alignment pass) as a formula of the architecture, the batch size, the tokens decoded
   and the bytes per value (:func:`per_window`, :func:`weights`);
2. measures it on the CPU (float32) with random models of large-v3's layout (tests/support/tiny_whisper.py)
   at smaller widths and depths, through the real engine: each (shape, batch) in a fresh process,
   the model loaded, the batch's features made, then the peak resident memory of the model's part
   of ``decode_batch`` above what was resident when ``generate`` began (the peak is reset there via
   ``/proc/self/clear_refs``);
3. prints measured against predicted per shape and batch, then the formula's figures for large-v3
   (BELLE-2) and large-v3-turbo (``turbo``) in float16, and the largest batch that leaves
   :data:`GPU_RESERVE` of a 24 GB card free.

What the formula counts, per 30 s window (``s`` bytes per value, ``d`` width, ``L`` decoder layers,
``T`` decoder positions, ``F`` = 1500 encoder frames, ``h`` attention heads):

* always, while the window is in the batch: its encoder output ``F*d*s`` (generate keeps it) and
  its input features ``128*3000*s``;
* decoding: the cross-attention keys and values of every decoder layer ``2*L*F*d*s`` and the
  self-attention cache ``2*L*T*d*s``, plus the float32 scores over the vocabulary ``V*4``;
* or, when larger, encoding, one layer at a time: at its attention ``F*6*d*s`` (residual, norm, q, k,
  v, output), plus ``h*F*F*s`` only where an attention kernel writes out the scores (neither torch's
  CPU kernel for float32, as measured here, nor CUDA's flash kernels do; the large-v3 table shows that
  worst case beside), or at its feed-forward ``F*(2*d + 2*ffn)*s``;
* or the alignment pass: the alignment heads' scores ``H*T*F*s`` and their float32 softmax ``H*T*F*4``.

What a batch needs whatever its size came to 10-15 MiB on the CPU (work buffers of the first step);
the GPU's reserve below covers it.

The measured shapes rule different terms: ``tiny`` (whisper tiny's width, 4 decoder layers) the
encoder's feed-forward and the decoder's caches about equally, ``deep`` (narrow, 2 heads, 24 decoder
layers) the decoder's caches, as in large-v3. Random weights never say
end-of-text, so every window decodes to the maximum: ``--positions`` (default 64, set on the model's
generation config so that a run takes minutes, not an hour; the formula is given the same ``T``),
against 448 in production, which the large-v3 figures use.

Not counted: the CUDA context, cuBLAS workspaces and the caching allocator's slack (:data:`GPU_RESERVE`
stands for them), beam search (BELLE-2's generation config could not be read here; openai's large-v3
decodes greedily by default, as the engine then does).

``python scripts/bench_memory.py`` (belle2 environment; about 10 minutes on 2 busy CPUs);
``--shapes tiny --batches 1,2 --positions 32`` for a quick look. ``--out DIR`` writes memory.json and memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit import (
    BELLE2_PYTHON,
    REPO,
    clean_env,
    machine,
    machine_line,
    python_or_current,
    table,
    write_json,
    write_markdown,
)

GIB = 1024**3
MIB = 1024**2
FRAMES = 1500  # encoder positions of a 30 s window
MEL_FRAMES = 3000
N_MELS = 128
VOCAB = 51866
POSITIONS = 448  # max_target_positions: where random weights stop
#: What a 24 GB card needs beside the formula: CUDA context and kernels (~0.5-1 GB), cuBLAS workspace,
#: the caching allocator's fragmentation. An allowance, not a measurement.
GPU_RESERVE = 4 * GIB
CARD = 24 * GIB


@dataclass(frozen=True)
class Shape:
    name: str
    d_model: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    ffn: int
    alignment_heads: int  # how many (layer, head) pairs time the characters

    def dims(self) -> dict[str, int]:
        return {"d_model": self.d_model, "encoder_layers": self.encoder_layers, "decoder_layers": self.decoder_layers,
                "encoder_attention_heads": self.heads, "decoder_attention_heads": self.heads,
                "encoder_ffn_dim": self.ffn, "decoder_ffn_dim": self.ffn}

    def head_pairs(self) -> tuple[tuple[int, int], ...]:
        """Alignment heads in the decoder's last layers, as the real models' lie in their upper half."""
        pairs = [(layer, head) for layer in range(self.decoder_layers - 1, -1, -1) for head in range(self.heads)]
        return tuple(sorted(pairs[:self.alignment_heads]))


#: Measured here (whisper tiny's and base's widths and depths, large-v3's layout), and predicted only.
SHAPES = {
    "tiny": Shape("tiny", 384, 4, 4, 6, 1536, 6),
    "deep": Shape("deep", 256, 2, 24, 2, 1024, 4),
    "large-v3": Shape("large-v3", 1280, 32, 32, 20, 5120, 10),
    "large-v3-turbo": Shape("large-v3-turbo", 1280, 32, 4, 20, 5120, 6),
}
MEASURED = ("tiny", "deep")


def weights(shape: Shape, s: int) -> int:
    """Bytes of the weights: both stacks' layers, convolutions, positions, token embeddings (tied output)."""
    d, f = shape.d_model, shape.ffn
    attention = 4 * d * d + 4 * d  # q, k, v, out projections and their biases (k has none: within rounding)
    mlp = 2 * d * f + f + d
    norms = 2 * d
    encoder = shape.encoder_layers * (attention + mlp + 2 * norms) + N_MELS * d * 3 + d * d * 3 + 2 * d + FRAMES * d
    decoder = shape.decoder_layers * (2 * attention + mlp + 3 * norms) + VOCAB * d + POSITIONS * d
    return (encoder + decoder + 2 * norms) * s


def per_window(shape: Shape, s: int, positions: int = POSITIONS, *, materialised: bool = False) -> int:
    """Bytes one 30 s window adds to the peak of ``decode_batch`` (see the module's docstring); ``materialised``:
    the attention kernel writes out the encoder's scores (the CPU's does, CUDA's flash kernels do not)."""
    d, layers = shape.d_model, shape.decoder_layers
    kept = FRAMES * d * s + N_MELS * MEL_FRAMES * s
    decoding = 2 * layers * FRAMES * d * s + 2 * layers * positions * d * s + VOCAB * 4
    attention = FRAMES * 6 * d * s + (shape.heads * FRAMES * FRAMES * s if materialised else 0)
    feed_forward = FRAMES * (2 * d + 2 * shape.ffn) * s
    aligning = shape.alignment_heads * positions * FRAMES * (s + 4)
    return kept + max(decoding, attention, feed_forward, aligning)


def predicted(shape: Shape, batch: int, s: int, *, materialised: bool = False) -> int:
    return weights(shape, s) + batch * per_window(shape, s, materialised=materialised)


# ---------------------------------------------------------------------- measuring (the child process)


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def noise_windows(engine: Any, batch: int) -> list[Any]:
    """``batch`` jobs of 30 s of noise, planned by ``engine``, each one full window whatever its VAD heard:
    random weights decode every window to the decoder's last position, the worst case memory must fit."""
    import numpy as np

    from klipnote.engines import JobOptions, batching
    from klipnote.windows import Span

    noise = np.random.default_rng(0).normal(0, 0.05, 30 * 16000).astype(np.float32)
    windows = []
    for _ in range(batch):
        job = batching.Job(batching.Request(noise.copy(), JobOptions(language="zh"), lambda stage, percent: None))
        engine.plan(job)
        job.windows = [Span(0.0, 30.0)]
        windows.append(batching.Window(job, 0))
    return windows


def measure(shape: Shape, batch: int, positions: int, cache: Path) -> dict[str, Any]:
    """One decode_batch of ``batch`` 30 s windows on a random model of ``shape``: its peak above the start."""
    import torch

    from klipnote.config import load_settings
    from klipnote.engines import create
    from klipnote.job import Model
    from tests.support.tiny_whisper import LARGE_V3, build_checkpoint

    folder = build_checkpoint(LARGE_V3, cache / f"memory-{shape.name}", cache, heads=shape.head_pairs(),
                              **shape.dims())
    settings = load_settings({"belle2_model": str(folder), "compute_type": "float32"})  # the formula's precision
    engine: Any = create(Model.BELLE2, settings, device="cpu", batch_size=batch)
    engine.load()
    engine._model.generation_config.max_length = positions
    with torch.inference_mode():  # every weight read once: safetensors are mapped, and pages not yet read would
        for parameter in engine._model.parameters():  # count as the batch's (on a GPU they are copied at load)
            parameter.sum()
    windows = noise_windows(engine, batch)
    seen: dict[str, Any] = {}
    generate = engine._model.generate

    def measured_generate(*args: Any, **kwargs: Any) -> Any:
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
        seen["start"] = _rss("VmRSS")
        return generate(*args, **kwargs)

    steps = [0]
    counting = engine._model.model.decoder.register_forward_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    engine._model.generate = measured_generate
    with torch.inference_mode():
        engine.decode_batch(windows)
    counting.remove()
    return {"shape": shape.name, "batch": batch, "positions": positions, "decoder_calls": steps[0],
            "peak_above_start": _rss("VmHWM") - seen["start"], "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------- the parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=",".join(MEASURED), help="shapes to measure: tiny, deep")
    parser.add_argument("--batches", default="1,2,4", help="batch sizes to measure")
    parser.add_argument("--positions", type=int, default=64, help="decoder positions per window (generation "
                        "max_length of the measured models)")
    parser.add_argument("--cache", type=Path, default=None, help="where the random models are built (kept)")
    parser.add_argument("--belle2-python", default=python_or_current(BELLE2_PYTHON))
    parser.add_argument("--out", type=Path, default=None, help="folder for memory.json and memory.md")
    parser.add_argument("--from-json", type=Path, default=None, help="print the report of an earlier run's memory.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def child(args: argparse.Namespace) -> int:
    name, batch = args.child.split(":")
    print(json.dumps(measure(SHAPES[name], int(batch), args.positions, args.cache)))
    return 0


def run_child(args: argparse.Namespace, name: str, batch: int, scratch: Path) -> dict[str, Any]:
    # Freed tensors leave the resident set at once (glibc keeps smaller freed blocks in its arenas, which
    # made the peaks of two runs of the same batch differ by tens of MiB): the peak is what was alive.
    env = clean_env(scratch, MALLOC_MMAP_THRESHOLD_=str(64 * 1024))
    done = subprocess.run([args.belle2_python, __file__, "--child", f"{name}:{batch}", "--cache", str(args.cache),
                           "--positions", str(args.positions)], capture_output=True, text=True, env=env, cwd=REPO,
                          check=False)
    if done.returncode != 0:
        sys.exit(f"{name} batch {batch} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def report(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [f"belle2 engine memory per batch size; {machine_line(info)}", ""]

    def formula(row: dict[str, Any]) -> int:
        return int(per_window(SHAPES[row["shape"]], 4, row["positions"]))

    def total(row: dict[str, Any]) -> int:
        return row["batch"] * formula(row)

    measured = [[row["shape"], row["batch"], row["positions"], row["decoder_calls"],
                 f"{row['peak_above_start'] / MIB:.0f}", f"{total(row) / MIB:.0f}",
                 f"{row['peak_above_start'] / total(row):.2f}"] for row in rows]
    lines += ["Measured on the CPU (float32, random weights of large-v3's layout; torch's CPU attention kernel, like "
              "CUDA's flash kernels, does not write out the scores): peak of decode_batch's model part above what was "
              "resident when generate began (the weights read once before), against the formula's batch x per-window "
              "term.", "",
              table(["shape", "batch", "positions", "decoder calls", "measured MiB", "formula MiB",
                     "measured / formula"], measured, [False, True, True, True, True, True, True])]
    slopes = []
    for name in dict.fromkeys(row["shape"] for row in rows):
        mine = sorted((r for r in rows if r["shape"] == name), key=lambda r: r["batch"])
        if len(mine) > 1:
            first, last = mine[0], mine[-1]
            slope = (last["peak_above_start"] - first["peak_above_start"]) / (last["batch"] - first["batch"])
            slopes.append([name, f"{slope / MIB:.1f}", f"{formula(first) / MIB:.1f}", f"{slope / formula(first):.2f}"])
    if slopes:
        lines += ["", "Per window: the slope between the smallest and largest batch measured, against the formula:", "",
                  table(["shape", "measured MiB/window", "formula MiB/window", "measured / formula"], slopes,
                        [False, True, True, True])]
    predictions = []
    for name in ("large-v3", "large-v3-turbo"):
        shape = SHAPES[name]
        for batch in (1, 8, 16, 24, 32, 48, 64):
            flash, math = predicted(shape, batch, 2), predicted(shape, batch, 2, materialised=True)
            predictions.append([name, batch, f"{weights(shape, 2) / GIB:.2f}", f"{per_window(shape, 2) / MIB:.0f}",
                                f"{flash / GIB:.1f}", f"{math / GIB:.1f}",
                                "yes" if max(flash, math) + GPU_RESERVE <= CARD else "no"])
    lines += ["", "Formula only (scripts/bench_gpu.py --engines belle2-engine measures it on a GPU), float16, "
              f"{POSITIONS} decoder positions per window; GiB with CUDA's flash attention, and with a kernel that "
              f"materialises the scores; fits 24 GB: the larger of the two plus {GPU_RESERVE // GIB} GiB for the CUDA "
              "context, workspaces and the allocator's slack:",
              "",
              table(["model", "batch", "weights GiB", "per window MiB", "flash GiB", "materialised GiB", "fits 24 GB"],
                    predictions, [False, True, True, True, True, True, False])]
    for name in ("large-v3", "large-v3-turbo"):
        shape = SHAPES[name]
        fits = max((b for b in range(1, 513) if predicted(shape, b, 2, materialised=True) + GPU_RESERVE <= CARD),
                   default=0)
        lines.append(f"\nlargest batch that fits 24 GB by the formula, {name}: {fits}")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    if args.cache is None:
        args.cache = Path(tempfile.gettempdir()) / "klipnote-bench-memory"
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.child:
        return child(args)
    if args.from_json:
        earlier = json.loads(args.from_json.read_text())
        sys.stdout.write(report(earlier["results"], earlier["machine"]))
        return 0
    info = machine()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.shapes.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                rows.append(run_child(args, name, batch, Path(scratch)))
                print(f"{name} batch {batch}: {rows[-1]['peak_above_start'] / MIB:.0f} MiB", file=sys.stderr)
    text = report(rows, info)
    sys.stdout.write(text)
    write_json(args.out, "memory", {"machine": info, "results": rows,
                                    "formula": {n: {"weights_fp16": weights(s, 2), "per_window_fp16": per_window(s, 2)}
                                                for n, s in SHAPES.items()}})
    write_markdown(args.out, "memory", text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
