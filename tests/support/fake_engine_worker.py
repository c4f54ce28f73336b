"""The real worker daemon (:class:`klipnote.worker.Worker`) around a fast fake engine.

Only the model is faked: decoding (real ffmpeg), claims, heartbeats, signals, status, outputs
and delivery are the production code. The engine's behaviour is set by environment variables:

- ``FAKE_WORK``: seconds each batch takes (reported as progress every 50 ms); with ``--batch-jobs 1``
  (the default here) a batch holds one job
- ``FAKE_FAIL_LANGUAGE``: jobs submitted with this language hint make the engine raise (their own error)
- ``FAKE_CRASH_LANGUAGE``: a batch holding a job with this language hint makes the model raise (an
  error of the whole batch, which cannot be pinned on one job)
- ``FAKE_OOM``: the first N transcriptions raise a CUDA-style out-of-memory error
- ``FAKE_LANGUAGE``: what language detection hears (``fail`` makes it raise); default ``en``

``KLIPNOTE_LEASE_TTL`` and ``KLIPNOTE_HEARTBEAT_INTERVAL`` set its spool's lease and heartbeat, as they
do a real worker's (default 5 s and 0.2 s, so fault tests run in seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from klipnote.engines.batching import Job, Window
from klipnote.job import Lane, Stage
from klipnote.spool import Spool
from klipnote.transcript import Segment, Transcript, Word, WordTiming
from klipnote.windows import Span
from klipnote.worker import Worker, WorkerOptions, setup_logging


class FakeEngine:
    """One window per file; a batch takes ``FAKE_WORK`` seconds whatever it holds, reporting progress
    every 50 ms to each of its jobs (as a real batch makes them wait together)."""

    name = "fake"

    def __init__(self, batch_size: int, lanes: tuple[Lane, ...]) -> None:
        self.batch_size = batch_size
        self.lanes = lanes
        self.work = float(os.environ.get("FAKE_WORK", "0"))
        self.fail_language = os.environ.get("FAKE_FAIL_LANGUAGE")
        self.ooms_left = int(os.environ.get("FAKE_OOM", "0"))
        self.heard = os.environ.get("FAKE_LANGUAGE", "en")
        self.crash_language = os.environ.get("FAKE_CRASH_LANGUAGE")

    def load(self) -> None:
        pass

    def describe(self) -> dict:
        return {"engine": self.name, "model": "fake", "device": "cpu", "compute_type": "none", "versions": {}}

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc)

    def plan(self, job: Job) -> list[Span]:
        if self.fail_language and job.request.options.language == self.fail_language:
            raise RuntimeError("the fake engine was told to fail")
        job.language = job.request.options.language
        return [Span(0.0, job.request.audio.shape[0] / 16_000)]

    def decode_batch(self, batch: list[Window]) -> list[str]:
        if self.ooms_left:
            self.ooms_left -= 1
            raise RuntimeError(f"CUDA failed with error out of memory (batch size {self.batch_size})")
        if self.crash_language and any(w.job.request.options.language == self.crash_language for w in batch):
            raise RuntimeError("the fake model crashed on this batch")
        jobs = list({id(w.job): w.job for w in batch}.values())
        for job in jobs:
            if job.language is None:
                if self.heard == "fail":
                    job.decide_language(None, None, "RuntimeError: the fake detector heard nothing")
                else:
                    job.decide_language(self.heard, 0.97)
        deadline = time.monotonic() + self.work
        while time.monotonic() < deadline:
            time.sleep(0.05)
            for job in jobs:
                job.report(Stage.TRANSCRIBING, 100 * (1 - (deadline - time.monotonic()) / self.work))
        return [f"fake transcript of {w.span.length:.2f} s at batch {self.batch_size}" for w in batch]

    def assemble(self, job: Job) -> Transcript:
        (span,) = job.windows
        seconds = span.length
        words = [Word("fake", 0.0, seconds / 2, 0.9), Word("words", seconds / 2, seconds, 0.9)]
        segment = Segment(0.0, seconds, job.decoded[0], words)
        return Transcript([segment], job.language or "en", 1.0, WordTiming.CROSS_ATTENTION)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--id", "--name", default="fake-worker")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batch-jobs", type=int, default=1)
    parser.add_argument("--batch-audio", type=float, default=480.0)
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--drain", action="store_true")
    parser.add_argument("--max-jobs", type=int)
    parser.add_argument("--idle-exit", type=float)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--lanes", default="whisperx,auto")
    args = parser.parse_args()
    setup_logging()
    spool = Spool(args.spool, lease_ttl=float(os.environ.get("KLIPNOTE_LEASE_TTL", "5")),
                  heartbeat_interval=float(os.environ.get("KLIPNOTE_HEARTBEAT_INTERVAL", "0.2"))).open()
    engine = FakeEngine(args.batch_size, tuple(Lane(name) for name in args.lanes.split(",")))
    options = WorkerOptions(lanes=engine.lanes, once=args.once, drain=args.drain, max_jobs=args.max_jobs,
                            idle_exit=args.idle_exit, grace=args.grace, poll_interval=0.1,
                            batch_jobs=args.batch_jobs, batch_audio=args.batch_audio)
    return Worker(spool, engine, options, args.id).run()


if __name__ == "__main__":
    sys.exit(main())
