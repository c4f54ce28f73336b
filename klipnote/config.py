"""Effective settings and where each came from.

Precedence, lowest first: the defaults in :mod:`klipnote.defaults`, the TOML config file
(``KLIPNOTE_CONFIG`` or ``$XDG_CONFIG_HOME/klipnote/config.toml``), the environment (the
original service's variable names keep working), and command-line flags.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klipnote import defaults
from klipnote.errors import ConfigError
from klipnote.job import Model, ZhScript

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


def _positive_float(text: Any) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _positive_int(text: Any) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a whole number greater than 0")
    return value


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(text: Any) -> str:
        value = str(text).strip().lower()
        if value not in allowed:
            raise ValueError(f"allowed: {', '.join(allowed)}")
        return value

    return parse


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("allowed: true or false (also 1/0, yes/no, on/off)")


def _path(text: Any) -> Path:
    return Path(os.path.expanduser(str(text)))


def _optional_text(text: Any) -> str | None:
    value = str(text).strip()
    return value or None


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    env: tuple[str, ...]
    help: str


def _default_spool(env: Mapping[str, str]) -> Path:
    data_home = env.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data_home) / "klipnote" / "spool"


SETTINGS: tuple[Setting, ...] = (
    Setting("spool", _path, None, ("KLIPNOTE_SPOOL",), "spool directory (default $XDG_DATA_HOME/klipnote/spool)"),
    Setting("spool_group", _optional_text, None, ("KLIPNOTE_SPOOL_GROUP",),
            "Unix group that may share the spool (default: private to its owner)"),
    Setting("default_model", _choice(*(m.value for m in Model)), defaults.DEFAULT_MODEL,
            ("DEFAULT_TRANSCRIPTION_MODEL",), "model for jobs submitted without --model: auto, belle2 or whisperx"),
    Setting("max_file_size", parse_size, defaults.MAX_FILE_SIZE, ("MAX_FILE_SIZE",),
            "largest input accepted, in bytes or with a unit (2GiB)"),
    Setting("max_duration_hours", _positive_float, defaults.MAX_DURATION_HOURS, ("MAX_DURATION_HOURS",),
            "longest input accepted, in hours"),
    Setting("whisper_model", str, defaults.WHISPER_MODEL, ("WHISPER_MODEL",),
            "whisperx model: a name (large-v2), a local CTranslate2 folder, or base-offline"),
    Setting("device", _choice("auto", "cuda", "cpu"), defaults.DEVICE, ("WHISPER_DEVICE",),
            "where workers run models: auto, cuda or cpu"),
    Setting("compute_type", _choice("auto", "float16", "float32", "int8", "int8_float16", "bfloat16"),
            defaults.COMPUTE_TYPE, ("WHISPER_COMPUTE_TYPE",), "precision of the whisperx model"),
    Setting("batch_size", _positive_int, defaults.BATCH_SIZE, ("KLIPNOTE_BATCH_SIZE",),
            "audio windows decoded together"),
    Setting("align_model", str, defaults.ALIGN_MODEL, ("KLIPNOTE_ALIGN_MODEL",),
            "wav2vec2 model timing whisperx words: auto (whisperx's choice per language), off, a name or a folder"),
    Setting("belle2_model", str, defaults.BELLE2_MODEL, ("BELLE2_MODEL_NAME",),
            "BELLE-2 checkpoint: a hub id or a local folder"),
    Setting("diarization_model", str, defaults.DIARIZATION_MODEL, ("KLIPNOTE_DIARIZATION_MODEL",),
            "pyannote pipeline for --diarize: a hub id or a local folder with its config.yaml"),
    Setting("zh_script", _choice(*(z.value for z in ZhScript)), defaults.ZH_SCRIPT, ("KLIPNOTE_ZH_SCRIPT",),
            "Chinese characters in belle2 output: simplified, traditional, or original (as the model wrote)"),
    Setting("enable_optimization", _bool, defaults.ENABLE_OPTIMIZATION, ("ENABLE_OPTIMIZATION",),
            "run the enhancement pipeline after transcription (vad, refine, split)"),
    Setting("optimizer_engine", _choice("auto", "words", "segments"), defaults.OPTIMIZER_ENGINE,
            ("OPTIMIZER_ENGINE",), "how split builds cues: auto, words (word times) or segments"),
    Setting("hf_token", _optional_text, None, ("HF_TOKEN", "HUGGINGFACE_TOKEN"),
            "Hugging Face token for gated models (diarization)"),
    Setting("heartbeat_interval", _positive_float, defaults.HEARTBEAT_INTERVAL, ("KLIPNOTE_HEARTBEAT_INTERVAL",),
            "seconds between a worker's heartbeats"),
    Setting("lease_ttl", _positive_float, defaults.LEASE_TTL, ("KLIPNOTE_LEASE_TTL",),
            "seconds without a heartbeat after which a claim is presumed dead"),
    Setting("max_attempts", _positive_int, defaults.MAX_ATTEMPTS, ("KLIPNOTE_MAX_ATTEMPTS",),
            "claims a job may use before it fails"),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("KLIPNOTE_CONFIG"):
        return Path(env["KLIPNOTE_CONFIG"]).expanduser()
    config_home = env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config_home) / "klipnote" / "config.toml"


class Settings:
    """Effective values (attribute access) with the source of each (``sources[name]``)."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str]) -> None:
        self._values = values
        self.sources = sources

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


def _parse(setting: Setting, raw: Any, where: str) -> Any:
    try:
        return setting.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid {setting.name} = {raw!r} from {where}: {exc}") from None


def load_settings(flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting; ``flags`` holds command-line values (``None`` means not given)."""
    env = os.environ if environ is None else environ
    values = {s.name: s.default for s in SETTINGS}
    values["spool"] = _default_spool(env)
    sources = {s.name: "default" for s in SETTINGS}

    path = config_path(env)
    if path.exists():
        try:
            with open(path, "rb") as fh:
                file_values = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        for key, raw in file_values.items():
            setting = _BY_NAME.get(key)
            if setting is None:
                raise ConfigError(f"unknown setting {key!r} in {path}; known settings: {', '.join(_BY_NAME)}")
            values[key] = _parse(setting, raw, str(path))
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
    return Settings(values, sources)
