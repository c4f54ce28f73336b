"""Monitoring against real worker processes on a real spool: ``workers``, ``top`` and ``metrics`` via the CLI.

Workers are the real daemon around the fast fake engine (tests/support/fake_engine_worker.py), and in one slow
test the real whisperx worker. Leases are short (environment), so dead workers are seen in seconds; not
shorter, so that a busy worker on a loaded machine is never taken for dead (the reaper would requeue its job).
"""

from __future__ import annotations

import json
import math
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klipnote import actions, defaults
from klipnote.fsio import atomic_write_json
from klipnote.job import JobState, now
from klipnote.metrics import Metric, MetricType, Sample, exposition
from klipnote.monitor import StatusCache, _ceil_tenth
from klipnote.spool import HOSTNAME

from .support.e2ekit import WHISPERX_WORKER, worker_env
from .support.spoolkit import add_jobs
from .test_worker import start_worker

LEASE = 10.0
#: Short leases for every process of a test; a wide terminal so that tables keep ids on one line.
ENV = {"KLIPNOTE_LEASE_TTL": str(LEASE), "KLIPNOTE_HEARTBEAT_INTERVAL": "0.2", "COLUMNS": "200"}
#: The frozen-worker test waits for a lease to pass: a short one.
FROZEN_LEASE = 3.0


@pytest.fixture
def cli(klipnote):
    """The real CLI on the test's spool with the short lease; asserts the exit code."""

    def run(*args: str, code: int = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        proc = klipnote(*args, env={**ENV, **(env or {})})
        assert proc.returncode == code, proc.stderr
        return proc

    return run


@pytest.fixture
def fake_worker(spool, spool_dir):
    """Start fake-engine workers on an existing spool; any still running at the end are killed.

    The spool exists first: a worker and a submit creating it at the same moment can collide.
    """
    started: list[subprocess.Popen] = []

    def start(*args: str, **env: str) -> subprocess.Popen:
        proc = start_worker(spool_dir, *args, env={**ENV, **env})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def poll(read, ok, timeout: float = 60.0):
    """``read()`` again until ``ok`` holds for what it returned; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"not reached in {timeout:.0f} s; last seen: {value}"
        time.sleep(0.1)


def submit(cli, path: Path, *args: str) -> str:
    return json.loads(cli("submit", "--json", *args, str(path)).stdout)[0]["id"]


def workers(cli) -> dict:
    return json.loads(cli("workers", "--json").stdout)


def worker(cli, worker_id: str) -> dict | None:
    return next((w for w in workers(cli)["workers"] if w["id"] == worker_id), None)


def in_state(*states: str):
    return lambda w: w is not None and w["state"] in states


def flat(text: str) -> str:
    """Rich output with its wrapping undone."""
    return " ".join(text.split())


# ---------------------------------------------------------------------- workers: a life seen from outside


def test_a_worker_is_seen_idle_then_busy_with_its_progress_then_stopped(cli, fake_worker, media):
    proc = fake_worker("--id", "fw", "--grace", "0", FAKE_WORK="30")
    idle = poll(lambda: worker(cli, "fw"), in_state("idle"))
    assert (idle["live"], idle["pid"], idle["host"], idle["model"], idle["device"]) == (
        True, proc.pid, socket.gethostname(), "fake", "cpu")
    assert idle["lanes"] == ["whisperx", "auto"] and idle["current_job"] is None and idle["offline_reason"] is None
    assert idle["details"]["engine"] == "fake" and idle["heartbeat_age"] < LEASE and idle["uptime"] >= 0

    job_id = submit(cli, media["wav"], "--model", "whisperx")
    busy = poll(lambda: worker(cli, "fw"),
                lambda w: in_state("busy")(w) and w["current_job"] and w["current_job"]["progress"] > 0)
    job = busy["current_job"]
    assert (job["id"], job["stage"], job["lane"], job["attempt"]) == (job_id, "transcribing", "whisperx", 1)
    assert job["eta"] > 0 and job["elapsed"] >= 0
    table = flat(cli("workers").stdout)
    assert re.search(rf"fw fake busy {job_id} transcribing \d+% 0/0", table), table
    frame = flat(cli("top", "--once").stdout)
    assert re.search(rf"running job worker stage progress elapsed eta input {job_id} fw transcribing \d+% .*"
                     rf"{re.escape(str(media['wav']))}", frame), frame

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    stopped = worker(cli, "fw")
    assert (stopped["state"], stopped["live"], stopped["current_job"], stopped["offline_reason"]) == (
        "stopped", False, None, None)
    listing = cli("workers")
    assert "0 live of 1 worker(s)" in flat(listing.stdout) and " stopped " in listing.stdout
    # the job it handed back now waits in a lane that nobody serves
    assert "no live worker serves lane whisperx: start one with `klipnote worker --model whisperx` (1 queued job(s))" \
        in listing.stderr


def test_a_worker_running_a_shared_batch_shows_every_job_of_it(cli, fake_worker, media):
    ids = [submit(cli, media["wav"], "--model", "whisperx") for _ in range(3)]
    proc = fake_worker("--id", "fw", "--grace", "0", "--batch-jobs", "3", FAKE_WORK="30")
    busy = poll(lambda: worker(cli, "fw"), lambda w: in_state("busy")(w) and len(w["current_batch"]) == 3)
    assert busy["current_batch"] == ids and busy["current_job"]["id"] == ids[0]
    table = flat(cli("workers").stdout)
    assert re.search(rf"fw fake busy {ids[0]} \+2 (decoding|transcribing)", table), table
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert worker(cli, "fw")["current_batch"] == []


def test_a_worker_killed_mid_job_is_offline_and_its_job_queued_again(cli, fake_worker, media):
    proc = fake_worker("--id", "fw", FAKE_WORK="30")
    job_id = submit(cli, media["wav"], "--model", "whisperx")
    poll(lambda: worker(cli, "fw"), lambda w: in_state("busy")(w) and w["current_job"] is not None)
    proc.kill()
    proc.wait(timeout=30)
    gone = worker(cli, "fw")
    assert (gone["state"], gone["live"], gone["current_job"]) == ("offline", False, None)
    assert gone["offline_reason"] == f"its process {proc.pid} on this host is gone"
    status = json.loads(cli("status", "--json", job_id).stdout)
    assert status["state"] == "queued" and "exited without finishing" in status["message"]
    frame = flat(cli("top", "--once").stdout)
    assert "workers: 0 live of 1" in frame and f"fw fake offline - its process {proc.pid} on this host is gone" in frame


@pytest.mark.slow
def test_a_frozen_worker_is_offline_once_its_heartbeat_is_older_than_the_lease(klipnote, fake_worker):
    short = {"KLIPNOTE_LEASE_TTL": str(FROZEN_LEASE)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        proc = klipnote(*args, env={**ENV, **short})
        assert proc.returncode == 0, proc.stderr
        return proc

    proc = fake_worker("--id", "fw", **short)
    poll(lambda: worker(cli, "fw"), in_state("idle"))
    proc.send_signal(signal.SIGSTOP)
    try:
        frozen = poll(lambda: worker(cli, "fw"), in_state("offline"))
        assert re.fullmatch(rf"no heartbeat for \d+ s \(lease {FROZEN_LEASE:.0f} s\)", frozen["offline_reason"])
        assert frozen["heartbeat_age"] > FROZEN_LEASE
    finally:
        proc.send_signal(signal.SIGCONT)
    assert poll(lambda: worker(cli, "fw"), in_state("idle"))["live"]


def write_record(spool_dir: Path, name: str, **fields) -> Path:
    """A worker record as a worker writes it (``fields`` replace its values), or as someone damaged it."""
    record = {"id": name, "model": "fake", "lanes": ["belle2"], "host": HOSTNAME, "pid": os.getpid(),
              "device": "cpu", "started_at": now(), "heartbeat_at": now(), "state": "idle", **fields}
    path = spool_dir / "workers" / f"{name}.json"
    atomic_write_json(path, record, 0o644)
    return path


def test_top_metrics_and_workers_show_live_and_recently_dead_workers_only(cli, fake_worker, spool_dir):
    fake_worker("--id", "alive")
    assert fake_worker("--id", "exited", "--idle-exit", "0").wait(timeout=60) == 0
    long_ago = now() - defaults.RECENT_DEAD_WORKERS - 60
    write_record(spool_dir, "fake-oldhost-4242", state="stopped", started_at=long_ago - 5, heartbeat_at=long_ago)
    poll(lambda: worker(cli, "alive"), in_state("idle"))

    shown = workers(cli)
    assert [w["id"] for w in shown["workers"]] == ["alive", "exited"] and shown["hidden"] == 1
    assert "1 worker(s) dead for over 1 h 0 min not shown: `klipnote workers --all` lists them" in cli("workers").stderr
    every = json.loads(cli("workers", "--all", "--json").stdout)
    assert [w["id"] for w in every["workers"]] == ["alive", "exited", "fake-oldhost-4242"] and every["hidden"] == 0
    assert "workers: 1 live of 2 (1 long dead not shown)" in flat(cli("top", "--once").stdout)
    families = parse_exposition(cli("metrics").stdout)
    assert {dict(labels)["worker"] for labels in values(families, "klipnote_worker_up")} == {"alive", "exited"}
    assert values(families, "klipnote_workers")[(("state", "stopped"),)] == 1
    assert values(families, "klipnote_workers")[(("state", "idle"),)] == 1
    assert "No such option: --prune" in cli("workers", "--prune", code=2).stderr  # gc is the one retention


def test_a_name_a_live_worker_holds_is_refused_and_its_record_kept(cli, fake_worker, spool_dir):
    first = fake_worker("--id", "wx")
    poll(lambda: worker(cli, "wx"), in_state("idle"))
    refused = cli("worker", "--model", "whisperx", "--name", "wx", code=2)
    assert refused.stderr == (f"klipnote: the worker name wx is held by a live worker (pid {first.pid} on {HOSTNAME}):"
                              " give another --name, or stop that worker first\n")
    second = fake_worker("--id", "wx")  # the library refuses it too, before writing anything
    assert second.wait(timeout=60) != 0
    assert f"held by a live worker (pid {first.pid}" in second.stderr.read()
    assert worker(cli, "wx")["pid"] == first.pid and first.poll() is None
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    again = fake_worker("--id", "wx", "--idle-exit", "0")  # a dead holder's name is free: a restart reuses it
    assert again.wait(timeout=60) == 0
    assert (worker(cli, "wx")["pid"], worker(cli, "wx")["state"]) == (again.pid, "stopped")


def test_gc_forgets_dead_workers_with_the_jobs_retention(cli, fake_worker, spool_dir):
    fake_worker("--id", "alive")
    assert fake_worker("--id", "exited", "--idle-exit", "0").wait(timeout=60) == 0
    poll(lambda: worker(cli, "alive"), in_state("idle"))
    assert json.loads(cli("gc", "--json").stdout)["removed"] == []  # the default 30 days keep a fresh death
    assert json.loads(cli("gc", "--older-than", "0s", "--dry-run", "--json").stdout)["removed"] == ["workers/exited"]
    assert json.loads(cli("gc", "--older-than", "0s", "--json").stdout)["removed"] == ["workers/exited"]
    assert sorted(p.name for p in (spool_dir / "workers").iterdir()) == ["alive.json"]


# ---------------------------------------------------------------------- damaged worker records

BAD_RECORDS = {
    "clock": {"heartbeat_at": "now", "host": "elsewhere"},
    "nodetails": {"details": None},
    "pidzero": {"pid": 0},
    "pidminus": {"pid": -1},
}


def test_worker_records_of_the_wrong_shape_are_skipped_with_one_warning_each(cli, fake_worker, spool_dir, media):
    paths = [write_record(spool_dir, name, **fields) for name, fields in BAD_RECORDS.items()]
    job_id = submit(cli, media["wav"], "--model", "belle2")  # every bad record claims lane belle2
    runs = {"workers": cli("workers"), "workers --json": cli("workers", "--json"), "top": cli("top", "--once"),
            "metrics": cli("metrics"), "list": cli("list"), "list --json": cli("list", "--json"),
            "status": cli("status", job_id), "gc": cli("gc", "--dry-run")}
    for command, proc in runs.items():
        assert "Traceback" not in proc.stderr, command
        for path in paths:
            assert sum(str(path) in line for line in proc.stderr.splitlines()) == 1, (command, proc.stderr)
    assert "warning: skipping the worker record" in runs["workers"].stderr
    assert "field 'heartbeat_at' is str 'now', expected float" in runs["workers"].stderr
    assert "pid 0 is not a process id" in runs["workers"].stderr
    assert json.loads(runs["workers --json"].stdout)["workers"] == []
    assert "no live worker serves lane belle2" in runs["list"].stderr  # a pid <= 0 is not a live worker
    assert "klipnote_worker_up" not in "".join(line for line in runs["metrics"].stdout.splitlines()
                                                if not line.startswith("#"))


def test_a_damaged_worker_record_does_not_fail_the_routing_of_auto_jobs(cli, fake_worker, spool_dir, media):
    write_record(spool_dir, "clock", heartbeat_at="now", host="elsewhere")
    job_id = submit(cli, media["wav"], "--model", "auto")
    assert fake_worker("--id", "fw", "--drain").wait(timeout=60) == 0
    status = json.loads(cli("status", "--json", job_id).stdout)
    assert (status["state"], status["routing"]["decided"]) == ("done", "whisperx"), status


# ---------------------------------------------------------------------- lanes nobody serves


def test_a_lane_with_queued_jobs_and_no_live_worker_is_warned_about(cli, fake_worker, media):
    submit(cli, media["wav"], "--model", "belle2")
    warning = "no live worker serves lane belle2: start one with `klipnote worker --model belle2` (1 queued job(s))"
    alone = cli("workers")
    assert "no workers have registered" in alone.stdout and f"klipnote: warning: {warning}" in alone.stderr

    fake_worker("--id", "fw")  # serves whisperx and auto, not belle2
    poll(lambda: worker(cli, "fw"), in_state("idle"))
    assert workers(cli)["unserved"] == {"belle2": warning}
    assert f"warning: {warning}" in flat(cli("top", "--once").stdout)
    assert f"klipnote: warning: {warning}" in cli("workers").stderr

    fake_worker("--id", "fb", "--lanes", "belle2", FAKE_WORK="30")
    poll(lambda: worker(cli, "fb"), in_state("busy"))
    assert workers(cli)["unserved"] == {}
    assert "warning" not in cli("top", "--once").stdout and "warning" not in cli("workers").stderr


# ---------------------------------------------------------------------- metrics

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(rf"({_NAME})(?:\{{((?:{_LABEL},?)*)\}})? (\S+)")
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_exposition(text: str) -> dict[str, dict]:
    """A strict reader of the Prometheus text format 0.0.4, written from its specification.

    Returns ``{name: {"type", "help", "samples": {((label, value), ...): float}}}``; fails on anything
    the format forbids: a sample before its TYPE, a second HELP or TYPE, a duplicate series, a bad
    label or value, a missing final newline.
    """
    assert text.endswith("\n"), "the format ends every line with a newline"
    families: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, keyword, name, rest = line.split(" ", 3)
            assert re.fullmatch(_NAME, name), line
            family = families.setdefault(name, {"type": None, "help": None, "samples": {}})
            key = keyword.lower()
            assert family[key] is None, f"second {keyword} for {name}"
            if key == "type":
                assert not family["samples"], f"TYPE after samples of {name}"
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
                family[key] = rest
            else:
                family[key] = re.sub(r"\\[\\n]", lambda m: _UNESCAPE[m.group()], rest)
            continue
        assert line and not line.startswith("#"), f"unexpected line {line!r}"
        match = _SAMPLE.fullmatch(line)
        assert match, f"not a sample: {line!r}"
        name, labels_text, value = match.group(1), match.group(2) or "", match.group(5)
        assert name in families and families[name]["type"], f"sample of {name} before its TYPE"
        labels = tuple((key, re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group()], raw))
                       for key, raw in re.findall(_LABEL, labels_text))
        assert len({key for key, _ in labels}) == len(labels), f"a label twice in {line!r}"
        assert labels not in families[name]["samples"], f"duplicate series {line!r}"
        families[name]["samples"][labels] = float(value)  # float() reads +Inf, -Inf and NaN as the format writes them
    for name, family in families.items():
        if family["type"] == "counter":
            assert name.endswith("_total") and all(v >= 0 for v in family["samples"].values()), name
    return families


def values(families: dict, name: str) -> dict[tuple, float]:
    return families[name]["samples"]


def test_metrics_textfile_matches_the_spool_and_is_replaced_atomically(cli, fake_worker, spool_dir, media, tmp_path):
    done = submit(cli, media["wav"], "--model", "whisperx")
    failed = submit(cli, media["wav"], "--model", "whisperx", "--language", "xx-fail")
    submit(cli, media["wav"], "--model", "belle2")
    canceled = submit(cli, media["wav"], "--model", "whisperx", "--priority", "-9")
    cli("cancel", canceled)
    fake_worker("--id", "fw", FAKE_FAIL_LANGUAGE="xx-fail")
    cli("wait", done)
    cli("wait", failed, code=1)
    poll(lambda: worker(cli, "fw"), lambda w: in_state("idle")(w) and w["jobs_failed"] == 1)

    folder = tmp_path / "textfile"
    folder.mkdir()
    target = folder / "klipnote.prom"
    for _ in range(2):  # the second run replaces the first
        assert cli("metrics", "--textfile", str(target)).stdout == ""
    assert [p.name for p in folder.iterdir()] == ["klipnote.prom"], "no temp file may be left beside it"
    assert target.stat().st_mode & 0o777 == 0o644, "node_exporter runs as another user"
    families = parse_exposition(target.read_text())

    assert values(families, "klipnote_queue_length") == {
        (("lane", "auto"),): 0, (("lane", "belle2"),): 1, (("lane", "whisperx"),): 0}
    assert values(families, "klipnote_jobs") == {
        (("state", "queued"),): 1, (("state", "running"),): 0, (("state", "done"),): 1, (("state", "failed"),): 1,
        (("state", "canceled"),): 1}
    who = (("worker", "fw"), ("model", "fake"), ("host", socket.gethostname()))
    assert values(families, "klipnote_worker_up") == {who: 1}
    assert values(families, "klipnote_worker_busy") == {who: 0}
    assert values(families, "klipnote_lane_workers") == {
        (("lane", "auto"),): 1, (("lane", "belle2"),): 0, (("lane", "whisperx"),): 1}
    assert values(families, "klipnote_worker_jobs_total") == {(*who, ("outcome", "done")): 1,
                                                              (*who, ("outcome", "failed")): 1}
    result = json.loads((spool_dir / "jobs" / done / "transcript.json").read_text())
    status = json.loads(cli("status", "--json", done).stdout)
    audio = values(families, "klipnote_worker_audio_seconds_total")[who]
    spent = values(families, "klipnote_worker_processing_seconds_total")[who]
    assert audio == pytest.approx(result["metadata"]["input"]["duration"]) and audio == pytest.approx(1.0, abs=0.01)
    assert spent == pytest.approx(status["timings"]["total"], abs=1e-3)
    assert values(families, "klipnote_real_time_factor") == {(("model", "fake"),): pytest.approx(spent / audio)}
    assert all(families[name]["help"] for name in families)
    assert families["klipnote_worker_audio_seconds_total"]["type"] == "counter"

    frame = flat(cli("top", "--once").stdout)
    assert "waiting: auto 0, belle2 1, whisperx 0" in frame
    assert f"recent failures job finished input error {failed}" in frame
    assert "fake engine error: RuntimeError: the fake engine was told to fail" in frame


def test_metrics_on_stdout_parse_with_prometheus_client_too(cli, fake_worker, media):
    from prometheus_client import parser  # a test dependency: Prometheus's own reading of the format
    submit(cli, media["wav"], "--model", "whisperx")
    assert fake_worker("--id", "fw", "--drain").wait(timeout=60) == 0
    text = cli("metrics").stdout
    ours = parse_exposition(text)
    theirs = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            theirs[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert theirs == {(name, tuple(sorted(labels))): value for name, family in ours.items()
                      for labels, value in family["samples"].items()}
    assert theirs[("klipnote_worker_up", (("host", socket.gethostname()), ("model", "fake"), ("worker", "fw")))] == 0


def test_labels_and_help_are_escaped_so_any_text_reads_back_unchanged():
    tricky = 'a "quoted" back\\slash\nnew line'
    text = exposition([
        Metric("klipnote_test", MetricType.GAUGE, "help with a back\\slash\nand a new line",
               [Sample({"name": tricky, "plain": "x"}, 1.5), Sample({"name": "inf"}, math.inf)]),
        Metric("klipnote_test_total", MetricType.COUNTER, "a counter", [Sample({}, 3)]),
    ])
    families = parse_exposition(text)
    assert families["klipnote_test"]["help"] == "help with a back\\slash\nand a new line"
    assert values(families, "klipnote_test") == {(("name", tricky), ("plain", "x")): 1.5, (("name", "inf"),): math.inf}
    assert values(families, "klipnote_test_total") == {(): 3}
    assert "klipnote_test_total 3\n" in text


def test_metrics_textfile_errors_are_one_line(cli, spool_dir, media, tmp_path):
    submit(cli, media["wav"])
    missing = cli("metrics", "--textfile", str(tmp_path / "no-such-folder" / "klipnote.prom"), code=1)
    assert missing.stderr.startswith("klipnote: cannot write the metrics file")
    assert len(missing.stderr.splitlines()) == 1
    odd = cli("metrics", "--textfile", str(tmp_path / "klipnote.txt"))
    assert "reads only *.prom files" in odd.stderr
    parse_exposition((tmp_path / "klipnote.txt").read_text())


@pytest.mark.parametrize("where", ["", ".", "a folder"])
def test_metrics_textfile_that_is_a_folder_is_a_usage_error(cli, tmp_path, where):
    proc = cli("metrics", "--textfile", str(tmp_path) if where == "a folder" else where, code=2)
    assert proc.stderr.startswith("klipnote: --textfile") and "is a folder: give a file path" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_list_warns_about_unserved_lanes_whatever_it_shows(cli, media):
    submit(cli, media["wav"], "--model", "belle2")
    submit(cli, media["wav"], "--model", "whisperx")  # the newest: --limit 1 shows it alone
    warning = "no live worker serves lane belle2: start one with `klipnote worker --model belle2` (1 queued job(s))"
    for args in (["--state", "done"], ["--limit", "1"], ["--lane", "whisperx"], ["--state", "done", "--json"]):
        assert f"klipnote: warning: {warning}" in cli("list", *args).stderr, args


def test_the_status_cache_rereads_only_the_statuses_that_changed(spool, media):
    first, second = add_jobs(spool, media["wav"], 2)
    cache = StatusCache(spool)
    before = {s.id: s for s in cache.all()}
    status = spool.load_status(second)
    status.message = "changed"
    spool.write_status(status)
    after = {s.id: s for s in cache.all()}
    assert after[first] is before[first], "an unchanged file is not read again"
    assert after[second].message == "changed"
    actions.cancel(spool, first)
    assert cache.get(first).state is JobState.CANCELED


# ---------------------------------------------------------------------- top, live


def test_top_redraws_on_a_terminal_and_ctrl_c_exits_0(spool_dir, fake_worker, cli, media):
    fake_worker("--id", "fw", FAKE_WORK="30")
    submit(cli, media["wav"], "--model", "whisperx")
    poll(lambda: worker(cli, "fw"), in_state("busy"))
    leader, follower = pty.openpty()
    top = subprocess.Popen([sys.executable, "-m", "klipnote", "--spool", str(spool_dir), "top", "--interval", "0.2"],
                           stdin=follower, stdout=follower, stderr=follower, env={**os.environ, **ENV})
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while seen.count(b"klipnote top") < 3:  # several frames: it redraws
            assert time.monotonic() < deadline and top.poll() is None, seen.decode(errors="replace")
            if select.select([leader], [], [], 0.5)[0]:
                seen += os.read(leader, 65536)
        top.send_signal(signal.SIGINT)
        assert top.wait(timeout=30) == 0
    finally:
        if top.poll() is None:
            top.kill()
            top.wait()
        os.close(leader)
    screen = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", seen).decode(errors="replace")
    assert "busy" in screen and "transcribing" in screen and "━" in screen and "Traceback" not in screen


# ---------------------------------------------------------------------- the real whisperx worker


@pytest.mark.slow
def test_a_real_whisperx_worker_is_seen_and_counted(spool_dir, corpus, model_cache, tmp_path):
    env = worker_env(model_cache, tmp_path / "home", **ENV)

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "klipnote", "--spool", str(spool_dir), *args],
                              capture_output=True, text=True, timeout=300, env=env, check=False)
        assert proc.returncode == code, proc.stderr
        return proc

    job_id = submit(cli, corpus / "whole-earth.wav", "--model", "whisperx")
    with open(tmp_path / "worker.out", "wb") as out, open(tmp_path / "worker.err", "wb") as err:  # never a full pipe
        proc = subprocess.Popen([sys.executable, "-m", "klipnote", "--spool", str(spool_dir), *WHISPERX_WORKER,
                                 "--name", "wx"], env=env, stdout=out, stderr=err)
    try:
        busy = poll(lambda: worker(cli, "wx"), lambda w: in_state("busy")(w) and (w["current_job"] or {}).get("stage"),
                    timeout=300)
        assert (busy["model"], busy["device"], busy["pid"], busy["current_job"]["id"]) == (
            "whisperx", "cpu", proc.pid, job_id)
        assert busy["details"]["model"] == "base-offline" and busy["details"]["torch"]
        cli("wait", job_id)
        idle = poll(lambda: worker(cli, "wx"), lambda w: in_state("idle")(w) and w["jobs_done"] == 1)
        assert idle["audio_seconds"] == pytest.approx(84.4, abs=0.1) and idle["processing_seconds"] > 0
        families = parse_exposition(cli("metrics").stdout)
        who = (("worker", "wx"), ("model", "whisperx"), ("host", socket.gethostname()))
        assert values(families, "klipnote_worker_up") == {who: 1}
        assert values(families, "klipnote_worker_audio_seconds_total")[who] == pytest.approx(idle["audio_seconds"])
        assert values(families, "klipnote_real_time_factor")[(("model", "whisperx"),)] == pytest.approx(
            idle["processing_seconds"] / idle["audio_seconds"], rel=1e-3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert worker(cli, "wx")["state"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


@given(st.floats(0, 1e6), st.floats(0.1, 3600))
def test_a_shown_heartbeat_age_is_past_the_lease_whenever_the_real_one_is(age, lease):
    shown = _ceil_tenth(age)
    assert shown >= age and shown - age < 0.1 + 1e-6
    if age > lease:
        assert shown > lease
