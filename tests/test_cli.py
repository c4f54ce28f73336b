"""The real ``klipnote`` command, run in subprocesses against a real spool on disk.

Every test checks exit codes, JSON fields and what is (or is not) in the spool afterwards. Jobs
are driven to their end by the library's worker API in this process (:func:`finish_one`), a
stand-in for an engine: the CLI cannot tell the difference.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from klipnote import __version__
from klipnote.claim import Claim, WorkerRef, claim_next
from klipnote.ids import ALPHABET, ID_LENGTH
from klipnote.job import Lane
from klipnote.spool import Spool

from .support.mounts import remount_read_only, tmpfs
from .support.privileges import unprivileged

ALL_LANES = (Lane.AUTO, Lane.WHISPERX, Lane.BELLE2)
UNKNOWN_ID = "0000000000zzzzzzzz"
SRT = "1\r\n00:00:00,000 --> 00:00:01,000\r\nhéllo wörld\r\n\r\n".encode()
STATUS_KEYS = {
    "id", "state", "stage", "progress", "message", "lane", "engine", "routing", "attempt", "worker",
    "submitted_at", "started_at", "finished_at", "error", "outputs",
}  # fmt: skip
SUBMIT_KEYS = {"id", "input", "lane", "state"}
Run = Callable[..., subprocess.CompletedProcess]


# ---------------------------------------------------------------------- running the CLI


@pytest.fixture
def cli(klipnote: Run) -> Run:
    """The ``klipnote`` fixture, checking on every call that no traceback escaped."""

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        proc = klipnote(*args, **kwargs)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def command(spool_dir: Path, *args: str) -> list[str]:
    """The argv the ``klipnote`` fixture runs, for the few tests that need to run it another way."""
    return [sys.executable, "-m", "klipnote", "--spool", str(spool_dir), *args]


def expect(proc: subprocess.CompletedProcess, code: int) -> subprocess.CompletedProcess:
    assert proc.returncode == code, (
        f"{proc.args[3:]} exited {proc.returncode}, expected {code}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return proc


def one_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """The single ``klipnote: ...`` line on stderr, checked to contain every fragment."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("klipnote: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def submitted(cli: Run, *args: str, code: int = 0, **kwargs: Any) -> list[dict[str, Any]]:
    """``submit --json``'s list of outcomes, after checking the exit code."""
    return json.loads(expect(cli("submit", "--json", *args, **kwargs), code).stdout)


def submit_one(cli: Run, *args: str, **kwargs: Any) -> str:
    [entry] = submitted(cli, *args, **kwargs)
    return entry["id"]


def status_of(cli: Run, job_id: str, **kwargs: Any) -> dict[str, Any]:
    return json.loads(expect(cli("status", "--json", job_id, **kwargs), 0).stdout)


def listed(cli: Run, *args: str) -> list[str]:
    return [job["id"] for job in json.loads(expect(cli("list", "--json", *args), 0).stdout)]


def is_job_id(text: str) -> bool:
    return len(text) == ID_LENGTH and set(text) <= set(ALPHABET)


# ---------------------------------------------------------------------- looking at the spool


def jobs_on_disk(spool_dir: Path) -> set[str]:
    folder = spool_dir / "jobs"
    return set(os.listdir(folder)) if folder.is_dir() else set()


def tickets(spool_dir: Path, lane: Lane) -> list[str]:
    return sorted(os.listdir(spool_dir / "queue" / lane.value))


def index_entries(spool_dir: Path) -> set[str]:
    return {p.name for p in (spool_dir / "index" / "sha256").glob("*/*")}


def assert_tidy(spool_dir: Path) -> None:
    """Nothing left half-done: no staged submit, no temp file, no index entry without its job."""
    staged = sorted(p.name for p in (spool_dir / "tmp").iterdir()) if (spool_dir / "tmp").is_dir() else []
    assert staged == []
    assert sorted(spool_dir.rglob(".*.tmp")) == []
    assert index_entries(spool_dir) <= jobs_on_disk(spool_dir)


# ---------------------------------------------------------------------- a stand-in worker


def claim_one(spool_dir: Path) -> Claim:
    claim = claim_next(Spool(spool_dir).open(create=False), ALL_LANES, WorkerRef.here("test"))
    assert claim is not None, "no job to claim"
    return claim


def finish_one(spool_dir: Path, srt: bytes = SRT) -> str:
    """Claim the next job, write its SRT and JSON, and commit it: the job is done."""
    claim = claim_one(spool_dir)
    (claim.output_dir / "transcript.srt").write_bytes(srt)
    (claim.output_dir / "transcript.json").write_text('{"segments": []}\n')
    claim.finish()
    return claim.job_id


def fail_one(spool_dir: Path, error: str = "the engine gave up") -> str:
    claim = claim_one(spool_dir)
    claim.fail(error)
    return claim.job_id


# ---------------------------------------------------------------------- inputs


def make_audio(target: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(target)], check=True)
    return target


@pytest.fixture(scope="session")
def tiny_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.1 s of audio in under 1000 bytes: valid under MAX_FILE_SIZE=1000 and MAX_DURATION_HOURS=0.0001."""
    wav = make_audio(
        tmp_path_factory.mktemp("tiny") / "tiny.wav",
        *("-f", "lavfi", "-i", "sine=frequency=440:duration=0.1", "-ar", "8000", "-ac", "1", "-c:a", "pcm_u8"),
        *("-fflags", "+bitexact", "-map_metadata", "-1"),
    )
    assert wav.stat().st_size < 1000
    return wav


@pytest.fixture
def wav(media: dict[str, Path]) -> str:
    return str(media["wav"])


@pytest.fixture
def queued_job(cli: Run, wav: str) -> str:
    return submit_one(cli, wav)


# ====================================================================== submit: accepted files


def test_submit_json_lists_one_queued_job_per_file(cli, spool_dir, media):
    files = [str(media["wav"]), str(media["mp3"])]
    out = submitted(cli, *files)
    assert [set(entry) for entry in out] == [SUBMIT_KEYS, SUBMIT_KEYS]
    assert [entry["input"] for entry in out] == files
    assert {entry["state"] for entry in out} == {"queued"}
    assert {entry["lane"] for entry in out} == {"auto"}
    assert all(is_job_id(entry["id"]) for entry in out)
    assert jobs_on_disk(spool_dir) == {entry["id"] for entry in out}
    assert_tidy(spool_dir)


def test_submit_quiet_prints_only_ids_in_input_order(cli, spool_dir, media):
    proc = expect(cli("submit", "-q", str(media["wav"]), str(media["mp3"])), 0)
    ids = proc.stdout.splitlines()
    assert len(ids) == 2
    assert all(is_job_id(job_id) for job_id in ids)
    assert set(ids) == jobs_on_disk(spool_dir)
    assert [status_of(cli, job_id)["input"] for job_id in ids] == [str(media["wav"]), str(media["mp3"])]
    assert proc.stderr == ""


def test_submit_human_output_names_the_job(cli, spool_dir, wav):
    proc = expect(cli("submit", wav), 0)
    [job_id] = jobs_on_disk(spool_dir)
    assert job_id in proc.stdout
    assert "queued" in proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize("kind", ["wav", "mp3", "m4a", "flac", "mp4"])
def test_submit_accepts_audio_and_video_with_audio(cli, spool_dir, media, corpus, kind):
    path = corpus / "jfk.flac" if kind == "flac" else media[kind]
    job_id = submit_one(cli, str(path))
    manifest = json.loads((spool_dir / "jobs" / job_id / "manifest.json").read_text())
    assert manifest["input"]["has_video"] is (kind == "mp4")
    assert manifest["input"]["duration"] > 0
    assert (spool_dir / "jobs" / job_id / manifest["input"]["snapshot"]).read_bytes() == path.read_bytes()


def test_submit_names_with_unicode_spaces_and_a_leading_dash(cli, spool_dir, tmp_path, wav):
    name = "-my talk é.wav"
    shutil.copy(wav, tmp_path / name)
    [entry] = submitted(cli, "--", name, cwd=tmp_path)
    assert entry["input"] == name
    status = status_of(cli, entry["id"])
    assert status["input"] == str(tmp_path / name)
    assert jobs_on_disk(spool_dir) == {entry["id"]}


def test_submit_rejects_a_file_name_that_is_not_utf8_cleanly(cli, spool_dir, tmp_path, wav):
    name = os.fsdecode(b"bad\xff name.wav")
    shutil.copy(wav, tmp_path / name)
    proc = expect(cli("submit", "-q", name, cwd=tmp_path), 1)
    one_error(proc, "not valid UTF-8", "rename")
    assert jobs_on_disk(spool_dir) == set()
    assert_tidy(spool_dir)


# ====================================================================== submit: rejected files


@dataclass(frozen=True)
class BadInput:
    name: str
    make: Callable[[Path, dict[str, Path]], Path]  # (scratch folder, media) -> the path to submit
    reason: str  # in the JSON error and the stderr line
    env: dict[str, str] = field(default_factory=dict)


def _folder(scratch: Path, media: dict[str, Path]) -> Path:
    folder = scratch / "album"
    folder.mkdir()
    shutil.copy(media["wav"], folder / "track.wav")
    return folder


def _empty(scratch: Path, media: dict[str, Path]) -> Path:
    (scratch / "empty.wav").touch()
    return scratch / "empty.wav"


def _text_named_mp3(scratch: Path, media: dict[str, Path]) -> Path:
    (scratch / "notes.mp3").write_text("these are not the sounds you are looking for\n" * 20)
    return scratch / "notes.mp3"


def _fifo(scratch: Path, media: dict[str, Path]) -> Path:
    os.mkfifo(scratch / "pipe.wav")
    return scratch / "pipe.wav"


BAD_INPUTS = [
    BadInput("missing", lambda scratch, media: scratch / "missing.wav", "no such file"),
    BadInput("folder-without-recursive", _folder, "--recursive"),
    BadInput("empty", _empty, "empty file"),
    BadInput("text-named-mp3", _text_named_mp3, "not a readable audio or video file"),
    BadInput("video-without-audio", lambda scratch, media: media["video_only"], "no audio stream"),
    BadInput("fifo", _fifo, "not a regular file"),
    BadInput("too-large", lambda scratch, media: media["wav"], "MAX_FILE_SIZE", {"MAX_FILE_SIZE": "1000"}),
    BadInput("too-long", lambda scratch, media: media["wav"], "MAX_DURATION_HOURS", {"MAX_DURATION_HOURS": "0.0001"}),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.name)
def test_bad_input_is_rejected_in_one_line_and_the_rest_submitted(cli, spool_dir, tmp_path, media, tiny_wav, case):
    bad = str(case.make(tmp_path, media))
    proc = expect(cli("submit", "--json", bad, str(tiny_wav), env=case.env), 1)
    rejected, accepted = json.loads(proc.stdout)
    assert set(rejected) == {"input", "error"}
    assert rejected["input"] == bad
    assert case.reason in rejected["error"]
    assert accepted["input"] == str(tiny_wav)
    assert accepted["state"] == "queued"
    one_error(proc, bad, case.reason)
    assert jobs_on_disk(spool_dir) == {accepted["id"]}
    assert_tidy(spool_dir)


def test_unreadable_file_is_rejected_and_the_rest_submitted(spool_dir, tmp_path, wav):
    secret = tmp_path / "secret.wav"
    shutil.copy(wav, secret)
    secret.chmod(0)
    argv = [*unprivileged(), *command(spool_dir, "submit", "--json", str(secret), wav)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    expect(proc, 1)
    assert "Traceback" not in proc.stderr
    rejected, accepted = json.loads(proc.stdout)
    assert rejected == {"input": str(secret), "error": "cannot read it: Permission denied"}
    one_error(proc, str(secret), "Permission denied")
    assert jobs_on_disk(spool_dir) == {accepted["id"]}


def test_stdin_paths_skip_blank_lines_and_reject_missing_files(cli, spool_dir, tmp_path, wav):
    missing = str(tmp_path / "gone.wav")
    proc = expect(cli("submit", "--json", "-", input=f"{wav}\n\n{missing}\n"), 1)
    accepted, rejected = json.loads(proc.stdout)
    assert accepted["input"] == wav
    assert rejected == {"input": missing, "error": "no such file"}
    one_error(proc, missing)
    assert jobs_on_disk(spool_dir) == {accepted["id"]}


def test_recursive_submits_media_and_passes_over_the_rest(cli, spool_dir, tmp_path, media):
    folder = tmp_path / "lectures"
    (folder / "week2").mkdir(parents=True)
    (folder / ".cache").mkdir()
    shutil.copy(media["wav"], folder / "talk.wav")
    shutil.copy(media["mp3"], folder / "week2" / "clip.mp3")
    shutil.copy(media["m4a"], folder / ".hidden.m4a")
    shutil.copy(media["m4a"], folder / ".cache" / "thumb.m4a")
    (folder / "notes.txt").write_text("slides are on the wiki\n")
    (folder / "README").write_bytes(b"")  # empty: not media, not a mistake
    os.mkfifo(folder / "pipe")
    proc = expect(cli("submit", "--json", "--recursive", str(folder)), 0)
    inputs = sorted(entry["input"] for entry in json.loads(proc.stdout))
    assert inputs == [str(folder / "talk.wav"), str(folder / "week2" / "clip.mp3")]
    assert proc.stderr == ""
    assert len(jobs_on_disk(spool_dir)) == 2


def test_a_folder_without_media_fails_unless_empty_is_allowed(cli, spool_dir, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "notes.txt").write_text("nothing to hear\n")
    one_error(expect(cli("submit", "--recursive", str(inbox)), 1), "no audio or video files found")
    quiet = expect(cli("submit", "--recursive", "--allow-empty", "--quiet", str(inbox)), 0)
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert json.loads(expect(cli("submit", "--recursive", "--allow-empty", "--json", str(inbox)), 0).stdout) == []
    assert jobs_on_disk(spool_dir) == set()


# ====================================================================== submit: --skip-existing


def test_skip_existing_returns_the_job_with_the_same_content(cli, spool_dir, tmp_path, wav):
    first = submit_one(cli, wav)
    copy = tmp_path / "same-sound-other-name.wav"
    shutil.copy(wav, copy)
    [again] = submitted(cli, "--skip-existing", str(copy))
    assert again == {"id": first, "input": str(copy), "lane": "auto", "state": "queued", "skipped": True}
    assert jobs_on_disk(spool_dir) == {first}
    assert submit_one(cli, wav) != first  # without the flag the same content is a new job


def test_skip_existing_does_not_bring_back_a_canceled_or_failed_job(cli, spool_dir, wav, tmp_path):
    canceled = submit_one(cli, wav)
    expect(cli("cancel", canceled), 0)
    [entry] = submitted(cli, "--skip-existing", wav)
    assert entry == {"id": canceled, "input": wav, "lane": "auto", "state": "canceled", "skipped": True}
    expect(cli("retry", canceled), 0)  # the way to run it again
    failed = fail_one(spool_dir)
    copy = tmp_path / "again.wav"
    shutil.copy(wav, copy)
    [entry] = submitted(cli, "--skip-existing", str(copy))
    assert entry["id"] == failed and entry["state"] == "failed" and entry["skipped"]
    assert jobs_on_disk(spool_dir) == {canceled}


# ====================================================================== submit: routing


@pytest.mark.parametrize(
    ("args", "env", "lane"),
    [
        (["--model", "belle2"], {}, Lane.BELLE2),
        (["-l", "zh-CN"], {}, Lane.BELLE2),
        (["-l", "ZH_tw"], {}, Lane.BELLE2),
        (["-l", "cmn"], {}, Lane.BELLE2),
        (["-l", "de"], {}, Lane.WHISPERX),
        ([], {}, Lane.AUTO),
        ([], {"DEFAULT_TRANSCRIPTION_MODEL": "whisperx"}, Lane.WHISPERX),
    ],
    ids=["model-belle2", "zh-CN", "ZH_tw", "cmn", "de", "no-hint", "env-whisperx"],
)
def test_submit_routes_to_a_lane(cli, spool_dir, wav, args, env, lane):
    [entry] = submitted(cli, *args, wav, env=env)
    assert entry["lane"] == lane.value
    assert tickets(spool_dir, lane) == [f"09.{entry['id']}.1"]
    assert status_of(cli, entry["id"])["routing"]["decided"] == lane.value


def test_invalid_default_model_in_the_environment_is_a_usage_error(cli, spool_dir, wav):
    proc = expect(cli("submit", wav, env={"DEFAULT_TRANSCRIPTION_MODEL": "bogus"}), 2)
    one_error(proc, "DEFAULT_TRANSCRIPTION_MODEL", "bogus", "auto, belle2, whisperx")
    assert not spool_dir.exists()


# ====================================================================== usage errors


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "no input files"),
        (["--priority", "99"], "--priority"),
        (["--format", "xyz"], "xyz"),
    ],
    ids=["no-files", "priority-99", "format-xyz"],
)
def test_submit_usage_errors_exit_2_and_touch_nothing(cli, spool_dir, wav, args, says):
    proc = expect(cli("submit", *args, *([wav] if args else [])), 2)
    assert says in proc.stderr
    assert proc.stdout == ""
    assert not spool_dir.exists()


def test_status_rejects_a_path_as_an_id(cli, queued_job):
    one_error(expect(cli("status", "../etc/passwd"), 2), "'../etc/passwd' is not a job id")


def test_wait_rejects_a_timeout_that_is_not_a_duration(cli, queued_job):
    one_error(expect(cli("wait", "--timeout", "abc", queued_job), 2), "--timeout 'abc'")


# ====================================================================== status and list


@pytest.fixture
def two_jobs(cli: Run, media: dict[str, Path]) -> list[str]:
    return [entry["id"] for entry in submitted(cli, str(media["wav"]), str(media["mp3"]))]


def test_status_of_one_job_is_an_object_with_every_field(cli, wav, queued_job):
    status = status_of(cli, queued_job)
    assert set(status) >= STATUS_KEYS
    assert (status["id"], status["state"], status["lane"], status["input"]) == (queued_job, "queued", "auto", wav)
    assert (status["attempt"], status["worker"], status["started_at"], status["outputs"]) == (0, None, None, [])


def test_status_of_several_jobs_is_an_array_in_the_order_asked(cli, two_jobs):
    out = json.loads(expect(cli("status", "--json", *reversed(two_jobs)), 0).stdout)
    assert [job["id"] for job in out] == list(reversed(two_jobs))


def test_status_accepts_a_unique_prefix(cli, two_jobs):
    assert status_of(cli, two_jobs[1][:-1])["id"] == two_jobs[1]


def test_status_refuses_an_ambiguous_prefix(cli, two_jobs):
    first, second = two_jobs
    common = first[: next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)]
    assert common, "the two ids share no prefix"
    proc = expect(cli("status", common), 2)
    one_error(proc, "matches 2 jobs", *two_jobs)


def test_status_of_an_unknown_id_fails(cli, queued_job):
    proc = expect(cli("status", UNKNOWN_ID), 1)
    one_error(proc, UNKNOWN_ID)


@pytest.mark.slow
def test_list_shows_newest_first_and_filters(cli, media):
    auto = submit_one(cli, str(media["wav"]))
    german = submit_one(cli, "-l", "de", str(media["mp3"]))
    chinese = submit_one(cli, "--model", "belle2", str(media["m4a"]))
    expect(cli("cancel", auto), 0)
    assert listed(cli) == [chinese, german, auto]
    assert listed(cli, "--state", "queued") == [chinese, german]
    assert listed(cli, "--state", "canceled") == [auto]
    assert listed(cli, "--state", "done") == []
    assert listed(cli, "--lane", "whisperx") == [german]
    assert listed(cli, "--limit", "2") == [chinese, german]
    assert listed(cli, "--limit", "0") == [chinese, german, auto]


# ====================================================================== result, cancel, retry, wait


def test_result_of_a_queued_job_says_to_wait(cli, queued_job):
    proc = expect(cli("result", queued_job), 1)
    one_error(proc, f"klipnote wait {queued_job}")
    assert proc.stdout == ""


def test_result_of_a_canceled_job_fails(cli, queued_job):
    expect(cli("cancel", queued_job), 0)
    proc = expect(cli("result", queued_job), 1)
    one_error(proc, queued_job, "canceled")
    assert proc.stdout == ""


def test_cancel_removes_the_ticket(cli, spool_dir, queued_job):
    out = json.loads(expect(cli("cancel", "--json", queued_job), 0).stdout)
    assert [(job["id"], job["state"]) for job in out] == [(queued_job, "canceled")]
    assert tickets(spool_dir, Lane.AUTO) == []


def test_cancel_of_an_unknown_id_fails_and_still_cancels_the_others(cli, queued_job):
    proc = expect(cli("cancel", queued_job, UNKNOWN_ID), 1)
    one_error(proc, UNKNOWN_ID)
    assert status_of(cli, queued_job)["state"] == "canceled"


def test_retry_of_a_queued_job_fails(cli, spool_dir, queued_job):
    proc = expect(cli("retry", queued_job), 1)
    one_error(proc, queued_job, "only failed or canceled jobs can be retried")
    assert tickets(spool_dir, Lane.AUTO) == [f"09.{queued_job}.1"]


def test_retry_of_a_canceled_job_queues_it_with_more_attempts(cli, spool_dir, queued_job):
    claim = claim_one(spool_dir)  # attempt 1 of 3 starts ...
    expect(cli("cancel", queued_job), 0)  # ... and is canceled while it runs
    claim.close()
    [status] = json.loads(expect(cli("retry", "--json", queued_job), 0).stdout)
    assert (status["state"], status["attempt"], status["attempt_limit"]) == ("queued", 1, 4)
    assert tickets(spool_dir, Lane.AUTO) == [f"09.{queued_job}.2"]


def test_wait_times_out_with_124(cli, queued_job):
    started = time.monotonic()
    proc = expect(cli("wait", "--timeout", "1", queued_job), 124)
    assert time.monotonic() - started < 10
    one_error(proc, "timed out")
    assert status_of(cli, queued_job)["state"] == "queued"


def test_wait_for_a_canceled_job_fails(cli, queued_job):
    expect(cli("cancel", queued_job), 0)
    proc = expect(cli("wait", "--timeout", "10", queued_job), 1)
    one_error(proc, queued_job, "canceled")


# ====================================================================== a job that is done


@pytest.fixture
def done_job(cli: Run, spool_dir: Path, queued_job: str) -> str:
    assert finish_one(spool_dir) == queued_job
    return queued_job


def test_status_of_a_done_job(cli, done_job):
    status = status_of(cli, done_job)
    assert (status["state"], status["progress"], status["attempt"]) == ("done", 100.0, 1)
    assert sorted(status["outputs"]) == ["transcript.json", "transcript.srt"]
    assert status["worker"]["id"] == "test"
    assert status["started_at"] <= status["finished_at"]


def test_result_prints_the_srt_byte_for_byte(spool_dir, done_job):
    latin1_locale = {**os.environ, "PYTHONIOENCODING": "latin-1"}  # the bytes must not be re-encoded for it
    proc = subprocess.run(
        command(spool_dir, "result", done_job), capture_output=True, check=False, timeout=120, env=latin1_locale
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, SRT, b"")


def test_result_in_a_format_the_job_lacks_names_the_option(cli, done_job):
    proc = expect(cli("result", "--format", "vtt", done_job), 1)
    one_error(proc, "no vtt output", "--format vtt")
    assert proc.stdout == ""


def test_wait_for_a_done_job_succeeds(cli, done_job):
    expect(cli("wait", done_job), 0)


def test_retry_of_a_done_job_fails(cli, done_job):
    one_error(expect(cli("retry", done_job), 1), "is done")
    assert status_of(cli, done_job)["state"] == "done"


# ====================================================================== gc


@pytest.fixture
def ended_jobs(cli: Run, spool_dir: Path, media: dict[str, Path], tiny_wav: Path) -> dict[str, str]:
    """One job in each state gc cares about: state -> id."""
    submitted(cli, str(media["wav"]), str(media["mp3"]), str(media["m4a"]), str(tiny_wav))
    jobs = {"done": finish_one(spool_dir), "failed": fail_one(spool_dir)}
    waiting = sorted(jobs_on_disk(spool_dir) - set(jobs.values()))
    expect(cli("cancel", waiting[0]), 0)
    return {**jobs, "canceled": waiting[0], "queued": waiting[1]}


def test_gc_dry_run_lists_and_removes_nothing(cli, spool_dir, ended_jobs):
    before = jobs_on_disk(spool_dir)
    proc = expect(cli("gc", "--older-than", "0s", "--dry-run"), 0)
    assert "would remove 3 item(s)" in proc.stdout
    for state in ("done", "failed", "canceled"):
        assert ended_jobs[state] in proc.stdout
    assert ended_jobs["queued"] not in proc.stdout
    assert jobs_on_disk(spool_dir) == before


@pytest.mark.slow
def test_gc_removes_ended_jobs_and_never_a_queued_one(cli, spool_dir, ended_jobs):
    out = json.loads(expect(cli("gc", "--older-than", "0s", "--json"), 0).stdout)
    assert out["dry_run"] is False
    assert sorted(out["removed"]) == sorted(ended_jobs[s] for s in ("done", "failed", "canceled"))
    assert jobs_on_disk(spool_dir) == {ended_jobs["queued"]}
    assert index_entries(spool_dir) == {ended_jobs["queued"]}
    assert_tidy(spool_dir)
    expect(cli("status", ended_jobs["done"]), 1)
    assert listed(cli) == [ended_jobs["queued"]]


def test_gc_keeps_jobs_younger_than_the_limit(cli, spool_dir, ended_jobs):
    out = json.loads(expect(cli("gc", "--older-than", "30d", "--json"), 0).stdout)
    assert out == {"removed": [], "dry_run": False}
    assert jobs_on_disk(spool_dir) == set(ended_jobs.values())


# ====================================================================== the spool itself


@pytest.mark.parametrize(
    "args",
    [["list"], ["status", "0"], ["result", "0"], ["wait", "0"], ["cancel", "0"], ["retry", "0"], ["gc"], ["submit"]],
    ids=lambda args: args[0],
)
def test_a_spool_of_another_format_is_refused_by_every_command(cli, spool_dir, wav, args):
    spool_dir.mkdir()
    (spool_dir / "spool.json").write_text('{"format": 99}\n')
    proc = expect(cli(*args, *([wav] if args == ["submit"] else [])), 1)
    one_error(proc, str(spool_dir), "format 99")
    assert os.listdir(spool_dir) == ["spool.json"]


@pytest.mark.parametrize("args", [["status", "0"], ["list"]], ids=lambda args: args[0])
def test_reading_a_spool_that_does_not_exist_fails_clearly(cli, spool_dir, args):
    one_error(expect(cli(*args), 1), f"no spool at {spool_dir}")
    assert not spool_dir.exists()


@pytest.fixture
def readonly_spool(cli: Run, tmp_path: Path, wav: str) -> Any:
    """A spool holding one queued job on a tmpfs remounted read-only: (spool, job id)."""
    with tmpfs(tmp_path / "ro") as mountpoint:
        spool = mountpoint / "spool"
        job_id = submit_one(cli, wav, spool=spool)
        remount_read_only(mountpoint)
        yield spool, job_id


def test_submit_to_a_readonly_spool_fails_in_one_line(cli, readonly_spool, wav):
    spool, job_id = readonly_spool
    proc = expect(cli("submit", wav, spool=spool), 1)
    one_error(proc, "read-only", str(spool))
    assert jobs_on_disk(spool) == {job_id}


def test_submit_skip_existing_to_a_readonly_spool_fails_in_one_line(cli, readonly_spool, tiny_wav):
    spool, _ = readonly_spool
    proc = expect(cli("submit", "--skip-existing", str(tiny_wav), spool=spool), 1)
    one_error(proc, "read-only", str(spool))


def test_a_readonly_spool_can_still_be_read(cli, readonly_spool):
    spool, job_id = readonly_spool
    assert status_of(cli, job_id, spool=spool)["state"] == "queued"
    out = json.loads(expect(cli("list", "--json", spool=spool), 0).stdout)
    assert [job["id"] for job in out] == [job_id]


# ====================================================================== help, version, config


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--version"], f"klipnote {__version__}\n"), (["--help"], "submit"), (["submit", "--help"], "--skip-existing")],
    ids=["version", "help", "submit-help"],
)
def test_version_and_help(cli, spool_dir, args, says):
    proc = expect(cli(*args), 0)
    assert says in proc.stdout
    assert proc.stderr == ""
    assert not spool_dir.exists()


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """Write a config file; returns the environment that points KLIPNOTE_CONFIG at it."""

    def write(text: str) -> dict[str, str]:
        path = tmp_path / "klipnote.toml"
        path.write_text(text)
        return {"KLIPNOTE_CONFIG": str(path)}

    return write


@pytest.mark.parametrize(
    ("env", "args", "lane"),
    [
        ({}, [], Lane.BELLE2),
        ({"DEFAULT_TRANSCRIPTION_MODEL": "whisperx"}, [], Lane.WHISPERX),
        ({"DEFAULT_TRANSCRIPTION_MODEL": "whisperx"}, ["--model", "auto"], Lane.AUTO),
    ],
    ids=["file", "env-over-file", "flag-over-env"],
)
def test_config_file_env_and_flag_take_precedence_in_that_order(cli, config_file, wav, env, args, lane):
    config = config_file('default_model = "belle2"\n')
    [entry] = submitted(cli, *args, wav, env={**config, **env})
    assert entry["lane"] == lane.value


def test_config_file_in_the_xdg_location_is_read(cli, tmp_path, wav):
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "klipnote" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('default_model = "whisperx"\n')
    [entry] = submitted(cli, wav)
    assert entry["lane"] == "whisperx"


def test_unknown_key_in_the_config_file_is_a_usage_error(cli, config_file, spool_dir, wav):
    proc = expect(cli("submit", wav, env=config_file('colour = "red"\n')), 2)
    one_error(proc, "'colour'", "klipnote.toml")
    assert not spool_dir.exists()


def test_spool_from_the_environment(cli, tmp_path, wav):
    spool = tmp_path / "elsewhere"
    job_id = submit_one(cli, wav, spool=None, env={"KLIPNOTE_SPOOL": str(spool)})
    assert jobs_on_disk(spool) == {job_id}


# ====================================================================== lanes nobody serves


def register_worker(spool_dir: Path, lanes: list[str]) -> None:
    """A live worker record (this test process's pid and a fresh heartbeat), as a worker writes it."""
    from klipnote.registry import Registry, WorkerRecord, WorkerState
    from klipnote.spool import HOSTNAME, Spool

    record = WorkerRecord(id="belle2-test", model="belle2", lanes=lanes, host=HOSTNAME, pid=os.getpid(),
                          device="cpu", started_at=time.time(), state=WorkerState.IDLE)
    Registry(Spool(spool_dir).open()).write(record)


def test_a_queued_job_no_live_worker_serves_is_warned_about(cli, spool_dir, wav):
    job_id = submit_one(cli, "--model", "belle2", wav)
    warning = "no live worker serves lane belle2: start one with `klipnote worker --model belle2`"
    assert status_of(cli, job_id)["warning"] == warning
    assert json.loads(expect(cli("list", "--json"), 0).stdout)[0]["warning"] == warning
    assert f"klipnote: warning: {warning}" in expect(cli("list"), 0).stderr
    assert warning in " ".join(expect(cli("status", job_id), 0).stdout.split())  # a wrapped grid cell

    register_worker(spool_dir, ["belle2"])
    assert "warning" not in status_of(cli, job_id)
    assert "warning" not in expect(cli("list"), 0).stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--enhance", "vad,denoise"], "unknown step denoise"), (["--max-lines", "0"], "--max-lines"),
     (["--max-cue-duration", "0.5"], "--max-cue-duration")],
)
def test_bad_enhancement_or_style_options_are_usage_errors(cli, spool_dir, wav, args, says):
    proc = expect(cli("submit", *args, wav), 2)
    assert says in proc.stderr
    assert not (spool_dir / "jobs").exists() or not any((spool_dir / "jobs").iterdir())


def test_enhancement_and_style_choices_are_kept_with_the_job(cli, spool_dir, wav):
    job_id = submit_one(cli, "--enhance", "split,vad", "--max-line-width", "30", "--max-lines", "1", wav)
    manifest = json.loads((spool_dir / "jobs" / job_id / "manifest.json").read_text())
    assert manifest["options"] == {"enhance": "vad,split", "style": {"max_line_width_latin": 30, "max_lines": 1}}


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--batch-jobs", "0", "0"),
    ("--batch-audio", "soon", "expected a number of seconds or a duration such as 30s, 15m, 12h, 30d"),
    ("--batch-audio", "0", "allowed: a duration greater than 0, such as 480 or 8m"),
])
def test_worker_batch_flags_refuse_bad_values_in_one_line_before_loading_anything(klipnote, flag, value, says):
    done = klipnote("worker", "--model", "whisperx", "--device", "cpu", flag, value)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
