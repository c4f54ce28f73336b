"""``klipnote doctor``: the deployment guide's troubleshooting page, as checks a machine runs on itself.

Each check is a small function returning :class:`Check` results: what it found, ok / warn / FAIL,
and for anything not ok the one thing to do about it. A warning is worth knowing but does not stop
a worker (a model not downloaded yet, little disk left); a failure does (no ffmpeg, an unwritable
spool, the wrong torch for the worker kind). The worker's own start-up checks
(:mod:`klipnote.envcheck`) are the same functions, so doctor and worker never disagree.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, cast

from klipnote import defaults, envcheck, modelstore, offline_models
from klipnote.config import Device, Settings, config_path, load_settings, missing_config_warning, parse_bool
from klipnote.errors import ConfigError, KlipnoteError, SpoolError, UsageError, summary
from klipnote.fsio import probe_write
from klipnote.job import Model
from klipnote.spool import Spool


class Outcome(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    found: str
    advice: str = ""

    def line(self) -> str:
        advice = f" -> {self.advice}" if self.advice and self.outcome is not Outcome.OK else ""
        return f"{self.outcome.value:<4}  {self.name:<10} {self.found}{advice}"


def ok(name: str, found: str) -> Check:
    return Check(name, Outcome.OK, found)


def warn(name: str, found: str, advice: str) -> Check:
    return Check(name, Outcome.WARN, found, advice)


def fail(name: str, found: str, advice: str = "") -> Check:
    return Check(name, Outcome.FAIL, found, advice)


@dataclass
class Report:
    kind: Model
    device: Device
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.outcome is Outcome.FAIL for c in self.checks)

    def text(self) -> str:
        counts = {o: sum(c.outcome is o for c in self.checks) for o in Outcome}
        summary_line = (f"{counts[Outcome.FAIL]} failed, {counts[Outcome.WARN]} warnings, {counts[Outcome.OK]} ok "
                        f"(for a {self.kind.value} worker on {self.device.value})")
        return "".join(c.line() + "\n" for c in self.checks) + summary_line + "\n"

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.failed, "kind": self.kind.value, "device": self.device.value,
                "checks": [{**asdict(c), "outcome": c.outcome.value} for c in self.checks]}


def run(flags: Mapping[str, Any], *, kind: Model | None = None, device: Device | None = None) -> Report:
    """Every check, in the order a person would fix them. ``kind``/``device`` None: from the environment."""
    checks: list[Check] = []
    settings: Settings | None = None
    path = config_path()
    try:
        settings = load_settings(flags)
        missing = missing_config_warning()
        if missing:
            checks.append(warn("config", missing, "defaults and environment are used meanwhile"))
        else:
            checks.append(ok("config", f"{path} parsed" if path.exists() else f"no file at {path}; defaults and "
                             "environment"))
    except ConfigError as exc:
        checks.append(fail("config", str(exc), _config_advice(exc, path)))
    guessed = kind is None
    kind = kind or envcheck.kind_of_environment() or (settings.default_model if settings and
                                                       settings.default_model is not Model.AUTO else Model.WHISPERX)
    device = device or (settings.device if settings else Device(defaults.DEVICE))
    checks += check_ffmpeg()
    checks += check_spool(settings) if settings is not None else [_unchecked("spool")]
    if settings is not None and settings.broker:
        checks.append(check_broker(settings.broker))
    checks.append(check_python())
    checks.append(check_packages(kind))
    checks += check_torch(kind, device, guessed)
    checks.append(check_model(kind, settings) if settings is not None else _unchecked("model"))
    checks.append(check_telemetry(kind))
    return Report(kind, device, checks)


def _unchecked(name: str) -> Check:
    """A check that needs the settings, which did not load: said, not silently left out."""
    return warn(name, "not checked: the settings do not load", "fix the config first")


def _config_advice(exc: ConfigError, path: Path) -> str:
    """Where to fix it. Never ``config show``: it loads the same settings and fails the same way."""
    if isinstance(exc.__cause__, ValueError):  # tomllib's TOMLDecodeError: "... (at line 2, column 9)"
        line = re.search(r"at line (\d+)", str(exc.__cause__))
        return f"edit {'line ' + line.group(1) if line else 'the end'} of {path}: it is not valid TOML"
    if isinstance(exc.__cause__, OSError):
        return f"make {path} readable by this user, or point KLIPNOTE_CONFIG at another file"
    return "fix the value where the message says it comes from (the file or the environment variable)"


# ---------------------------------------------------------------------- tools


def check_ffmpeg() -> list[Check]:
    return [_check_program(name) for name in ("ffmpeg", "ffprobe")]


def _check_program(name: str) -> Check:
    install = "install ffmpeg (apt-get install ffmpeg, or conda install -c conda-forge ffmpeg) and put it on PATH"
    path = shutil.which(name)
    if path is None:
        return fail(name, f"{name} not found on PATH", install)
    try:
        proc = subprocess.run([path, "-version"], capture_output=True, text=True,
                              timeout=defaults.DOCTOR_PROGRAM_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return fail(name, f"{path} does not run ({summary(exc)})", install)
    first = proc.stdout.splitlines()[0] if proc.stdout else ""
    if proc.returncode != 0 or not first:
        return fail(name, f"{path} -version exited with {proc.returncode}", install)
    return ok(name, f"{first.split(' Copyright')[0]} ({path})")


# ---------------------------------------------------------------------- spool


def check_spool(settings: Settings) -> list[Check]:
    root = Path(os.path.abspath(settings.spool))
    existing = _nearest_existing(root)
    if not (root / "spool.json").exists():
        if root.is_dir() and any(root.iterdir()):
            return [fail("spool", f"{root} exists and is not a klipnote spool",
                         "point KLIPNOTE_SPOOL (or --spool) at an empty or new directory")]
        checks = [ok("spool", f"{root} not created yet; the first submit or worker creates it")]
        checks.append(_check_writable(existing, root))
    else:
        try:
            spool = Spool(root).open(create=False)
        except SpoolError as exc:
            return [fail("spool", str(exc), "point KLIPNOTE_SPOOL at a spool this klipnote reads")]
        sharing = f"shared with group {spool.group}" if spool.group else "private"
        checks = [ok("spool", f"{root} (format {defaults.SPOOL_FORMAT}, {sharing})")]
        checks.append(_check_writable(spool.tmp if spool.tmp.is_dir() else root, root, spool))
        checks.append(_check_permissions(spool, settings.spool_group))
    checks.append(_check_disk(existing))
    return checks


def check_broker(url: str) -> Check:
    """Broker mode: Celery is installed and Redis answers (docs/broker.md)."""
    from klipnote.config import mask_url

    try:
        import celery
    except ImportError:
        return fail("broker", "broker is set but Celery is not installed",
                    "pip install 'klipnote[broker]' into this environment (celery[redis])")
    from klipnote.broker.ledger import Ledger
    from klipnote.errors import BrokerUnavailable

    ledger = Ledger.connect(url)
    try:
        with ledger.reaching("connecting"):
            info: dict[str, Any] = cast(dict, ledger.client.info("server"))  # typed for async clients too
            version = info.get("redis_version", "?")
    except BrokerUnavailable as exc:
        return fail("broker", str(exc), "start Redis, or check the URL, its password and the firewall; jobs "
                    "submitted meanwhile wait in the spool")
    return ok("broker", f"{mask_url(url)} answers (Redis {version}, Celery {celery.__version__})")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(probe_dir: Path, root: Path, spool: Spool | None = None) -> Check:
    """Create and remove a file for real (:func:`fsio.probe_write`), then check every layout folder."""
    try:
        probe_write(probe_dir)
    except OSError as exc:
        verb = "cannot be created" if spool is None else "is not writable"
        return fail("writable", f"{root} {verb}: {exc.strerror} ({probe_dir})", _write_advice(exc))
    if spool is not None:  # a spool needs every layout folder, not only tmp/
        layout = spool.layout
        missing = [p for p in layout if not p.is_dir()]
        if missing:
            return fail("writable", f"the spool lacks {_some([str(p) for p in missing], 3)}",
                        "a spool folder was deleted: recreate it (mkdir, with the spool's owner and mode) or "
                        "restore the spool from a backup")
        blocked = [p for p in layout if not os.access(p, os.W_OK | os.X_OK)]
        if blocked:
            return fail("writable", f"no write access to {', '.join(str(p) for p in blocked[:3])}",
                        "check the spool's owner and mode, or share it with spool_group")
    if spool is None:
        return ok("writable", f"{root} can be created: {probe_dir} is writable by uid {os.geteuid()}")
    return ok("writable", f"{root} is writable by uid {os.geteuid()}")


def _write_advice(exc: OSError) -> str:
    import errno

    if exc.errno == errno.EROFS:
        return "the filesystem is read-only: remount it read-write or point KLIPNOTE_SPOOL elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "fix the owner and mode (chown/chmod), run as the spool's owner, or share it with spool_group"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full: free space (klipnote gc) or move the spool"
    return "point KLIPNOTE_SPOOL at a directory this user can write"


def _check_permissions(spool: Spool, configured_group: str | None) -> Check:
    info = spool.root.stat()
    mode = stat.S_IMODE(info.st_mode)
    found = f"{spool.root} mode {mode:o}, owner uid {info.st_uid}"
    if spool.group:
        try:
            gid = grp.getgrnam(spool.group).gr_gid
        except KeyError:
            return fail("perms", f"{found}; its group {spool.group!r} does not exist on this host",
                        f"create the group (groupadd {spool.group}) with the same gid on every host")
        if info.st_gid != gid:
            return fail("perms", f"{found}, group gid {info.st_gid}, not {spool.group} ({gid})",
                        f"chgrp -R {spool.group} {spool.root} && chmod -R g+rwX {spool.root}")
        if gid not in os.getgroups() and info.st_uid != os.geteuid():
            return warn("perms", f"{found}; this user is not in group {spool.group}",
                        f"usermod -aG {spool.group} $USER (then log in again)")
    elif info.st_uid != os.geteuid():
        return fail("perms", f"{found}; it is private to its owner and this is uid {os.geteuid()}",
                    "run klipnote as the spool's owner, or create a shared spool with KLIPNOTE_SPOOL_GROUP")
    if mode & 0o007:
        return warn("perms", f"{found}: others may read it", f"chmod o-rwx {spool.root}")
    if (mode & 0o770) != (spool.dir_mode & 0o770):
        return warn("perms", f"{found}, expected {spool.dir_mode:o}", f"chmod {spool.dir_mode:o} {spool.root}")
    if (configured_group or None) != spool.group:
        return warn("perms", f"{found}; spool.json says group {spool.group or 'none (private)'}, the setting "
                    f"says {configured_group or 'none'}", "a spool keeps the sharing it was created with; align "
                    "KLIPNOTE_SPOOL_GROUP with it")
    return ok("perms", f"{found} ({'group ' + spool.group if spool.group else 'private'}, as expected)")


def _check_disk(path: Path) -> Check:
    usage = shutil.disk_usage(path)
    free = f"{usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.1f} GiB on {path}"
    if usage.free < defaults.DOCTOR_MIN_FREE_DISK:
        return warn("disk", free, f"inputs are copied into the spool (up to {defaults.MAX_FILE_SIZE / 1024**3:.0f} "
                    "GiB each): free space (klipnote gc) or move the spool")
    return ok("disk", free)


# ---------------------------------------------------------------------- python, packages, torch


def check_python() -> Check:
    version = ".".join(str(p) for p in sys.version_info[:3])
    found = f"Python {version} ({sys.executable})"
    if sys.version_info[:2] != defaults.ENV_PYTHON:
        wanted = ".".join(str(p) for p in defaults.ENV_PYTHON)
        return warn("python", found, f"the pinned environments (envs/) are built and tested with Python {wanted}")
    return ok("python", found)


def _some(items: list[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_packages(kind: Model) -> Check:
    expected = envcheck.EXPECTATIONS[kind]
    report = envcheck.pin_report(kind)
    if report is None:
        return warn("packages", f"{expected.env_dir}/requirements.txt not found beside {envcheck.SOURCE_ROOT} "
                    "(klipnote is installed without its source tree)",
                    f"compare pip freeze with {expected.env_dir}/requirements.txt of this klipnote release")
    install = f"pip install -r {report.path}"
    if report.missing:
        return fail("packages", f"{len(report.missing)} of {report.pinned} pinned packages missing: "
                    f"{_some(report.missing)}", f"{install} (or use the {kind.value} worker's env, {expected.env_dir})")
    if report.different:
        return warn("packages", f"{len(report.different)} of {report.pinned} differ from the pins: "
                    f"{_some(report.different)}", install)
    return ok("packages", f"all {report.pinned} pins of {report.path} match")


def check_torch(kind: Model, device: Device, guessed: bool) -> list[Check]:
    how = "guessed from this environment; --model to choose" if guessed else "as asked"
    try:
        torch = envcheck.import_torch(kind)
    except KlipnoteError as exc:
        return [fail("torch", f"{exc} ({kind.value} worker {how})", _torch_advice(kind)),
                warn("device", f"{device.value} not checked: torch is not usable", "fix torch first")]
    checks = [ok("torch", f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}: fits the "
                 f"{kind.value} worker ({how})")]
    try:
        resolved, details = envcheck.resolve_device(kind, device, torch)
    except KlipnoteError as exc:
        return [*checks, fail("device", f"{device.value}: {exc}")]
    if resolved == "cpu":
        note = "as asked" if device is Device.CPU else "torch sees no GPU"
        return [*checks, ok("device", f"cpu ({note})")]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    checks.append(ok("device", f"cuda {torch.version.cuda}, {torch.cuda.device_count()} GPU(s) visible"
                     + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")))
    checks.append(ok("gpu", f"{details['gpu']}, {details['gpu_memory_gib']} GiB"))
    return checks


def _torch_advice(kind: Model) -> str:
    expected = envcheck.EXPECTATIONS[kind]
    return (f"run the {kind.value} worker from its own env: pip install -r {expected.env_dir}/requirements.txt "
            "in a new venv")


# ---------------------------------------------------------------------- models


def check_model(kind: Model, settings: Settings) -> Check:
    """Is the model the worker will load already on this machine? Where from, and checked or not."""
    name = settings.whisper_model if kind is Model.WHISPERX else settings.belle2_model
    folder = Path(os.path.expanduser(name))
    if folder.is_dir():
        return _check_local_folder(kind, folder)
    try:
        ref = modelstore.resolve(kind.value, settings)
    except UsageError as exc:  # its message says what to do: which names exist, which env resolves them
        return fail("model", str(exc))
    return _check_offline(ref) if ref.offline is not None else _check_hub(ref)


def _check_local_folder(kind: Model, folder: Path) -> Check:
    wanted = ("model.bin",) if kind is Model.WHISPERX else ("model.safetensors", "model.safetensors.index.json")
    if not any((folder / w).is_file() for w in wanted):
        return fail("model", f"local folder {folder} has no {' or '.join(wanted)}",
                    "point the setting at a complete model folder")
    return ok("model", f"local folder {folder}")


def _check_offline(ref: modelstore.ModelRef) -> Check:
    model = ref.offline
    assert model is not None
    try:
        for package, inner in model.parts:
            offline_models.package_file(package, inner, model)
    except KlipnoteError as exc:
        return fail("model", str(exc))
    if not offline_models.is_assembled(model):
        return warn("model", f"{model.name} is not assembled yet (the worker does it at start, in seconds)",
                    f"klipnote models pull {model.name}")
    return _with_manifest(f"{model.name} assembled in {offline_models.model_folder(model)}", ref, None,
                          f"klipnote models pull {model.name}")


def _check_hub(ref: modelstore.ModelRef) -> Check:
    from huggingface_hub import constants

    folder = _cached_folder(ref)
    if folder is None:
        if constants.HF_HUB_OFFLINE:
            return fail("model", f"{ref.repo_id} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                        "HF_HUB_OFFLINE=1 forbids downloading it", f"klipnote models pull {_pull_name(ref)} (without "
                        "HF_HUB_OFFLINE), or copy the cache from a machine that has it")
        return warn("model", f"{ref.repo_id} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}): the "
                    "first job downloads it and waits", f"klipnote models pull {_pull_name(ref)}")
    return _with_manifest(f"{ref.repo_id} cached at {folder.name[:12]}", ref, folder,
                          f"klipnote models pull {_pull_name(ref)}")


def _pull_name(ref: modelstore.ModelRef) -> str:
    """The shortest name ``models pull`` takes for the model: a Whisper name as is, else the worker kind."""
    if ref.faster_whisper:
        return ref.name if "/" not in ref.name else "whisperx"
    return "belle2"


def _cached_folder(ref: modelstore.ModelRef) -> Path | None:
    """The snapshot the engine would load without a network, found the way the engine looks for it."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return modelstore.snapshot_folder(ref, modelstore.loaded_revision(ref), local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


def _with_manifest(found: str, ref: modelstore.ModelRef, folder: Path | None, pull: str) -> Check:
    """The model is there; what its manifest (the checksums ``models pull`` recorded) says of it.

    A last verify that failed is a failure: the worker would load the damaged file.
    """
    path = modelstore.manifest_path(ref)
    if not path.is_file():
        return ok("model", f"{found}; not pulled by klipnote, so no checksums are recorded ({pull} records them)")
    try:
        manifest = modelstore.load_manifest(path)
    except KlipnoteError as exc:
        return warn("model", f"{found}; {exc}", pull)
    if folder is not None and Path(manifest.folder) != folder:
        return warn("model", f"{found}; the checksums recorded are for another revision "
                    f"({(manifest.commit or '?')[:12]})", pull)
    if manifest.integrity is modelstore.Integrity.FAILED:
        return fail("model", f"{found}; the last klipnote models verify found damaged files", manifest.pull_command)
    return ok("model", f"{found}; {len(manifest.files)} files, SHA-256 {manifest.integrity.value} at "
              "the last check (klipnote models verify re-checks)")


# ---------------------------------------------------------------------- telemetry


def check_telemetry(kind: Model, environ: Mapping[str, str] = os.environ) -> Check:
    pyannote = environ.get("PYANNOTE_METRICS_ENABLED")
    hub = environ.get("HF_HUB_DISABLE_TELEMETRY")
    found = f"PYANNOTE_METRICS_ENABLED={pyannote if pyannote is not None else 'unset'}, " \
            f"HF_HUB_DISABLE_TELEMETRY={hub if hub is not None else 'unset'}"
    if kind is Model.WHISPERX and pyannote is not None and not _off(pyannote):
        return warn("telemetry", f"{found}: pyannote.audio will send usage metrics",
                    "unset PYANNOTE_METRICS_ENABLED (klipnote then sets it to 0) or set it to 0")
    if hub is None or _off(hub):
        return warn("telemetry", found, "export HF_HUB_DISABLE_TELEMETRY=1 (scripts/klipnote-worker and the "
                    "Dockerfiles do)")
    return ok("telemetry", f"{found}: off")



def _off(value: str) -> bool:
    """False as klipnote's boolean settings read it (0, false, no, off); anything else counts as on."""
    try:
        return not parse_bool(value)
    except ValueError:
        return False
