"""What the benchmark scripts share: paths, a clean environment, the machine's state, tables and JSON.

Stdlib only, so every script can import it from any of the project's environments (they run as
``python scripts/bench_X.py``, which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: How often :class:`GpuPeak` asks nvidia-smi (seconds).
GPU_POLL_S = 0.2

REPO = Path(__file__).resolve().parent.parent
#: Real speech (see its README.md): ``KLIPNOTE_CORPUS``, else ``../shared/corpus`` beside the checkout.
CORPUS = Path(os.environ.get("KLIPNOTE_CORPUS", REPO.parent / "shared" / "corpus"))
WHISPERX_PYTHON = REPO / ".venv" / "bin" / "python"
BELLE2_PYTHON = REPO / ".venv-belle2" / "bin" / "python"
#: klipnote settings a developer's shell may hold; a benchmark must not inherit them.
LEAKY_ENV = (
    "KLIPNOTE_SPOOL", "KLIPNOTE_SPOOL_GROUP", "KLIPNOTE_CONFIG", "DEFAULT_TRANSCRIPTION_MODEL", "MAX_FILE_SIZE",
    "MAX_DURATION_HOURS", "KLIPNOTE_LEASE_TTL", "KLIPNOTE_HEARTBEAT_INTERVAL", "KLIPNOTE_MAX_ATTEMPTS",
    "WHISPER_MODEL", "WHISPER_DEVICE", "WHISPER_COMPUTE_TYPE", "KLIPNOTE_BATCH_SIZE", "KLIPNOTE_ALIGN_MODEL",
    "BELLE2_MODEL_NAME", "ENABLE_OPTIMIZATION", "KLIPNOTE_ZH_SCRIPT",
)  # fmt: skip


def python_or_current(path: Path) -> str:
    """``path`` if that interpreter exists (a project environment), else the running one."""
    return str(path) if path.is_file() else sys.executable


def clean_env(scratch: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without klipnote settings, with no config file to find, and offline."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    env["XDG_CONFIG_HOME"] = str(scratch / "config")
    env["XDG_DATA_HOME"] = str(scratch / "data")
    env["HF_HUB_OFFLINE"] = "1"  # no hub here: fail at once instead of retrying
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**env, **extra}


def klipnote_argv(python: str) -> list[str]:
    """The console script beside the interpreter (what users run), else ``python -m klipnote``."""
    script = Path(python).parent / "klipnote"
    return [str(script)] if script.is_file() and os.access(script, os.X_OK) else [python, "-m", "klipnote"]


def make_tone(target: Path, seconds: float = 1.0) -> Path:
    """A short 16 kHz mono sine WAV (spool benchmarks need an input, not speech)."""
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is not installed; it is needed to make the input file")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-ar", "16000", "-ac", "1", str(target)],
        check=True,
    )  # fmt: skip
    return target


def audio_seconds(path: Path) -> float:
    """Duration by ffprobe (the scripts that call it run beside ffmpeg anyway)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip())


def methods_arg(parser: argparse.ArgumentParser, text: str, known: Sequence[str]) -> list[str]:
    """``--methods a,b``: the names in order, or a usage error listing the known ones."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods or set(methods) - set(known):
        parser.error(f"--methods: a comma-separated list of: {', '.join(known)}")
    return methods


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    """Where and when: the figures mean little without the load the machine was under."""
    load1, load5, load15 = os.getloadavg()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_average": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }  # fmt: skip


def machine_line(info: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """One line for the top of a report; ``before`` adds the load average when the run started."""
    load = " ".join(f"{x:.2f}" for x in info["load_average"])
    started = f"; at start {' '.join(f'{x:.2f}' for x in before['load_average'])}" if before else ""
    return (f"{info['date']}, {info['cpus']} CPUs, load average (1/5/15 min) at end {load}{started} "
            "(the machine may be shared: a load above the CPU count means other work ran alongside)")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    """A markdown table; ``numeric`` columns are right-aligned."""
    numeric = numeric or [False] * len(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(out: Path | None, name: str, data: dict[str, Any]) -> Path | None:
    """``OUT/NAME.json`` (folders made as needed); nothing without ``out``."""
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.json"
    target.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return target


def write_markdown(out: Path | None, name: str, text: str) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.md").write_text(text + "\n", encoding="utf-8")


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base > 0 else "n/a"


class GpuPeak:
    """Peak GPU memory of this process by ``nvidia-smi``, polled in a thread.

    Inside a container nvidia-smi may list host process ids that match no pid here; then the
    peak is the whole GPU's used memory above its level when polling began (say so when reporting).
    """

    def __init__(self) -> None:
        self.process_peak_mib = 0.0
        self.device_peak_mib = 0.0
        self._baseline = self._device_used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    @staticmethod
    def _query(*fields: str) -> list[list[str]]:
        try:
            out = subprocess.run(["nvidia-smi", *fields, "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True, check=False).stdout
        except FileNotFoundError:  # no nvidia-smi: the peak stays 0
            return []
        return [[f.strip() for f in line.split(",")] for line in out.splitlines()]

    def _device_used(self) -> float:
        return sum(float(row[0]) for row in self._query("--query-gpu=memory.used") if row[0].isdigit())

    def _poll(self) -> None:
        pid = str(os.getpid())
        while not self._stop.wait(GPU_POLL_S):
            for row in self._query("--query-compute-apps=pid,used_memory"):
                if len(row) == 2 and row[0] == pid and row[1].isdigit():
                    self.process_peak_mib = max(self.process_peak_mib, float(row[1]))
            self.device_peak_mib = max(self.device_peak_mib, self._device_used() - self._baseline)

    def stop(self) -> tuple[float, str]:
        """The peak in MiB and what it counts: ``process``, or ``device above start`` when no pid matched."""
        self._stop.set()
        self._thread.join()
        if self.process_peak_mib:
            return self.process_peak_mib, "process"
        return self.device_peak_mib, "device above start"
