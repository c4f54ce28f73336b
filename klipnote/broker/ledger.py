"""What Redis decides for broker mode, each decision one Lua script: claims, leases, commits, cancels, dispatch.

Per job, a hash ``klipnote:job:<id>`` (``state`` queued/running/done/failed/canceled, the current claim's
``token``, its ``holder``, ``attempts`` used, ``dispatched_at``) and a lease ``klipnote:lease:<id>`` holding
the token, with a TTL that the holder's heartbeats renew. The token is the fence: a worker may report
progress, fail or commit only while the hash still names its token and its lease has not run out. A worker
frozen past its lease (SIGSTOP, a partition) finds its token gone or its lease dead when it wakes, so its
commit is refused and its result discarded.

Redis can lose everything (a restart without persistence). Attempt counts are kept in the spool's status
too, and a claim never counts fewer than the spool says. A holder whose job vanished from Redis adopts it
again at its next heartbeat; if the job was dispatched and claimed again meanwhile, only one of the two
can commit, and the spool's write-once commit marker stops a second commit even then
(:mod:`klipnote.broker.claim`).
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from klipnote import defaults
from klipnote.config import mask_url
from klipnote.errors import BrokerUnavailable

if TYPE_CHECKING:
    import redis

_ENDED = "if s == 'done' or s == 'failed' or s == 'canceled' then"

#: KEYS job, lease; ARGV token, holder, lease_ms, floor, limit, now
_CLAIM = f"""
local s = redis.call('HGET', KEYS[1], 'state')
{_ENDED} return {{'ended', s}} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {{'busy', redis.call('HGET', KEYS[1], 'holder') or ''}} end
local n = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if tonumber(ARGV[4]) > n then n = tonumber(ARGV[4]) end
if n >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'attempts', n)
  return {{'exhausted', tostring(n)}}
end
n = n + 1
redis.call('HSET', KEYS[1], 'state', 'running', 'token', ARGV[1], 'holder', ARGV[2], 'attempts', n,
           'claimed_at', ARGV[6])
redis.call('PERSIST', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
return {{'claimed', tostring(n)}}
"""

#: Does the claim with this token still hold the job? Adopts a job Redis lost. KEYS job, lease;
#: ARGV token, lease_ms, holder, attempt. Returns 1 (held, lease renewed) or 0 (lost). A lease that ran out
#: while the hash still names this token running (Redis was down longer than the lease, or restarted from its
#: append-only file) is set again: no other claim can exist, since dispatching again removes the token first.
_RENEW = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'state', 'running', 'token', ARGV[1], 'holder', ARGV[3], 'attempts', ARGV[4])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return 1
end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
local held = redis.call('GET', KEYS[2])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: The commit decision (or a failure's): only the holder's token ends the job. KEYS job, lease;
#: ARGV token, final state, ttl_s, holder, attempt. A job Redis lost is ended by its holder; a lease that ran
#: out under a hash still naming this token is no other claim's (see _RENEW). Asked again after a lost reply,
#: it answers 1 again. The lease is left to run out: while it lives, reconcilers leave the commit to its holder.
_END = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local s = redis.call('HGET', KEYS[1], 'state')
  if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
  if s == ARGV[2] then return 1 end
  if s ~= 'running' then return 0 end
  local held = redis.call('GET', KEYS[2])
  if held and held ~= ARGV[1] then return 0 end
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'token', ARGV[1], 'holder', ARGV[4], 'attempts', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

#: Hand the job back without using an attempt (worker stopping, routed to another lane). KEYS job, lease; ARGV token.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', tonumber(redis.call('HGET', KEYS[1], 'attempts')) - 1)
redis.call('HDEL', KEYS[1], 'token', 'holder')
redis.call('DEL', KEYS[2])
return 1
"""

#: KEYS job, lease; ARGV ttl_s. Returns the state the job had; a done job stays done.
_CANCEL = """
local s = redis.call('HGET', KEYS[1], 'state') or 'unknown'
if s == 'done' then return s end
redis.call('HSET', KEYS[1], 'state', 'canceled')
redis.call('HDEL', KEYS[1], 'token', 'holder')
redis.call('DEL', KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return s
"""

#: May a task for this job be sent now? KEYS job, lease; ARGV now, redispatch_after, revive, commit_lost.
#: Returns the state it had ('new' for a job Redis does not know), 'leased' when a live lease holds it, or ''
#: when it must not be sent: dispatched less than redispatch_after seconds ago (another reconciler sent it; it
#: waits in its queue), canceled or failed unless ``revive`` is 1 (a retry's ticket: the reconciler must not
#: undo a cancel), done unless ``commit_lost`` is 1 (its holder died between the decision and the marker).
_DISPATCH = """
local s = redis.call('HGET', KEYS[1], 'state') or 'new'
if redis.call('EXISTS', KEYS[2]) == 1 then return 'leased' end
if s == 'done' and ARGV[4] ~= '1' then return '' end
if (s == 'canceled' or s == 'failed') and ARGV[3] ~= '1' then return '' end
if s == 'queued' then
  local sent = tonumber(redis.call('HGET', KEYS[1], 'dispatched_at') or '0')
  if tonumber(ARGV[1]) - sent < tonumber(ARGV[2]) then return '' end
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'dispatched_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'token', 'holder')
redis.call('PERSIST', KEYS[1])
return s
"""

#: What the dispatch script answers when a live lease holds the job.
LEASED = "leased"


class ClaimOutcome(str, enum.Enum):
    CLAIMED = "claimed"
    BUSY = "busy"  # a live lease holds it: this task is a duplicate
    ENDED = "ended"  # done, failed or canceled in Redis
    EXHAUSTED = "exhausted"  # its attempts are used up: the job fails


@dataclass(frozen=True)
class ClaimAnswer:
    outcome: ClaimOutcome
    detail: str  # the attempt number claimed or used up, the holder, or the state it ended in


@dataclass(frozen=True)
class JobEntry:
    """What Redis holds about a job, for the reconciler."""

    state: str | None  # None: Redis does not know the job
    leased: bool
    dispatched_at: float


class Ledger:
    """The Redis side of broker mode. Every call raises :class:`BrokerUnavailable` when Redis cannot be reached."""

    def __init__(self, client: redis.Redis, url: str, prefix: str = defaults.BROKER_KEY_PREFIX) -> None:
        self.client = client
        self.url = url
        self.prefix = prefix
        self._scripts = {name: client.register_script(text) for name, text in (
            ("claim", _CLAIM), ("renew", _RENEW), ("end", _END), ("release", _RELEASE), ("cancel", _CANCEL),
            ("dispatch", _DISPATCH))}

    @classmethod
    def connect(cls, url: str, timeout: float = defaults.BROKER_CONNECT_TIMEOUT) -> Ledger:
        from klipnote.broker import require
        from klipnote.broker.app import connection_url

        redis = require("redis")

        client = redis.Redis.from_url(connection_url(url), socket_connect_timeout=timeout,
                                      socket_timeout=max(timeout, 5.0), decode_responses=True, health_check_interval=30)
        return cls(client, url)

    @contextlib.contextmanager
    def reaching(self, action: str) -> Iterator[None]:
        """Redis's connection errors as one line that names the broker (its password masked)."""
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"{action}: the broker {mask_url(self.url)} cannot be reached ({exc})") from None
        except redis.ResponseError as exc:  # NOAUTH, WRONGPASS, a read-only replica
            raise BrokerUnavailable(f"{action}: the broker {mask_url(self.url)} refused ({exc})") from None

    def _keys(self, job_id: str) -> list[str]:
        return [f"{self.prefix}:job:{job_id}", f"{self.prefix}:lease:{job_id}"]

    def _run(self, name: str, job_id: str, *args: Any) -> Any:
        with self.reaching(f"job {job_id}"):
            return self._scripts[name](keys=self._keys(job_id), args=list(args))

    def ping(self) -> None:
        with self.reaching("connecting"):
            self.client.ping()

    # ------------------------------------------------------------------ the holder's side

    def claim(self, job_id: str, token: str, holder: str, lease: float, *, floor: int, limit: int) -> ClaimAnswer:
        """Take the job for a new attempt, unless it ended, a live lease holds it, or its attempts are used up."""
        outcome, detail = self._run("claim", job_id, token, holder, int(lease * 1000), floor, limit, time.time())
        return ClaimAnswer(ClaimOutcome(outcome), str(detail))

    def renew(self, job_id: str, token: str, lease: float, holder: str, attempt: int) -> bool:
        """Extend the lease if ``token`` still holds the job: the heartbeat, and the check before each write."""
        return bool(self._run("renew", job_id, token, int(lease * 1000), holder, attempt))

    def end(self, job_id: str, token: str, state: str, holder: str, attempt: int) -> bool:
        """The atomic decision to commit (``done``) or fail a job: True only for the live holder's token."""
        return bool(self._run("end", job_id, token, state, defaults.BROKER_ENDED_TTL, holder, attempt))

    def release(self, job_id: str, token: str) -> bool:
        return bool(self._run("release", job_id, token))

    # ------------------------------------------------------------------ everyone else's side

    def cancel(self, job_id: str) -> str:
        """Cancel the job in Redis: its holder's next heartbeat finds its token gone. Returns the state it had."""
        return str(self._run("cancel", job_id, defaults.BROKER_ENDED_TTL))

    def may_dispatch(self, job_id: str, redispatch_after: float, *, revive: bool = False,
                     commit_lost: bool = False) -> str:
        """Mark the job queued if a task may be sent for it now; its former state, :data:`LEASED`, or '' when
        it must not be. ``revive``: a canceled or failed job may be queued again (a retry's ticket);
        ``commit_lost``: a done job whose commit marker is missing may (its holder died after the decision)."""
        return str(self._run("dispatch", job_id, time.time(), redispatch_after, int(revive), int(commit_lost)))

    def entries(self, job_ids: Sequence[str]) -> dict[str, JobEntry]:
        """What Redis knows of each job, in one round trip."""
        with self.reaching("reading job states"):
            pipe = self.client.pipeline(transaction=False)
            for job_id in job_ids:
                job_key, lease_key = self._keys(job_id)
                pipe.hmget(job_key, ["state", "dispatched_at"])
                pipe.exists(lease_key)
            replies = pipe.execute()
        found = {}
        for index, job_id in enumerate(job_ids):
            state, sent = replies[2 * index]
            found[job_id] = JobEntry(state, bool(replies[2 * index + 1]), float(sent or 0.0))
        return found

    # ------------------------------------------------------------------ worker liveness

    def beat(self, worker_id: str, lanes: Sequence[str], ttl: float) -> None:
        """This worker is alive and serves ``lanes``, for ``ttl`` seconds (auto routing asks who serves belle2)."""
        with self.reaching("worker heartbeat"):
            self.client.set(f"{self.prefix}:worker:{worker_id}", ",".join(lanes), px=int(ttl * 1000))

    def forget(self, worker_id: str) -> None:
        with self.reaching("worker exit"):
            self.client.delete(f"{self.prefix}:worker:{worker_id}")

    def live_lanes(self) -> set[str]:
        with self.reaching("reading live workers"):
            keys = list(self.client.scan_iter(f"{self.prefix}:worker:*", count=1000))
            values: list[Any] = cast(list, self.client.mget(keys)) if keys else []  # typed for async clients too
        return {lane for value in values if value for lane in str(value).split(",")}
