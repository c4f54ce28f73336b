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

- ``GET /api/models/<repo>/refs?include_prs=1``: branches and, asked, pull-request refs
  (``refs/pr/N``) with the commit each points to, as ``HfApi.list_repo_refs`` reads them.
- ``GET /api/models/<repo>/commits/<rev>``: the commits up to a revision, newest first, with their
  authors (``HfApi.list_repo_commits``).

A revision is ``main``, a commit, or ``refs/pr/N`` (sent URL-encoded, ``refs%2Fpr%2FN``): a repo's
:class:`PullRequest` entries stand for what the hub's safetensors conversion bot opens, a whole tree
at its own commit. Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound), as
the hub's do, so the client raises its own typed errors. ``poison`` makes the server send other bytes
than its listing promises for a file, like a tampered mirror.
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
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

#: Files stored in LFS on the real hub: weights. Everything else is a plain git blob.
LFS_SUFFIXES = (".bin", ".safetensors", ".pt", ".onnx")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Snapshot:
    """The files of one commit, as the server lists and sends them."""

    commit: str
    files: dict[str, bytes | Path]
    poison: set[str]
    author: str
    title: str

    def content(self, path: str) -> bytes:
        data = self.files[path]
        return data.read_bytes() if isinstance(data, Path) else data

    def served(self, path: str) -> bytes:
        """What the server sends: the content, or for a poisoned file the same size with one bit flipped."""
        data = self.content(path)
        if path in self.poison:
            data = bytes([data[0] ^ 1]) + data[1:]
        return data

    def etag(self, path: str) -> str:
        data = self.content(path)
        return hashlib.sha256(data).hexdigest() if is_lfs(path) else git_blob_id(data)

    def tree(self) -> list[dict[str, object]]:
        entries = []
        for path in sorted(self.files):
            data = self.content(path)
            entry: dict[str, object] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
            if is_lfs(path):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def _commit_id(*parts: object) -> str:
    return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()


@dataclass
class PullRequest:
    """A pull-request ref (``refs/pr/<number>``): the whole tree at its head commit, and who made that commit."""

    number: int
    files: dict[str, bytes | Path]
    author: str = "SFconvertbot"
    title: str = "Adding `safetensors` variant of this model"
    commit: str = ""

    @property
    def ref(self) -> str:
        return f"refs/pr/{self.number}"


@dataclass
class Repo:
    """One model repository: ``main`` at one commit (file path -> content, bytes or a file to read), and
    pull-request refs beside it."""

    repo_id: str
    files: dict[str, bytes | Path]
    commit: str = ""
    poison: set[str] = field(default_factory=set)
    pulls: list[PullRequest] = field(default_factory=list)
    author: str = "owner"

    def __post_init__(self) -> None:
        if not self.commit:
            self.commit = _commit_id(self.repo_id, sorted(self.files))
        for pull in self.pulls:
            if not pull.commit:
                pull.commit = _commit_id(self.repo_id, pull.number, sorted(pull.files))

    def snapshot(self, revision: str) -> Snapshot | None:
        """The commit a revision names: ``main``, a commit id, or ``refs/pr/N``; None if none."""
        if revision in ("main", self.commit):
            return Snapshot(self.commit, self.files, self.poison, self.author, "Upload files")
        for pull in self.pulls:
            if revision in (pull.ref, pull.commit):
                return Snapshot(pull.commit, pull.files, self.poison, pull.author, pull.title)
        return None

    def content(self, path: str) -> bytes:
        return self.main.content(path)

    @property
    def main(self) -> Snapshot:
        return cast(Snapshot, self.snapshot("main"))

    def refs(self, include_prs: bool) -> dict[str, object]:
        """The body of ``/api/models/<repo>/refs``."""
        main = {"name": "main", "ref": "refs/heads/main", "targetCommit": self.commit}
        body: dict[str, object] = {"branches": [main], "converts": [], "tags": []}
        if include_prs:
            body["pullRequests"] = [{"name": pull.ref, "ref": pull.ref, "targetCommit": pull.commit}
                                    for pull in self.pulls]
        return body

    def commits(self, snapshot: Snapshot) -> list[dict[str, object]]:
        """The body of ``/api/models/<repo>/commits/<rev>``: a pull request's head, then main's commit."""
        heads = [snapshot] if snapshot.commit == self.commit else [snapshot, self.main]
        return [{"id": s.commit, "title": s.title, "message": "", "date": "2024-12-16T00:00:00.000Z",
                 "authors": [{"user": s.author, "avatar": ""}]} for s in heads]


class Hub:
    """The repositories served, and a log of the requests (method, path) for assertions."""

    def __init__(self, repos: list[Repo]) -> None:
        self.repos = {repo.repo_id: repo for repo in repos}
        self.requests: list[tuple[str, str]] = []
        self.sent: list[tuple[str, str, str]] = []  # (repo, commit, path) of each file whose content was sent
        self.url = ""

    def downloads(self, repo_id: str, commit: str | None = None) -> list[str]:
        """Paths of the repo (at ``commit``, else at any) whose content was sent (GET on resolve)."""
        return [path for repo, at, path in self.sent if repo == repo_id and commit in (None, at)]


# Matched on the path as sent, so that an encoded revision (refs%2Fpr%2F4) stays one segment.
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<what>revision|tree|commits)/(?P<rev>[^/]+)/?$")
_REFS = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/refs/?$")
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
            url = urlsplit(self.path)
            path = url.path
            hub.requests.append((self.command, unquote(path)))
            if match := _API.match(path):
                repo, snapshot = self._snapshot(match["repo"], match["rev"])
                if repo is None or snapshot is None:
                    return
                body: object
                if match["what"] == "revision":
                    body = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": snapshot.commit, "private": False,
                            "siblings": [{"rfilename": p} for p in sorted(snapshot.files)]}
                elif match["what"] == "tree":
                    body = snapshot.tree()
                else:
                    body = repo.commits(snapshot)
                self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
            elif match := _REFS.match(path):
                repo = self._repo(unquote(match["repo"]))
                if repo is not None:
                    include_prs = parse_qs(url.query).get("include_prs", ["0"])[0] not in ("0", "")
                    self._send(200, json.dumps(repo.refs(include_prs)).encode(),
                               {"Content-Type": "application/json"}, head)
            elif match := _RESOLVE.match(path):
                repo, snapshot = self._snapshot(match["repo"], match["rev"])
                if repo is None or snapshot is None:
                    return
                rel = unquote(match["path"])
                if rel not in snapshot.files:
                    self._error(404, "EntryNotFound", f"{rel} not in {repo.repo_id}")
                    return
                if not head:
                    hub.sent.append((repo.repo_id, snapshot.commit, rel))
                self._send(200, snapshot.served(rel), {"X-Repo-Commit": snapshot.commit,
                                                       "ETag": f'"{snapshot.etag(rel)}"',
                                                       "Content-Type": "application/octet-stream"}, head)
            else:  # other API calls (1.x asks for /api/agent-harnesses): the stand-in has none
                self._error(404, None, f"no route for {unquote(path)}")

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return repo

        def _snapshot(self, repo_id: str, revision: str) -> tuple[Repo | None, Snapshot | None]:
            repo = self._repo(unquote(repo_id))
            if repo is None:
                return None, None
            snapshot = repo.snapshot(unquote(revision))
            if snapshot is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
            return repo, snapshot

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
