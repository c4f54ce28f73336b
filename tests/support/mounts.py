"""Real filesystems for the tests that need the kernel's own errors: a small or a read-only tmpfs.

Mounting needs root (or CAP_SYS_ADMIN); where it is not allowed the test is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(mountpoint: Path, options: str = "size=16m") -> Iterator[Path]:
    """A tmpfs at ``mountpoint`` (created) with mount ``options``, unmounted afterwards."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def remount_read_only(mountpoint: Path) -> None:
    if subprocess.run(["mount", "-o", "remount,ro", str(mountpoint)], capture_output=True, check=False).returncode:
        pytest.skip(f"cannot remount {mountpoint} read-only")
