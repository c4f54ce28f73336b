"""Crash-safe file primitives: write to a temp name beside the target, fsync, ``os.replace``.

Every file a reader may look at (manifest, status, outputs) goes through here, so a reader sees
either the old content or the new, never half of either, even across power loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from klipnote.defaults import HASH_CHUNK


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable (POSIX needs the directory fsynced)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(target: Path) -> Path:
    """A hidden, unique sibling of ``target``: same directory, so ``os.replace`` is atomic."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(target: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``target`` with ``data`` atomically; on any error no temp file is left behind.

    The file gets exactly ``mode``: a service's umask (systemd's 0077, say) must not make the files
    of a group-shared spool unreadable to the group's other workers.
    """
    tmp = temp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(target.parent)


def atomic_write_text(target: Path, text: str, mode: int = 0o600) -> None:
    atomic_write_bytes(target, text.encode("utf-8"), mode)


def atomic_write_json(target: Path, obj: Any, mode: int = 0o600) -> None:
    atomic_write_text(target, json.dumps(obj, ensure_ascii=False, indent=2) + "\n", mode)


def probe_write(folder: Path) -> None:
    """Create and remove a file in ``folder``; raises the ``OSError`` if it cannot. The one test of
    writability that root, ACLs, read-only mounts, full disks and NFS all honour."""
    fd, name = tempfile.mkstemp(prefix=".probe-", dir=folder)
    os.close(fd)
    os.unlink(name)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object; raises ``ValueError`` when the file is not one (truncated, garbage)."""
    with open(path, "rb") as fh:
        data = json.loads(fh.read().decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    return data


def chunks(path: Path) -> Iterator[bytes]:
    """The file's content, ``HASH_CHUNK`` bytes at a time: hashing a multi-GiB model never holds it in memory."""
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            yield chunk


def sha256_file(path: Path, *, also: Iterable[Any] = ()) -> str:
    """SHA-256 of a file as hex; ``also``: other hashlib objects fed the same bytes in the same single read."""
    digest = hashlib.sha256()
    others = list(also)
    for chunk in chunks(path):
        digest.update(chunk)
        for other in others:
            other.update(chunk)
    return digest.hexdigest()


def copy_sha256(sources: Iterable[Path], out: BinaryIO) -> str:
    """Write the files one after the other to ``out``; the SHA-256 of what was written, from the same read."""
    digest = hashlib.sha256()
    for source in sources:
        for chunk in chunks(source):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
