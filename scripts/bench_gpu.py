#!/usr/bin/env python3
"""GPU real-time factor of the two production architectures at fp16 and several batch sizes, on random weights.

No model hub is reachable on the lent GPU machines either, so this builds randomly initialised
models of the exact architectures locally and measures compute, not accuracy:

* ``whisperx`` (the whisperx engine's decoder: CTranslate2 through faster-whisper): a transformers
  ``WhisperForConditionalGeneration`` from a large-v2-shaped ``WhisperConfig`` (d_model 1280, 32+32
  layers, 20 heads, 80 mel bins, 51,865 tokens), random weights, converted with CTranslate2's
  ``TransformersConverter`` to float16 (a vocabulary with Whisper's special tokens stands in for
  the tokenizer, which would need a download); timed: ``ctranslate2.models.Whisper.generate`` on a
  batch of 30 s log-mel windows, greedy, prompt ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>``;
* ``belle2`` (the belle2 engine's model class): ``WhisperForConditionalGeneration`` from a
  large-v3-shaped config (as large-v2, but 128 mel bins and 51,866 tokens), random weights, fp16,
  sdpa attention; timed: ``model.generate`` on a batch of 30 s windows, greedy, language zh;
* ``belle2-engine`` (klipnote's own ``Belle2Engine.decode_batch``: generate with timestamps, then the
  alignment pass and DTW) on a random checkpoint of large-v3's layout and size (tests/support/tiny_whisper.py,
  drawn on the GPU), float16: wall time split where generate returns, and torch's peak GPU memory above
  the weights against the formula of scripts/bench_memory.py, which sets the belle2 worker's default
  batch size. Here end-of-text is not suppressed: random weights never say it, so every window decodes
  to the decoder's last position (448), in as many passes as generate's timestamps make (the decoder
  calls are reported), the worst case a batch size must fit. Batch sizes ``--engine-batch-sizes``
  (default 1, 16, 32), one call each after a warm-up window of 16 positions.

Random weights would stop at a random point (or never), so every window decodes exactly
``--tokens`` tokens: end-of-text is suppressed (CTranslate2: ``suppress_tokens=[eot]`` and
``max_length = 2 x tokens``, since it decodes at most half of max_length; transformers:
``min_new_tokens = max_new_tokens = tokens``). The decoded count is read back from the output and
reported, not assumed. Inputs are random log-mel features (the content does not change the
compute); feature extraction, VAD and word timing are not timed. Per batch size: one warm-up call,
then ``--repeat`` timed calls (median). ``RTF`` = seconds per second of audio (batch x 30 s);
``x real time`` its inverse. GPU memory: belle2, ``torch.cuda.max_memory_allocated`` per batch
size (reset before it); both engines, the process's memory by ``nvidia-smi`` (polled every
0.2 s; includes the allocator's cache and only grows; in a container whose pids nvidia-smi does not
show, the whole GPU's use above its level at the start, as the line says).

Each engine runs in its own process and environment (``--whisperx-python``, default ``.venv``;
``--belle2-python``, default ``.venv-belle2``; else this interpreter). Models are cached under
``--cache`` (default: the system's temp) and rebuilt only when missing.

Usage on the GPU machine (the belle2 parts take 5-6 minutes on an H200, building included; belle2-engine needs
base-offline's tokenizer files, ``--model-cache``, and the silero-vad package):
``python scripts/bench_gpu.py --out "$OUT"``; on a CPU, the smoke configuration (tiny dims, two
decoder steps' worth of tokens, batch sizes 1 and 2, float32): ``python scripts/bench_gpu.py --smoke``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchkit import (
    BELLE2_PYTHON,
    REPO,
    WHISPERX_PYTHON,
    GpuPeak,
    clean_env,
    machine,
    machine_line,
    peak_rss_mib,
    python_or_current,
    table,
    write_json,
    write_markdown,
)

ENGINES = ("whisperx", "belle2", "belle2-engine")
WINDOW_S = 30.0
FRAMES = 3000  # mel frames in a 30 s window
TEXT_TOKENS = 50257  # GPT-2 byte-level BPE part of Whisper's vocabulary; specials follow
#: Whisper's languages in token order; large-v3 adds "yue" at the end.
LANGUAGES = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id", "hi",
    "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg", "lt", "la",
    "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy",
    "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be",
    "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su"
)
#: Architecture per engine: large-v2 (whisperx) and large-v3 (belle2); ``--smoke`` shrinks the widths.
LARGE = {"d_model": 1280, "encoder_layers": 32, "decoder_layers": 32, "encoder_attention_heads": 20,
         "decoder_attention_heads": 20, "encoder_ffn_dim": 5120, "decoder_ffn_dim": 5120}
TINY = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}
ARCH = {"whisperx": ("large-v2", 80, 99), "belle2": ("large-v3", 128, 100)}  # name, mel bins, languages


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny dims on the CPU: checks the script, not the GPU")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default cuda (cpu with --smoke)")
    parser.add_argument("--batch-sizes", help="comma-separated (default 1,4,8,16,32; --smoke 1,2)")
    parser.add_argument("--tokens", type=int, help="tokens decoded per window (default 100; --smoke 4)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per batch size; median (default 3)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated: " + ", ".join(ENGINES))
    parser.add_argument("--engine-batch-sizes", help="belle2-engine: comma-separated (default 1,16,32; --smoke 1,2)")
    parser.add_argument("--model-cache", type=Path, help="belle2-engine: klipnote's model cache holding base-offline's "
                        "tokenizer files (default: klipnote's own; only tokenizer.json and vocabulary.json are read)")
    parser.add_argument("--whisperx-python", default=python_or_current(WHISPERX_PYTHON))
    parser.add_argument("--belle2-python", default=python_or_current(BELLE2_PYTHON))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "klipnote-bench-gpu-models",
                        help="where the random models are built and kept")
    parser.add_argument("--out", type=Path, help="write gpu.json and gpu.md here")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("1,2" if args.smoke else "1,4,8,16,32")).split(",")]
    args.tokens = args.tokens or (4 if args.smoke else 100)
    args.engine_batch_sizes = [int(b) for b in (args.engine_batch_sizes or ("1,2" if args.smoke else "1,16,32"))
                               .split(",")]
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not args.engines or set(args.engines) - set(ENGINES):
        parser.error("--engines: a comma-separated list of " + ", ".join(ENGINES))
    if min(args.batch_sizes + args.engine_batch_sizes) < 1 or args.tokens < 1 or args.repeat < 1:
        parser.error("--batch-sizes, --engine-batch-sizes, --tokens and --repeat must be at least 1")
    if args.tokens > 200:
        parser.error("--tokens: at most 200 (Whisper's decoder holds 448 positions, half of them for text)")
    return args


# ---------------------------------------------------------------------------------------------- models


def special_tokens(languages: int) -> list[str]:
    """Whisper's special tokens in id order, from ``<|endoftext|>`` (50257) to ``<|notimestamps|>``."""
    return ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in [*LANGUAGES, "yue"][:languages]),
            "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]


def whisper_config(engine: str, smoke: bool) -> Any:
    from transformers import WhisperConfig

    _, mels, languages = ARCH[engine]
    specials = special_tokens(languages)
    vocab = TEXT_TOKENS + len(specials) + 1501  # timestamps <|0.00|> ... <|30.00|>
    return WhisperConfig(
        vocab_size=vocab, num_mel_bins=mels, max_source_positions=1500, max_target_positions=448,
        **(TINY if smoke else LARGE), eos_token_id=TEXT_TOKENS, pad_token_id=TEXT_TOKENS, bos_token_id=TEXT_TOKENS,
        decoder_start_token_id=TEXT_TOKENS + 1, begin_suppress_tokens=[220, TEXT_TOKENS], suppress_tokens=[],
    )  # fmt: skip


def set_generation_config(model: Any, languages: int) -> dict[str, int]:
    """What Whisper's generate() and CTranslate2's converter read; the ids of the prompt tokens."""
    specials = special_tokens(languages)
    ids = {token: TEXT_TOKENS + i for i, token in enumerate(specials)}
    config = model.generation_config
    config.lang_to_id = {token: ids[token] for token in specials[2:2 + languages]}
    config.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    config.no_timestamps_token_id = ids["<|notimestamps|>"]
    config.decoder_start_token_id = ids["<|startoftranscript|>"]
    config.eos_token_id = config.pad_token_id = ids["<|endoftext|>"]
    config.is_multilingual = True
    config.suppress_tokens, config.begin_suppress_tokens = [], [220, ids["<|endoftext|>"]]
    layers, heads = model.config.decoder_layers, model.config.decoder_attention_heads
    config.alignment_heads = [[layer, head] for layer in range(layers // 2, layers) for head in range(heads)]
    config.max_initial_timestamp_index = 50
    return ids


def random_model(engine: str, smoke: bool, device: str) -> tuple[Any, dict[str, int]]:
    """Random weights of the architecture (initialised on the GPU when there is one: much faster)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    with torch.device(device):
        model = WhisperForConditionalGeneration(whisper_config(engine, smoke))
    return model, set_generation_config(model, ARCH[engine][2])


class VocabularyOnly:
    """The part of a tokenizer CTranslate2's Whisper converter reads: names and ids of the tokens."""

    def __init__(self, specials: list[str]) -> None:
        self.tokens = [f"t{i}" for i in range(TEXT_TOKENS)] + specials
        self.additional_special_tokens = specials[1:]

    def get_vocab(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.tokens.index(token)


def ct2_model(cache: Path, smoke: bool, device: str, compute_type: str) -> tuple[Path, dict[str, int], float]:
    """The large-v2-shaped CTranslate2 folder (built once per cache); its prompt ids; seconds spent building."""
    target = cache / f"whisperx-{'tiny' if smoke else 'large-v2'}-random-ct2-{compute_type}"
    ids_file = target / "prompt_ids.json"
    if ids_file.is_file():
        return target, json.loads(ids_file.read_text()), 0.0
    import torch
    from ctranslate2.converters import TransformersConverter

    started = time.perf_counter()
    model, ids = random_model("whisperx", smoke, device)
    source = cache / f"{target.name}.transformers"
    shutil.rmtree(source, ignore_errors=True)
    model.to(torch.float16 if compute_type == "float16" else torch.float32).cpu().save_pretrained(source)
    del model
    specials = special_tokens(ARCH["whisperx"][2])

    class Converter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: str, **kwargs: Any) -> VocabularyOnly:
            return VocabularyOnly(specials)

    staging = cache / f"{target.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    Converter(str(source)).convert(str(staging), quantization=compute_type, force=True)
    (staging / "prompt_ids.json").write_text(json.dumps(ids))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    shutil.rmtree(source, ignore_errors=True)
    return target, ids, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------- child


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def is_oom(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower()


def run_whisperx(args: argparse.Namespace) -> dict[str, Any]:
    import ctranslate2
    import numpy as np

    compute_type = "float32" if args.device == "cpu" else "float16"
    args.cache.mkdir(parents=True, exist_ok=True)
    folder, ids, build_s = ct2_model(args.cache, args.smoke, args.device, compute_type)
    started = time.perf_counter()
    model = ctranslate2.models.Whisper(str(folder), device=args.device, compute_type=compute_type)
    load_s = time.perf_counter() - started
    prompt = [ids["<|startoftranscript|>"], ids["<|en|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]]
    rng = np.random.default_rng(0)

    def call(batch: int) -> int:
        features = ctranslate2.StorageView.from_array(
            rng.standard_normal((batch, ARCH["whisperx"][1], FRAMES), dtype=np.float32))
        results = model.generate(features, [prompt] * batch, beam_size=1, max_length=2 * args.tokens,
                                 suppress_tokens=[ids["<|endoftext|>"]], suppress_blank=False)
        return min(len(r.sequences_ids[0]) for r in results)

    return {"model": "large-v2 (random)" if not args.smoke else "tiny dims (random)", "path": str(folder),
            "library": f"ctranslate2 {ctranslate2.__version__}", "compute_type": compute_type, "build_s": build_s,
            "load_s": load_s, "batches": measure(call, args, torch_peak=None)}


class StepCounter:
    """A logits processor that changes nothing and counts decoding steps: the tokens each window got."""

    count = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.count += 1
        return scores


def run_belle2(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    dtype = torch.float32 if args.device == "cpu" else torch.float16
    started = time.perf_counter()
    model, _ = random_model("belle2", args.smoke, args.device)
    model = model.to(dtype).eval()
    model.config._attn_implementation = "sdpa"  # what Belle2Engine asks from_pretrained for
    build_s = time.perf_counter() - started
    generator = torch.Generator(device=args.device).manual_seed(0)

    steps = StepCounter()

    def call(batch: int) -> int:
        features = torch.randn((batch, ARCH["belle2"][1], FRAMES), generator=generator, device=args.device,
                               dtype=dtype)
        steps.count = 0
        with torch.inference_mode():
            model.generate(features, language="zh", task="transcribe", max_new_tokens=args.tokens,
                           min_new_tokens=args.tokens, do_sample=False, num_beams=1,
                           logits_processor=transformers.LogitsProcessorList([steps]))
        return steps.count

    def torch_peak(reset: bool) -> float:
        if args.device != "cuda":
            return 0.0
        if reset:
            torch.cuda.reset_peak_memory_stats()
        return torch.cuda.max_memory_allocated() / 2**20

    return {"model": "large-v3 (random)" if not args.smoke else "tiny dims (random)",
            "library": f"transformers {transformers.__version__}, torch {torch.__version__}",
            "compute_type": str(dtype).removeprefix("torch."), "build_s": build_s, "load_s": 0.0,
            "batches": measure(call, args, torch_peak=torch_peak)}


def run_belle2_engine(args: argparse.Namespace) -> dict[str, Any]:
    """klipnote's own belle2 ``decode_batch`` (generate with SDPA, then the alignment pass and DTW) on a random
    checkpoint of large-v3's layout and size: the wall time split where generate returns, and torch's peak GPU
    memory above the loaded weights against the formula of scripts/bench_memory.py.

    Random weights never say end-of-text: every window decodes to the decoder's last position (448), the
    worst case a batch size must fit. One warm-up window first (CUDA's kernels and handles), one call per size.
    """
    import torch
    from bench_memory import SHAPES, Shape, noise_windows, per_window, weights

    from klipnote.config import load_settings
    from klipnote.engines import create
    from klipnote.job import Model
    from tests.support.tiny_whisper import LARGE_V3, build_checkpoint

    shape = Shape("smoke", 64, 2, 2, 4, 128, 3) if args.smoke else SHAPES["large-v3"]
    dtype = "float32" if args.device == "cpu" else "float16"
    args.cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    folder = build_checkpoint(LARGE_V3, args.cache / f"belle2-engine-{shape.name}", args.model_cache,
                              heads=shape.head_pairs(), device=args.device, dtype=dtype, **shape.dims())
    build_s = time.perf_counter() - started
    print(f"  built in {build_s:.1f} s", file=sys.stderr, flush=True)
    settings = load_settings({"belle2_model": str(folder), "compute_type": dtype})
    engine: Any = create(Model.BELLE2, settings, device=args.device, batch_size=max(args.engine_batch_sizes))
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started
    print(f"  loaded in {load_s:.1f} s", file=sys.stderr, flush=True)
    engine._model.generation_config.max_length = 16  # the warm-up below: every kernel once, not 448 positions
    generate, ended = engine._model.generate, [0.0]

    def timed_generate(*call_args: Any, **kwargs: Any) -> Any:
        out = generate(*call_args, **kwargs)
        sync(args.device)
        ended[0] = time.perf_counter()
        return out

    engine._model.generate = timed_generate
    steps = [0]
    engine._model.model.decoder.register_forward_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    cuda = args.device == "cuda"
    weights_mib = torch.cuda.memory_allocated() / 2**20 if cuda else 0.0
    engine.decode_batch(noise_windows(engine, 1))
    positions = engine._model.generation_config.max_length = 16 if args.smoke else 448
    rows = []
    for batch in args.engine_batch_sizes:
        windows = noise_windows(engine, batch)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() if cuda else 0
        steps[0] = 0
        try:
            sync(args.device)
            begun = time.perf_counter()
            engine.decode_batch(windows)
            sync(args.device)
            wall = time.perf_counter() - begun
        except Exception as exc:
            if not is_oom(exc):
                raise
            rows.append({"batch": batch, "error": "out of memory"})
            break
        row = {"batch": batch, "wall_s": wall, "generate_s": ended[0] - begun, "align_s": begun + wall - ended[0],
               "decoder_calls": steps[0], "audio_s": batch * WINDOW_S, "rtf": wall / (batch * WINDOW_S),
               "formula_mib": batch * per_window(shape, 2, positions) / 2**20}
        if cuda:
            row["peak_above_weights_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
        rows.append(row)
        print(f"  batch {batch}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return {"model": "tiny dims (random)" if args.smoke else "large-v3 (random)",
            "library": f"klipnote's Belle2Engine, transformers {version('transformers')}, torch {torch.__version__}",
            "compute_type": dtype, "build_s": build_s, "load_s": load_s, "positions": positions,
            "weights_mib": weights_mib, "formula_weights_mib": weights(shape, 2) / 2**20, "engine_batches": rows}


def measure(call: Any, args: argparse.Namespace, torch_peak: Any) -> list[dict[str, Any]]:
    """Per batch size: warm-up, then ``repeat`` timed calls; stops at the first out-of-memory."""
    rows = []
    for batch in args.batch_sizes:
        if torch_peak is not None:
            torch_peak(True)
        try:
            call(batch)
            walls, decoded = [], []
            for _ in range(args.repeat):
                sync(args.device)
                started = time.perf_counter()
                decoded.append(call(batch))
                sync(args.device)
                walls.append(time.perf_counter() - started)
        except Exception as exc:
            if not is_oom(exc):
                raise
            rows.append({"batch": batch, "error": "out of memory"})
            break
        wall = statistics.median(walls)
        row = {"batch": batch, "walls_s": walls, "wall_s": wall, "audio_s": batch * WINDOW_S,
               "rtf": wall / (batch * WINDOW_S), "tokens_decoded": min(decoded)}
        if torch_peak is not None and args.device == "cuda":
            row["torch_peak_mib"] = torch_peak(False)
        rows.append(row)
        print(f"  batch {batch}: {wall:.3f} s, {row['tokens_decoded']} tokens", file=sys.stderr, flush=True)
    return rows


def child(args: argparse.Namespace) -> int:
    gpu = GpuPeak() if args.device == "cuda" else None
    result = {"whisperx": run_whisperx, "belle2": run_belle2, "belle2-engine": run_belle2_engine}[args.child](args)
    result["peak_rss_mib"] = peak_rss_mib()
    if gpu is not None:
        result["gpu_peak_mib"], result["gpu_peak_counts"] = gpu.stop()
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------- parent


def run_engine(engine: str, args: argparse.Namespace, env: dict[str, str], log: Path) -> dict[str, Any]:
    python = args.whisperx_python if engine == "whisperx" else args.belle2_python
    argv = [python, str(Path(__file__).resolve()), "--child", engine, "--device", args.device,
            "--batch-sizes", ",".join(map(str, args.batch_sizes)), "--tokens", str(args.tokens),
            "--repeat", str(args.repeat), "--cache", str(args.cache), "--engine-batch-sizes",
            ",".join(map(str, args.engine_batch_sizes)), *(["--model-cache", str(args.model_cache)]
                                                           if args.model_cache else []),
            *(["--smoke"] if args.smoke else [])]
    print(f"{engine}: {python}", file=sys.stderr, flush=True)
    out = log.with_name(f"{engine}.json")
    # The child's progress shows as it comes (a run cut short by a time limit still says how far it got).
    with open(log, "a") as err, open(out, "wb") as stdout:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            err.write(line)
    if proc.wait() != 0:
        return {"error": f"exited {proc.returncode}: {log.read_text(errors='replace')[-1500:]}"}
    return dict(json.loads(out.read_text().strip().splitlines()[-1]))


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    cuda = args.device == "cuda"
    headers = ["engine", "model", "compute", "batch", "tokens/window", "wall s", "RTF", "× real time"]
    numeric = [False, False, False, True, True, True, True, True]
    if cuda:
        headers += ["torch peak MiB"]
        numeric += [True]
    rows, notes, engine_tables = [], [], []
    for engine, result in results.items():
        if "error" in result:
            notes.append(f"- {engine}: failed, {result['error'].strip().splitlines()[-1]}")
            continue
        if "engine_batches" in result:
            engine_tables.append(engine_report(result, cuda))
        for b in result.get("batches", []):
            if "error" in b:
                rows.append([engine, result["model"], result["compute_type"], b["batch"], "", b["error"], "", ""]
                            + ([""] if cuda else []))
                continue
            row = [engine, result["model"], result["compute_type"], b["batch"], b["tokens_decoded"],
                   f"{b['wall_s']:.3f}", f"{b['rtf']:.4f}", f"{1 / b['rtf']:.1f}"]
            if cuda:
                row.append(f"{b['torch_peak_mib']:.0f}" if "torch_peak_mib" in b else "n/a (CTranslate2)")
            rows.append(row)
        gpu = (f", GPU peak {result['gpu_peak_mib']:.0f} MiB (nvidia-smi, {result['gpu_peak_counts']})"
               if "gpu_peak_mib" in result else "")
        notes.append(f"- {engine}: {result['library']}; built in {result['build_s']:.1f} s (0.0: reused from "
                     f"--cache), loaded in {result['load_s']:.1f} s; peak RSS {result['peak_rss_mib']:.0f} MiB{gpu}")
    return "\n\n".join([*([table(headers, rows, numeric)] if rows else []), *engine_tables,
                        *(["\n".join(notes)] if notes else [])])


def engine_report(result: dict[str, Any], cuda: bool) -> str:
    """The belle2 engine's own decode_batch: time split at generate's end, memory against the formula."""
    headers = ["batch", "decoder calls", "wall s", "generate s", "align s", "RTF", "× real time"]
    if cuda:
        headers += ["peak above weights MiB", "formula MiB", "measured / formula"]
    rows = []
    for b in result["engine_batches"]:
        if "error" in b:
            rows.append([b["batch"], b["error"], *[""] * (len(headers) - 2)])
            continue
        row = [b["batch"], b["decoder_calls"], f"{b['wall_s']:.2f}", f"{b['generate_s']:.2f}", f"{b['align_s']:.2f}",
               f"{b['rtf']:.4f}", f"{1 / b['rtf']:.1f}"]
        if cuda:
            row += [f"{b['peak_above_weights_mib']:.0f}", f"{b['formula_mib']:.0f}",
                    f"{b['peak_above_weights_mib'] / b['formula_mib']:.2f}"]
        rows.append(row)
    weights = (f"; weights {result['weights_mib']:.0f} MiB on the GPU (formula {result['formula_weights_mib']:.0f})"
               if cuda else "")
    return (f"belle2-engine: klipnote's decode_batch, {result['model']}, {result['compute_type']}, every window "
            f"decoded to position {result['positions']}{weights}\n\n"
            + table(headers, rows, [True] * len(headers)))


def main() -> int:
    args = parse_args()
    if args.child:
        return child(args)
    before = machine()
    scratch = Path(tempfile.mkdtemp(prefix="klipnote-bench-gpu-"))
    try:
        env = clean_env(scratch, CUDA_MODULE_LOADING="LAZY")
        results = {engine: run_engine(engine, args, env, scratch / "log.txt") for engine in args.engines}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    weights = ("SMOKE: random weights of tiny dims, not the real architectures" if args.smoke
               else "random weights of the exact architectures")
    header = (f"klipnote GPU benchmark: device {args.device}, {weights}, {args.tokens} tokens decoded per "
              f"30 s window (end-of-text suppressed), greedy, random log-mel input, median of {args.repeat} after "
              "one warm-up; RTF = wall / (batch x 30 s)")
    text = "\n".join([header, machine_line(machine(), before), "", report(results, args)])
    print(text)
    write_markdown(args.out, "gpu", text)
    write_json(args.out, "gpu", {"benchmark": "gpu", "machine": machine(), "started": before, "smoke": args.smoke,
                                 "device": args.device, "tokens": args.tokens, "repeat": args.repeat,
                                 "results": results})
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
