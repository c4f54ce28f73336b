"""When each decoded token was said, from the cross-attention of a Whisper model's alignment heads.

This is openai-whisper's way of timing words (``timing.find_alignment``), written for numpy and for
several windows at once. The caller runs the decoder once over the decoded tokens (teacher forcing)
and hands over, per window, the attention of the alignment heads: heads x rows x frames, a softmax
over that window's own audio frames, one row per token (the engine says which positions). Per window
the weights are then

1. standardised per head and frame over the rows, so that a frame every token looks at (silence,
   the window's edges) stops standing out;
2. smoothed along time by a median filter of :data:`MEDIAN_WIDTH` frames, per head;
3. averaged over the heads;
4. matched to time by dynamic time warping over ``-matrix``: the cheapest monotonic path from the
   first row and frame to the last, moving one row, one frame, or both at each step.

Row ``k`` starts where the path first enters it; the last row ends where the path ends (the end of
the audio), so ``n`` rows give ``n + 1`` boundaries and row ``k`` spans boundaries ``k`` to ``k + 1``.

Pure numpy (no torch): the engine computes the attention with torch, everything after it is here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: Seconds per encoder frame: Whisper's encoder halves the 10 ms mel frames.
FRAME_SECONDS = 0.02
#: Median filter width along time, in frames (openai-whisper's and transformers' value).
MEDIAN_WIDTH = 7

#: The moves of a warping path, as :func:`dtw` records them (also the order it prefers them in on a tie).
DIAGONAL, UP, LEFT = 0, 1, 2


def boundaries(attention: Sequence[np.ndarray], width: int = MEDIAN_WIDTH) -> list[np.ndarray]:
    """Seconds from each window's first frame at which each of its rows begins, and where the last ends.

    ``attention``: one array per window, heads x rows x frames (the window's own frames only).
    """
    paths = dtw([-_smoothed(weights, width) for weights in attention])
    return [np.append(first_columns(rows, columns), columns[-1] + 1) * FRAME_SECONDS for rows, columns in paths]


def _smoothed(weights: np.ndarray, width: int) -> np.ndarray:
    """Steps 1-3 of the module docstring: rows x frames."""
    mean = weights.mean(axis=-2, keepdims=True)
    std = weights.std(axis=-2, keepdims=True)
    standard = (weights - mean) / np.where(std > 0, std, 1.0)  # one row, or a frame all rows agree on: 0
    return median_filter(standard, width).mean(axis=0)


def median_filter(values: np.ndarray, width: int) -> np.ndarray:
    """The median of each run of ``width`` (odd) values along the last axis, edges mirrored.

    Too short an axis to mirror is returned as it is, as openai-whisper and transformers do.
    """
    if width < 1 or width % 2 != 1:
        raise ValueError(f"the median filter width must be odd and positive, not {width}")
    half = width // 2
    if values.shape[-1] <= half:
        return values
    padded = np.pad(values, [(0, 0)] * (values.ndim - 1) + [(half, half)], mode="reflect")
    return np.partition(sliding_window_view(padded, width, axis=-1), half, axis=-1)[..., half]  # 3x np.median's speed


def dtw(costs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The cheapest monotonic path through each cost matrix, as (row indices, column indices).

    A path runs from (0, 0) to the last row and column; each step moves one row down, one column
    right, or both. Of equal costs the diagonal is preferred, then the row step, then the column
    step. All matrices are filled together, one anti-diagonal at a time: every cell of an
    anti-diagonal depends only on the two before it, so each is one vectorised numpy step.
    """
    if any(cost.ndim != 2 or 0 in cost.shape for cost in costs):
        raise ValueError("dtw needs non-empty rows x columns matrices")
    if not costs:
        return []
    rows = max(cost.shape[0] for cost in costs)
    columns = max(cost.shape[1] for cost in costs)
    padded = np.zeros((len(costs), rows, columns))  # cells past a matrix's own end never reach its path
    for index, cost in enumerate(costs):
        padded[index, :cost.shape[0], :cost.shape[1]] = cost
    total = np.full((len(costs), rows + 1, columns + 1), np.inf)
    total[:, 0, 0] = 0.0
    moves = np.zeros((len(costs), rows + 1, columns + 1), dtype=np.int8)
    for diagonal in range(2, rows + columns + 1):
        i = np.arange(max(1, diagonal - columns), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        before = np.stack((total[:, i - 1, j - 1], total[:, i - 1, j], total[:, i, j - 1]))  # DIAGONAL, UP, LEFT
        move = before.argmin(axis=0)
        total[:, i, j] = padded[:, i - 1, j - 1] + np.take_along_axis(before, move[None], axis=0)[0]
        moves[:, i, j] = move
    return [_backtrack(moves[index], *cost.shape) for index, cost in enumerate(costs)]


def _backtrack(moves: np.ndarray, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Follow the recorded moves back from the last cell; every path leaves through (1, 1) to (0, 0)."""
    i, j = rows, columns
    path: list[tuple[int, int]] = []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        move = moves[i, j]
        i -= int(move != LEFT)
        j -= int(move != UP)
    found = np.array(path[::-1], dtype=np.int64)
    return found[:, 0], found[:, 1]


def first_columns(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """The column at which a path enters each of its rows."""
    entered = np.diff(rows, prepend=-1) > 0
    return columns[entered]
