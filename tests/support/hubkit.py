"""A local stand-in for the Hugging Face hub: the few HTTP endpoints ``snapshot_download`` uses.

No hub is reachable from CI, and pulling real multi-gigabyte models in tests would be slow
anyway. This serves small real repositories over HTTP as huggingface_hub 0.36 (.venv, requests)
and 1.x (.venv-belle2, httpx) ask for them; point ``HF_ENDPOINT`` at :attr:`Hub.url`.

What the clients call (read from their ``_snapshot_download.py``, ``file_download.py``, ``hf_api.py``):

- ``GET /api/models/<repo>/revision/<rev>``: the commit a revision resolves to (``sha``) and the
  files (``siblings``).
- ``GET /api/models/<repo>/tree/<rev>?recursive=True``: every file with its size, git blob id
  (``oid``) and, for LFS files, ``lfs.oid`` (SHA-256) and ``lfs.size``. 1.x lists files from it;
  klipnote reads the checksums from it.
- ``HEAD`` then ``GET /<repo>/resolve/<rev>/<path>``: ``X-Repo-Commit``, ``ETag`` (the blob
  name in the cache: the SHA-256 for LFS files, the git blob id for others), ``Content-Length``.

Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound), as the hub's do, so
the client raises its own typed errors. ``poison`` makes the server send other bytes than its
listing promises for a file, like a tampered mirror.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: Files stored in LFS on the real hub: weights. Everything else is a plain git blob.
LFS_SUFFIXES = (".bin", ".safetensors", ".pt", ".onnx")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    """One model repository at one commit: file path -> content (bytes, or a file to read)."""

    repo_id: str
    files: dict[str, bytes | Path]
    commit: str = ""
    poison: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.commit:
            listing = json.dumps(sorted(self.files)).encode()
            self.commit = hashlib.sha1(self.repo_id.encode() + listing).hexdigest()

    def content(self, path: str) -> bytes:
        data = self.files[path]
        return data.read_bytes() if isinstance(data, Path) else data

    def served(self, path: str) -> bytes:
        """What the server sends: the content, or for a poisoned file the same size with one bit flipped."""
        data = self.content(path)
        if path in self.poison:
            data = bytes([data[0] ^ 1]) + data[1:]
        return data

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def etag(self, path: str) -> str:
        data = self.content(path)
        return hashlib.sha256(data).hexdigest() if self.is_lfs(path) else git_blob_id(data)

    def tree(self) -> list[dict[str, object]]:
        entries = []
        for path in sorted(self.files):
            data = self.content(path)
            entry: dict[str, object] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
            if self.is_lfs(path):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries


class Hub:
    """The repositories served, and a log of the requests (method, path) for assertions."""

    def __init__(self, repos: list[Repo]) -> None:
        self.repos = {repo.repo_id: repo for repo in repos}
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    def downloads(self, repo_id: str) -> list[str]:
        """Paths of the repo whose content was sent (GET on resolve)."""
        prefix = f"/{repo_id}/resolve/"
        return [p.split("/", 4 + repo_id.count("/"))[-1] for m, p in self.requests if m == "GET" and
                p.startswith(prefix)]


_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<what>revision|tree)/(?P<rev>[^/]+)/?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            if match := _API.match(path):
                repo = self._repo(match["repo"], match["rev"])
                if repo is None:
                    return
                if match["what"] == "revision":
                    body = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "private": False,
                            "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
                else:
                    body = repo.tree()
                self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
            elif match := _RESOLVE.match(path):
                repo = self._repo(match["repo"], match["rev"])
                if repo is None:
                    return
                if match["path"] not in repo.files:
                    self._error(404, "EntryNotFound", f"{match['path']} not in {repo.repo_id}")
                    return
                data = repo.served(match["path"])
                self._send(200, data, {"X-Repo-Commit": repo.commit, "ETag": f'"{repo.etag(match["path"])}"',
                                       "Content-Type": "application/octet-stream"}, head)
            else:  # other API calls (1.x asks for /api/agent-harnesses): the stand-in has none
                self._error(404, None, f"no route for {path}")

        def _repo(self, repo_id: str, revision: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            elif revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            else:
                return repo
            return None

        def _error(self, status: int, code: str | None, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            headers = {"X-Error-Message": message, "Content-Type": "application/json"}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, body, headers, self.command == "HEAD")

        def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler


@contextmanager
def serve(repos: list[Repo]) -> Iterator[Hub]:
    """Run a :class:`Hub` on a free local port for the duration of the block."""
    hub = Hub(repos)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
