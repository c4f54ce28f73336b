"""The shared-batch driver (:mod:`klipnote.engines.batching`) with an in-process engine that records
every batch it is given: ordering, each job's own fate, early commits, out-of-memory halving.

The engine here is a test double for the model only; the driver under test is the production code.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klipnote.engines import JobOptions
from klipnote.engines.batching import Job, Request, Window, run, transcribe
from klipnote.errors import KlipnoteError
from klipnote.job import Stage
from klipnote.transcript import Segment, Transcript
from klipnote.windows import Span


class Recorder:
    """Each job's audio length (samples) is its number of windows; batches are recorded as (job, window)."""

    name = "recorder"

    def __init__(self, batch_size: int, ooms: int = 0, broken: int | None = None) -> None:
        self.batch_size = batch_size
        self.batches: list[list[tuple[int, int]]] = []
        self.ooms = ooms
        self.broken = broken  # decode_batch raises a model error when this job is in the batch
        self.ids: dict[int, int] = {}

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc)

    def plan(self, job: Job) -> list[Span]:
        if job.request.options.language == "bad":
            raise KlipnoteError("this job's audio cannot be planned")
        self.ids[id(job)] = len(self.ids)
        return [Span(i * 30.0, (i + 1) * 30.0) for i in range(job.request.audio.shape[0])]

    def decode_batch(self, batch: list[Window]) -> list[str]:
        if len(batch) > 1 and self.ooms:
            self.ooms -= 1
            raise RuntimeError("CUDA out of memory")
        if self.broken is not None and any(self.ids[id(w.job)] == self.broken for w in batch):
            raise RuntimeError("the model broke")
        self.batches.append([(self.ids[id(w.job)], w.index) for w in batch])
        for window in batch:
            if window.job.language is None:
                window.job.decide_language("xx", 0.5)
        return [f"{self.ids[id(w.job)]}:{w.index}" for w in batch]

    def assemble(self, job: Job) -> Transcript:
        if job.request.options.language == "late":
            raise KlipnoteError("assembly failed for this job")
        texts = [job.decoded[i] for i in range(len(job.windows))]
        return Transcript([Segment(s.start, s.end, t) for s, t in zip(job.windows, texts, strict=True)], job.language)


def request(windows: int, language: str | None = "en", progress=None, on_language=None, notes=None) -> Request:
    return Request(np.zeros(windows, dtype=np.float32), JobOptions(language), progress or (lambda s, p: None),
                   on_language, notes.append if notes is not None else None)


def test_windows_of_several_jobs_share_batches_in_the_order_given():
    engine = Recorder(batch_size=4)
    finished = list(run(engine, [request(1), request(2), request(3)]))
    assert engine.batches == [[(0, 0), (1, 0), (1, 1), (2, 0)], [(2, 1), (2, 2)]]
    assert [f.transcript.text for f in finished] == ["0:0", "1:0 1:1", "2:0 2:1 2:2"]


def test_a_job_is_finished_as_soon_as_its_own_windows_are_done():
    engine = Recorder(batch_size=2)
    seen = []
    for finished in run(engine, [request(1), request(5)]):
        seen.append((finished.transcript.text, len(engine.batches)))
    assert seen[0] == ("0:0", 1), "the short job must come out after the first batch, before the long one ends"
    assert seen[1][1] == 3


def test_a_job_whose_progress_raises_stops_alone_and_its_later_windows_are_never_decoded():
    engine = Recorder(batch_size=2)

    def canceled(stage: Stage, percent: float) -> None:
        if percent > 0:
            raise RuntimeError("canceled")

    finished = list(run(engine, [request(4, progress=canceled), request(3)]))
    assert len(finished) == 2
    (stopped,) = [f for f in finished if f.error is not None]
    assert str(stopped.error) == "canceled" and stopped.transcript is None
    (done,) = [f for f in finished if f.transcript is not None]
    assert done.transcript.text == "1:0 1:1 1:2"
    decoded = [item for batch in engine.batches for item in batch]
    assert (0, 2) not in decoded and (0, 3) not in decoded


def test_a_job_handed_off_by_its_language_leaves_and_the_others_go_on():
    engine = Recorder(batch_size=2)
    heard = []

    def hand_off(language, probability, error):
        heard.append((language, probability, error))
        return False

    first, second = run(engine, [request(3, language=None, on_language=hand_off), request(2, language=None)])
    assert first.handed_off and heard == [("xx", 0.5, None)]
    assert second.transcript.text == "1:0 1:1" and second.transcript.language == "xx"
    assert all(job != 0 for batch in engine.batches[1:] for job, _ in batch)


def test_plan_and_assemble_errors_end_their_own_job_only():
    engine = Recorder(batch_size=8)
    finished = list(run(engine, [request(1, "bad"), request(2, "late"), request(1)]))
    errors = {f.request.options.language: str(f.error) for f in finished if f.error}
    assert errors == {"bad": "this job's audio cannot be planned", "late": "assembly failed for this job"}
    assert [f.transcript.text for f in finished if f.transcript] == ["1:0"]


def test_out_of_memory_halves_the_batch_and_tells_each_job_in_it():
    engine = Recorder(batch_size=8, ooms=2)
    notes: list[str] = []
    (finished,) = run(engine, [request(5, notes=notes)])
    assert engine.batch_size == 2 and finished.transcript.text == "0:0 0:1 0:2 0:3 0:4"
    assert notes == ["out of memory; retrying with batch size 4", "out of memory; retrying with batch size 2"]


def test_out_of_memory_at_batch_size_one_is_an_error_with_advice():
    engine = Recorder(batch_size=1)
    engine.decode_batch = lambda batch: (_ for _ in ()).throw(RuntimeError("CUDA out of memory"))
    with pytest.raises(KlipnoteError, match="out of GPU memory even with batch size 1"):
        list(run(engine, [request(1)]))


def test_a_model_error_on_a_shared_batch_propagates():
    engine = Recorder(batch_size=4, broken=1)
    with pytest.raises(RuntimeError, match="the model broke"):
        list(run(engine, [request(1), request(1)]))


def test_transcribe_runs_one_file_and_raises_its_error():
    assert transcribe(Recorder(2), np.zeros(3, dtype=np.float32), JobOptions("en"), lambda s, p: None).text == (
        "0:0 0:1 0:2")
    with pytest.raises(KlipnoteError, match="cannot be planned"):
        transcribe(Recorder(2), np.zeros(1, dtype=np.float32), JobOptions("bad"), lambda s, p: None)


@settings(max_examples=200, deadline=None)
@given(windows=st.lists(st.integers(0, 7), min_size=1, max_size=8), batch_size=st.integers(1, 9),
       drop=st.sets(st.integers(0, 7)))
def test_every_request_ends_once_and_every_window_of_a_live_job_is_decoded_once_in_order(windows, batch_size, drop):
    engine = Recorder(batch_size)

    def failing_after_first_batch(stage: Stage, percent: float) -> None:
        if percent > 0:
            raise RuntimeError("stop")

    requests = [request(n, progress=failing_after_first_batch if i in drop else None) for i, n in enumerate(windows)]
    finished = list(run(engine, requests))
    assert sorted(id(f.request) for f in finished) == sorted(id(r) for r in requests)
    decoded = [item for batch in engine.batches for item in batch]
    assert all(len(batch) <= batch_size for batch in engine.batches)
    assert decoded == sorted(decoded), "windows go through in job order, then window order"
    assert len(decoded) == len(set(decoded))
    for index, (count, done) in enumerate(zip(windows, finished_by_request(finished, requests), strict=True)):
        if index in drop and done.error is not None:
            continue
        assert done.transcript is not None
        assert [(index, w) for w in range(count)] == [item for item in decoded if item[0] == index]


def finished_by_request(finished, requests):
    by_id = {id(f.request): f for f in finished}
    return [by_id[id(r)] for r in requests]


class Grouping(Recorder):
    """An engine whose model takes one prompt per batch: a job's language hint stands for its prompt."""

    def plan(self, job: Job) -> list[Span]:
        job.group = job.request.options.language
        return super().plan(job)


def test_jobs_of_different_groups_never_share_a_batch():
    engine = Grouping(batch_size=4)
    finished = list(run(engine, [request(1, "a"), request(2, "b"), request(2, "a"), request(5, "b")]))
    assert engine.batches == [[(0, 0), (2, 0), (2, 1)], [(1, 0), (1, 1), (3, 0), (3, 1)], [(3, 2), (3, 3), (3, 4)]]
    assert [f.transcript.text for f in finished] == ["0:0", "2:0 2:1", "1:0 1:1", "3:0 3:1 3:2 3:3 3:4"]


@settings(max_examples=50, deadline=None)
@given(jobs=st.lists(st.tuples(st.integers(1, 5), st.sampled_from("abc")), min_size=1, max_size=6),
       size=st.integers(1, 6))
def test_every_window_is_decoded_once_in_a_batch_of_one_group(jobs, size):
    engine = Grouping(batch_size=size)
    finished = list(run(engine, [request(windows, group) for windows, group in jobs]))
    assert len(finished) == len(jobs)
    decoded = [item for batch in engine.batches for item in batch]
    assert sorted(decoded) == [(job, index) for job, (windows, _) in enumerate(jobs) for index in range(windows)]
    assert all(len({jobs[job][1] for job, _ in batch}) == 1 and len(batch) <= size for batch in engine.batches)
    assert all(decoded.index((job, i)) < decoded.index((job, i + 1)) for job, i in decoded if (job, i + 1) in decoded)
