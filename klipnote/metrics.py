"""A spool's state in the Prometheus text exposition format, for node_exporter's textfile collector.

Run ``klipnote metrics --textfile /var/lib/node_exporter/textfile/klipnote.prom`` from cron or a
systemd timer; the file is replaced atomically (a hidden temp name in the same folder, then a
rename), as the collector requires, so it never reads half a file.

Where the numbers come from:

- queue lengths, jobs by state and worker liveness: a :class:`~klipnote.monitor.Snapshot` of the spool.
  Per-worker series cover live workers and those dead within ``defaults.RECENT_DEAD_WORKERS``, so
  restarts under new ids do not grow the series without bound; ``klipnote_workers`` counts them by
  state (``failed``: an error such as a model that would not load ended them);
- processed audio and processing time: counters each worker keeps in its registry record and
  raises when a job is done (the decoded audio's length; the job's time from decoding to written
  outputs, as its status's ``timings.total``). They are per worker process, so they are true
  counters: they only grow, and start again at 0 when a worker restarts, which ``rate()`` and
  ``increase()`` understand. Counting them from done jobs' statuses instead would make them
  shrink whenever ``gc`` removes jobs, and would read every job's manifest on each scrape.
- the real-time factor: processing seconds over audio seconds, per model, summed over the
  workers shown (live, and dead within ``defaults.RECENT_DEAD_WORKERS``). Below 1 is faster than
  real time. For a recent window use ``rate(klipnote_worker_processing_seconds_total[1h]) /
  rate(klipnote_worker_audio_seconds_total[1h])``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from klipnote.errors import KlipnoteError
from klipnote.fsio import atomic_write_text
from klipnote.monitor import Snapshot
from klipnote.registry import WorkerState

PREFIX = "klipnote"
#: node_exporter runs as its own user: the textfile must be readable by it.
TEXTFILE_MODE = 0o644


class MetricType(str, Enum):
    GAUGE = "gauge"
    COUNTER = "counter"


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Metric:
    name: str
    type: MetricType
    help: str
    samples: list[Sample] = field(default_factory=list)


def collect(snap: Snapshot) -> list[Metric]:
    """Every klipnote metric of one snapshot."""
    queue = Metric(f"{PREFIX}_queue_length", MetricType.GAUGE, "Jobs waiting in each lane's queue.",
                   [Sample({"lane": lane}, count) for lane, count in snap.queues.items()])
    lane_workers = Metric(f"{PREFIX}_lane_workers", MetricType.GAUGE,
                          "Live workers serving each lane; 0 with a non-empty queue means its jobs wait for nobody.",
                          [Sample({"lane": lane}, count) for lane, count in snap.lane_workers.items()])
    jobs = Metric(f"{PREFIX}_jobs", MetricType.GAUGE, "Jobs in the spool by state (gc removes finished ones).",
                  [Sample({"state": state}, count) for state, count in snap.jobs.items()])
    by_state = {state.value: 0 for state in WorkerState}
    for view in snap.workers:
        by_state[view.state.value] += 1
    workers = Metric(f"{PREFIX}_workers", MetricType.GAUGE,
                     "Workers by state: live ones and those dead recently (stopped, failed, offline).",
                     [Sample({"state": state}, count) for state, count in by_state.items()])
    up = Metric(f"{PREFIX}_worker_up", MetricType.GAUGE,
                "1 while a registered worker is live (fresh heartbeat, process present), else 0.")
    busy = Metric(f"{PREFIX}_worker_busy", MetricType.GAUGE, "1 while a live worker runs a job, else 0.")
    done = Metric(f"{PREFIX}_worker_jobs_total", MetricType.COUNTER, "Jobs a worker process finished, by outcome.")
    audio = Metric(f"{PREFIX}_worker_audio_seconds_total", MetricType.COUNTER,
                   "Seconds of audio in the jobs a worker process has done.")
    processing = Metric(f"{PREFIX}_worker_processing_seconds_total", MetricType.COUNTER,
                        "Seconds a worker process spent on the jobs it has done, decoding to written outputs.")
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for view in snap.workers:
        r = view.record
        who = {"worker": r.id, "model": r.model, "host": r.host}
        up.samples.append(Sample(who, int(view.live)))
        busy.samples.append(Sample(who, int(view.live and view.job is not None)))
        done.samples.append(Sample({**who, "outcome": "done"}, r.jobs_done))
        done.samples.append(Sample({**who, "outcome": "failed"}, r.jobs_failed))
        audio.samples.append(Sample(who, r.audio_seconds))
        processing.samples.append(Sample(who, r.processing_seconds))
        totals[r.model][0] += r.processing_seconds
        totals[r.model][1] += r.audio_seconds
    rtf = Metric(f"{PREFIX}_real_time_factor", MetricType.GAUGE,
                 "Processing seconds per audio second of the jobs done, per model, over the registered workers.",
                 [Sample({"model": model}, spent / heard) for model, (spent, heard) in sorted(totals.items())
                  if heard > 0])
    return [queue, lane_workers, jobs, workers, up, busy, done, audio, processing, rtf]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Whole numbers as such, others to a microsecond (sums of seconds grow float noise), and the specials."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(round(float(value), 6))


def exposition(metrics: list[Metric]) -> str:
    """The text format (version 0.0.4): HELP and TYPE once per metric, then its samples."""
    lines = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {escape_help(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.type.value}")
        for sample in metric.samples:
            labels = ",".join(f'{key}="{escape_label(value)}"' for key, value in sample.labels.items())
            lines.append(f"{metric.name}{{{labels}}} {format_value(sample.value)}" if labels
                         else f"{metric.name} {format_value(sample.value)}")
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` atomically, readable by node_exporter."""
    try:
        atomic_write_text(path, text, TEXTFILE_MODE)
    except OSError as exc:
        raise KlipnoteError(f"cannot write the metrics file {path}: {exc.strerror or exc}") from None
