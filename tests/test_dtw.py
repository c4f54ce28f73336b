"""klipnote.engines.dtw: the warping path, the median filter and token boundaries from attention.

The references here are written the plain way (loops over every cell, every path, every window), so
that the vectorised code is checked against something that is obviously right.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from klipnote.engines.dtw import FRAME_SECONDS, boundaries, dtw, first_columns, median_filter

finite = st.floats(-100, 100, allow_nan=False, width=32)
small_matrix = st.tuples(st.integers(1, 6), st.integers(1, 6)).flatmap(lambda shape: arrays(np.float64, shape,
                                                                                             elements=finite))
# Small integers make equal path costs (ties) common: the choice among them must still be the stated one.
tied_matrix = st.tuples(st.integers(1, 7), st.integers(1, 9)).flatmap(
    lambda shape: arrays(np.float64, shape, elements=st.integers(0, 2).map(float)))


def cheapest_cost(cost: np.ndarray) -> float:
    """The cost of the cheapest monotonic path, over every path (small matrices only)."""
    rows, columns = cost.shape

    @cache
    def best(i: int, j: int) -> float:
        if (i, j) == (0, 0):
            return float(cost[0, 0])
        before = [best(a, b) for a, b in ((i - 1, j - 1), (i - 1, j), (i, j - 1)) if a >= 0 and b >= 0]
        return float(cost[i, j]) + min(before)

    return best(rows - 1, columns - 1)


def reference_dtw(cost: np.ndarray) -> tuple[list[int], list[int]]:
    """Cell by cell, with the tie order dtw() promises: diagonal, then row step, then column step."""
    rows, columns = cost.shape
    total = np.full((rows + 1, columns + 1), np.inf)
    total[0, 0] = 0.0
    moves = {}
    for i in range(1, rows + 1):
        for j in range(1, columns + 1):
            options = [(total[i - 1, j - 1], (i - 1, j - 1)), (total[i - 1, j], (i - 1, j)),
                       (total[i, j - 1], (i, j - 1))]
            best = min(value for value, _ in options)
            moves[i, j] = next(step for value, step in options if value == best)
            total[i, j] = cost[i - 1, j - 1] + best
    path = []
    i, j = rows, columns
    while (i, j) != (0, 0):
        path.append((i - 1, j - 1))
        i, j = moves[i, j]
    path.reverse()
    return [p[0] for p in path], [p[1] for p in path]


def is_monotonic_path(rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int]) -> bool:
    steps = {(int(a), int(b)) for a, b in zip(np.diff(rows), np.diff(columns), strict=True)}
    return ((rows[0], columns[0]) == (0, 0) and (rows[-1], columns[-1]) == (shape[0] - 1, shape[1] - 1)
            and steps <= {(1, 0), (0, 1), (1, 1)})


@given(small_matrix)
def test_the_path_is_monotonic_and_the_cheapest_there_is(cost):
    ((rows, columns),) = dtw([cost])
    assert is_monotonic_path(rows, columns, cost.shape)
    assert cost[rows, columns].sum() == pytest.approx(cheapest_cost(cost), abs=1e-6)


@given(tied_matrix)
def test_ties_are_broken_as_documented(cost):
    ((rows, columns),) = dtw([cost])
    assert (rows.tolist(), columns.tolist()) == reference_dtw(cost)


@given(st.lists(small_matrix, min_size=1, max_size=5))
def test_matrices_warped_together_get_the_paths_they_get_alone(costs):
    together = dtw(costs)
    for cost, (rows, columns) in zip(costs, together, strict=True):
        ((alone_rows, alone_columns),) = dtw([cost])
        assert np.array_equal(rows, alone_rows) and np.array_equal(columns, alone_columns)


def test_empty_matrices_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        dtw([np.zeros((0, 3))])
    assert dtw([]) == []


@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 30)), elements=finite),
       st.sampled_from([1, 3, 5, 7]))
def test_median_filter_is_the_median_of_each_mirrored_window(values, width):
    half = width // 2
    got = median_filter(values, width)
    if values.shape[-1] <= half:
        assert np.array_equal(got, values)
        return
    mirrored = np.concatenate([values[:, half:0:-1], values, values[:, -2:-half - 2:-1]], axis=-1)
    expected = np.array([[np.median(row[k:k + width]) for k in range(values.shape[-1])] for row in mirrored])
    assert np.array_equal(got, expected.astype(values.dtype))


def test_median_filter_width_must_be_odd():
    with pytest.raises(ValueError, match="odd"):
        median_filter(np.zeros((2, 9)), 4)


def test_first_columns_are_where_the_path_enters_each_row():
    rows = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    columns = np.array([0, 1, 2, 3, 4, 4, 5, 6])
    assert first_columns(rows, columns).tolist() == [0, 2, 4, 5]


@pytest.mark.parametrize(("starts", "frames_off"), [([0, 10, 25, 35, 60], 0), ([0, 7], 0), ([0, 40, 41, 42, 90], 1)])
def test_boundaries_recover_the_frames_each_token_attends_to(starts, frames_off):
    """Tokens that each attend to their own stretch of frames (with noise and several heads) get those
    stretches back: exactly, or within a frame where stretches of one frame are narrower than the filter."""
    frames = starts[-1] + 20
    edges = [*starts, frames]
    rng = np.random.default_rng(len(starts))
    heads = []
    for _ in range(4):
        weights = rng.random((len(starts), frames)) * 0.2
        for token, (first, last) in enumerate(itertools.pairwise(edges)):
            weights[token, first:last] += 1.0
        heads.append(weights / weights.sum(axis=-1, keepdims=True))
    (found,) = boundaries([np.stack(heads)])
    assert np.abs(found - np.array(edges) * FRAME_SECONDS).max() <= frames_off * FRAME_SECONDS + 1e-9


@settings(max_examples=30)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(2, 40)), min_size=1, max_size=4))
def test_boundaries_are_ordered_and_span_the_audio(shapes):
    """Whatever the attention, boundaries never go back in time and run from the first frame to the last."""
    rng = np.random.default_rng(sum(rows * frames for rows, frames in shapes))
    attention = [rng.dirichlet(np.ones(frames), size=(3, rows)) for rows, frames in shapes]
    for (rows, frames), found in zip(shapes, boundaries(attention), strict=True):
        assert len(found) == rows + 1
        assert found[0] == 0 and found[-1] == pytest.approx(frames * FRAME_SECONDS)
        assert np.all(np.diff(found) >= 0)
