"""The worker daemon: load a model once, then claim, transcribe and commit one job at a time.

The job runs in a thread while the main thread supervises: it keeps the worker's registry
heartbeat, handles SIGTERM/SIGINT (let the job finish within ``grace`` seconds, else hand it back
to the queue), and never blocks inside the engine, so a stop request is always honoured even
while a GPU kernel runs.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from klipnote import __version__, defaults
from klipnote.claim import Claim, WorkerRef, claim_next
from klipnote.engines import Engine, JobOptions
from klipnote.enhance import ALL_STEPS, Report, SplitBy, Step, enhance, parse_steps
from klipnote.errors import ClaimLost, KlipnoteError, SpoolError, SpoolFull, summary
from klipnote.fsio import atomic_write_text
from klipnote.job import Lane, Manifest, Stage, output_name
from klipnote.registry import Registry, WorkerRecord, WorkerState
from klipnote.routing import Route, route_after_detection
from klipnote.spool import HOSTNAME, Spool
from klipnote.subtitles import Cue, StyleRules
from klipnote.transcript import Transcript

log = logging.getLogger("klipnote.worker")

JOB_LOG = "worker.log"
#: How long a handed-back job's thread gets to unwind before the worker exits without it.
UNWIND_TIMEOUT = 5.0


def setup_logging() -> None:
    """Worker progress goes to stderr, one line an event (journald and cron mail read it as is)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")


class HandBack(Exception):
    """Raised inside a job's thread when its worker has given the job back to the queue."""


@dataclass
class WorkerOptions:
    lanes: tuple[Lane, ...]
    once: bool = False
    drain: bool = False
    max_jobs: int | None = None
    idle_exit: float | None = None
    grace: float = defaults.STOP_GRACE
    poll_interval: float = defaults.WORKER_POLL_INTERVAL
    device: str = "cpu"
    details: dict[str, Any] = field(default_factory=dict)
    enhance: tuple[Step, ...] = ALL_STEPS  # steps for jobs that do not choose (ENABLE_OPTIMIZATION)
    split_by: SplitBy = SplitBy.AUTO  # OPTIMIZER_ENGINE


class JobLog:
    """A job's own log, ``jobs/<id>/worker.log``: what each attempt did, with tracebacks."""

    def __init__(self, path: Path, worker_id: str, attempt: int) -> None:
        self.path = path
        self.prefix = f"{worker_id} attempt {attempt}"

    def write(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"{stamp} {self.prefix}: {message}\n")
        except OSError:
            log.warning("cannot write %s", self.path)


class Worker:
    def __init__(self, spool: Spool, engine: Engine, options: WorkerOptions, worker_id: str,
                 out: TextIO = sys.stdout) -> None:
        self.spool = spool
        self.engine = engine
        self.options = options
        self.out = out
        self.ref = WorkerRef.here(worker_id, engine.name)
        self.registry = Registry(spool)
        self.record = WorkerRecord(id=worker_id, model=engine.name, lanes=[lane.value for lane in options.lanes],
                                   host=HOSTNAME, pid=self.ref.pid, device=options.device, started_at=time.time(),
                                   details=dict(options.details))
        if options.device == "cuda" and os.environ.get("CUDA_VISIBLE_DEVICES"):
            self.record.details["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]  # which GPU (--gpu)
        self._stop_requested: float | None = None
        self._stuck_job: str | None = None
        self._beat_stop = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self, signum: int | None = None, _frame: object = None) -> None:
        if self._stop_requested is None:
            self._stop_requested = time.monotonic()
            name = signal.Signals(signum).name if signum else "stop"
            log.info("%s received: finishing the current job within %.0f s, then exiting", name, self.options.grace)
            self._set_state(WorkerState.STOPPING)
        else:  # a second signal: do not wait out the grace period
            self.options.grace = 0.0

    def run(self) -> int:
        """Serve jobs until told to stop, drained, idle for too long, or done with max-jobs. Returns 0.

        Refuses (UsageError) an id that a live worker holds, before writing anything over its record.
        An error that ends the worker (a model that will not load) is recorded: state ``failed``, and
        the error as ``exit_reason``, so that it is not mistaken for a clean exit.
        """
        self.registry.check_name_free(self.record.id)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        self._set_state(WorkerState.STARTING)
        beat = threading.Thread(target=self._heartbeat, name="registry-heartbeat", daemon=True)
        beat.start()
        final = WorkerState.STOPPED
        try:
            self.spool.check_writable()
            self.engine.load()
            self.record.details.update(self.engine.describe())
            self._set_state(WorkerState.IDLE)
            self._announce()
            self._serve()
        except Exception as exc:
            final = WorkerState.FAILED
            self.record.exit_reason = summary(exc)
            raise
        finally:
            self._beat_stop.set()
            beat.join()
            self._set_state(final)
        if self._stuck_job is not None:
            # The handed-back job's thread is still inside the engine (a GPU kernel, a C loop) and
            # interpreter shutdown would abort under it; its job is already back in the queue.
            log.info("leaving job %s's thread behind; exiting", self._stuck_job)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return 0

    def _announce(self) -> None:
        info = self.engine.describe()
        versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
        self.out.write(f"klipnote worker {self.record.id} ready: model {info.get('model')} on {info.get('device')}"
                       f" ({info.get('compute_type', '-')}), lanes {', '.join(self.record.lanes)}; {versions}\n")
        self.out.flush()

    def _serve(self) -> None:
        done = 0
        idle_since = time.monotonic()
        last_reap = 0.0
        full_since: float | None = None
        while self._stop_requested is None:
            try:
                if time.monotonic() - last_reap > self.spool.heartbeat_interval:
                    for outcome in self.spool.reap():
                        log.warning("job %s %s: %s", outcome.job_id, outcome.action, outcome.reason)
                    last_reap = time.monotonic()
                claim = claim_next(self.spool, self.options.lanes, self.ref)
            except SpoolFull as exc:  # passes once space is freed: wait for it rather than exit
                if full_since is None:
                    full_since = time.monotonic()
                    log.warning("%s; retrying every %.0f s", exc, defaults.SPOOL_FULL_RETRY_INTERVAL)
                self._sleep(defaults.SPOOL_FULL_RETRY_INTERVAL)
                continue
            if full_since is not None:
                log.info("the spool has space again after %.0f s", time.monotonic() - full_since)
                full_since = None
            if claim is None:
                if self.options.drain:
                    log.info("queue drained; exiting")
                    return
                if self.options.idle_exit is not None and time.monotonic() - idle_since >= self.options.idle_exit:
                    log.info("idle for %.0f s; exiting", self.options.idle_exit)
                    return
                self._sleep(self.options.poll_interval)
                continue
            self._supervise(claim)
            done += 1
            idle_since = time.monotonic()
            if self.options.once or (self.options.max_jobs and done >= self.options.max_jobs):
                return

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._stop_requested is None and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))

    # ------------------------------------------------------------------ one job

    def _supervise(self, claim: Claim) -> None:
        """Run the claim in a thread; on a stop request past the grace period, hand it back."""
        self.record.current_job = claim.job_id
        self._set_state(WorkerState.BUSY)
        handed_back = threading.Event()
        thread = threading.Thread(target=self._process, args=(claim, handed_back), name=f"job-{claim.job_id}",
                                  daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.1)
            if (thread.is_alive() and self._stop_requested is not None
                    and time.monotonic() - self._stop_requested >= self.options.grace):
                handed_back.set()
                try:
                    claim.release(f"worker {self.record.id} was stopped before the job finished")
                    log.info("job %s handed back to the queue", claim.job_id)
                except KlipnoteError as exc:
                    log.info("job %s could not be handed back: %s", claim.job_id, exc)
                thread.join(UNWIND_TIMEOUT)
                if thread.is_alive():
                    self._stuck_job = claim.job_id
                break
        self.record.current_job = None
        self._set_state(WorkerState.STOPPING if self._stop_requested is not None else WorkerState.IDLE)

    def _process(self, claim: Claim, handed_back: threading.Event) -> None:
        manifest = claim.manifest
        job_log = JobLog(claim.job_dir / JOB_LOG, self.record.id, claim.attempt)
        job_log.write(f"claimed on {HOSTNAME}, pid {self.ref.pid}")
        log.info("job %s: %s", claim.job_id, manifest.input.name)
        timings: dict[str, float] = {}
        started = time.monotonic()

        def progress(stage: Stage, percent: float) -> None:
            if handed_back.is_set():
                raise HandBack
            claim.progress(stage, percent)

        try:
            claim.update(engine=self.engine.name)
            progress(Stage.DECODING, 0.0)
            from klipnote import audio

            audio_samples = audio.decode(claim.input_path())
            timings["decode"] = time.monotonic() - started
            job_log.write(f"decoded {audio.seconds(audio_samples):.1f} s of audio")
            language, probability = manifest.language, None
            if claim.status.lane is Lane.AUTO:
                progress(Stage.ROUTING, 0.0)
                route, language, probability = self._route(audio_samples, claim)
                job_log.write(f"routing: {route.reason}")
                if route.lane not in self.engine.lanes:
                    claim.release(route.reason, lane=route.lane, engine=None)
                    log.info("job %s routed to %s: %s", claim.job_id, route.lane.value, route.reason)
                    return
            options = JobOptions(language, bool(manifest.options.get("diarize")), manifest.options.get("zh_script"))
            transcript = self._transcribe(audio_samples, options, progress, job_log)
            if transcript.language_probability is None:
                transcript.language_probability = probability
            timings["transcribe"] = time.monotonic() - started - timings["decode"]
            progress(Stage.ENHANCING, 0.0)
            cues, report = self._enhance(transcript, audio_samples, manifest)
            timings["enhance"] = time.monotonic() - started - timings["decode"] - timings["transcribe"]
            progress(Stage.WRITING, 0.0)
            timings["total"] = time.monotonic() - started
            files = self._write_outputs(claim, transcript, cues, report, timings, audio.seconds(audio_samples))
            problems = deliver(files, manifest)
            for problem in problems:
                job_log.write(problem)
            message = "done" + (f"; {'; '.join(problems)}" if problems else "")
            claim.finish(message, timings={k: round(v, 3) for k, v in timings.items()})
            self.record.jobs_done += 1
            self.record.audio_seconds += audio.seconds(audio_samples)
            self.record.processing_seconds += timings["total"]
            job_log.write(f"done in {timings['total']:.1f} s")
            log.info("job %s done in %.1f s", claim.job_id, timings["total"])
        except (HandBack, ClaimLost) as exc:
            job_log.write(f"stopped: {exc or 'handed back'}")
            log.info("job %s: %s", claim.job_id, exc or "handed back")
            claim.close()
        except SpoolFull as exc:  # not the job's fault: let go of it, to be reaped once there is space
            job_log.write(f"stopped: {exc}")
            log.warning("job %s put down: %s", claim.job_id, exc)
            claim.close()
        except KlipnoteError as exc:
            self._fail(claim, str(exc), job_log)
        except Exception as exc:  # an engine bug must fail one job, not the worker
            job_log.write(traceback.format_exc())
            self._fail(claim, f"{self.engine.name} engine error: {type(exc).__name__}: {exc}", job_log)

    def _route(self, samples: Any, claim: Claim) -> tuple[Route, str | None, float | None]:
        """Decide where an ``auto`` job goes from its audio, and record the decision in its status."""
        language = probability = error = None
        try:
            language, probability = self.engine.detect_language(samples)
        except Exception as exc:  # a failed detection keeps the job here, it does not fail it
            error = summary(exc)
        belle2_alive = Lane.BELLE2.value in self.registry.live_lanes()
        route = route_after_detection(language, probability, belle2_alive, error)
        claim.update(routing={**claim.status.routing, "decided": route.lane.value, "reason": route.reason,
                              "detected_language": language, "language_probability": probability})
        return route, language, probability

    def _transcribe(self, samples: Any, options: JobOptions, progress: Callable[[Stage, float], None],
                    job_log: JobLog) -> Transcript:
        """Transcribe, halving the batch on out-of-memory until it fits or cannot shrink."""
        while True:
            try:
                return self.engine.transcribe(samples, options, progress)
            except Exception as exc:
                if not self.engine.is_out_of_memory(exc):
                    raise
                if self.engine.batch_size <= 1:
                    raise KlipnoteError("out of GPU memory even with batch size 1: use a smaller model, "
                                        "a GPU with more memory, or --device cpu") from exc
                self.engine.batch_size = max(1, self.engine.batch_size // 2)
                job_log.write(f"out of memory; retrying with batch size {self.engine.batch_size}")
                log.warning("out of memory; retrying with batch size %d", self.engine.batch_size)

    def _enhance(self, transcript: Transcript, samples: Any, manifest: Manifest) -> tuple[list[Cue], Report]:
        """The job's enhancement steps (its own, else this worker's default) and its style rules."""
        steps = parse_steps(manifest.options["enhance"]) if "enhance" in manifest.options else self.options.enhance
        rules = StyleRules(**manifest.options.get("style", {}))
        return enhance(transcript, samples, steps, self.options.split_by, rules)

    def _write_outputs(self, claim: Claim, transcript: Transcript, cues: list[Cue], report: Report,
                       timings: dict[str, float], duration: float) -> dict[str, Path]:
        from klipnote import writers

        manifest = claim.manifest
        metadata = {
            "job": claim.job_id,
            "input": {"name": manifest.input.name, "duration": duration, "sha256": manifest.input.sha256},
            **self.engine.describe(),
            "batch_size": self.engine.batch_size,
            "word_timestamps": transcript.word_timing.value,
            "word_timestamps_note": transcript.word_timing_note,
            "enhancement": report.steps,
            "routing": claim.status.routing,
            "attempt": claim.attempt,
            "worker": self.record.id,
            "klipnote_version": __version__,
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "real_time_factor": round(timings["total"] / duration, 4) if duration else None,
        }
        written = {}
        for name, text in writers.render(transcript, manifest.formats, metadata, cues).items():
            path = claim.output_dir / name
            atomic_write_text(path, text, self.spool.file_mode)
            written[name] = path
        return written

    def _fail(self, claim: Claim, error: str, job_log: JobLog) -> None:
        job_log.write(f"failed: {error}")
        log.warning("job %s failed: %s", claim.job_id, error)
        try:
            claim.fail(error)
            self.record.jobs_failed += 1
        except ClaimLost as exc:
            log.info("job %s: %s", claim.job_id, exc)
        except SpoolError as exc:  # the failure cannot be recorded; the reaper puts the job back
            log.warning("job %s: cannot record its failure: %s", claim.job_id, exc)
            claim.close()

    # ------------------------------------------------------------------ registry

    def _set_state(self, state: WorkerState) -> None:
        self.record.state = state
        try:
            self.registry.write(self.record)
        except OSError as exc:
            log.warning("cannot update the worker registry: %s", exc)

    def _heartbeat(self) -> None:
        while not self._beat_stop.wait(self.spool.heartbeat_interval):
            self._set_state(self.record.state)


def deliver(files: dict[str, Path], manifest: Manifest) -> list[str]:
    """Copy outputs to ``--output-dir`` and/or beside the input as ``<input stem>.<format>``.

    Runs before the commit: a copy is as idempotent as the outputs themselves. Returns a line
    for each copy that failed (the job still succeeds; its outputs are in the spool).
    """
    targets = []
    if manifest.output_dir:
        targets.append(Path(manifest.output_dir))
    if manifest.next_to_input:
        targets.append(Path(manifest.input.path).parent)
    problems = []
    stem = Path(manifest.input.name).stem
    for folder in targets:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for fmt in manifest.formats:
                source = files[output_name(fmt)]
                atomic_write_text(folder / f"{stem}.{fmt.value}", source.read_text(encoding="utf-8"), 0o644)
        except OSError as exc:
            problems.append(f"could not copy outputs to {folder}: {exc.strerror or exc}")
    return problems
