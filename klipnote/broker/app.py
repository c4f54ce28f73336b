"""The Celery application of broker mode: one task, JSON only, one queue per lane, late acks.

Why each setting (docs/broker.md has the longer story):

- ``task_acks_late`` and ``task_reject_on_worker_lost``: a message is acknowledged when its job has ended,
  so a worker that dies mid-job leaves its message for another (at-least-once, as on one machine).
- ``worker_prefetch_multiplier = 1`` and concurrency 1 in the solo pool: one job at a time per GPU, the
  model loaded once in the worker's own process, and no job reserved by a busy worker while others idle.
- ``visibility_timeout`` longer than the longest allowed job: Redis gives an unacknowledged message to
  another worker after it, and a running job must not be handed out twice on its account (klipnote's
  own leases notice a dead worker within ``lease_ttl``; the visibility timeout is the backstop).
- JSON only, no pickle: a message is a job id, and a broker that accepted pickle would run whatever code
  someone who can write to Redis sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from klipnote import defaults
from klipnote.job import Lane

if TYPE_CHECKING:
    from celery import Celery

    from klipnote.config import Settings

#: The one task: run a job of the spool, given its id.
TASK = "klipnote.transcribe"


def visibility_timeout(settings: Settings) -> float:
    """Seconds longer than the longest allowed job: MAX_DURATION_HOURS of audio at the slowest allowed speed."""
    return settings.max_duration_hours * 3600 * defaults.BROKER_SLOWEST_RTF + defaults.BROKER_VISIBILITY_MARGIN


def queues(lanes: tuple[Lane, ...]) -> list[str]:
    """Queue names are lane names: ``whisperx`` and ``auto`` (the whisperx worker), ``belle2``."""
    return [lane.value for lane in lanes]


def celery_priority(priority: int) -> int:
    """A job's priority (-9..9, higher first) as a Redis message priority (0..9, lower first: kombu keeps one
    list per step and reads them in order), so that an urgent job overtakes the tasks already waiting."""
    return (defaults.PRIORITY_MAX - priority) * (PRIORITY_STEPS - 1) // (defaults.PRIORITY_MAX - defaults.PRIORITY_MIN)


#: Message priorities, one list per step in each queue: one step for each two of klipnote's nineteen priorities.
PRIORITY_STEPS = 10


def connection_url(url: str) -> str:
    """The broker URL as Celery and redis-py get it: a ``rediss://`` URL that does not say how to check the
    server's certificate asks for it to be checked (``ssl_cert_reqs=required``); Celery refuses one that
    does not say, and checking is the only safe default."""
    if not url.lower().startswith("rediss://") or "ssl_cert_reqs=" in url:
        return url
    return url + ("&" if "?" in url else "?") + "ssl_cert_reqs=required"


def create(settings: Settings) -> Celery:
    """The Celery app for ``settings.broker`` (Celery is imported here: only broker mode pays for it)."""
    from klipnote.broker import require

    assert settings.broker is not None
    app: Celery = require("celery").Celery("klipnote", broker=connection_url(settings.broker), set_as_current=False)
    transport = {"visibility_timeout": visibility_timeout(settings), "priority_steps": list(range(PRIORITY_STEPS)),
                 "queue_order_strategy": "priority"}
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="solo",
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives a Redis restart
        broker_connection_timeout=defaults.BROKER_CONNECT_TIMEOUT,
        task_default_queue=Lane.WHISPERX.value,
        task_create_missing_queues=True,
        worker_send_task_events=True,  # Flower shows tasks
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_enable_remote_control=True,  # Flower's /api/workers asks the workers over it
    )
    return app
