"""Settings: loading and precedence in the library, and through the real CLI (config show, init, path, bad values)."""

from __future__ import annotations

import dataclasses
import json
import re
import stat
from pathlib import Path

import pytest

from klipnote import defaults
from klipnote.config import MASK, SETTINGS, Settings, load_settings, parse_duration, parse_size, template
from klipnote.errors import ConfigError
from klipnote.records import checked

from .conftest import REPO

TOKEN = "hf_secretSECRETsecret1234"


def show(klipnote, *args: str, env: dict[str, str] | None = None) -> dict:
    done = klipnote(*args, "config", "show", "--json", env=env, spool=None)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def uncommented(text: str) -> str:
    """The template with every ``# key = value`` line switched on (comments stay comments)."""
    names = "|".join(s.name for s in SETTINGS)
    return re.sub(rf"^# ((?:{names}) = .*)$", r"\1", text, flags=re.MULTILINE)


# ---------------------------------------------------------------------- config init


def test_init_writes_a_private_commented_file_that_changes_nothing(klipnote, tmp_path):
    target = tmp_path / "new" / "dir" / "config.toml"
    done = klipnote("config", "init", "--path", str(target), spool=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {target}\n"
    assert f"KLIPNOTE_CONFIG={target}" in done.stderr  # not where klipnote reads by default: says how
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text()
    for setting in SETTINGS:
        assert f"# {setting.help}." in text
        assert f"# Environment: {', '.join(setting.env)}." in text
        assert re.search(rf"^# {setting.name} = ", text, re.MULTILINE), setting.name

    settings = load_settings(environ={"KLIPNOTE_CONFIG": str(target), "XDG_DATA_HOME": str(tmp_path)})
    assert set(settings.sources.values()) == {"default"}


def test_every_line_of_the_init_file_uncommented_loads_back_unchanged(klipnote, tmp_path):
    target = tmp_path / "config.toml"
    assert klipnote("config", "init", "--path", str(target), spool=None).returncode == 0
    target.write_text(uncommented(target.read_text()))

    settings = load_settings(environ={"KLIPNOTE_CONFIG": str(target)})
    for setting in SETTINGS:
        assert settings.sources[setting.name] == f"file {target}", setting.name
        expected = setting.parse(setting.default if setting.default is not None else setting.example)
        assert getattr(settings, setting.name) == expected, setting.name
    assert settings.max_file_size == defaults.MAX_FILE_SIZE


def test_init_goes_where_klipnote_reads_and_keeps_an_existing_file_unless_forced(klipnote, tmp_path):
    expected = tmp_path / "xdg-config" / "klipnote" / "config.toml"
    located = klipnote("config", "path", spool=None)
    assert located.returncode == 0 and located.stdout == f"{expected}\n"

    assert klipnote("config", "init", spool=None).returncode == 0
    assert stat.S_IMODE(expected.parent.stat().st_mode) == 0o700
    expected.write_text('default_model = "belle2"\n')

    refused = klipnote("config", "init", spool=None)
    assert refused.returncode == 1
    assert "exists" in refused.stderr and "--force" in refused.stderr
    assert expected.read_text() == 'default_model = "belle2"\n'

    forced = klipnote("config", "init", "--force", spool=None)
    assert forced.returncode == 0, forced.stderr
    assert forced.stderr == ""
    assert "# default_model = " in expected.read_text()


def test_init_into_a_folder_says_so_at_once(klipnote, tmp_path):
    for force in ((), ("--force",)):
        done = klipnote("config", "init", "--path", str(tmp_path), *force, spool=None)
        assert done.returncode == 1
        assert done.stderr == (f"klipnote: {tmp_path} is a directory: give the path of a file in it, e.g. "
                               f"{tmp_path / 'config.toml'}\n")


def test_the_example_config_is_the_template_with_a_gpu_boxs_lines_set(klipnote, tmp_path):
    example = REPO / "examples" / "config.toml"
    settings = load_settings(environ={"KLIPNOTE_CONFIG": str(example)})
    from_file = {s.name: getattr(settings, s.name) for s in SETTINGS if settings.sources[s.name] != "default"}
    assert from_file == {"spool": Path("/srv/klipnote/spool"), "spool_group": "transcribers", "device": "cuda",
                         "compute_type": "float16", "batch_size": 16, "max_duration_hours": 4.0}
    target = tmp_path / "config.toml"
    assert klipnote("config", "init", "--path", str(target), spool=None).returncode == 0
    example_text = example.read_text()
    for line in target.read_text().splitlines():  # every comment of config init is kept, every key is there
        key = re.fullmatch(r"# (\w+) = .*", line)
        if key:
            assert re.search(rf"^(# )?{key.group(1)} = ", example_text, re.MULTILINE), line
        elif line != "# For example:":
            assert line in example_text.splitlines(), line


def test_config_path_follows_klipnote_config(klipnote, tmp_path):
    done = klipnote("config", "path", env={"KLIPNOTE_CONFIG": str(tmp_path / "elsewhere.toml")}, spool=None)
    assert done.stdout == f"{tmp_path / 'elsewhere.toml'}\n"


# ---------------------------------------------------------------------- config show and precedence


def test_show_reports_each_value_and_where_it_came_from(klipnote, tmp_path):
    cfg = tmp_path / "klipnote.toml"
    cfg.write_text('default_model = "belle2"\nmax_attempts = 5\nwhisper_model = "medium"\nbatch_size = 4\n')
    env = {"KLIPNOTE_CONFIG": str(cfg), "WHISPER_MODEL": "base-offline", "KLIPNOTE_SPOOL": "/env/spool"}
    shown = show(klipnote, "--spool", str(tmp_path / "flag-spool"), env=env)

    assert shown["config_file"] == {"path": str(cfg), "exists": True}
    settings = shown["settings"]
    assert [*settings] == [s.name for s in SETTINGS]
    assert settings["spool"] == {"value": str(tmp_path / "flag-spool"), "source": "flag", "origin": None,
                                 "env": ["KLIPNOTE_SPOOL"], "default": None}
    assert (settings["whisper_model"]["value"], settings["whisper_model"]["source"],
            settings["whisper_model"]["origin"]) == ("base-offline", "environment", "WHISPER_MODEL")
    assert (settings["default_model"]["value"], settings["default_model"]["source"],
            settings["default_model"]["origin"]) == ("belle2", "file", str(cfg))
    assert (settings["max_attempts"]["value"], settings["batch_size"]["value"]) == (5, 4)
    assert settings["device"] == {"value": "auto", "source": "default", "origin": None, "env": ["WHISPER_DEVICE"],
                                  "default": "auto"}


def test_show_as_a_table_names_the_file_and_the_sources(klipnote, tmp_path):
    cfg = tmp_path / "klipnote.toml"
    cfg.write_text("enable_optimization = false\n")
    done = klipnote("config", "show", env={"KLIPNOTE_CONFIG": str(cfg), "OPTIMIZER_ENGINE": "segments"}, spool=None)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"config file: {cfg}"
    assert lines[2].split() == ["setting", "value", "source"]
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines[3:]}
    assert rows["enable_optimization"] == ["false", f"file {cfg}"]
    assert rows["optimizer_engine"] == ["segments", "environment OPTIMIZER_ENGINE"]
    assert rows["zh_script"] == ["simplified", "default"]

    missing = klipnote("config", "show", env={"KLIPNOTE_CONFIG": str(tmp_path / "none.toml")}, spool=None)
    assert "not found" in missing.stdout.splitlines()[0]


@pytest.mark.parametrize("where", ["file", "HF_TOKEN", "HUGGINGFACE_TOKEN"])
def test_the_token_is_never_printed(klipnote, tmp_path, where):
    cfg = tmp_path / "klipnote.toml"
    cfg.write_text(f'hf_token = "{TOKEN}"\n' if where == "file" else "")
    cfg.chmod(0o600)
    env = {"KLIPNOTE_CONFIG": str(cfg), **({where: TOKEN} if where != "file" else {})}
    shown = show(klipnote, env=env)
    assert shown["settings"]["hf_token"]["value"] == MASK
    assert shown["settings"]["hf_token"]["source"] == ("file" if where == "file" else "environment")
    table = klipnote("config", "show", env=env, spool=None)
    assert table.returncode == 0 and MASK in table.stdout
    for done in (table, klipnote("config", "show", "--json", env=env, spool=None)):
        assert TOKEN not in done.stdout + done.stderr
        assert TOKEN[-6:] not in done.stdout + done.stderr


def test_a_token_in_a_file_others_can_read_is_warned_about(klipnote, tmp_path):
    cfg = tmp_path / "klipnote.toml"
    cfg.write_text(f'hf_token = "{TOKEN}"\n')
    cfg.chmod(0o644)
    done = klipnote("config", "show", "--json", env={"KLIPNOTE_CONFIG": str(cfg)}, spool=None)
    assert done.returncode == 0
    assert f"klipnote: warning: {cfg} holds hf_token and every user may read it (mode 0644): chmod o-rwx {cfg}" \
        in done.stderr
    for private in (0o600, 0o640):  # 0640 root:klipnote is docs/deploy.md's recipe: the group may read it
        cfg.chmod(private)
        assert klipnote("config", "show", "--json", env={"KLIPNOTE_CONFIG": str(cfg)}, spool=None).stderr == ""


def test_show_warns_when_klipnote_config_names_a_missing_file(klipnote, tmp_path):
    missing = tmp_path / "typo.toml"
    done = klipnote("config", "show", env={"KLIPNOTE_CONFIG": str(missing)}, spool=None)
    assert done.returncode == 0
    assert done.stderr == (f"klipnote: warning: KLIPNOTE_CONFIG names {missing}, which does not exist, so no file is "
                           "read: correct the path, create it (klipnote config init), or unset KLIPNOTE_CONFIG\n")


# The original service's names (issue 6) and the KLIPNOTE_* ones: each reaches its setting, beats the file.
ENVIRONMENT_NAMES = [
    ("DEFAULT_TRANSCRIPTION_MODEL", "default_model", "whisperx", "whisperx"),
    ("WHISPER_MODEL", "whisper_model", "/models/large-v3-ct2", "/models/large-v3-ct2"),
    ("WHISPER_DEVICE", "device", "cpu", "cpu"),
    ("WHISPER_COMPUTE_TYPE", "compute_type", "int8_float16", "int8_float16"),
    ("BELLE2_MODEL_NAME", "belle2_model", "/models/belle2", "/models/belle2"),
    ("ENABLE_OPTIMIZATION", "enable_optimization", "off", False),
    ("OPTIMIZER_ENGINE", "optimizer_engine", "words", "words"),
    ("MAX_FILE_SIZE", "max_file_size", "500MB", 500_000_000),
    ("MAX_DURATION_HOURS", "max_duration_hours", "0.5", 0.5),
    ("KLIPNOTE_SPOOL_GROUP", "spool_group", "transcribers", "transcribers"),
    ("KLIPNOTE_PROMPT", "prompt", "Stewart Brand", "Stewart Brand"),
    ("KLIPNOTE_PROMPT_FILE", "prompt_file", "/srv/inbox/glossary.txt", Path("/srv/inbox/glossary.txt")),
    ("KLIPNOTE_HOTWORDS", "hotwords", "Polaroid, Google", "Polaroid, Google"),
    ("KLIPNOTE_TASK", "task", "translate", "translate"),
    ("KLIPNOTE_SPEAKERS", "speakers", "3", 3),
    ("KLIPNOTE_BATCH_SIZE", "batch_size", "8", 8),
    ("KLIPNOTE_BATCH_JOBS", "batch_jobs", "1", 1),
    ("KLIPNOTE_BATCH_AUDIO", "batch_audio", "5m", 300.0),
    ("KLIPNOTE_VAD_METHOD", "vad_method", "silero", "silero"),
    ("KLIPNOTE_ALIGN_MODEL", "align_model", "off", "off"),
    ("KLIPNOTE_DIARIZATION_MODEL", "diarization_model", "/models/pyannote", "/models/pyannote"),
    ("KLIPNOTE_ZH_SCRIPT", "zh_script", "traditional", "traditional"),
    ("KLIPNOTE_HEARTBEAT_INTERVAL", "heartbeat_interval", "2.5", 2.5),
    ("KLIPNOTE_LEASE_TTL", "lease_ttl", "120", 120.0),
    ("KLIPNOTE_MAX_ATTEMPTS", "max_attempts", "7", 7),
    ("KLIPNOTE_WHISPER_REVISION", "whisper_model_revision", "v1.0", "v1.0"),
    ("KLIPNOTE_BELLE2_REVISION", "belle2_model_revision", "0123abcd", "0123abcd"),
    ("KLIPNOTE_BROKER", "broker", "redis://redis.internal:6379/1", "redis://redis.internal:6379/1"),
    ("CELERY_BROKER_URL", "broker", "rediss://:pw@redis.internal:6380/0", "rediss://:pw@redis.internal:6380/0"),
]


def test_settings_has_one_typed_field_per_entry_of_the_table_in_its_order(tmp_path):
    """SETTINGS holds names, sources and help; Settings types the values. Every value a parser returns (each
    default, each example) must have its field's type, or the type checker would vouch for a wrong one."""
    assert [f.name for f in dataclasses.fields(Settings) if f.name != "sources"] == [s.name for s in SETTINGS]
    every = tmp_path / "every.toml"
    every.write_text(uncommented(template()))
    for config in (tmp_path / "absent.toml", every):
        checked(load_settings(environ={"KLIPNOTE_CONFIG": str(config)}))


def test_every_setting_has_an_environment_name_checked_here():
    assert {name for _, name, _, _ in ENVIRONMENT_NAMES} | {"spool", "hf_token"} == {s.name for s in SETTINGS}


@pytest.mark.parametrize(("var", "name", "raw", "value"), ENVIRONMENT_NAMES)
def test_environment_beats_the_file_and_flags_beat_the_environment(tmp_path, var, name, raw, value):
    cfg = tmp_path / "klipnote.toml"
    (setting,) = [s for s in SETTINGS if s.name == name]
    file_value = setting.example if setting.default is None else setting.default
    cfg.write_text(f"{name} = {json.dumps(file_value)}\n")
    env = {"KLIPNOTE_CONFIG": str(cfg)}
    assert load_settings(environ=env).sources[name] == f"file {cfg}"

    settings = load_settings(environ={**env, var: raw})
    assert getattr(settings, name) == value
    assert settings.sources[name] == f"environment {var}"

    assert load_settings(environ={**env, var: ""}).sources[name] == f"file {cfg}"  # empty means unset


def test_flags_beat_the_environment_through_the_cli(klipnote, tmp_path):
    shown = show(klipnote, "--spool", str(tmp_path / "a"), env={"KLIPNOTE_SPOOL": str(tmp_path / "b")})
    assert (shown["settings"]["spool"]["value"], shown["settings"]["spool"]["source"]) == (str(tmp_path / "a"),
                                                                                           "flag")


# ---------------------------------------------------------------------- invalid values


INVALID = [
    ("default_model", "tiny", "DEFAULT_TRANSCRIPTION_MODEL", "allowed: auto, belle2, whisperx"),
    ("device", "gpu", "WHISPER_DEVICE", "allowed: auto, cuda, cpu"),
    ("compute_type", "int4", "WHISPER_COMPUTE_TYPE", "allowed: auto, float16, float32, int8, int8_float16, bfloat16"),
    ("enable_optimization", "maybe", "ENABLE_OPTIMIZATION",
     "allowed: true or false (also 1/0, yes/no, on/off)"),
    ("optimizer_engine", "chars", "OPTIMIZER_ENGINE", "allowed: auto, words, segments"),
    ("max_file_size", "lots", "MAX_FILE_SIZE", "expected bytes, optionally with a unit such as 500MB or 2GiB"),
    ("max_duration_hours", "two", "MAX_DURATION_HOURS", "allowed: a number greater than 0"),
    ("max_duration_hours", "-1", "MAX_DURATION_HOURS", "allowed: a number greater than 0"),
    ("batch_size", "2.5", "KLIPNOTE_BATCH_SIZE", "allowed: a whole number greater than 0"),
    ("batch_jobs", "0", "KLIPNOTE_BATCH_JOBS", "allowed: a whole number greater than 0"),
    ("batch_audio", "0", "KLIPNOTE_BATCH_AUDIO", "allowed: a duration greater than 0, such as 480 or 8m"),
    ("max_attempts", "zero", "KLIPNOTE_MAX_ATTEMPTS", "allowed: a whole number greater than 0"),
    ("lease_ttl", "inf", "KLIPNOTE_LEASE_TTL", "allowed: a number greater than 0"),
    ("zh_script", "pinyin", "KLIPNOTE_ZH_SCRIPT", "allowed: simplified, traditional, original"),
]


@pytest.mark.parametrize(("name", "raw", "var", "allowed"), INVALID)
def test_an_invalid_environment_value_names_key_value_and_what_is_allowed(klipnote, name, raw, var, allowed):
    done = klipnote("config", "show", env={var: raw}, spool=None)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"klipnote: invalid {name} = {raw!r} from environment {var}: {allowed}\n"


@pytest.mark.parametrize(("name", "raw", "var", "allowed"), INVALID)
def test_an_invalid_file_value_names_key_value_file_and_what_is_allowed(klipnote, tmp_path, name, raw, var, allowed):
    cfg = tmp_path / "klipnote.toml"
    cfg.write_text(f"{name} = {json.dumps(raw)}\n")
    done = klipnote("config", "show", env={"KLIPNOTE_CONFIG": str(cfg)}, spool=None)
    assert done.returncode == 2
    assert done.stderr == f"klipnote: invalid {name} = {raw!r} from file {cfg}: {allowed}\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("batch_size = true", "invalid batch_size = True from file .*: allowed: a whole number greater than 0"),
        ("max_attempts = 2.5", "invalid max_attempts = 2.5 .*a whole number"),
        ('whisper_model = ["large-v2"]', "invalid whisper_model = \\['large-v2'\\] .*a non-empty name or path"),
        ('spool = ""', "invalid spool = '' .*a non-empty name or path"),
        ("max_file_size = false", "invalid max_file_size = False .*2GiB"),
        ('spoool = "/x"', "unknown setting 'spoool' in .*; known settings: spool, spool_group"),
        ("spool = ", "cannot read config file"),
    ],
)
def test_wrong_toml_types_and_unknown_keys_are_refused(klipnote, tmp_path, line, message):
    cfg = tmp_path / "klipnote.toml"
    cfg.write_text(line + "\n")
    done = klipnote("config", "show", env={"KLIPNOTE_CONFIG": str(cfg)}, spool=None)
    assert done.returncode == 2
    assert re.fullmatch(f"klipnote: {message}.*\n", done.stderr), done.stderr


def test_other_commands_refuse_an_invalid_setting_too(klipnote, media, tmp_path):
    done = klipnote("submit", str(media["wav"]), env={"MAX_FILE_SIZE": "huge"})
    assert done.returncode == 2
    assert "MAX_FILE_SIZE" in done.stderr and "'huge'" in done.stderr
    assert not (tmp_path / "spool").exists()  # refused before anything was created


# ---------------------------------------------------------------------- loading, without the CLI


def write_config(tmp_path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return {"KLIPNOTE_CONFIG": str(path)}


def test_defaults_apply_when_nothing_is_set(tmp_path):
    settings = load_settings(environ={"XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)})
    assert settings.max_file_size == defaults.MAX_FILE_SIZE
    assert settings.spool == tmp_path / "klipnote" / "spool"
    assert set(settings.sources.values()) == {"default"}


def test_file_then_environment_then_flags_win(tmp_path):
    env = write_config(tmp_path, 'default_model = "belle2"\nmax_attempts = 5\nspool = "/srv/spool"\n')
    settings = load_settings(environ=env)
    assert (settings.default_model, settings.max_attempts) == ("belle2", 5)
    assert settings.sources["default_model"].startswith("file ")

    env["DEFAULT_TRANSCRIPTION_MODEL"] = "whisperx"
    settings = load_settings(environ=env)
    assert settings.default_model == "whisperx"
    assert settings.sources["default_model"] == "environment DEFAULT_TRANSCRIPTION_MODEL"

    settings = load_settings({"spool": "/flag/spool", "default_model": None}, environ=env)
    assert str(settings.spool) == "/flag/spool" and settings.sources["spool"] == "flag"
    assert settings.default_model == "whisperx"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEFAULT_TRANSCRIPTION_MODEL": "tiny"}, "DEFAULT_TRANSCRIPTION_MODEL.*allowed: auto, belle2, whisperx"),
        ({"MAX_FILE_SIZE": "lots"}, "MAX_FILE_SIZE.*2GiB"),
        ({"MAX_DURATION_HOURS": "-1"}, "MAX_DURATION_HOURS.*greater than 0"),
        ({"KLIPNOTE_MAX_ATTEMPTS": "0"}, "KLIPNOTE_MAX_ATTEMPTS"),
    ],
)
def test_invalid_environment_values_name_the_variable_and_what_is_allowed(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)


def test_an_unknown_key_or_broken_toml_in_the_config_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'spoool'"):
        load_settings(environ=write_config(tmp_path, 'spoool = "/x"\n'))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(environ=write_config(tmp_path, "spool = \n"))


@pytest.mark.parametrize(("text", "size"), [("2GiB", 2 * 1024**3), ("500MB", 500_000_000), ("1234", 1234)])
def test_sizes_parse_with_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90", 90), ("15m", 900)])
def test_durations_parse_with_units(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("given", "device", "runs"), [
    ("auto", "cpu", "int8"), ("auto", "cuda", "float16"), ("float32", "cuda", "float32"),
    ("bfloat16", "cpu", "bfloat16"),
])
def test_compute_type_auto_is_float16_on_a_gpu_and_int8_on_a_cpu_for_either_engine(given, device, runs):
    from klipnote.engines import create
    from klipnote.job import Model

    settings = load_settings({"compute_type": given})
    assert settings.compute_type.on(device).value == runs
    assert create(Model.WHISPERX, settings, device=device, batch_size=1).compute_type == runs
    assert create(Model.BELLE2, settings, device=device, batch_size=1).compute_type.value == runs


@pytest.mark.parametrize(("given", "device"), [("float16", "cpu"), ("int8", "cuda"), ("int8_float16", "cpu"),
                                               ("int8_float16", "cuda")])
def test_a_belle2_worker_refuses_a_precision_torch_cannot_run_there_before_loading(given, device):
    from klipnote.engines import create
    from klipnote.job import Model

    with pytest.raises(ConfigError, match=rf"belle2 engine cannot run .*{given}.*: .*(float16|int8)"):
        create(Model.BELLE2, load_settings({"compute_type": given}), device=device, batch_size=1)
