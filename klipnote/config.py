"""Effective settings and where each came from.

Precedence, lowest first: the defaults in :mod:`klipnote.defaults`, the TOML config file
(``KLIPNOTE_CONFIG`` or ``$XDG_CONFIG_HOME/klipnote/config.toml``), the environment (the
original service's variable names keep working), and command-line flags.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from klipnote import defaults
from klipnote.errors import ConfigError
from klipnote.job import Model, SplitBy, Task, ZhScript

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str | int) -> int:
    """Bytes from ``2147483648``, ``2GiB``, ``500MB``."""
    if isinstance(text, bool):
        raise ValueError("expected bytes, optionally with a unit such as 500MB or 2GiB")
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ValueError("expected bytes, optionally with a unit such as 500MB or 2GiB")
        value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``90``, ``30s``, ``15m``, ``12h``, ``30d``, ``2w``."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text))
        if not match:
            raise ValueError("expected a number of seconds or a duration such as 30s, 15m, 12h, 30d")
        value = float(match.group(1)) * _DURATION_UNITS.get(match.group(2) or "s", 1)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_duration(text: Any) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError("allowed: a duration greater than 0, such as 480 or 8m")
    return value


def _positive_float(text: Any) -> float:
    try:
        value = float(text) if not isinstance(text, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ValueError("allowed: a number greater than 0")
    return value


def _positive_int(text: Any) -> int:
    try:
        value = float(text) if not isinstance(text, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not value >= 1 or not value.is_integer():
        raise ValueError("allowed: a whole number greater than 0")
    return int(value)


def _text(text: Any) -> str:
    """A name or a path; TOML tables, lists and booleans are mistakes, not names."""
    if isinstance(text, (dict, list, bool)) or not str(text).strip():
        raise ValueError("allowed: a non-empty name or path")
    return str(text).strip()


def _belle2_model(text: Any) -> str:
    """A BELLE-2 checkpoint: a variant's name (punct, turbo) stands for its hub id."""
    name = _text(text)
    return defaults.BELLE2_VARIANTS.get(name, name)


class Device(str, Enum):
    """Where a worker runs its model; ``auto``: cuda when torch sees a GPU, else cpu."""

    AUTO = "auto"
    CUDA = "cuda"
    CPU = "cpu"


class VadMethod(str, Enum):
    """Which voice activity detection cuts the whisperx engine's audio (:mod:`klipnote.engines.vad`)."""

    PYANNOTE = "pyannote"
    SILERO = "silero"


class ComputeType(str, Enum):
    """Precision of a worker's model; ``auto``: float16 on cuda, int8 on cpu (either engine)."""

    AUTO = "auto"
    FLOAT16 = "float16"
    FLOAT32 = "float32"
    INT8 = "int8"
    INT8_FLOAT16 = "int8_float16"
    BFLOAT16 = "bfloat16"

    def on(self, device: str) -> ComputeType:
        """The precision a model on ``device`` runs at: ``auto`` resolved, any other value as given."""
        if self is not ComputeType.AUTO:
            return self
        return ComputeType.FLOAT16 if device == "cuda" else ComputeType.INT8


E = TypeVar("E", bound=Enum)


def _choice(kind: type[E]) -> Callable[[Any], E]:
    def parse(text: Any) -> E:
        value = (text.value if isinstance(text, Enum) else str(text)).strip().lower()
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"allowed: {', '.join(str(member.value) for member in kind)}") from None

    return parse


def parse_bool(text: Any) -> bool:
    """True or False from TOML booleans and the environment's spellings (1/0, yes/no, on/off)."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("allowed: true or false (also 1/0, yes/no, on/off)")


def _path(text: Any) -> Path:
    return Path(os.path.expanduser(_text(text)))


def _optional_text(text: Any) -> str | None:
    if isinstance(text, (dict, list, bool)):
        raise ValueError("allowed: text")
    value = str(text).strip()
    return value or None


#: What ``config show`` prints instead of a secret's value.
MASK = "********"


@dataclass(frozen=True)
class Setting:
    """One setting: its file key, parser, default, environment names (first wins) and help.

    ``secret`` values are never printed; ``example`` is what ``config init`` suggests for a
    setting that has no default of its own.
    """

    name: str
    parse: Callable[[Any], Any]
    default: Any
    env: tuple[str, ...]
    help: str
    secret: bool = False
    example: Any = None
    redact: Callable[[Any], Any] | None = None  # shows a value with its secret part masked (a URL's password)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by :data:`MASK`: what ``config show``, logs and ``workers --json`` print."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}{port}"))


def _broker_url(text: Any) -> str | None:
    """A Redis URL (``redis://``, ``rediss://`` for TLS), or None when empty: the setting is off."""
    value = _optional_text(text)
    if value is None:
        return None
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in ("redis", "rediss"):
        raise ValueError("allowed: a redis:// or rediss:// URL (rediss: TLS), or empty to use the spool alone")
    return value


def _default_spool(env: Mapping[str, str]) -> Path:
    data_home = env.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data_home) / "klipnote" / "spool"


SETTINGS: tuple[Setting, ...] = (
    Setting("spool", _path, None, ("KLIPNOTE_SPOOL",), "spool directory (default $XDG_DATA_HOME/klipnote/spool)",
            example="/srv/klipnote/spool"),
    Setting("spool_group", _optional_text, None, ("KLIPNOTE_SPOOL_GROUP",),
            "Unix group that may share the spool (default: private to its owner)", example="transcribers"),
    Setting("default_model", _choice(Model), defaults.DEFAULT_MODEL,
            ("DEFAULT_TRANSCRIPTION_MODEL",), "model for jobs submitted without --model: auto, belle2 or whisperx"),
    Setting("prompt", _optional_text, None, ("KLIPNOTE_PROMPT",),
            "prompt for jobs submitted without --prompt or --prompt-file: names and terms as they are spelled",
            example="Stewart Brand, Menlo Park, the Whole Earth Catalog."),
    Setting("prompt_file", _path, None, ("KLIPNOTE_PROMPT_FILE",),
            "glossary file read at each submit without --prompt or --prompt-file (an absolute path)",
            example="/srv/inbox/glossary.txt"),
    Setting("hotwords", _optional_text, None, ("KLIPNOTE_HOTWORDS",),
            "hotwords for jobs submitted without --hotwords", example="klipnote, WhisperX, BELLE-2"),
    Setting("task", _choice(Task), defaults.TASK, ("KLIPNOTE_TASK",),
            "task of jobs submitted without --task: transcribe, or translate (into English, whisperx only)"),
    Setting("speakers", _positive_int, None, ("KLIPNOTE_SPEAKERS",),
            "speakers in jobs submitted without --speakers, --min-speakers or --max-speakers (implies --diarize)",
            example=2),
    Setting("max_file_size", parse_size, defaults.MAX_FILE_SIZE, ("MAX_FILE_SIZE",),
            "largest input accepted, in bytes or with a unit (2GiB)"),
    Setting("max_duration_hours", _positive_float, defaults.MAX_DURATION_HOURS, ("MAX_DURATION_HOURS",),
            "longest input accepted, in hours"),
    Setting("whisper_model", _text, defaults.WHISPER_MODEL, ("WHISPER_MODEL",),
            "whisperx model: a name (large-v2), a local CTranslate2 folder, or base-offline"),
    Setting("whisper_model_revision", _optional_text, None, ("KLIPNOTE_WHISPER_REVISION",),
            "branch, tag or commit of a hub Whisper model that workers load and models pull fetches (default: "
            "main)", example="main"),
    Setting("device", _choice(Device), defaults.DEVICE, ("WHISPER_DEVICE",),
            "where workers run models: auto, cuda or cpu"),
    Setting("compute_type", _choice(ComputeType),
            defaults.COMPUTE_TYPE, ("WHISPER_COMPUTE_TYPE",),
            "precision of the worker's model: auto (float16 on cuda, int8 on cpu), float16, float32, int8, "
            "int8_float16 (whisperx only) or bfloat16"),
    Setting("batch_size", _positive_int, defaults.BATCH_SIZE, ("KLIPNOTE_BATCH_SIZE",),
            "audio windows decoded together (unset: 32 for a belle2 worker on a GPU)"),
    Setting("batch_jobs", _positive_int, defaults.BATCH_JOBS, ("KLIPNOTE_BATCH_JOBS",),
            "waiting jobs a worker claims at once to share its batches (1: one job at a time)"),
    Setting("batch_audio", _positive_duration, defaults.BATCH_AUDIO, ("KLIPNOTE_BATCH_AUDIO",),
            "a worker claims no more jobs for one shared batch once they hold this much audio (90, 8m)"),
    Setting("vad_method", _choice(VadMethod), defaults.VAD_METHOD, ("KLIPNOTE_VAD_METHOD",),
            "whisperx engine's speech detection: pyannote (whisperx's cuts) or silero (faster start and VAD on a CPU)"),
    Setting("align_model", _text, defaults.ALIGN_MODEL, ("KLIPNOTE_ALIGN_MODEL",),
            "wav2vec2 model timing whisperx words: auto (whisperx's choice per language), off, a name or a folder"),
    Setting("belle2_model", _belle2_model, defaults.BELLE2_MODEL, ("BELLE2_MODEL_NAME",),
            "BELLE-2 checkpoint: punct (writes punctuation) or turbo (4 decoder layers, faster) for those "
            "variants, a hub id, or a local folder"),
    Setting("belle2_model_revision", _optional_text, None, ("KLIPNOTE_BELLE2_REVISION",),
            "branch, tag or commit of a hub BELLE-2 model that workers load and models pull fetches (default: main)",
            example="main"),
    Setting("diarization_model", _text, defaults.DIARIZATION_MODEL, ("KLIPNOTE_DIARIZATION_MODEL",),
            "pyannote pipeline for --diarize: a hub id or a local folder with its config.yaml"),
    Setting("zh_script", _choice(ZhScript), defaults.ZH_SCRIPT, ("KLIPNOTE_ZH_SCRIPT",),
            "Chinese characters of either engine's Chinese output (a job's --zh-script or zh-TW/zh-Hant/zh-HK hint "
            "wins): simplified, traditional, or original (as the model wrote)"),
    Setting("enable_optimization", parse_bool, defaults.ENABLE_OPTIMIZATION, ("ENABLE_OPTIMIZATION",),
            "run the enhancement pipeline after transcription (vad, refine, split)"),
    Setting("optimizer_engine", _choice(SplitBy), defaults.OPTIMIZER_ENGINE,
            ("OPTIMIZER_ENGINE",), "how split builds cues: auto, words (word times) or segments"),
    Setting("hf_token", _optional_text, None, ("HF_TOKEN", "HUGGINGFACE_TOKEN"),
            "Hugging Face token for gated models (diarization)", secret=True, example="hf_..."),
    Setting("heartbeat_interval", _positive_float, defaults.HEARTBEAT_INTERVAL, ("KLIPNOTE_HEARTBEAT_INTERVAL",),
            "seconds between a worker's heartbeats"),
    Setting("lease_ttl", _positive_float, defaults.LEASE_TTL, ("KLIPNOTE_LEASE_TTL",),
            "seconds without a heartbeat after which a claim is presumed dead"),
    Setting("max_attempts", _positive_int, defaults.MAX_ATTEMPTS, ("KLIPNOTE_MAX_ATTEMPTS",),
            "claims a job may use before it fails"),
    Setting("broker", _broker_url, None, ("KLIPNOTE_BROKER", "CELERY_BROKER_URL"),
            "Redis URL of the Celery broker for several hosts (redis:// or rediss://); empty: the spool alone "
            "dispatches jobs, on one machine", example="redis://:password@redis.internal:6379/0",
            redact=mask_url),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("KLIPNOTE_CONFIG"):
        return Path(env["KLIPNOTE_CONFIG"]).expanduser()
    config_home = env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config_home) / "klipnote" / "config.toml"


def missing_config_warning(environ: Mapping[str, str] | None = None) -> str | None:
    """A config file named by KLIPNOTE_CONFIG that does not exist is most likely a typo: say so.

    A warning, not an error: ``config init`` creates the file it names, and the systemd unit names
    /etc/klipnote/config.toml whether or not the admin has written one.
    """
    env = os.environ if environ is None else environ
    path = config_path(env)
    if not env.get("KLIPNOTE_CONFIG") or path.exists():
        return None
    return (f"KLIPNOTE_CONFIG names {path}, which does not exist, so no file is read: correct the path, "
            "create it (klipnote config init), or unset KLIPNOTE_CONFIG")


@dataclass(frozen=True)
class Settings:
    """Effective values, typed, with the source of each (``sources[name]``).

    One field per entry of :data:`SETTINGS`, in its order, of the type its parser returns (a test
    holds the two together); the table stays the one place for names, sources and help.
    """

    spool: Path
    spool_group: str | None
    default_model: Model
    prompt: str | None
    prompt_file: Path | None
    hotwords: str | None
    task: Task
    speakers: int | None
    max_file_size: int
    max_duration_hours: float
    whisper_model: str
    whisper_model_revision: str | None
    device: Device
    compute_type: ComputeType
    batch_size: int
    batch_jobs: int
    batch_audio: float
    vad_method: VadMethod
    align_model: str
    belle2_model: str
    belle2_model_revision: str | None
    diarization_model: str
    zh_script: ZhScript
    enable_optimization: bool
    optimizer_engine: SplitBy
    hf_token: str | None
    heartbeat_interval: float
    lease_ttl: float
    max_attempts: int
    broker: str | None
    sources: dict[str, str]


def _parse(setting: Setting, raw: Any, where: str) -> Any:
    try:
        return setting.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid {setting.name} = {raw!r} from {where}: {exc}") from None


def load_settings(flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting; ``flags`` holds command-line values (``None`` means not given)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: None if s.default is None else s.parse(s.default) for s in SETTINGS}
    values["spool"] = _default_spool(env)
    sources = {s.name: "default" for s in SETTINGS}

    path = config_path(env)
    if path.exists():
        try:
            with open(path, "rb") as fh:
                file_values = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:  # chained: doctor reads the line from the cause
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        for key, raw in file_values.items():
            setting = _BY_NAME.get(key)
            if setting is None:
                raise ConfigError(f"unknown setting {key!r} in {path}; known settings: {', '.join(_BY_NAME)}")
            values[key] = _parse(setting, raw, f"file {path}")
            sources[key] = f"file {path}"

    for setting in SETTINGS:
        for var in setting.env:
            if env.get(var, "") != "":
                values[setting.name] = _parse(setting, env[var], f"environment {var}")
                sources[setting.name] = f"environment {var}"
                break

    for key, raw in (flags or {}).items():
        if raw is not None:
            values[key] = _parse(_BY_NAME[key], raw, "the command line")
            sources[key] = "flag"
    return Settings(**values, sources=sources)


# ---------------------------------------------------------------------- showing and writing settings

def describe(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every setting as plain data: value (secrets masked), source, origin, environment names, default.

    ``source`` is ``default``, ``file``, ``environment`` or ``flag``; ``origin`` is the file's path
    or the variable's name (None for defaults and flags). Paths become strings, so this is JSON.
    """
    described = {}
    for setting in SETTINGS:
        value = getattr(settings, setting.name)
        if setting.secret and value is not None:
            value = MASK
        elif setting.redact is not None and value is not None:
            value = setting.redact(value)
        source, _, origin = settings.sources[setting.name].partition(" ")
        described[setting.name] = {
            "value": _plain(value),
            "source": source,
            "origin": origin or None,
            "env": list(setting.env),
            "default": None if setting.secret else _plain(setting.default),
        }
    return described


def exposure_warnings(settings: Settings) -> list[str]:
    """A secret read from a config file that every user can read is a leaked secret: say so.

    Group read is fine: the deployment recipe shares /etc/klipnote/config.toml with the klipnote
    group (0640 root:klipnote) so that the service user can read it.
    """
    warnings = []
    for setting in SETTINGS:
        source, _, origin = settings.sources[setting.name].partition(" ")
        value = getattr(settings, setting.name)
        holds_secret = setting.secret or (setting.redact is not None and value is not None
                                          and setting.redact(value) != value)
        if holds_secret and source == "file":
            mode = Path(origin).stat().st_mode & 0o777
            if mode & 0o007:
                warnings.append(f"{origin} holds {setting.name} and every user may read it (mode {mode:04o}): "
                                f"chmod o-rwx {origin}")
    return warnings


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    return str(value) if isinstance(value, Path) else value


def template() -> str:
    """A commented TOML config file: every setting with its help, environment names and default.

    Every value line is commented out, so the file changes nothing until a line is uncommented
    and a default that changes in a later release still reaches users who never touched it.
    Uncommented as written, each line is valid and loads to the default (or to the example of a
    setting without one).
    """
    import tomli_w

    lines = [
        "# klipnote configuration (TOML).",
        "#",
        "# Precedence, lowest first: built-in defaults, this file, the environment, command-line flags.",
        "# This file is read from KLIPNOTE_CONFIG, else $XDG_CONFIG_HOME/klipnote/config.toml",
        "# (~/.config/klipnote/config.toml). `klipnote config show` prints every effective value and",
        "# where it came from. Uncomment a line to change a setting.",
        "#",
        "# The file may hold hf_token: keep it private (klipnote config init writes it with mode 0600).",
        "# A broker URL with a password is a secret too.",
    ]
    for setting in SETTINGS:
        lines += ["", f"# {setting.help}."]
        lines.append(f"# Environment: {', '.join(setting.env)}.")
        value = setting.default
        if value is None:
            lines.append("# For example:")
            value = setting.example
        lines.append("# " + tomli_w.dumps({setting.name: value}).strip())
    return "\n".join(lines) + "\n"


def write_template(path: Path, *, force: bool = False) -> None:
    """Write :func:`template` to ``path`` (mode 0600: it may come to hold a token), parents created.

    An existing file is kept unless ``force``: it may hold settings nobody wants to lose.
    """
    from klipnote.errors import KlipnoteError
    from klipnote.fsio import atomic_write_text

    if path.is_dir():
        raise KlipnoteError(f"{path} is a directory: give the path of a file in it, e.g. {path / 'config.toml'}")
    if path.exists() and not force:
        raise KlipnoteError(f"{path} exists; keep it, or replace it with --force (klipnote config show reads it)")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_text(path, template(), 0o600)
    except OSError as exc:
        raise KlipnoteError(f"cannot write {path}: {exc.strerror or exc}") from None
