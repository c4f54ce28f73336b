"""Running a command as a user that file permissions apply to, even when the tests run as root."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def unprivileged() -> list[str]:
    """A command prefix under which file permissions apply, even to root; skips when there is none."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-all"] if setpriv else []
    probe = subprocess.run([*prefix, "cat", "/proc/self/status"], capture_output=True, text=True, check=False)
    if not prefix or probe.returncode != 0 or "CapEff:\t0000000000000000" not in probe.stdout:
        pytest.skip("running as root, where chmod 000 does not stop reads, and capabilities cannot be dropped")
    return prefix
