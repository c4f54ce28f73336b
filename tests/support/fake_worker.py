"""A worker process for spool tests: real claims, heartbeats, leases and commits; a fake engine.

The engine is the only thing faked (it sleeps and writes a transcript naming the worker and the
attempt), so races, kills and freezes exercise the real spool code in real processes.
Every event is appended to ``--log`` as ``<event> <job> <attempt> <worker>``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from klipnote import recovery
from klipnote.claim import WorkerRef, claim_next
from klipnote.errors import ClaimLost
from klipnote.job import Lane, Stage
from klipnote.spool import Spool


def log(path: Path, *fields: object) -> None:
    line = (" ".join(str(f) for f in fields) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)  # one write with O_APPEND: lines from racing processes never interleave
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--lanes", default="auto,whisperx,belle2")
    parser.add_argument("--work", type=float, default=0.0, help="seconds of fake work per job")
    parser.add_argument("--silent-work", action="store_true", help="no progress reports while working")
    parser.add_argument("--lease-ttl", type=float, default=3.0)
    parser.add_argument("--heartbeat", type=float, default=0.2)
    parser.add_argument("--idle-exit", type=float, default=1.0, help="exit after this long without a job")
    parser.add_argument("--freeze-before-commit", action="store_true",
                        help="log 'staged' and SIGSTOP itself with its outputs written but not committed")
    args = parser.parse_args()

    spool = Spool(args.spool, lease_ttl=args.lease_ttl, heartbeat_interval=args.heartbeat).open()
    lanes = [Lane(name) for name in args.lanes.split(",")]
    me = WorkerRef.here(args.id, "fake")
    print("ready", flush=True)
    idle_since = time.monotonic()
    while True:
        recovery.reap(spool)
        claim = claim_next(spool, lanes, me)
        if claim is None:
            if time.monotonic() - idle_since > args.idle_exit:
                return 0
            time.sleep(0.02)
            continue
        log(args.log, "claimed", claim.job_id, claim.attempt, args.id)
        try:
            with claim:
                deadline = time.monotonic() + args.work
                while time.monotonic() < deadline:
                    time.sleep(min(0.05, args.work))
                    if not args.silent_work:
                        claim.progress(Stage.TRANSCRIBING, 100 * (1 - (deadline - time.monotonic()) / args.work))
                (claim.output_dir / "transcript.txt").write_text(f"{claim.job_id} {claim.attempt} {args.id}\n")
                if args.freeze_before_commit:
                    log(args.log, "staged", claim.job_id, claim.attempt, args.id)
                    os.kill(os.getpid(), signal.SIGSTOP)  # heartbeats stop too, as in a VM pause or a swap storm
                claim.finish()
            log(args.log, "done", claim.job_id, claim.attempt, args.id)
        except ClaimLost as exc:
            log(args.log, "lost", claim.job_id, claim.attempt, args.id, exc)
        idle_since = time.monotonic()


if __name__ == "__main__":
    sys.exit(main())
