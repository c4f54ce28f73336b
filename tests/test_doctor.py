"""``klipnote doctor``, run as the real CLI on this machine and on set-ups broken the ways deployments break."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from klipnote import envcheck
from klipnote.job import Model
from klipnote.offline_models import OFFLINE_MODELS, assemble
from klipnote.spool import Spool

from .conftest import REPO
from .support.mounts import remount_read_only, tmpfs

BELLE2_PYTHON = REPO / ".venv-belle2" / "bin" / "python"
CHECKS = {"config", "ffmpeg", "ffprobe", "spool", "writable", "perms", "disk", "python", "packages", "torch",
          "device", "model", "telemetry"}

Doctor = Callable[..., subprocess.CompletedProcess]

#: Every doctor run imports torch to read its CUDA build: seconds per run.
pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def doctor(spool_dir: Path, home: Path, model_cache: Path) -> Doctor:
    """``python -m klipnote --spool SPOOL doctor ARGS`` with the offline Whisper model, already assembled."""
    assemble(OFFLINE_MODELS["base-offline"], model_cache)

    def run(*args: str, python: Path | str = sys.executable, spool: Path = spool_dir,
            **env: str) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "KLIPNOTE_MODEL_CACHE": str(model_cache), "WHISPER_MODEL": "base-offline",
                    "HF_HOME": str(home / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", **env}
        proc = subprocess.run([str(python), "-m", "klipnote", "--spool", str(spool), "doctor", *args],
                              capture_output=True, text=True, env=full_env, timeout=300, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def checks(proc: subprocess.CompletedProcess) -> dict[str, dict[str, str]]:
    """The JSON report's checks by name, after checking that the exit code follows the outcomes."""
    report = json.loads(proc.stdout)
    failed = any(c["outcome"] == "FAIL" for c in report["checks"])
    assert proc.returncode == (1 if failed else 0) and report["ok"] is not failed, proc.stdout
    return {c["name"]: c for c in report["checks"]}


def failing(proc: subprocess.CompletedProcess, name: str, *fragments: str) -> dict[str, str]:
    """The named check, which must have failed (so doctor exits 1), with every fragment in what it says."""
    found = checks(proc)[name]
    assert found["outcome"] == "FAIL" and proc.returncode == 1, found
    text = f"{found['found']} {found['advice']}"
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return found


# ---------------------------------------------------------------------- a working machine


def test_passes_on_this_machine(doctor: Doctor, spool_dir: Path, model_cache: Path) -> None:
    Spool(spool_dir).open()
    proc = doctor("--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stdout
    found = checks(proc)
    assert set(found) == CHECKS
    assert all(c["outcome"] != "FAIL" for c in found.values())
    assert found["ffmpeg"]["found"].startswith("ffmpeg version ") and shutil.which("ffmpeg") in found["ffmpeg"]["found"]
    assert found["ffprobe"]["found"].startswith("ffprobe version ")
    assert found["spool"]["found"] == f"{spool_dir} (format 1, private)"
    assert found["perms"]["outcome"] == "ok" and "mode 700" in found["perms"]["found"]
    assert found["writable"]["outcome"] == "ok"
    assert found["torch"]["outcome"] == "ok" and "fits the whisperx worker" in found["torch"]["found"]
    assert found["device"]["found"] == "cpu (as asked)"
    assert found["model"]["outcome"] == "ok"
    assert f"assembled in {model_cache / 'base-offline'}" in found["model"]["found"]
    assert found["telemetry"]["outcome"] == "ok"
    assert found["packages"]["outcome"] in ("ok", "warn")  # the test env may add or bump a package; never missing


def test_text_report_is_one_line_per_check(doctor: Doctor) -> None:
    proc = doctor("--device", "cpu")
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert len(lines) == len(CHECKS) - 1 + 1  # no spool yet (no perms line), and a summary line
    assert all(line.split()[0] in ("ok", "warn", "FAIL") for line in lines[:-1])
    assert lines[-1].startswith("0 failed, ") and lines[-1].endswith("(for a whisperx worker on cpu)")


def test_a_spool_not_created_yet_is_fine_where_it_can_be(doctor: Doctor, spool_dir: Path) -> None:
    found = checks(doctor("--device", "cpu", "--json"))
    assert "not created yet" in found["spool"]["found"]
    assert found["writable"]["outcome"] == "ok" and "can be created" in found["writable"]["found"]
    assert not spool_dir.exists()  # doctor looks, it does not create


# ---------------------------------------------------------------------- broken set-ups


def test_fails_without_ffmpeg_on_path(doctor: Doctor, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = doctor("--device", "cpu", "--json", PATH=str(empty))
    failing(proc, "ffmpeg", "ffmpeg not found on PATH", "install ffmpeg")
    failing(proc, "ffprobe", "ffprobe not found on PATH")


def test_fails_when_ffmpeg_does_not_run(doctor: Doctor, tmp_path: Path) -> None:
    broken = tmp_path / "bin"
    broken.mkdir()
    for name in ("ffmpeg", "ffprobe"):
        (broken / name).write_text("#!/bin/sh\necho 'error while loading shared libraries' >&2\nexit 127\n")
        (broken / name).chmod(0o755)
    proc = doctor("--device", "cpu", "--json", PATH=f"{broken}{os.pathsep}{os.environ['PATH']}")
    failing(proc, "ffmpeg", f"{broken}/ffmpeg -version exited with 127")


@pytest.mark.fault
def test_fails_on_a_read_only_spool(doctor: Doctor, tmp_path: Path) -> None:
    """Root ignores mode bits, so the spool is made read-only the way root cannot ignore: a read-only mount."""
    with tmpfs(tmp_path / "mnt", "size=64m,mode=0700") as mnt:
        spool = Spool(mnt / "spool").open()
        remount_read_only(mnt)
        proc = doctor("--device", "cpu", "--json", spool=spool.root)
        failing(proc, "writable", f"{spool.root} is not writable", "Read-only file system", "remount it read-write")
        assert checks(proc)["spool"]["outcome"] == "ok"


@pytest.mark.fault
def test_fails_where_the_spool_cannot_be_created(doctor: Doctor, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "ro,size=1m") as mnt:
        proc = doctor("--device", "cpu", "--json", spool=mnt / "spool")
        failing(proc, "writable", f"{mnt / 'spool'} cannot be created", "read-only")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores mode bits; the read-only mount test covers root")
def test_fails_on_a_spool_without_write_permission(doctor: Doctor, spool_dir: Path) -> None:
    spool = Spool(spool_dir).open()
    spool.root.chmod(0o555)
    spool.tmp.chmod(0o555)
    try:
        failing(doctor("--device", "cpu", "--json"), "writable", "Permission denied", "owner and mode")
    finally:
        spool.root.chmod(0o700)
        spool.tmp.chmod(0o700)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the spool to another user needs root")
def test_fails_on_a_private_spool_of_another_user(doctor: Doctor, spool_dir: Path) -> None:
    spool = Spool(spool_dir).open()
    os.chown(spool.root, 65534, -1)
    failing(doctor("--device", "cpu", "--json"), "perms", "private to its owner", "KLIPNOTE_SPOOL_GROUP")


def test_a_spool_folder_deleted_is_a_failed_check_not_a_traceback(doctor: Doctor, spool_dir: Path) -> None:
    spool = Spool(spool_dir).open()
    shutil.rmtree(spool.queue)
    failing(doctor("--device", "cpu", "--json"), "writable", f"the spool lacks {spool.queue}", "recreate it")


def test_warns_on_a_spool_others_can_read(doctor: Doctor, spool_dir: Path) -> None:
    Spool(spool_dir).open().root.chmod(0o755)
    found = checks(doctor("--device", "cpu", "--json"))["perms"]
    assert found["outcome"] == "warn" and "others may read it" in found["found"]
    assert found["advice"] == f"chmod o-rwx {spool_dir}"


def test_fails_on_a_spool_of_another_format_or_no_spool_at_all(doctor: Doctor, spool_dir: Path) -> None:
    spool_dir.mkdir()
    (spool_dir / "holiday.jpg").write_bytes(b"\xff\xd8")
    failing(doctor("--device", "cpu", "--json"), "spool", "is not a klipnote spool")
    (spool_dir / "holiday.jpg").unlink()
    Spool(spool_dir).open()
    (spool_dir / "spool.json").write_text(json.dumps({"format": 99}))
    failing(doctor("--device", "cpu", "--json"), "spool", "has format 99")


@pytest.mark.fault
def test_warns_when_the_spool_disk_is_nearly_full(doctor: Doctor, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "size=32m") as mnt:
        proc = doctor("--device", "cpu", "--json", spool=mnt / "spool")
        disk = checks(proc)["disk"]
        assert proc.returncode == 0 and disk["outcome"] == "warn", disk
        assert f"GiB free of 0.0 GiB on {mnt}" in disk["found"] and "klipnote gc" in disk["advice"]


def test_a_corrupt_config_file_is_a_failed_check_not_a_traceback(doctor: Doctor, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("batch_size = 4\nspool = = 3\n")
    proc = doctor("--device", "cpu", "--json", KLIPNOTE_CONFIG=str(config))
    found = failing(proc, "config", f"cannot read config file {config}", f"edit line 2 of {config}")
    assert "config show" not in found["advice"]  # it loads the same file and fails the same way
    assert {"ffmpeg", "torch", "packages"} <= set(checks(proc))  # the checks that need no settings still ran
    for name in ("spool", "model"):  # those that do are named, not silently left out
        assert checks(proc)[name] == {"name": name, "outcome": "warn", "found": "not checked: the settings do not "
                                      "load", "advice": "fix the config first"}
    config.write_text("max_attempts = -1\n")
    failing(doctor("--device", "cpu", "--json", KLIPNOTE_CONFIG=str(config)), "config", "invalid max_attempts = -1")
    bad_env = doctor("--device", "cpu", KLIPNOTE_CONFIG=str(config))
    assert bad_env.returncode == 1 and bad_env.stdout.startswith("FAIL  config     invalid max_attempts")


def test_a_config_file_named_but_missing_is_a_warning(doctor: Doctor, tmp_path: Path) -> None:
    missing = tmp_path / "typo.toml"
    found = checks(doctor("--device", "cpu", "--json", KLIPNOTE_CONFIG=str(missing)))["config"]
    assert found["outcome"] == "warn" and f"KLIPNOTE_CONFIG names {missing}, which does not exist" in found["found"]


def test_fails_in_the_wrong_environment_for_the_worker_kind(doctor: Doctor) -> None:
    torch = envcheck.version_of("torch")
    proc = doctor("--model", "belle2", "--device", "cpu", "--json")
    failing(proc, "torch", f"this environment has torch {torch}", "the belle2 worker needs torch < 2.6",
            "envs/cuda118/requirements.txt")
    failing(proc, "packages", "pinned packages missing", "silero-vad",
            f"pip install -r {REPO / 'envs/cuda118/requirements.txt'}")
    assert checks(proc)["device"]["outcome"] == "warn"


@pytest.mark.skipif(not BELLE2_PYTHON.exists(), reason="the belle2 env (.venv-belle2) is not built")
def test_the_belle2_environment_is_recognised_and_refused_for_whisperx(doctor: Doctor) -> None:
    proc = doctor("--device", "cpu", "--json", python=BELLE2_PYTHON, BELLE2_MODEL_NAME="/nonexistent/belle")
    report = json.loads(proc.stdout)
    assert report["kind"] == "belle2"  # guessed from torch 2.5
    found = checks(proc)
    assert found["torch"]["outcome"] == "ok" and found["packages"]["outcome"] in ("ok", "warn")
    failing(proc, "model", "/nonexistent/belle does not exist")
    failing(doctor("--model", "whisperx", "--device", "cpu", "--json", python=BELLE2_PYTHON), "torch",
            "the whisperx worker needs torch >= 2.6", "envs/cuda12")


def test_fails_when_cuda_is_asked_and_no_gpu_is_visible(doctor: Doctor) -> None:
    proc = doctor("--device", "cuda", "--json", CUDA_VISIBLE_DEVICES="")
    failing(proc, "device", "CUDA is not available to torch", "--device cpu")
    auto = checks(doctor("--device", "auto", "--json", CUDA_VISIBLE_DEVICES=""))
    assert auto["device"] == {"name": "device", "outcome": "ok", "found": "cpu (torch sees no GPU)", "advice": ""}


def test_bad_options_are_usage_errors(doctor: Doctor) -> None:
    assert doctor("--device", "tpu").returncode == 2
    assert doctor("--model", "auto").returncode == 2


# ---------------------------------------------------------------------- model cache


def test_model_not_in_the_cache(doctor: Doctor, home: Path) -> None:
    """large-v2 from the hub: offline it cannot be fetched (FAIL); online the first job would wait (warn)."""
    failing(doctor("--device", "cpu", "--json", WHISPER_MODEL="large-v2", HF_HUB_OFFLINE="1"), "model",
            "Systran/faster-whisper-large-v2 is not in the Hugging Face cache", "klipnote models pull large-v2")
    online = checks(doctor("--device", "cpu", "--json", WHISPER_MODEL="large-v2", HF_HUB_OFFLINE="0"))["model"]
    assert online["outcome"] == "warn" and "the first job downloads it" in online["found"]


def test_offline_model_not_assembled_yet_is_a_warning(doctor: Doctor, tmp_path: Path) -> None:
    found = checks(doctor("--device", "cpu", "--json", KLIPNOTE_MODEL_CACHE=str(tmp_path / "empty")))["model"]
    assert found["outcome"] == "warn" and found["advice"] == "klipnote models pull base-offline"


def test_local_model_folder(doctor: Doctor, tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    failing(doctor("--device", "cpu", "--json", WHISPER_MODEL=str(folder)), "model", f"{folder} has no model.bin")
    (folder / "model.bin").write_bytes(b"weights")
    found = checks(doctor("--device", "cpu", "--json", WHISPER_MODEL=str(folder)))["model"]
    assert found == {"name": "model", "outcome": "ok", "found": f"local folder {folder}", "advice": ""}


def test_telemetry_turned_on_is_a_warning(doctor: Doctor) -> None:
    proc = doctor("--device", "cpu", "--json", PYANNOTE_METRICS_ENABLED="1")
    found = checks(proc)["telemetry"]
    assert proc.returncode == 0 and found["outcome"] == "warn"
    assert "pyannote.audio will send usage metrics" in found["found"]
    assert checks(doctor("--device", "cpu", "--json", HF_HUB_DISABLE_TELEMETRY="0"))["telemetry"]["outcome"] == "warn"


# ---------------------------------------------------------------------- the pins, as read


def test_pins_compare_as_pip_does(tmp_path: Path) -> None:
    assert envcheck.matches_pin("2.5.1+cu118", "2.5.1") and envcheck.matches_pin("2.5.1", "2.5.1")
    assert not envcheck.matches_pin("2.5.1", "2.5.1+cu118") and not envcheck.matches_pin("2.5.10", "2.5.1")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\n\nJinja2==3.1.6\ntyping_extensions==4.16.0  # why\ntorch>=2\n"
                            "uvicorn[standard]==0.30.1\nnvidia-nccl-cu12==2.27.3 ; sys_platform == 'linux'\n"
                            "pywin32==311 ; sys_platform == 'win32'\n--extra-index-url https://example.org\n")
    assert envcheck.read_pins(requirements) == {"jinja2": "3.1.6", "typing-extensions": "4.16.0",
                                                "uvicorn": "0.30.1", "nvidia-nccl-cu12": "2.27.3"}
    for kind in envcheck.EXPECTATIONS:  # every line of the real pins files is a pin
        path = envcheck.pins_file(kind)
        assert path is not None
        pinned = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        assert len(envcheck.read_pins(path)) == len(pinned), kind


def test_pins_file_missing_is_said_not_guessed(tmp_path: Path) -> None:
    assert envcheck.pin_report(Model.WHISPERX, root=tmp_path) is None
    assert envcheck.pin_report(Model.WHISPERX).path == REPO / "envs" / "cuda12" / "requirements.txt"
