"""The deployment scripts for real: the systemd unit, the worker launcher, the cron batch and the backup.

The cron and backup scripts run as cron would run them, against a real spool. Their drain
workers are the real worker daemon around the fast fake engine (tests/support/fake_engine_worker.py),
except in the slow tests, which start the real whisperx worker on the offline base model
through scripts/klipnote-worker.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from klipnote.claim import WorkerRef, claim_next
from klipnote.job import Lane
from klipnote.spool import Spool

from .conftest import REPO
from .support.e2ekit import worker_env
from .support.spoolkit import ENGINE_WORKER as FAKE

HOST = socket.gethostname()  # what systemd puts for %H

SCRIPTS = REPO / "scripts"
UNIT = SCRIPTS / "klipnote-worker@.service"


def script_env(spool_dir: Path, **extra: str) -> dict[str, str]:
    """The test's environment with the scripts pointed at this spool and this Python environment."""
    return {**os.environ, "KLIPNOTE_SPOOL": str(spool_dir), "KLIPNOTE_VENV_CUDA12": sys.prefix, **extra}


def run_script(name: str, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPTS / name), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)


def klipnote_json(spool_dir: Path, *args: str) -> list | dict:
    done = subprocess.run([sys.executable, "-m", "klipnote", "--spool", str(spool_dir), *args, "--json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def states(spool_dir: Path) -> dict[str, str]:
    """Every job's state by the input's file name."""
    return {Path(j["input"]).name: j["state"] for j in klipnote_json(spool_dir, "list", "--limit", "0")}


@pytest.fixture
def fake_launcher(tmp_path: Path) -> Path:
    """A stand-in for scripts/klipnote-worker with its interface (MODEL first) around the fake engine."""
    path = tmp_path / "fake-klipnote-worker"
    spool = f"$(\"{sys.executable}\" -c 'from klipnote.config import load_settings; print(load_settings().spool)')"
    path.write_text(f'#!/bin/sh\nshift\nexec "{sys.executable}" "{FAKE}" --spool "{spool}" "$@"\n')
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------------- the systemd unit


def unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) for every setting line of the unit, in order."""
    entries, section = [], ""
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            entries.append((section, key, value))
    return entries


def unit_value(key: str) -> str:
    (value,) = [v for _, k, v in unit_entries() if k == key]
    return value


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart's program exists: point it at this checkout instead of /opt/klipnote.
    (tmp_path / UNIT.name).write_text(UNIT.read_text().replace("/opt/klipnote", str(REPO)))
    for name in ("klipnote-worker@whisperx-0.service", "klipnote-worker@belle2-cpu.service"):
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / name)], capture_output=True,
                              text=True, check=False)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr  # unknown keys are warnings on stderr


def test_the_unit_stops_gracefully_restarts_on_failure_and_keeps_gpus_visible():
    entries = unit_entries()
    grace = float(re.search(r"--grace (\d+)", unit_value("ExecStart")).group(1))
    assert float(unit_value("TimeoutStopSec")) > grace
    assert (unit_value("KillSignal"), unit_value("KillMode"), unit_value("Restart")) == ("SIGTERM", "mixed",
                                                                                        "on-failure")
    assert unit_value("ExecStart").split()[:2] == ["/opt/klipnote/scripts/klipnote-worker", "%i"]
    assert [v for _, k, v in entries if k == "EnvironmentFile"] == ["-/etc/klipnote/worker.env",
                                                                    "-/etc/klipnote/%i.env"]
    keys = {k for _, k, _ in entries}
    assert {"NoNewPrivileges", "ProtectSystem", "PrivateTmp"} <= keys
    assert not keys & {"PrivateDevices", "DevicePolicy", "MemoryDenyWriteExecute"}  # each hides or breaks CUDA


# ---------------------------------------------------------------------- the launcher


@pytest.mark.parametrize(
    ("args", "env", "code", "says"),
    [
        (("whisperx-x",), {}, 2, "after the model comes a GPU index or cpu"),
        (("whisper-0",), {}, 2, "unknown model 'whisper'"),
        ((), {}, 2, "usage: klipnote-worker"),
        (("belle2-1",), {"KLIPNOTE_VENV_CUDA118": "/nonexistent"}, 1,
         "no belle2 environment at /nonexistent; create it with: python3.11 -m venv /nonexistent"),
    ],
)
def test_the_launcher_refuses_what_it_cannot_start(spool_dir, args, env, code, says):
    done = run_script("klipnote-worker", *args, env=script_env(spool_dir, **env))
    assert done.returncode == code
    assert says in done.stderr


@pytest.mark.slow
def test_the_units_command_runs_a_real_worker_that_stops_on_sigterm(spool_dir, model_cache, corpus, tmp_path):
    """ExecStart as systemd runs it for klipnote-worker@whisperx-cpu, WHISPER_MODEL from an env file."""
    env = {**worker_env(model_cache, tmp_path / "home"), "KLIPNOTE_SPOOL": str(spool_dir),
           "KLIPNOTE_VENV_CUDA12": sys.prefix, "WHISPER_MODEL": "base-offline"}
    command = [part.replace("/opt/klipnote", str(REPO)).replace("%i", "whisperx-cpu").replace("%H", HOST)
               for part in unit_value("ExecStart").split()]
    log = tmp_path / "journal.txt"  # stderr to a file: a pipe nobody reads would fill up and stall the worker
    with open(log, "w") as journal:
        worker = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=journal, text=True)
    try:
        ready = worker.stdout.readline()
        assert " ready: model base-offline on cpu " in ready, log.read_text()[-3000:]
        assert ready.startswith(f"klipnote worker whisperx-cpu@{HOST} ready")  # the instance's own record
        job_id = klipnote_json(spool_dir, "submit", str(corpus / "jfk.flac"))[0]["id"]
        done = subprocess.run([sys.executable, "-m", "klipnote", "--spool", str(spool_dir), "wait", job_id,
                               "--timeout", "5m"], capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        worker.send_signal(signal.SIGTERM)  # KillSignal=
        assert worker.wait(timeout=float(unit_value("TimeoutStopSec"))) == 0  # 0: Restart=on-failure leaves it
    finally:
        if worker.poll() is None:
            worker.kill()
    assert "ask not what your country can do for you" in (spool_dir / "jobs" / job_id / "transcript.srt").read_text()


# ---------------------------------------------------------------------- klipnote-cron


@pytest.fixture
def inbox(tmp_path: Path, media: dict[str, Path]) -> Path:
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(media["wav"], folder / "tone.wav")
    shutil.copy(media["mp3"], folder / "sub" / "tone.mp3")
    (folder / "notes.txt").write_text("not media: passed over\n")
    return folder


def cron(*args: str, env: dict[str, str], lock: Path) -> subprocess.CompletedProcess:
    return run_script("klipnote-cron", "--lock", str(lock), *args, env=env)


def test_cron_submits_drains_delivers_and_says_nothing_when_all_is_well(spool_dir, inbox, fake_launcher, tmp_path):
    env = script_env(spool_dir, KLIPNOTE_WORKER=str(fake_launcher))
    done = cron("--drain", "whisperx", str(inbox), env=env, lock=tmp_path / "lock")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert states(spool_dir) == {"tone.wav": "done", "tone.mp3": "done"}
    assert "fake transcript" in (inbox / "tone.srt").read_text()
    assert (inbox / "sub" / "tone.json").exists()

    # The next run finds nothing new (the outputs beside the inputs are not media) and stays quiet.
    again = cron("--drain", "whisperx", str(inbox), env=env, lock=tmp_path / "lock")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert len(states(spool_dir)) == 2

    shutil.copy(inbox / "tone.wav", inbox / "sub" / "renamed-copy.wav")  # same content: still not new
    (inbox / "sub" / "new.wav").write_bytes((inbox / "tone.wav").read_bytes()[:-800])  # new content
    verbose = cron("-v", "--drain", "whisperx", "--submit-arg=--format=vtt", str(inbox), env=env,
                   lock=tmp_path / "lock")
    assert verbose.returncode == 0, verbose.stderr
    assert "4 files in the spool (new or already there)" in verbose.stderr
    assert states(spool_dir) == {"tone.wav": "done", "tone.mp3": "done", "new.wav": "done"}
    assert (inbox / "sub" / "new.vtt").read_text().startswith("WEBVTT")
    # Three runs, three drain workers, one record: each run took over the name of the one before.
    assert [p.name for p in (spool_dir / "workers").iterdir()] == [f"cron-whisperx@{HOST}.json"]


def test_cron_without_drain_only_submits(spool_dir, inbox, tmp_path):
    done = cron(str(inbox), env=script_env(spool_dir), lock=tmp_path / "lock")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert states(spool_dir) == {"tone.wav": "queued", "tone.mp3": "queued"}


def test_cron_leaves_at_once_while_another_run_holds_the_lock(spool_dir, inbox, fake_launcher, tmp_path):
    lock = tmp_path / "lock"
    env = script_env(spool_dir, KLIPNOTE_WORKER=str(fake_launcher))
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what flock(1) in a running klipnote-cron holds
        quiet = cron("--drain", "whisperx", str(inbox), env=env, lock=lock)
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
        verbose = cron("-v", str(inbox), env=env, lock=lock)
        assert verbose.returncode == 0
        assert f"another run holds {lock}; nothing done" in verbose.stderr
        assert not (spool_dir / "jobs").exists() or states(spool_dir) == {}
    after = cron("--drain", "whisperx", str(inbox), env=env, lock=lock)  # released: this one runs
    assert after.returncode == 0, after.stderr
    assert set(states(spool_dir).values()) == {"done"}


def test_cron_reports_rejected_files_and_failed_jobs_with_exit_1(spool_dir, inbox, fake_launcher, tmp_path):
    env = script_env(spool_dir, KLIPNOTE_WORKER=str(fake_launcher), FAKE_FAIL_LANGUAGE="xx")
    (inbox / "sub" / "broken.mp3").write_bytes(b"ID3" + os.urandom(2000))  # an mp3 by its name only
    shutil.copy(REPO / "examples" / "sample.opus", inbox / "long.opus")
    done = cron("--drain", "whisperx", "--submit-arg=--language=xx", str(inbox), env={**env,
                "MAX_DURATION_HOURS": str(5 / 3600)}, lock=tmp_path / "lock")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert any(line.startswith(f"klipnote: {inbox / 'long.opus'}: too long") for line in lines), lines
    failed = [line for line in lines if re.fullmatch(r"klipnote: [0-9a-z]{18} failed: .*fake engine.*", line)]
    assert len(failed) == 2, lines
    assert states(spool_dir) == {"tone.wav": "failed", "tone.mp3": "failed"}


def test_cron_reports_a_failed_job_once_and_never_transcribes_it_again(spool_dir, inbox, fake_launcher, tmp_path):
    env = script_env(spool_dir, KLIPNOTE_WORKER=str(fake_launcher), FAKE_FAIL_LANGUAGE="xx")
    first = cron("--drain", "whisperx", "--submit-arg=--language=xx", str(inbox), env=env, lock=tmp_path / "lock")
    assert first.returncode == 1 and len(first.stderr.splitlines()) == 2, first.stderr
    again = cron("--drain", "whisperx", "--submit-arg=--language=xx", str(inbox), env=env, lock=tmp_path / "lock")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert states(spool_dir) == {"tone.wav": "failed", "tone.mp3": "failed"}


def test_cron_mails_the_log_of_a_worker_that_failed(spool_dir, inbox, fake_launcher, tmp_path):
    env = script_env(spool_dir, KLIPNOTE_WORKER=str(fake_launcher))
    done = cron("--drain", "whisperx", "--worker-arg=--no-such-option", str(inbox), env=env, lock=tmp_path / "lock")
    assert done.returncode == 1
    assert "klipnote-cron: the whisperx worker failed; its output:" in done.stderr
    assert "--no-such-option" in done.stderr  # the worker's own complaint follows


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("{tmp}/empty",), 0, ""),
        (("{tmp}/only-text",), 0, ""),
        (("{tmp}/missing",), 1, "klipnote-cron: {tmp}/missing is not a folder\n"),
        ((), 2, "klipnote-cron: no folder given (--help for usage)\n"),
        (("--drain",), 2, "klipnote-cron: --drain needs a value (--help for usage)\n"),
        (("--bogus", "{tmp}/empty"), 2, "klipnote-cron: unknown option --bogus (--help for usage)\n"),
    ],
)
def test_cron_exit_codes_for_empty_missing_and_wrong(spool_dir, tmp_path, args, code, says):
    (tmp_path / "empty").mkdir()
    (tmp_path / "only-text").mkdir()
    (tmp_path / "only-text" / "readme.txt").write_text("nothing to transcribe\n")
    done = cron(*(a.format(tmp=tmp_path) for a in args), env=script_env(spool_dir), lock=tmp_path / "lock")
    assert (done.returncode, done.stdout, done.stderr) == (code, "", says.format(tmp=tmp_path))


@pytest.mark.slow
def test_cron_with_the_real_whisperx_worker(spool_dir, model_cache, corpus, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "2026-11").mkdir(parents=True)
    shutil.copy(corpus / "jfk.flac", inbox / "2026-11" / "jfk.flac")
    env = {**worker_env(model_cache, tmp_path / "home"), "KLIPNOTE_SPOOL": str(spool_dir),
           "KLIPNOTE_VENV_CUDA12": sys.prefix}
    args = ("--drain", "whisperx-cpu", "--worker-arg=--whisper-model=base-offline", str(inbox))
    done = cron(*args, env=env, lock=tmp_path / "lock")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    srt = (inbox / "2026-11" / "jfk.srt").read_text()
    assert "ask not what your country can do for you" in srt
    assert cron(*args, env=env, lock=tmp_path / "lock").returncode == 0
    assert states(spool_dir) == {"jfk.flac": "done"}


# ---------------------------------------------------------------------- klipnote-backup


def backup(*args: str, env: dict[str, str]) -> Path:
    done = run_script("klipnote-backup", *args, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return Path(done.stdout.strip())


def restore(archive: Path, target: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = run_script("klipnote-backup", "--restore", str(archive), str(target), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{target}\n"
    return done


def drain(spool_dir: Path) -> None:
    done = subprocess.run([sys.executable, str(FAKE), "--spool", str(spool_dir), "--drain"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_a_backup_taken_while_workers_run_restores_into_a_spool_where_every_job_ends(
        spool_dir, media, tmp_path, fake_launcher):
    env = script_env(spool_dir)
    files = [str(media["wav"])] * 24
    assert subprocess.run([sys.executable, "-m", "klipnote", "--spool", str(spool_dir), "submit", "-q", *files],
                          capture_output=True, check=False).returncode == 0
    workers = [subprocess.Popen([sys.executable, str(FAKE), "--spool", str(spool_dir), "--id", f"w{i}"],
                                env={**os.environ, "FAKE_WORK": "0.05"}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for i in range(2)]
    more = subprocess.Popen([sys.executable, "-m", "klipnote", "--spool", str(spool_dir), "submit", "-q",
                             *[str(media["mp3"])] * 12], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        archives = [backup("--keep", "0", str(tmp_path / "backups"), env=env) for _ in range(3)]
    finally:
        assert more.wait(timeout=120) == 0
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0

    assert len(set(archives)) == 3
    for n, archive in enumerate(archives):
        assert archive.name.startswith("klipnote-spool-") and archive.name.endswith("Z.tar.gz")
        assert archive.stat().st_mode & 0o077 == 0
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert "./spool.json" in names
        assert not [name for name in names if name.endswith(".lock") or name.startswith(("./tmp/", "./workers/"))]

        target = tmp_path / f"restored-{n}"
        restore(archive, target, env)
        restored = Spool(target).open(create=False)
        for job_id in restored.job_ids():  # every job has ended or has a ticket to run again
            assert restored.load_status(job_id).state.terminal or restored.find_tickets(job_id), job_id
        drain(target)
        jobs = klipnote_json(target, "list", "--limit", "0")
        assert jobs and {j["state"] for j in jobs} == {"done"}
        assert len(jobs) == len(restored.job_ids())


def test_restore_gives_a_ticketless_job_a_ticket_or_fails_it_when_its_attempts_are_used(spool_dir, media, tmp_path):
    """What a backup can catch between two states: the status of a live job, not its ticket."""
    env = script_env(spool_dir)
    ids = [klipnote_json(spool_dir, "submit", str(media[kind]))[0]["id"] for kind in ("wav", "mp3")]
    spool = Spool(spool_dir).open(create=False)
    for ticket in [t for job_id in ids for t in spool.find_tickets(job_id)]:
        ticket.unlink()
    spent = spool.load_status(ids[1])
    spent.attempt = spent.attempt_limit
    spool.write_status(spent)

    target = tmp_path / "restored"
    done = restore(backup(str(tmp_path / "backups"), env=env), target, env)
    assert f"{ids[0]}: requeued: restored from a backup without its ticket" in done.stderr
    assert f"{ids[1]}: failed: restored from a backup without its ticket" in done.stderr
    restored = Spool(target).open(create=False)
    assert restored.load_status(ids[0]).message.startswith("requeued for attempt 1 of 3: restored from a backup")
    assert restored.load_status(ids[1]).error == "gave up after 3 attempts: restored from a backup without its ticket"
    drain(target)
    assert states(target) == {"tone.wav": "done", "tone.mp3": "failed"}


def test_restore_requeues_a_claim_caught_with_a_status_older_than_it(spool_dir, media, tmp_path):
    """A backup can read a job's status just before a worker claims it and its ticket just after: restored,
    that claim names no holder and its ticket is seconds old, so no reaper would free it within a lease."""
    env = script_env(spool_dir)
    (job_id,) = [klipnote_json(spool_dir, "submit", str(media["wav"]))[0]["id"]]
    spool = Spool(spool_dir).open(create=False)
    before = spool.load_status(job_id)
    claim = claim_next(spool, [Lane.AUTO, Lane.WHISPERX], WorkerRef.here("caught"))
    assert claim is not None
    claim.close()  # the claim stays (a ticket in claimed/), as in a worker the backup caught mid-job
    spool.write_status(before)  # ... with the status the backup read before the claim

    target = tmp_path / "restored"
    done = restore(backup(str(tmp_path / "backups"), env=env), target, env)
    assert f"{job_id}: requeued: restored from a backup taken while it ran" in done.stderr
    drain(target)
    assert states(target) == {"tone.wav": "done"}


def test_backups_keep_the_newest_n_and_use_the_configured_spool(spool_dir, media, tmp_path):
    klipnote_json(spool_dir, "submit", str(media["wav"]))
    config = tmp_path / "klipnote.toml"
    config.write_text(f'spool = "{spool_dir}"\n')
    env = {**script_env(spool_dir), "KLIPNOTE_SPOOL": "", "KLIPNOTE_CONFIG": str(config)}
    dest = tmp_path / "backups"
    made = [backup("--keep", "2", str(dest), env=env) for _ in range(3)]
    assert sorted(dest.glob("klipnote-spool-*.tar.gz")) == made[1:]
    assert [p.name for p in dest.iterdir() if p.name.startswith(".") and p.suffix != ".lock"] == []


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--spool", "{tmp}", "{tmp}/b"), 1, "{tmp} is not a klipnote spool (no spool.json)"),
        (("--keep", "some", "{tmp}/b"), 2, "--keep some: a whole number"),
        (("--restore", "{tmp}/none.tar.gz", "{tmp}/r"), 1, "no archive at {tmp}/none.tar.gz"),
        (("--restore", "{tmp}/not-a-backup.tar.gz", "{tmp}/r"), 1, "is not a klipnote spool backup"),
        (("--restore", "{tmp}/not-a-backup.tar.gz", "{tmp}"), 1, "{tmp} is not empty"),
        ((), 2, "give one BACKUP_DIR"),
    ],
)
def test_backup_refuses_what_it_cannot_do(spool_dir, tmp_path, args, code, says):
    with tarfile.open(tmp_path / "not-a-backup.tar.gz", "w:gz") as tar:
        tar.add(FAKE, arcname="./fake.py")
    done = run_script("klipnote-backup", *(a.format(tmp=tmp_path) for a in args), env=script_env(spool_dir))
    assert done.returncode == code
    assert says.format(tmp=tmp_path) in done.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- examples


def sh_blocks(path: Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)


@pytest.mark.skipif(shutil.which("jq") is None, reason="the pipeline examples read JSON with jq, not installed")
def test_the_pipeline_examples_run_as_documented(spool_dir, media, tmp_path):
    find_, xargs_, wait_, collect, one_file, retry = sh_blocks(REPO / "examples" / "pipelines.md")
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    (inbox / "sub").mkdir(parents=True)
    shutil.copy(media["wav"], inbox / "tone.wav")
    shutil.copy(media["mp3"], inbox / "sub" / "music.mp3")
    (inbox / "sub" / "with space.wav").write_bytes((inbox / "tone.wav").read_bytes()[:-640])
    (inbox / "talk.WAV").write_bytes((inbox / "tone.wav").read_bytes()[:-1280])
    (inbox / "notes.txt").write_text("not media\n")
    env = {**os.environ, "KLIPNOTE_SPOOL": str(spool_dir), "INBOX": str(inbox), "OUT": str(out),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def sh(block: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    worker = subprocess.Popen([sys.executable, str(FAKE), "--spool", str(spool_dir)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "FAKE_FAIL_LANGUAGE": "xx"})
    try:
        assert sh(find_).returncode == 0
        assert len((tmp_path / "ids.txt").read_text().split()) == 4  # every .wav, .WAV and .mp3; not notes.txt
        done = sh(xargs_)  # the same .wav files again: --skip-existing gives their ids, submits nothing new
        assert (done.returncode, done.stderr) == (0, "")
        assert len((tmp_path / "ids.txt").read_text().split()) == 7 and len(states(spool_dir)) == 4

        done = sh(wait_)
        assert done.stdout == "all 7 done\n", done.stdout + done.stderr

        assert sh(collect).returncode == 0
        assert sorted(p.name for p in out.iterdir()) == ["music.srt", "talk.srt", "tone.srt", "with space.srt"]
        assert "fake transcript" in (out / "with space.srt").read_text()

        (inbox / "talk.wav").write_bytes((inbox / "tone.wav").read_bytes()[:-1920])
        done = sh(one_file)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert (out / "talk.txt").read_text().startswith("fake transcript")

        bad = klipnote_json(spool_dir, "submit", "-l", "xx", str(media["m4a"]), "--wait")[0]
        assert bad["state"] == "failed"
        (tmp_path / "ids.txt").write_text(bad["id"] + "\n", encoding="utf-8")
        done = sh(wait_)
        assert done.stdout.startswith("some failed or were canceled:\n")
        assert f"{bad['id']} failed: " in done.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0

    assert sh(retry).returncode == 0
    assert klipnote_json(spool_dir, "status", bad["id"])["state"] == "queued"


def test_the_example_crontab_runs_silently(spool_dir, media, fake_launcher, tmp_path):
    """Every active line of examples/crontab, in cron's bare environment, with this checkout's paths."""
    places = {"/opt/klipnote/.venv": sys.prefix, "/opt/klipnote": str(REPO), "/srv/inbox-zh": str(tmp_path / "zh"),
              "/srv/inbox": str(tmp_path / "inbox"), "/backup/klipnote": str(tmp_path / "backups"),
              "/etc/klipnote/config.toml": str(tmp_path / "config.toml"),
              "/tmp/klipnote-cron-zh.lock": str(tmp_path / "zh.lock")}

    def here(text: str) -> str:
        for old, new in places.items():
            text = text.replace(old, new)
        return text

    (tmp_path / "config.toml").write_text(f'spool = "{spool_dir}"\n')
    for folder, kind in (("inbox", "wav"), ("zh", "mp3")):
        (tmp_path / folder).mkdir()
        shutil.copy(media[kind], tmp_path / folder / f"tone.{kind}")
    env = {"HOME": str(tmp_path), "LOGNAME": "klipnote", "XDG_RUNTIME_DIR": str(tmp_path),
           "KLIPNOTE_WORKER": str(fake_launcher)}  # the workers it drains with: the fake engine's
    commands = []
    for line in (REPO / "examples" / "crontab").read_text().splitlines():
        if re.fullmatch(r"[A-Z_]+=.*", line):
            key, _, value = line.partition("=")
            env[key] = here(value)
        elif line and not line.startswith("#"):
            commands.append(here(line.split(None, 5)[5]))
    assert len(commands) == 4
    for command in commands:
        done = subprocess.run([env["SHELL"], "-c", command], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), (command, done.stderr)

    assert states(spool_dir) == {"tone.wav": "done", "tone.mp3": "queued"}  # no belle2 worker drained the zh lane
    assert (tmp_path / "inbox" / "tone.srt").exists()
    assert len(list((tmp_path / "backups").glob("klipnote-spool-*.tar.gz"))) == 1


def test_the_example_environment_files_hold_valid_settings():
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them, the instance's file after the shared one."""
    from klipnote.config import load_settings

    environ: dict[str, str] = {}
    for name in ("worker.env", "whisperx-1.env"):
        for line in (REPO / "examples" / "systemd" / name).read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                assert re.fullmatch(r"[A-Z][A-Z0-9_]*", key) and value == value.strip(), line
                environ[key] = value
    settings = load_settings(environ={**environ, "KLIPNOTE_CONFIG": "/nonexistent.toml"})
    assert (str(settings.spool), settings.whisper_model, settings.batch_size) == ("/srv/klipnote/spool", "medium", 8)
    assert settings.sources["hf_token"] == "environment HF_TOKEN"
