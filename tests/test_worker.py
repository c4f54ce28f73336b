"""The worker daemon in real processes (real ffmpeg, real spool, real signals) with a fake engine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from klipnote.job import JobRequest, JobState, Lane, Model, OutputFormat
from klipnote.registry import Registry, WorkerState
from klipnote.spool import Spool
from klipnote.submit import Limits, expand, submit_paths
from klipnote.worker import Worker, WorkerOptions

from .support.fake_engine_worker import FakeEngine
from .support.spoolkit import ENGINE_WORKER as FAKE
from .support.spoolkit import damage, leftovers

LIMITS = Limits(max_file_size=2**31, max_duration_hours=2.0)


def submit(spool: Spool, *paths: Path, **request) -> list[str]:
    """Submit through the real validation (ffprobe, hashing), in this process."""
    outcomes = submit_paths(spool, expand([str(p) for p in paths], recursive=False, stdin=None),
                            JobRequest(model=Model.WHISPERX, **request), LIMITS)
    assert all(o.accepted for o in outcomes), [o.error for o in outcomes]
    return [o.status.id for o in outcomes]


def run_worker(spool_dir: Path, *args: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FAKE), "--spool", str(spool_dir), *args], capture_output=True,
                          text=True, timeout=timeout, env={**_base_env(), **(env or {})}, check=False)


def start_worker(spool_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(FAKE), "--spool", str(spool_dir), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**_base_env(), **(env or {})})


def _base_env() -> dict[str, str]:
    return dict(os.environ)


def states(spool: Spool, ids: list[str]) -> list[JobState]:
    return [spool.load_status(job_id).state for job_id in ids]


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def record(spool: Spool, worker_id: str = "fake-worker"):
    (found,) = [r for r in Registry(spool).records() if r.id == worker_id]
    return found


def worker_state(spool: Spool, worker_id: str = "fake-worker") -> WorkerState | None:
    """None until the worker has registered."""
    return next((r.state for r in Registry(spool).records() if r.id == worker_id), None)


# ---------------------------------------------------------------------- lifecycle options


def test_drain_runs_every_job_then_exits_and_says_so(spool, spool_dir, media):
    ids = submit(spool, media["wav"], media["mp3"], media["mp4"], formats=(OutputFormat.SRT, OutputFormat.JSON,
                                                                             OutputFormat.VTT))
    proc = run_worker(spool_dir, "--drain")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("klipnote worker fake-worker ready: model fake")
    assert states(spool, ids) == [JobState.DONE] * 3
    for job_id in ids:
        status = spool.load_status(job_id)
        assert sorted(status.outputs) == ["transcript.json", "transcript.srt", "transcript.vtt"]
        assert status.engine == "fake" and set(status.timings) >= {"decode", "transcribe", "total"}
        result = json.loads((spool.job_dir(job_id) / "transcript.json").read_text())
        assert result["metadata"]["attempt"] == 1 and result["metadata"]["word_timestamps"]
        assert result["segments"][0]["words"]
        log = (spool.job_dir(job_id) / "worker.log").read_text()
        assert "claimed" in log and "done in" in log
    finished = record(spool)
    assert (finished.state, finished.jobs_done, finished.jobs_failed) == (WorkerState.STOPPED, 3, 0)


class UnloadableEngine(FakeEngine):
    """A model that will not load (no GPU memory, a missing checkpoint): the one part faked here."""

    def load(self) -> None:
        raise RuntimeError("CUDA out of memory while loading the model")


def test_a_worker_whose_model_will_not_load_is_recorded_failed_not_stopped(spool, klipnote):
    engine = UnloadableEngine(4, (Lane.WHISPERX,))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(RuntimeError, match="loading the model"):
            Worker(spool, engine, WorkerOptions(lanes=engine.lanes), "broken").run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    failed = record(spool, "broken")
    assert (failed.state, failed.exit_reason) == (WorkerState.FAILED,
                                                   "RuntimeError: CUDA out of memory while loading the model")
    assert not failed.alive(spool.lease_ttl)
    (seen,) = json.loads(klipnote("workers", "--json").stdout)["workers"]
    assert (seen["state"], seen["live"], seen["exit_reason"]) == ("failed", False, failed.exit_reason)
    assert "broken fake failed - RuntimeError: CUDA out of memory" in " ".join(
        klipnote("workers", env={"COLUMNS": "200"}).stdout.split())
    assert 'klipnote_workers{state="failed"} 1\n' in klipnote("metrics").stdout


def test_the_decoded_audio_reaches_the_engine_at_16_khz(spool, spool_dir, corpus):
    (job_id,) = submit(spool, corpus / "jfk.flac")  # 44.1 kHz stereo FLAC, 11.0 s
    assert run_worker(spool_dir, "--drain").returncode == 0
    result = json.loads((spool.job_dir(job_id) / "transcript.json").read_text())
    assert result["segments"][0]["text"].startswith("fake transcript of 11.0")


def test_once_runs_one_job_and_max_jobs_that_many(spool, spool_dir, media):
    ids = submit(spool, media["wav"], media["wav"], media["wav"])
    assert run_worker(spool_dir, "--once").returncode == 0
    assert states(spool, ids) == [JobState.DONE, JobState.QUEUED, JobState.QUEUED]
    assert run_worker(spool_dir, "--max-jobs", "2").returncode == 0
    assert states(spool, ids) == [JobState.DONE] * 3


def test_idle_exit_leaves_an_empty_spool_alone(spool, spool_dir):
    proc = run_worker(spool_dir, "--idle-exit", "0.3")
    assert proc.returncode == 0 and "idle for" in proc.stderr
    assert record(spool).state is WorkerState.STOPPED


# ---------------------------------------------------------------------- failures stay with their job


def test_a_corrupt_input_fails_alone_and_the_worker_goes_on(spool, spool_dir, media):
    broken, fine = submit(spool, media["wav"], media["mp3"])
    damage(spool.job_dir(broken) / "input.wav")
    assert run_worker(spool_dir, "--drain").returncode == 0
    failed = spool.load_status(broken)
    assert failed.state is JobState.FAILED and "ffmpeg could not decode" in failed.error
    assert spool.load_status(fine).state is JobState.DONE
    assert (record(spool).jobs_done, record(spool).jobs_failed) == (1, 1)


def test_an_engine_error_fails_its_job_with_the_reason_and_a_traceback_in_its_log(spool, spool_dir, media):
    bad, good = submit(spool, media["wav"], language="xx-fail"), submit(spool, media["wav"])
    assert run_worker(spool_dir, "--drain", env={"FAKE_FAIL_LANGUAGE": "xx-fail"}).returncode == 0
    failed = spool.load_status(bad[0])
    assert failed.state is JobState.FAILED
    assert failed.error == "fake engine error: RuntimeError: the fake engine was told to fail"
    assert "Traceback" in (spool.job_dir(bad[0]) / "worker.log").read_text()
    assert spool.load_status(good[0]).state is JobState.DONE


def test_out_of_memory_is_retried_with_a_smaller_batch(spool, spool_dir, media):
    (job_id,) = submit(spool, media["wav"])
    assert run_worker(spool_dir, "--drain", "--batch-size", "8", env={"FAKE_OOM": "2"}).returncode == 0
    assert spool.load_status(job_id).state is JobState.DONE
    result = json.loads((spool.job_dir(job_id) / "transcript.json").read_text())
    assert result["metadata"]["batch_size"] == 2
    log = (spool.job_dir(job_id) / "worker.log").read_text()
    assert "retrying with batch size 4" in log and "retrying with batch size 2" in log


def test_out_of_memory_at_batch_size_one_fails_with_advice(spool, spool_dir, media):
    (job_id,) = submit(spool, media["wav"])
    assert run_worker(spool_dir, "--drain", "--batch-size", "1", env={"FAKE_OOM": "5"}).returncode == 0
    assert "out of GPU memory even with batch size 1" in spool.load_status(job_id).error


def test_an_input_rewritten_in_place_after_submit_is_not_transcribed(spool, spool_dir, media, tmp_path):
    original = tmp_path / "meeting.wav"
    shutil.copy(media["wav"], original)
    (job_id,) = submit(spool, original)
    with open(original, "r+b") as fh:  # in place, like ffmpeg -y: the hard-linked snapshot changes too
        fh.seek(0, os.SEEK_END)
        fh.write(b"\x00" * 64)
    assert run_worker(spool_dir, "--drain").returncode == 0
    error = spool.load_status(job_id).error
    assert "was changed after it was submitted (its snapshot is a hard link" in error


def test_an_input_changed_after_a_no_copy_submit_fails_clearly(spool, spool_dir, media, tmp_path):
    original = tmp_path / "meeting.wav"
    shutil.copy(media["wav"], original)
    outcomes = submit_paths(spool, expand([str(original)], recursive=False, stdin=None),
                            JobRequest(model=Model.WHISPERX), LIMITS, copy=False)
    job_id = outcomes[0].status.id
    assert not any(spool.job_dir(job_id).glob("input*"))
    original.write_bytes(original.read_bytes() + b"\x00" * 100)
    assert run_worker(spool_dir, "--drain").returncode == 0
    assert "changed after it was submitted (it was submitted with --no-copy)" in spool.load_status(job_id).error


# ---------------------------------------------------------------------- delivery


def test_outputs_are_copied_to_the_output_dir_and_next_to_the_input(spool, spool_dir, media, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    talk = inbox / "weekly sync.mp3"
    shutil.copy(media["mp3"], talk)
    (job_id,) = submit(spool, talk, output_dir=str(out), next_to_input=True,
                       formats=(OutputFormat.SRT, OutputFormat.JSON, OutputFormat.TXT))
    assert run_worker(spool_dir, "--drain").returncode == 0
    for folder in (out, inbox):
        for fmt in ("srt", "json", "txt"):
            copy = folder / f"weekly sync.{fmt}"
            assert copy.read_bytes() == (spool.job_dir(job_id) / f"transcript.{fmt}").read_bytes()


def test_a_delivery_that_cannot_be_written_is_reported_and_the_job_still_done(spool, spool_dir, media, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    (job_id,) = submit(spool, media["wav"], output_dir=str(blocker / "sub"))
    assert run_worker(spool_dir, "--drain").returncode == 0
    status = spool.load_status(job_id)
    assert status.state is JobState.DONE and "could not copy outputs to" in status.message


# ---------------------------------------------------------------------- signals


@pytest.mark.slow
def test_sigterm_past_the_grace_period_hands_the_job_back(spool, spool_dir, media):
    (job_id,) = submit(spool, media["wav"])
    worker = start_worker(spool_dir, "--grace", "0", env={"FAKE_WORK": "30"})
    wait_until(lambda: spool.load_status(job_id).state is JobState.RUNNING)
    wait_until(lambda: worker_state(spool) is WorkerState.BUSY)
    assert record(spool).current_job == job_id
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    status = spool.load_status(job_id)
    assert (status.state, status.attempt, status.worker) == (JobState.QUEUED, 0, None)
    assert "was stopped before the job finished" in status.message
    assert record(spool).state is WorkerState.STOPPED
    assert not any(spool.job_dir(job_id).glob("transcript.*"))
    assert run_worker(spool_dir, "--drain").returncode == 0  # the next worker finishes it as attempt 1
    assert (spool.load_status(job_id).state, spool.load_status(job_id).attempt) == (JobState.DONE, 1)


@pytest.mark.slow
def test_sigterm_within_the_grace_period_lets_the_job_finish(spool, spool_dir, media):
    first, second = submit(spool, media["wav"], media["wav"])
    worker = start_worker(spool_dir, "--grace", "30", env={"FAKE_WORK": "1.5"})
    wait_until(lambda: spool.load_status(first).state is JobState.RUNNING)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert spool.load_status(first).state is JobState.DONE
    assert spool.load_status(second).state is JobState.QUEUED, "a stopping worker must not take a new job"


# ---------------------------------------------------------------------- routing auto jobs


def submit_auto(spool: Spool, path: Path) -> str:
    outcomes = submit_paths(spool, expand([str(path)], recursive=False, stdin=None), JobRequest(model=Model.AUTO),
                            LIMITS)
    return outcomes[0].status.id


def test_auto_mandarin_goes_to_a_live_belle2_worker(spool, spool_dir, media):
    job_id = submit_auto(spool, media["wav"])
    belle2 = start_worker(spool_dir, "--id", "fake-belle2", "--lanes", "belle2", "--idle-exit", "6")
    wait_until(lambda: worker_state(spool, "fake-belle2") is WorkerState.IDLE)
    assert run_worker(spool_dir, "--drain", env={"FAKE_LANGUAGE": "zh"}).returncode == 0
    assert belle2.wait(timeout=30) == 0
    status = spool.load_status(job_id)
    assert (status.state, status.lane, status.worker["id"]) == (JobState.DONE, Lane.BELLE2, "fake-belle2")
    assert status.routing["decided"] == "belle2" and status.routing["detected_language"] == "zh"
    assert status.routing["reason"] == "detected zh (p=0.97): handed to belle2"
    assert status.attempt == 1, "routing must not use up an attempt"


@pytest.mark.parametrize(
    ("heard", "reason"),
    [
        ("zh", "detected zh (p=0.97), but no live belle2 worker: whisperx transcribes it"),
        ("de", "detected de (p=0.97), not Mandarin"),
        ("fail", "language detection failed (RuntimeError: the fake detector heard nothing)"),
    ],
)
def test_auto_jobs_stay_on_whisperx_otherwise(spool, spool_dir, media, heard, reason):
    job_id = submit_auto(spool, media["wav"])
    assert run_worker(spool_dir, "--drain", env={"FAKE_LANGUAGE": heard}).returncode == 0
    status = spool.load_status(job_id)
    assert (status.state, status.lane, status.engine) == (JobState.DONE, Lane.AUTO, "fake")
    assert status.routing["decided"] == "whisperx" and status.routing["reason"].startswith(reason)


# ---------------------------------------------------------------------- submit --wait, per-job enhancement


def test_submit_wait_returns_when_the_jobs_end_with_their_outcome(spool, spool_dir, media):
    worker = start_worker(spool_dir, "--idle-exit", "15", env={"FAKE_FAIL_LANGUAGE": "xx-fail"})
    try:
        cmd = [sys.executable, "-m", "klipnote", "--spool", str(spool_dir), "submit", "--wait", "--json"]
        done = subprocess.run([*cmd, str(media["wav"])], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[0]["state"] == "done"
        failed = subprocess.run([*cmd, "-l", "xx-fail", str(media["wav"])], capture_output=True, text=True,
                                timeout=120, check=False)
        assert failed.returncode == 1
        assert json.loads(failed.stdout)[0]["state"] == "failed"
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_job_without_enhancement_keeps_one_cue_per_segment(spool, spool_dir, media):
    plain, enhanced = (submit_paths(spool, expand([str(media["wav"])], recursive=False, stdin=None),
                                    JobRequest(model=Model.WHISPERX, options=options), LIMITS)[0].status.id
                       for options in ({"enhance": "none"}, {}))
    assert run_worker(spool_dir, "--drain").returncode == 0
    kept = json.loads((spool.job_dir(plain) / "transcript.json").read_text())
    assert kept["metadata"]["enhancement"] == []
    assert [c["text"] for c in kept["cues"]] == [s["text"] for s in kept["segments"]]
    steps = json.loads((spool.job_dir(enhanced) / "transcript.json").read_text())["metadata"]["enhancement"]
    assert [s["step"] for s in steps] == ["vad", "refine", "split"]


# ---------------------------------------------------------------------- shared batches across jobs


def batch_of(spool: Spool, job_id: str) -> int:
    return json.loads((spool.job_dir(job_id) / "transcript.json").read_text())["metadata"]["batch_jobs"]


def test_waiting_jobs_are_claimed_together_up_to_batch_jobs_and_each_commits_alone(spool, spool_dir, media):
    ids = submit(spool, *[media["wav"]] * 5)
    proc = run_worker(spool_dir, "--drain", "--batch-jobs", "3")
    assert proc.returncode == 0, proc.stderr
    assert states(spool, ids) == [JobState.DONE] * 5
    assert [batch_of(spool, job_id) for job_id in ids] == [3, 3, 3, 2, 2]
    for job_id in ids:  # one claim, one attempt, one commit each
        status = spool.load_status(job_id)
        assert (status.attempt, status.worker["id"]) == (1, "fake-worker")
        assert [line for line in (spool.job_dir(job_id) / "worker.log").read_text().splitlines() if "done in" in line]
    assert (record(spool).jobs_done, record(spool).jobs_failed) == (5, 0)


def test_batch_audio_stops_claiming_once_the_claimed_jobs_hold_that_much(spool, spool_dir, media):
    ids = submit(spool, *[media["wav"]] * 3)  # 1 s each
    assert run_worker(spool_dir, "--drain", "--batch-jobs", "8").returncode == 0
    assert [batch_of(spool, job_id) for job_id in ids] == [3, 3, 3]
    more = submit(spool, *[media["wav"]] * 3)
    assert run_worker(spool_dir, "--drain", "--batch-jobs", "8", "--batch-audio", "1.5").returncode == 0
    assert [batch_of(spool, job_id) for job_id in more] == [2, 2, 1]


def test_in_a_shared_batch_a_corrupt_file_and_an_engine_error_fail_alone(spool, spool_dir, media):
    broken, fine, bad, good = submit(spool, media["wav"], media["mp3"], media["wav"], media["wav"])
    damage(spool.job_dir(broken) / "input.wav")
    (refused,) = submit(spool, media["wav"], language="xx-fail")
    assert run_worker(spool_dir, "--drain", "--batch-jobs", "8", env={"FAKE_FAIL_LANGUAGE": "xx-fail"}).returncode == 0
    assert "ffmpeg could not decode" in spool.load_status(broken).error
    assert spool.load_status(refused).error == "fake engine error: RuntimeError: the fake engine was told to fail"
    assert states(spool, [fine, bad, good]) == [JobState.DONE] * 3
    assert (record(spool).jobs_done, record(spool).jobs_failed) == (3, 2)


def test_a_model_error_on_a_shared_batch_reruns_its_jobs_one_at_a_time_so_only_the_culprit_fails(spool, spool_dir,
                                                                                                media):
    first, culprit, last = submit(spool, media["wav"]), submit(spool, media["wav"], language="de"), submit(
        spool, media["wav"])
    proc = run_worker(spool_dir, "--drain", "--batch-jobs", "8", env={"FAKE_CRASH_LANGUAGE": "de"})
    assert proc.returncode == 0 and "a shared batch failed" in proc.stderr
    assert states(spool, first + last) == [JobState.DONE] * 2
    assert [batch_of(spool, job_id) for job_id in first + last] == [1, 1]
    failed = spool.load_status(culprit[0])
    assert failed.error == "fake engine error: RuntimeError: the fake model crashed on this batch"


def test_canceling_one_job_of_a_running_batch_leaves_the_others_to_finish(spool, spool_dir, media, klipnote):
    ids = submit(spool, *[media["wav"]] * 3)
    worker = start_worker(spool_dir, "--drain", "--batch-jobs", "3", env={"FAKE_WORK": "3"})
    wait_until(lambda: states(spool, ids) == [JobState.RUNNING] * 3)
    assert klipnote("cancel", ids[1]).returncode == 0
    assert worker.wait(timeout=60) == 0
    assert states(spool, ids) == [JobState.DONE, JobState.CANCELED, JobState.DONE]
    assert not list(spool.job_dir(ids[1]).glob("transcript.*"))
    assert leftovers(spool) == []


def test_a_stopped_worker_hands_every_job_of_its_batch_back_without_using_an_attempt(spool, spool_dir, media):
    ids = submit(spool, *[media["wav"]] * 3)
    worker = start_worker(spool_dir, "--batch-jobs", "3", "--grace", "0", env={"FAKE_WORK": "30"})
    wait_until(lambda: states(spool, ids) == [JobState.RUNNING] * 3)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    for job_id in ids:
        status = spool.load_status(job_id)
        assert (status.state, status.attempt) == (JobState.QUEUED, 0), status.message
        assert status.message.startswith("handed back: worker fake-worker was stopped")
    assert sum(spool.queue_lengths().values()) == 3 and leftovers(spool) == []


def test_a_batch_killed_with_sigkill_gives_every_claimed_job_back(spool, spool_dir, media):
    ids = submit(spool, *[media["wav"]] * 3)
    victim = start_worker(spool_dir, "--batch-jobs", "3", env={"FAKE_WORK": "60"})
    wait_until(lambda: states(spool, ids) == [JobState.RUNNING] * 3)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert run_worker(spool_dir, "--drain", "--batch-jobs", "3", "--id", "rescuer").returncode == 0
    for job_id in ids:
        status = spool.load_status(job_id)
        assert (status.state, status.attempt, status.worker["id"]) == (JobState.DONE, 2, "rescuer")
    assert leftovers(spool) == []


def test_a_manifest_edited_to_an_unknown_chinese_script_fails_its_job_alone(spool, spool_dir, media):
    edited, fine = submit(spool, media["wav"], media["mp3"])
    path = spool.job_dir(edited) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["options"]["zh_script"] = "klingon"
    path.write_text(json.dumps(manifest))
    assert run_worker(spool_dir, "--drain", "--batch-jobs", "2").returncode == 0
    assert spool.load_status(edited).error == ("job option zh_script 'klingon' is not one of simplified, traditional, "
                                               "original: submit the file again")
    assert spool.load_status(fine).state is JobState.DONE


@pytest.mark.parametrize(("options", "error"), [
    ({"task": "summarise"}, "job options: task 'summarise' is not one of transcribe, translate: submit the file again"),
    ({"speakers": 0}, "job options: --speakers 0: give a whole number of speakers, 1 or more: submit the file again"),
])
def test_a_manifest_edited_to_bad_decoding_options_fails_its_job_alone(spool, spool_dir, media, options, error):
    edited, fine = submit(spool, media["wav"], media["mp3"])
    path = spool.job_dir(edited) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["options"].update(options)
    path.write_text(json.dumps(manifest))
    assert run_worker(spool_dir, "--drain", "--batch-jobs", "2").returncode == 0
    assert spool.load_status(edited).error == error
    assert spool.load_status(fine).state is JobState.DONE
    result = json.loads((spool.job_dir(fine) / "transcript.json").read_text())
    assert result["metadata"]["decoding"] == {"task": "transcribe", "prompt": None, "hotwords": None, "speakers": None}
    assert result["metadata"]["notes"] == []
