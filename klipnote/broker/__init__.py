"""Broker mode: several hosts share one spool, and Celery on Redis dispatches its jobs (issue 13).

With the ``broker`` setting empty nothing here is imported and the spool works alone, as on one machine.
With a ``redis://`` or ``rediss://`` URL the work divides so (docs/broker.md says why):

- The spool, on storage every host mounts, stays the record of each job: manifest, status, input and
  outputs, read by ``status``, ``list``, ``wait``, ``result`` and ``gc`` as on one machine. From it
  broker mode needs only files written whole and atomic renames: no ``flock``, no mtime leases.
- Redis carries what must be decided once across hosts: dispatch (one Celery task per job, JSON only, a
  queue per lane), claims with a fencing token, leases (keys with a TTL), cancel, attempt counts
  (:mod:`klipnote.broker.ledger`, each decision one Lua script).
- A job waiting to be dispatched keeps its ticket in ``queue/<lane>/`` (as on one machine); dispatching
  sends its task and removes the ticket (:mod:`klipnote.broker.dispatch`), so a submit while Redis is down
  loses nothing, and a reconciler re-sends jobs that Redis lost or whose worker's lease ran out.
- The worker is a Celery worker around the usual one (:mod:`klipnote.broker.worker`); its claims
  (:mod:`klipnote.broker.claim`) commit only after Redis says, atomically, that their token still holds.

Modules import Celery and redis-py only when called (through :func:`require`): the core commands stay fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from klipnote.errors import ConfigError


def require(module: str) -> ModuleType:
    """Import a package of the ``broker`` extra, or say in one line how to install it (not a traceback: the
    ``broker`` setting is set on a host whose environment lacks the extra)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"the broker setting needs Celery and redis-py, which this environment lacks ({exc}): "
                          "pip install -e '.[broker]' (scripts/bootstrap does it), or unset broker") from None
