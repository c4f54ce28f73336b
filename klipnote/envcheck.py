"""Does this Python environment fit the worker it is asked to run? One clear line when it does not.

The two workers need different torch builds (whisperx: torch >= 2.6 for CUDA 12; belle2:
torch < 2.6 for CUDA 11.8) and so live in separate environments (envs/). Starting a worker in
the wrong one is the most likely set-up mistake; this catches it before a model is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from klipnote.errors import KlipnoteError


@dataclass(frozen=True)
class Expectation:
    kind: str
    env_dir: str
    torch_min: tuple[int, int] | None
    torch_below: tuple[int, int] | None
    cuda_prefix: str

    def torch_range(self) -> str:
        low = f">= {self.torch_min[0]}.{self.torch_min[1]}" if self.torch_min else ""
        high = f"< {self.torch_below[0]}.{self.torch_below[1]}" if self.torch_below else ""
        return " and ".join(p for p in (low, high) if p)


EXPECTATIONS = {
    "whisperx": Expectation("whisperx", "envs/cuda12", (2, 6), None, "12."),
    "belle2": Expectation("belle2", "envs/cuda118", None, (2, 6), "11.8"),
}


def version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _major_minor(version: str) -> tuple[int, int]:
    parts = version.split("+", maxsplit=1)[0].split(".")
    return int(parts[0]), int(parts[1])


def select_gpu(gpu: int | None) -> None:
    """``--gpu N``: make GPU N the only one this process sees (before torch initialises CUDA)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def check(kind: str, device: str) -> tuple[str, dict[str, Any]]:
    """Check torch against the worker kind; resolve ``auto`` to a device. Returns (device, details)."""
    expected = EXPECTATIONS[kind]
    try:
        import torch
    except ImportError:
        raise KlipnoteError(f"torch is not installed in this environment; the {kind} worker runs from "
                            f"{expected.env_dir} (pip install -r {expected.env_dir}/requirements.txt)") from None
    found = _major_minor(torch.__version__)
    if (expected.torch_min and found < expected.torch_min) or (expected.torch_below and found >= expected.torch_below):
        raise KlipnoteError(f"this environment has torch {torch.__version__}, the {kind} worker needs torch "
                            f"{expected.torch_range()}: start it from {expected.env_dir}")
    details: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if device == "cpu":
        return "cpu", details
    available = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if available else "cpu"
        if not available:
            return device, details
    if not available:
        raise KlipnoteError("CUDA is not available to torch (no GPU visible, or a driver problem): check nvidia-smi "
                            "and CUDA_VISIBLE_DEVICES, or run the worker with --device cpu")
    cuda = torch.version.cuda or ""
    if not cuda.startswith(expected.cuda_prefix):
        raise KlipnoteError(f"torch here is built for CUDA {cuda or 'none'}, the {kind} worker expects CUDA "
                            f"{expected.cuda_prefix.rstrip('.')}.x: install {expected.env_dir}/requirements.txt")
    props = torch.cuda.get_device_properties(0)
    details.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 1024**3, 1))
    return "cuda", details
