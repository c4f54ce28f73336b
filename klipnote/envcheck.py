"""Does this Python environment fit the worker it is asked to run? One clear line when it does not.

The two workers need different torch builds (whisperx: torch >= 2.6 for CUDA 12; belle2:
torch < 2.6 for CUDA 11.8) and so live in separate environments (envs/). Starting a worker in
the wrong one is the most likely set-up mistake; this catches it before a model is loaded. The
worker (:func:`check`) and ``klipnote doctor`` run the same functions, so they never disagree.

The exact pins of each environment live in ``envs/<dir>/requirements.txt`` of the source tree,
the one place they are written. :func:`pins_file` finds them beside the ``klipnote`` package (an
editable install or a checkout, which is how envs/ tells you to install); from a wheel they are
not there, and :func:`pin_report` says so instead of guessing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from klipnote.config import Device
from klipnote.errors import KlipnoteError
from klipnote.job import Model

#: The source tree that holds envs/, when klipnote runs from one (editable install or checkout).
SOURCE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Expectation:
    kind: Model
    env_dir: str
    torch_min: tuple[int, int] | None
    torch_below: tuple[int, int] | None
    cuda_prefix: str

    def torch_range(self) -> str:
        low = f">= {self.torch_min[0]}.{self.torch_min[1]}" if self.torch_min else ""
        high = f"< {self.torch_below[0]}.{self.torch_below[1]}" if self.torch_below else ""
        return " and ".join(p for p in (low, high) if p)

    def accepts(self, torch_version: str) -> bool:
        found = _major_minor(torch_version)
        too_old = self.torch_min is not None and found < self.torch_min
        too_new = self.torch_below is not None and found >= self.torch_below
        return not (too_old or too_new)


EXPECTATIONS = {
    Model.WHISPERX: Expectation(Model.WHISPERX, "envs/cuda12", (2, 6), None, "12."),
    Model.BELLE2: Expectation(Model.BELLE2, "envs/cuda118", None, (2, 6), "11.8"),
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
    """``--gpu N``: make GPU N the only one this process sees (before torch initialises CUDA).

    N is the number nvidia-smi shows: CUDA numbers GPUs fastest first unless told to follow the PCI
    bus, so on a box with mixed cards its GPU 1 need not be nvidia-smi's. An order already set wins.
    """
    if gpu is not None:
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def kind_of_environment() -> Model | None:
    """The worker kind whose torch range this environment's torch falls in (None without torch).

    Read from package metadata, so it costs no torch import.
    """
    installed = version_of("torch")
    if installed is None:
        return None
    return next((kind for kind, expected in EXPECTATIONS.items() if expected.accepts(installed)), None)


def import_torch(kind: Model) -> Any:
    """The imported torch module, if its version fits the worker kind; else a :class:`KlipnoteError`."""
    expected = EXPECTATIONS[kind]
    try:
        import torch
    except ImportError:
        raise KlipnoteError(f"torch is not installed in this environment; the {kind.value} worker runs from "
                            f"{expected.env_dir} (pip install -r {expected.env_dir}/requirements.txt)") from None
    if not expected.accepts(torch.__version__):
        raise KlipnoteError(f"this environment has torch {torch.__version__}, the {kind.value} worker needs torch "
                            f"{expected.torch_range()}: start it from {expected.env_dir}")
    return torch


def resolve_device(kind: Model, device: Device, torch: Any) -> tuple[str, dict[str, Any]]:
    """Resolve ``auto`` to a device and check torch's CUDA build against the kind. Returns (device, details)."""
    expected = EXPECTATIONS[kind]
    details: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if device is Device.CPU:
        return "cpu", details
    available = torch.cuda.is_available()
    if device is Device.AUTO and not available:
        return "cpu", details
    if not available:
        raise KlipnoteError("CUDA is not available to torch (no GPU visible, or a driver problem): check nvidia-smi "
                            "and CUDA_VISIBLE_DEVICES, or run the worker with --device cpu")
    cuda = torch.version.cuda or ""
    if not cuda.startswith(expected.cuda_prefix):
        raise KlipnoteError(f"torch here is built for CUDA {cuda or 'none'}, the {kind.value} worker expects CUDA "
                            f"{expected.cuda_prefix.rstrip('.')}.x: install {expected.env_dir}/requirements.txt")
    props = torch.cuda.get_device_properties(0)
    details.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 1024**3, 1))
    return "cuda", details


def check(kind: Model, device: Device) -> tuple[str, dict[str, Any]]:
    """Check torch against the worker kind; resolve ``auto`` to a device. Returns (device, details)."""
    return resolve_device(kind, device, import_torch(kind))


# ---------------------------------------------------------------------- pinned packages


def pins_file(kind: Model, root: Path = SOURCE_ROOT) -> Path | None:
    """``envs/<dir>/requirements.txt`` of the kind, if the source tree is at hand."""
    path = root / EXPECTATIONS[kind].env_dir / "requirements.txt"
    return path if path.is_file() else None


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` requirements of a file, by canonical name, parsed as pip does (extras such as
    ``uvicorn[standard]==0.30``, markers such as ``; sys_platform == 'linux'``, hashes); a pin whose
    marker excludes this environment is not expected here. Comments, blanks, options and ranges skipped."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        text = re.sub(r"(^|\s)#.*", "", line).split("--hash", maxsplit=1)[0].strip().rstrip("\\").strip()
        if not text or text.startswith("-"):
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue  # a URL or path line: nothing to compare a version with
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if len(exact) == 1 and (requirement.marker is None or requirement.marker.evaluate()):
            pins[canonicalize_name(requirement.name)] = exact[0]
    return pins


def matches_pin(installed: str, pinned: str) -> bool:
    """PEP 440 ``==``: a pin without a local label also matches local builds (2.5.1 matches 2.5.1+cu118)."""
    return installed == pinned or ("+" not in pinned and installed.split("+", maxsplit=1)[0] == pinned)


@dataclass(frozen=True)
class PinReport:
    """This environment against one requirements file."""

    path: Path
    pinned: int
    missing: list[str] = field(default_factory=list)  # "name==pin"
    different: list[str] = field(default_factory=list)  # "name pin (installed)"


def pin_report(kind: Model, root: Path = SOURCE_ROOT) -> PinReport | None:
    """Compare installed distributions with the kind's pins; None when the pins file cannot be found."""
    path = pins_file(kind, root)
    if path is None:
        return None
    pins = read_pins(path)
    report = PinReport(path, len(pins))
    for name, pinned in sorted(pins.items()):
        installed = version_of(name)
        if installed is None:
            report.missing.append(f"{name}=={pinned}")
        elif not matches_pin(installed, pinned):
            report.different.append(f"{name} {pinned} (installed {installed})")
    return report
