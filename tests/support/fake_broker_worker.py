"""The real broker-mode worker (:class:`klipnote.broker.worker.BrokerWorker`, a Celery worker) around the
fast fake engine of ``fake_engine_worker.py`` (its ``FAKE_*`` variables apply). The broker, lease and
heartbeat come from the environment, as a real worker's do (KLIPNOTE_BROKER, KLIPNOTE_LEASE_TTL, ...)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from klipnote.broker.worker import BrokerWorker
from klipnote.config import load_settings
from klipnote.job import Lane
from klipnote.spool import Spool
from klipnote.worker import WorkerOptions, setup_logging
from tests.support.fake_engine_worker import FakeEngine  # the repository root is on PYTHONPATH (rediskit)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--id", default="fake-broker-worker")
    parser.add_argument("--lanes", default="whisperx,auto")
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args()
    setup_logging()
    settings = load_settings({"spool": args.spool})
    spool = Spool.from_settings(settings)
    engine = FakeEngine(4, tuple(Lane(name) for name in args.lanes.split(",")))
    options = WorkerOptions(lanes=engine.lanes, grace=args.grace, poll_interval=0.1, batch_jobs=1)
    return BrokerWorker(spool, engine, options, args.id, settings).run()


if __name__ == "__main__":
    sys.exit(main())
