#!/usr/bin/env python3
"""Batch throughput, the cron case: a folder of files through klipnote and through the one-shot tools it wraps.

Eight methods, all on the same Whisper model (``base-offline``: ``klipnote.offline_models.resolve_whisper``),
device cpu, one compute type (``--compute-type``, default int8), one batch size (``--batch-size``,
default 16), beam size 5, CPU threads = the CPU count. Two file sets are built from the corpus
with ffmpeg (``--set``): ``cron8``, six short files (jfk, zh, the two-speaker mix, noise, and 12 s
and 9 s cuts of whole-earth and german) with german.wav and whole-earth.wav; ``short24``, 24 cuts
of 5-15 s from the English, German and Mandarin recordings. ``corpus4`` is the earlier set (jfk,
german, zh, whole-earth); files given on the command line replace the set.

* ``klipnote cold``: ``klipnote submit --model whisperx -q FILE...`` into an empty spool, then one
  ``klipnote worker --model whisperx --drain`` (process start and model load included): the cron job;
* ``klipnote cold (align_model auto)``: the same with the default ``align_model`` (``auto``): each new
  language costs a failed attempt to load its wav2vec2 model (no hub here), after which the words
  are timed by the same alignment heads; the other klipnote rows set ``align_model = off``;
* ``klipnote cold (vad_method silero)``: the same with Silero cuts instead of whisperx's pyannote VAD
  (no pyannote.audio import, a lighter VAD; the cuts, and so a word here and there, differ);
* ``klipnote warm``: a worker is started first and waits for its ready line (not timed); timed is
  ``klipnote submit --model whisperx --wait -q FILE...``, from submit until every job is done. An idle
  worker looks at the queue every second and ``--wait`` polls every 0.5 s: up to about 1.5 s of
  the figure is polling;
* ``whisperx CLI per file``: ``whisperx FILE`` once per file, one after the other (N model loads);
* ``whisperx CLI all files``: ``whisperx FILE...`` once;
* ``faster-whisper floor``: one Python process that loads ``faster_whisper.WhisperModel`` and runs
  ``BatchedInferencePipeline.transcribe`` over the files in a loop (process start and load included;
  the transcribe-only time is in the JSON);
* ``WhisperS2T``: ``whisper-s2t-reborn`` (CTranslate2, batches VAD segments across files) in its own
  environment (``--s2t-python``, default ``.venv-s2t``: PyPI's CPU torch beside it), on the same model
  folder, beam size 5, repetition penalty 1, no word times, the languages given (it detects none).
  Its 1.8.0 turns any compute type but float32/float16/bfloat16 into float32 without a word; the
  script lets the requested type through and records the type CTranslate2 loaded, so that both
  sides compute alike.

``klipnote cold`` also reports its start-up: seconds from the worker's start to its ready line, and
to its first job's commit (in the second table).

Not identical work, and the table says so: no wav2vec2 alignment model can be downloaded here, so
klipnote times words with Whisper's cross-attention heads (from the encoder output it decoded
with) and runs its enhancement steps (vad, refine, split) and writes srt+json; the whisperx CLI
runs with ``--no_align`` (no word times) and writes json; the floor and WhisperS2T time no words
and write nothing. klipnote and the whisperx CLI cut the audio with pyannote VAD (whisperx's
bundled weights: works offline); faster-whisper's batched pipeline uses its bundled Silero VAD,
WhisperS2T its bundled NeMo frame VAD. klipnote detects the language from each file's cuts in its
first batch, the whisperx CLI and faster-whisper from the first 30 s; WhisperS2T is told.

Rounds: ``--rounds R`` runs every method R times, rotating the order each round so that drift
and the page cache hit every method alike; the median wall time is reported. Each method gets a
fresh spool or output folder. Columns: ``wall s`` (median), ``audio s/s`` (total audio seconds
over wall seconds), ``x floor`` (wall over the floor's wall: 2.0 means twice as long), ``peak RSS``
(the largest of the method's processes, MiB), ``segments`` and ``chars`` (total over the files:
a check that every method transcribed the same audio, not a quality score).

Usage: ``.venv/bin/python scripts/bench_throughput.py [--set cron8|short24|corpus4] [-n N] [--rounds 2]
[--out DIR] [FILE ...]``; ``-n`` repeats the list up to N files. Stdlib plus klipnote in the same
interpreter; whisperx and faster-whisper beside it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit import (
    CORPUS,
    REPO,
    audio_seconds,
    clean_env,
    klipnote_argv,
    machine,
    machine_line,
    methods_arg,
    ratio,
    table,
    write_json,
    write_markdown,
)

BEAM_SIZE = 5
FLOOR = "faster-whisper floor"
S2T = "WhisperS2T"
COLD_AUTO = "klipnote cold (align_model auto)"
COLD_SILERO = "klipnote cold (vad_method silero)"
COLD = ("klipnote cold", COLD_AUTO, COLD_SILERO)
METHODS = (*COLD, "klipnote warm", "whisperx CLI per file", "whisperx CLI all files", FLOOR, S2T)
#: klipnote's runs time words with Whisper's heads without first trying to load wav2vec2 models (none can
#: be had offline: ``auto`` fails to load one per language and falls back to the same heads).
ALIGN_OFF = "off"
READY_TIMEOUT = 600.0
S2T_PYTHON = REPO / ".venv-s2t" / "bin" / "python"


@dataclass(frozen=True)
class Clip:
    """A file of a set: a corpus recording, or ``length`` seconds of it from ``start``; its language."""

    source: str
    language: str
    start: float = 0.0
    length: float | None = None


#: (recording, language, length) the 24 short cuts are taken from, in turn.
SHORT_SOURCES = (("whole-earth.wav", "en", 84.4), ("german.wav", "de", 29.3), ("jfk.flac", "en", 11.0),
                 ("multitalker-2spk-mix.wav", "en", 14.0), ("zh.wav", "zh", 5.6))


def short_cuts(count: int) -> tuple[Clip, ...]:
    """``count`` cuts of 5-15 s, spread over the recordings (a whole short recording where it is shorter)."""
    cuts = []
    for i in range(count):
        source, language, seconds = SHORT_SOURCES[i % len(SHORT_SOURCES)]
        length = min(5.0 + (i * 7) % 11, seconds)
        cuts.append(Clip(source, language, round((i * 13.7) % max(seconds - length, 0.001), 1), length))
    return tuple(cuts)


SETS: dict[str, tuple[Clip, ...]] = {
    "cron8": (Clip("jfk.flac", "en"), Clip("zh.wav", "zh"), Clip("multitalker-2spk-mix.wav", "en"),
              Clip("noise.wav", "en"), Clip("whole-earth.wav", "en", 20.0, 12.0), Clip("german.wav", "de", 5.0, 9.0),
              Clip("german.wav", "de"), Clip("whole-earth.wav", "en")),
    "short24": short_cuts(24),
    "corpus4": (Clip("jfk.flac", "en"), Clip("german.wav", "de"), Clip("zh.wav", "zh"), Clip("whole-earth.wav", "en")),
}  # fmt: skip

FLOOR_SCRIPT = """
import json, sys, time
started = time.perf_counter()
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import decode_audio
model_dir, compute_type, batch_size, beam_size, threads, *files = sys.argv[1:]
model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=int(threads))
pipeline = BatchedInferencePipeline(model)
loaded = time.perf_counter()
out = []
for path in files:
    segments, info = pipeline.transcribe(decode_audio(path), batch_size=int(batch_size), beam_size=int(beam_size),
                                         without_timestamps=True, condition_on_previous_text=False)
    texts = [s.text for s in segments]
    out.append({"file": path, "language": info.language, "segments": len(texts), "text": "".join(texts)})
print(json.dumps({"load_s": loaded - started, "transcribe_s": time.perf_counter() - loaded, "files": out}))
"""

S2T_SCRIPT = """
import json, sys, time
started = time.perf_counter()
import whisper_s2t
from whisper_s2t.backends.ctranslate2 import model as ct2_model
ct2_model._normalize_compute_type = lambda compute_type: compute_type  # 1.8.0 would silently use float32
model_dir, compute_type, batch_size, beam_size, threads, languages, *files = sys.argv[1:]
model = whisper_s2t.load_model(model_dir, device="cpu", compute_type=compute_type, cpu_threads=int(threads),
                               asr_options={"beam_size": int(beam_size), "repetition_penalty": 1.0})
loaded = time.perf_counter()
langs = languages.split(",")
results = model.transcribe_with_vad(files, lang_codes=langs, tasks=["transcribe"] * len(files),
                                    initial_prompts=[None] * len(files), batch_size=int(batch_size))
out = [{"file": path, "segments": len(r), "text": "".join(s["text"] for s in r)} for path, r in zip(files, results)]
print(json.dumps({"load_s": loaded - started, "transcribe_s": time.perf_counter() - loaded,
                  "compute_type": model.model.compute_type, "files": out}))
"""


@dataclass
class Run:
    """One method's timed run: wall seconds, the peak RSS of its largest process, what it produced."""

    method: str
    wall_s: float
    peak_rss_mib: float
    texts: list[str]
    segments: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Setup:
    python: str
    whisperx: str
    s2t_python: str
    model_dir: str
    files: list[Path]
    languages: list[str]
    compute_type: str
    batch_size: int
    threads: int
    env: dict[str, str]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="audio files instead of a set (language: en)")
    parser.add_argument("--set", dest="file_set", choices=tuple(SETS), default="cron8", help="default cron8")
    parser.add_argument("-n", "--count", type=int, help="files in the batch: the list repeated (default: one each)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every method, rotated; median (default 1)")
    parser.add_argument("--methods", help="comma-separated subset of the methods (default: all; WhisperS2T only "
                        "where its environment exists)")
    parser.add_argument("--compute-type", default="int8", choices=("int8", "float32"), help="default int8")
    parser.add_argument("--batch-size", type=int, default=16, help="default 16 (klipnote's default)")
    parser.add_argument("--model", default="base-offline", help="Whisper model for every method (default base-offline)")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--python", default=sys.executable, help="the whisperx environment's interpreter")
    parser.add_argument("--s2t-python", default=str(S2T_PYTHON), help="WhisperS2T's interpreter (default .venv-s2t)")
    parser.add_argument("--out", type=Path, help="also write throughput.json and throughput.md here")
    args = parser.parse_args()
    default = [m for m in METHODS if m != S2T or Path(args.s2t_python).is_file()]
    args.methods = methods_arg(parser, args.methods, METHODS) if args.methods else default
    if args.rounds < 1 or args.batch_size < 1 or (args.count is not None and args.count < 1):
        parser.error("-n, --rounds and --batch-size must be at least 1")
    clips = [Clip(str(p), "en") for p in args.files] if args.files else [
        Clip(str(args.corpus / c.source), c.language, c.start, c.length) for c in SETS[args.file_set]]
    missing = sorted({c.source for c in clips if not Path(c.source).is_file()})
    if missing:
        parser.error(f"no such file: {', '.join(missing)} (give --corpus or KLIPNOTE_CORPUS)")
    count = args.count or len(clips)
    args.clips = [clips[i % len(clips)] for i in range(count)]
    if S2T in args.methods and not Path(args.s2t_python).is_file():
        parser.error(f"{S2T} needs its environment: python3 -m venv .venv-s2t && .venv-s2t/bin/pip install "
                     "torch==2.13.0 whisper-s2t-reborn==1.8.0 (or --s2t-python, or leave it out of --methods)")
    return args


def stage_files(clips: list[Clip], folder: Path) -> list[Path]:
    """The set's files with unique names (the whisperx CLI names its outputs after the input's stem), cut
    by ffmpeg where a clip is part of a recording."""
    folder.mkdir(parents=True)
    staged = []
    for index, clip in enumerate(clips, 1):
        source = Path(clip.source)
        if clip.length is None:
            target = folder / f"{index:03d}-{source.name}"
            shutil.copyfile(source, target)
        else:
            target = folder / f"{index:03d}-{source.stem}-{clip.start:g}s.wav"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-ss", str(clip.start), "-t", str(clip.length),
                            "-i", str(source), "-ar", "16000", "-ac", "1", str(target)], check=True)
        staged.append(target)
    return staged


def run_measured(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[float, float, str]:
    """Run to the end; wall seconds, the process's peak RSS (MiB), its stdout. Exit if it failed."""
    started = time.perf_counter()
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err)
        stdout = proc.stdout.read() if proc.stdout else b""
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:6])} ... exited {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
    return wall, usage.ru_maxrss / 1024, stdout.decode(errors="replace")


def worker_argv(setup: Setup, cli: list[str]) -> list[str]:
    return [*cli, "worker", "--model", "whisperx", "--device", "cpu", "--whisper-model", setup.model_dir,
            "--batch-size", str(setup.batch_size)]


def klipnote_results(spool: Path, count: int) -> tuple[list[str], int, dict[str, Any]]:
    """Texts and segment count of every job, checking that all ``count`` jobs are done; the worker's
    own per-stage seconds (``metadata.timings``: decode, transcribe, enhance, total), summed over the jobs."""
    texts, segments, timing_methods, stages, finished = [], 0, set(), {}, []
    for folder in sorted((spool / "jobs").iterdir()):
        status = json.loads((folder / "status.json").read_text())
        if status["state"] != "done":
            sys.exit(f"klipnote job {folder.name} ended {status['state']}")
        finished.append(status["finished_at"])
        result = json.loads((folder / "transcript.json").read_text())
        texts.append("".join(s["text"] for s in result["segments"]))
        segments += len(result["segments"])
        timing_methods.add(result["metadata"]["word_timestamps"])
        for stage, seconds in result["metadata"]["timings"].items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    if len(texts) != count:
        sys.exit(f"klipnote: {len(texts)} jobs, expected {count}")
    return texts, segments, {"word_timestamps": sorted(timing_methods), "worker_stage_s": stages,
                             "first_finished_at": min(finished)}


def ready_at(log: Path) -> float | None:
    """When the worker logged that its model was loaded (its first ``job ...:`` line follows at once)."""
    import datetime

    for line in log.read_text(errors="replace").splitlines():
        if " klipnote.worker: job " in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    return None


def klipnote_cold(setup: Setup, folder: Path, method: str = "klipnote cold", **settings: str) -> Run:
    """``settings``: environment variables over the run's (``KLIPNOTE_ALIGN_MODEL`` is off unless given)."""
    spool = folder / "spool"
    cli = [*klipnote_argv(setup.python), "--spool", str(spool)]
    log = folder / "log.txt"
    env = {**setup.env, "KLIPNOTE_ALIGN_MODEL": ALIGN_OFF, **settings}
    submit_s, submit_rss, _ = run_measured([*cli, "submit", "--model", "whisperx", "-q", *map(str, setup.files)],
                                           env, folder, log)
    worker_started = time.time()
    drain_s, drain_rss, stdout = run_measured([*worker_argv(setup, cli), "--drain"], env, folder, log)
    texts, segments, extra = klipnote_results(spool, len(setup.files))
    return Run(method, submit_s + drain_s, max(submit_rss, drain_rss), texts, segments,
               {"submit_s": submit_s, "worker_s": drain_s, **extra,
                "first_commit_s": extra["first_finished_at"] - worker_started,
                "ready_s": ready_at(log) - worker_started if ready_at(log) else None,
                "ready_line": stdout.strip()})


def klipnote_warm(setup: Setup, folder: Path) -> Run:
    spool = folder / "spool"
    cli = [*klipnote_argv(setup.python), "--spool", str(spool)]
    log = folder / "log.txt"
    env = {**setup.env, "KLIPNOTE_ALIGN_MODEL": ALIGN_OFF}
    with open(log, "ab") as err:
        worker = subprocess.Popen(worker_argv(setup, cli), env=env, cwd=folder, stdout=subprocess.PIPE, stderr=err)
    try:
        started = time.perf_counter()
        line = worker.stdout.readline().decode() if worker.stdout else ""
        if "ready" not in line:
            sys.exit(f"the warm worker did not start: {line!r}; see {log}")
        ready_s = time.perf_counter() - started
        wall, submit_rss, _ = run_measured([*cli, "submit", "--model", "whisperx", "--wait", "-q",
                                            *map(str, setup.files)], env, folder, log)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, _, usage = os.wait4(worker.pid, 0)
    texts, segments, extra = klipnote_results(spool, len(setup.files))
    return Run("klipnote warm", wall, max(submit_rss, usage.ru_maxrss / 1024), texts, segments,
               {"worker_ready_s": ready_s, **extra})


def whisperx_argv(setup: Setup, out: Path, files: list[Path]) -> list[str]:
    return [setup.whisperx, "--model", setup.model_dir, "--device", "cpu", "--compute_type", setup.compute_type,
            "--batch_size", str(setup.batch_size), "--beam_size", str(BEAM_SIZE), "--no_align",
            "--vad_method", "pyannote", "--threads", str(setup.threads), "--output_format", "json",
            "--output_dir", str(out), "--verbose", "False", *map(str, files)]


def whisperx_results(out: Path, files: list[Path]) -> tuple[list[str], int]:
    texts, segments = [], 0
    for path in files:
        data = json.loads((out / f"{path.stem}.json").read_text())
        texts.append("".join(s["text"] for s in data["segments"]))
        segments += len(data["segments"])
    return texts, segments


def whisperx_per_file(setup: Setup, folder: Path) -> Run:
    wall, peak = 0.0, 0.0
    for path in setup.files:
        seconds, rss, _ = run_measured(whisperx_argv(setup, folder, [path]), setup.env, folder, folder / "log.txt")
        wall, peak = wall + seconds, max(peak, rss)
    texts, segments = whisperx_results(folder, setup.files)
    return Run("whisperx CLI per file", wall, peak, texts, segments)


def whisperx_all(setup: Setup, folder: Path) -> Run:
    wall, peak, _ = run_measured(whisperx_argv(setup, folder, setup.files), setup.env, folder, folder / "log.txt")
    texts, segments = whisperx_results(folder, setup.files)
    return Run("whisperx CLI all files", wall, peak, texts, segments)


def floor(setup: Setup, folder: Path) -> Run:
    argv = [setup.python, "-c", FLOOR_SCRIPT, setup.model_dir, setup.compute_type, str(setup.batch_size),
            str(BEAM_SIZE), str(setup.threads), *map(str, setup.files)]
    wall, peak, stdout = run_measured(argv, setup.env, folder, folder / "log.txt")
    data = json.loads(stdout.strip().splitlines()[-1])
    return Run(FLOOR, wall, peak, [f["text"] for f in data["files"]], sum(f["segments"] for f in data["files"]),
               {"load_s": data["load_s"], "transcribe_s": data["transcribe_s"],
                "languages": [f["language"] for f in data["files"]]})


def whisper_s2t(setup: Setup, folder: Path) -> Run:
    argv = [setup.s2t_python, "-c", S2T_SCRIPT, setup.model_dir, setup.compute_type, str(setup.batch_size),
            str(BEAM_SIZE), str(setup.threads), ",".join(setup.languages), *map(str, setup.files)]
    wall, peak, stdout = run_measured(argv, setup.env, folder, folder / "log.txt")
    data = json.loads(stdout.strip().splitlines()[-1])
    return Run(S2T, wall, peak, [f["text"] for f in data["files"]], sum(f["segments"] for f in data["files"]),
               {"load_s": data["load_s"], "transcribe_s": data["transcribe_s"], "compute_type": data["compute_type"]})


RUNNERS = {"klipnote cold": klipnote_cold,
           COLD_AUTO: functools.partial(klipnote_cold, method=COLD_AUTO, KLIPNOTE_ALIGN_MODEL="auto"),
           COLD_SILERO: functools.partial(klipnote_cold, method=COLD_SILERO, KLIPNOTE_VAD_METHOD="silero"),
           "klipnote warm": klipnote_warm, "whisperx CLI per file": whisperx_per_file,
           "whisperx CLI all files": whisperx_all, FLOOR: floor, S2T: whisper_s2t}


def chars(texts: list[str]) -> int:
    return sum(len("".join(t.split())) for t in texts)


def report(runs: dict[str, list[Run]], audio_s: float, count: int) -> str:
    medians = {m: statistics.median(r.wall_s for r in rs) for m, rs in runs.items()}
    base = medians.get(FLOOR)
    rows = []
    for method, rs in runs.items():
        last = rs[-1]
        rows.append([method, f"{medians[method]:.1f}", f"{audio_s / medians[method]:.1f}",
                     ratio(medians[method], base) if base else "n/a", f"{max(r.peak_rss_mib for r in rs):.0f}",
                     last.segments, chars(last.texts), ", ".join(f"{r.wall_s:.1f}" for r in rs)])
    headers = ["method", "wall s", "audio s/s", "× floor wall", "peak RSS MiB", "segments", "chars", "runs s"]
    numeric = [False, True, True, True, True, True, True, False]
    text = table(headers, rows, numeric) + f"\n\n{count} files, {audio_s:.1f} s of audio"
    starts = [[method, f"{r.extra['ready_s']:.1f}" if r.extra["ready_s"] is not None else "n/a",
               f"{r.extra['first_commit_s']:.1f}", f"{r.extra['worker_s']:.1f}"]
              for method in COLD for r in runs.get(method, [])]
    if starts:
        text += "\n\n" + table(["cold worker", "start to model loaded s", "to first job committed s", "total s"],
                                 starts, [False, True, True, True])
    return text


def main() -> int:
    args = parse_args()
    before = machine()
    from klipnote.offline_models import resolve_whisper

    scratch = Path(tempfile.mkdtemp(prefix="klipnote-bench-throughput-"))
    try:
        files = stage_files(args.clips, scratch / "input")
        audio_s = sum(audio_seconds(p) for p in files)
        threads = os.cpu_count() or 1
        whisperx = str(Path(args.python).parent / "whisperx")
        setup = Setup(args.python, whisperx, args.s2t_python, resolve_whisper(args.model), files,
                      [c.language for c in args.clips], args.compute_type, args.batch_size, threads,
                      clean_env(scratch, WHISPER_COMPUTE_TYPE=args.compute_type, PYANNOTE_METRICS_ENABLED="0"))
        runs: dict[str, list[Run]] = {m: [] for m in args.methods}
        for round_no in range(args.rounds):
            order = args.methods[round_no % len(args.methods):] + args.methods[:round_no % len(args.methods)]
            for method in order:
                folder = scratch / f"r{round_no}-{method.replace(' ', '-')}"
                folder.mkdir()
                run = RUNNERS[method](setup, folder)
                runs[method].append(run)
                print(f"  round {round_no + 1} {method}: {run.wall_s:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    header = (f"klipnote batch throughput, set {'files given' if args.files else args.file_set}: model "
              f"{args.model} ({setup.model_dir}), device cpu, compute type "
              f"{args.compute_type}, batch size {args.batch_size}, beam size {BEAM_SIZE}, language detected "
              f"(given to {S2T}), "
              f"{threads} CPU threads; median of {args.rounds} round(s), method order rotated each round")
    text = "\n".join([header, machine_line(machine(), before), "", report(runs, audio_s, len(files))])
    print(text)
    write_markdown(args.out, "throughput", text)
    write_json(args.out, "throughput", {
        "benchmark": "throughput", "machine": machine(), "started": before, "model": args.model,
        "model_dir": setup.model_dir, "compute_type": args.compute_type, "batch_size": args.batch_size,
        "beam_size": BEAM_SIZE, "threads": threads, "rounds": args.rounds, "audio_s": audio_s,
        "set": None if args.files else args.file_set,
        "files": [{"source": c.source, "language": c.language, "start": c.start, "length": c.length}
                  for c in args.clips],
        "results": {m: [{"wall_s": r.wall_s, "audio_s_per_s": audio_s / r.wall_s, "peak_rss_mib": r.peak_rss_mib,
                         "segments": r.segments, "chars": chars(r.texts), "texts": r.texts, **r.extra} for r in rs]
                    for m, rs in runs.items()},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
