"""The real broker-mode worker (:class:`klipnote.broker.worker.BrokerWorker`, a Celery worker) around the
fast fake engine of ``fake_engine_worker.py`` (its ``FAKE_*`` variables apply). The broker, lease and
heartbeat come from the environment, as a real worker's do (KLIPNOTE_BROKER, KLIPNOTE_LEASE_TTL, ...).

``FAKE_BROKER_FAULT`` injects one fault at a named point of the real code:

- ``die-after-commit-decision``: the process kills itself (SIGKILL) right after Redis decided a commit, before
  the spool's commit marker exists;
- ``commit-rename-fails-once``: the first rename of a commit's staged files fails as a stale NFS handle does.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from pathlib import Path

from klipnote.broker.worker import BrokerWorker
from klipnote.config import load_settings
from klipnote.job import Lane
from klipnote.spool import Spool
from klipnote.worker import WorkerOptions, setup_logging
from tests.support.fake_engine_worker import FakeEngine  # the repository root is on PYTHONPATH (rediskit)


def inject(fault: str) -> None:
    """Wrap the one function the fault names; the rest of the worker is the real one."""
    from klipnote.broker import claim, ledger

    if fault == "die-after-commit-decision":
        end = ledger.Ledger.end

        def end_then_die(self: ledger.Ledger, job_id: str, token: str, state: str, *args: object) -> bool:
            decided = end(self, job_id, token, state, *args)  # type: ignore[arg-type]
            if decided and state == "done":
                os.kill(os.getpid(), signal.SIGKILL)
            return decided

        ledger.Ledger.end = end_then_die  # type: ignore[method-assign]
    elif fault == "commit-rename-fails-once":
        promote, failed = claim._promote, []

        def promote_fails_once(staging: Path, job_dir: Path) -> None:
            if not failed:
                failed.append(staging)
                raise OSError(errno.ESTALE, "Stale file handle", str(staging))
            promote(staging, job_dir)

        claim._promote = promote_fails_once
    elif fault:
        raise SystemExit(f"unknown FAKE_BROKER_FAULT {fault!r}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--id", default="fake-broker-worker")
    parser.add_argument("--lanes", default="whisperx,auto")
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args()
    setup_logging()
    inject(os.environ.get("FAKE_BROKER_FAULT", ""))
    settings = load_settings({"spool": args.spool})
    spool = Spool.from_settings(settings)
    engine = FakeEngine(4, tuple(Lane(name) for name in args.lanes.split(",")))
    options = WorkerOptions(lanes=engine.lanes, grace=args.grace, poll_interval=0.1, batch_jobs=1)
    return BrokerWorker(spool, engine, options, args.id, settings).run()


if __name__ == "__main__":
    sys.exit(main())
