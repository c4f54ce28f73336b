"""Shared fixtures: an isolated environment, a fresh spool, real media made with ffmpeg, the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from klipnote.config import SETTINGS
from klipnote.spool import Spool

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("KLIPNOTE_CORPUS", REPO.parent / "shared" / "corpus"))

#: Variables that would let the developer's own setup leak into a test: every setting's.
_LEAKY_ENV = ("KLIPNOTE_CONFIG", "KLIPNOTE_MODEL_CACHE", *(var for s in SETTINGS for var in s.env))


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _LEAKY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub is reachable in CI: fail fast, do not retry


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per test session for the offline models (assembled once, checksummed)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "jfk.flac").exists():
        pytest.fail(f"speech corpus not found at {CORPUS}; set KLIPNOTE_CORPUS to ../shared/corpus")
    return CORPUS


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def spool(spool_dir: Path) -> Spool:
    """A spool with short heartbeats so that fault tests run in seconds, not minutes."""
    return Spool(spool_dir, lease_ttl=3.0, heartbeat_interval=0.2).open()


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real media files, made once per session with ffmpeg."""
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is not installed; .ci/run installs it (apt-get install ffmpeg)")
    folder = tmp_path_factory.mktemp("media")
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
    files = {
        "wav": folder / "tone.wav",
        "mp3": folder / "tone.mp3",
        "m4a": folder / "tone.m4a",
        "mp4": folder / "clip.mp4",
        "video_only": folder / "silent-film.mp4",
    }
    ffmpeg(*tone, "-ar", "16000", "-ac", "1", str(files["wav"]))
    ffmpeg(*tone, str(files["mp3"]))
    ffmpeg(*tone, "-c:a", "aac", str(files["m4a"]))
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x64:d=1", *tone, "-shortest", "-c:v", "mpeg4", "-c:a", "aac",
           str(files["mp4"]))
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x64:d=1", "-c:v", "mpeg4", str(files["video_only"]))
    return files


Run = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def klipnote(spool_dir: Path) -> Run:
    """Run the real CLI in a subprocess against the test's spool; returns the completed process."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
            spool: Path | None = spool_dir, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "klipnote"]
        if spool is not None:
            cmd += ["--spool", str(spool)]
        return subprocess.run([*cmd, *args], input=input, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})}, cwd=cwd, check=False)

    return run


def _in_belle2_environment() -> bool:
    """The belle2 worker's environment is the one with torch < 2.6 (envs/cuda118)."""
    from importlib import metadata

    try:
        major, minor = (int(part) for part in metadata.version("torch").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) < (2, 6)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each environment runs its own tests: belle2-marked ones only where torch < 2.6, the rest elsewhere.

    scripts/test runs the suite once in .venv and once in .venv-belle2, so every test runs once.
    """
    belle2 = _in_belle2_environment()
    keep = [item for item in items if (item.get_closest_marker("belle2") is not None) == belle2]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
