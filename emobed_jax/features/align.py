"""Bringing feature streams onto a label grid: one documented rule for every dataset.

Frame-level labels come at times ``t_k`` with a constant period ``h`` (``label_period`` checks
it). A stream with frame times ``s_j`` and validity ``v_j`` is brought onto that grid by
``to_label_grid``:

* label frame k takes the mean of the valid stream frames with ``s_j`` in ``[t_k - h/2, t_k + h/2)``,
  so faster streams (50 Hz physiology, 100 Hz low-level descriptors) are pooled;
* a label frame with no valid frame there takes the nearest valid frame in time (ties: the earlier),
  so a slower stream (10 Hz) repeats its frames; it is valid only if that frame lies within
  ``tolerance_s`` of ``t_k`` (a long stretch without a face stays masked);
* coverage: a stream starting after ``t_0 + tolerance_s`` or ending before ``t_last - tolerance_s``
  is refused (``AlignError`` naming the file and both time ranges); within the tolerance the label
  frames outside the stream's time range are padded by the nearest frame and counted ``padded``;
  stream frames outside ``[t_0 - h/2, t_last + h/2)`` are dropped and counted ``trimmed``.

RECOLA's helpers live here too: ``pool_to_label_frames`` (eGeMAPS low-level descriptors onto the
40 ms grid from 0 s) and ``align_length`` (a feature file a frame or two longer or shorter than its
gold standard).
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.stats

__all__ = ["AlignError", "DEFAULT_TOLERANCE_S", "PERIOD_TOLERANCE", "MAX_LENGTH_MISMATCH",
           "label_period", "to_label_grid", "pool_to_label_frames", "align_length"]

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_S = 0.5
# Relative deviation of the label period tolerated (median diff vs each diff).
PERIOD_TOLERANCE = 0.01
MAX_LENGTH_MISMATCH = 2  # frames; larger differences are errors, not rounding at the ends
# Shift of the bin edges: a frame exactly on a boundary (0.02 s between 0 and 0.04) goes right even
# when its time was rounded down by the float arithmetic that wrote it.
_EDGE_EPS = 1e-9


class AlignError(ValueError):
    """A stream cannot be brought onto the label grid (times, coverage, lengths); names the file."""


def label_period(times: np.ndarray, path: str = "labels") -> float:
    """The constant period ``h`` of label times: finite, strictly increasing, every step within
    ``PERIOD_TOLERANCE`` of the median step.

    Args:
        times: [T] label times in seconds, T >= 2.
        path: the labels file, for messages.

    Returns:
        The median step in seconds.

    Raises:
        AlignError: fewer than 2 times, non-finite or non-increasing times, or an irregular step.
    """
    times = np.asarray(times, np.float64)
    if times.ndim != 1 or times.size < 2:
        raise AlignError(f"{path}: {times.size} label frame(s); expected at least 2 to fix the label "
                         f"period")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise AlignError(f"{path}: label times must be finite and strictly increasing (seconds)")
    steps = np.diff(times)
    h = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - h)))
    if abs(steps[worst] - h) > PERIOD_TOLERANCE * h:
        raise AlignError(f"{path}: label frames {worst} and {worst + 1} are {steps[worst]:.6g} s apart "
                         f"but the label period is {h:.6g} s; expected a constant period (within "
                         f"{PERIOD_TOLERANCE:.0%})")
    return h


def to_label_grid(values: np.ndarray, times: np.ndarray, valid: np.ndarray | None,
                  grid_times: np.ndarray, tolerance_s: float = DEFAULT_TOLERANCE_S,
                  path: str = "stream", labels_path: str = "labels",
                  period_s: float | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Brings a stream onto the label grid by the rule of the module docstring.

    Args:
        values: [n, D] stream features; times: [n] their times in seconds (strictly increasing).
        valid: [n] bool, False for frames without data (ignored by the mean); None: all valid.
        grid_times: [T] label times (constant period).
        tolerance_s: how far the stream may fall short of the labels' ends, and how far a label
            frame's nearest valid frame may be for the frame to count as valid.
        path: the stream's file; labels_path: the labels' file (both for messages).
        period_s: the label period; default ``label_period(grid_times)`` (needed when T == 1).

    Returns:
        (values [T, D] float32, valid [T] bool, {"padded": label frames padded at the ends,
        "trimmed": stream frames outside the grid}); invalid rows are 0.

    Raises:
        AlignError: no frames, bad times, or coverage beyond ``tolerance_s``.
    """
    values = np.asarray(values, np.float64)
    times = np.asarray(times, np.float64)
    grid = np.asarray(grid_times, np.float64)
    valid = np.ones(len(times), bool) if valid is None else np.asarray(valid, bool)
    if values.ndim != 2 or not len(values) == len(times) == len(valid):
        raise AlignError(f"{path}: expected values [n, D] with n times and n validity flags, got "
                         f"shapes {values.shape}, {times.shape}, {valid.shape}")
    if len(times) == 0:
        raise AlignError(f"{path}: no frames; expected a stream covering the labels of {labels_path}")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise AlignError(f"{path}: frame times must be finite and strictly increasing (seconds)")
    h = label_period(grid, labels_path) if period_s is None else float(period_s)
    if times[0] > grid[0] + tolerance_s or times[-1] < grid[-1] - tolerance_s:
        raise AlignError(f"{path}: frames span {times[0]:.3f} to {times[-1]:.3f} s but the labels "
                         f"{labels_path} span {grid[0]:.3f} to {grid[-1]:.3f} s; expected the stream to "
                         f"cover the labels to within tolerance_s={tolerance_s} s")
    T = len(grid)
    edges = np.append(grid - h / 2, grid[-1] + h / 2) - _EDGE_EPS
    frame_bin = np.searchsorted(edges, times, side="right") - 1  # -1 before the grid, T after it
    inside = (frame_bin >= 0) & (frame_bin < T)
    use = inside & valid
    counts = np.bincount(frame_bin[use], minlength=T)
    sums = np.zeros((T, values.shape[1]))
    np.add.at(sums, frame_bin[use], values[use])
    out = sums / np.maximum(counts, 1)[:, None]
    out_valid = counts > 0
    empty = np.flatnonzero(~out_valid)
    valid_times = times[valid]
    if empty.size and valid_times.size:
        pos = np.searchsorted(valid_times, grid[empty])
        left = np.clip(pos - 1, 0, valid_times.size - 1)
        right = np.clip(pos, 0, valid_times.size - 1)
        nearest = np.where(np.abs(valid_times[right] - grid[empty]) < np.abs(grid[empty] - valid_times[left]),
                           right, left)
        close = np.abs(valid_times[nearest] - grid[empty]) <= tolerance_s + _EDGE_EPS
        out[empty] = np.where(close[:, None], values[valid][nearest], 0.0)
        out_valid[empty] = close
    any_frame = np.bincount(frame_bin[inside], minlength=T) > 0
    padded = int(np.sum(~any_frame & ((grid < times[0]) | (grid > times[-1]))))
    return out.astype(np.float32), out_valid, {"padded": padded, "trimmed": int(np.sum(~inside))}


def align_length(x: np.ndarray, num_frames: int, path: str, gold_path: str) -> np.ndarray:
    """Trims or edge-pads ``x`` [n, ...] to ``num_frames`` when they differ by at most 2 frames
    (RECOLA's feature files are a frame or two off their gold standards at the ends).

    Raises:
        AlignError: a larger difference, naming both files and lengths.
    """
    n = x.shape[0]
    if n == num_frames:
        return x
    if abs(n - num_frames) > MAX_LENGTH_MISMATCH:
        raise AlignError(f"{path} has {n} frames but the gold standard {gold_path} has {num_frames}; "
                         f"expected equal lengths (up to {MAX_LENGTH_MISMATCH} frames are trimmed/padded)")
    log.warning("%s has %d frames, gold standard %d: %s to match", path, n, num_frames,
                "trimmed" if n > num_frames else "edge-padded")
    if n > num_frames:
        return x[:num_frames]
    return np.concatenate([x, np.repeat(x[-1:], num_frames - n, axis=0)], axis=0)


def pool_to_label_frames(values: np.ndarray, centres_s: np.ndarray, num_frames: int,
                         frame_hop_s: float = 0.04) -> np.ndarray:
    """Mean-pools frames at times ``centres_s`` into label frames centred at t * frame_hop_s.

    Label frame t averages the frames whose centres lie in [t*hop - hop/2, t*hop + hop/2); one
    with no such frame (past the end of the audio) copies the nearest filled one (ties: later).

    Args:
        values: [K, D] frame features; centres_s: [K] their centre times in seconds.
        num_frames: label frames wanted; frame_hop_s: label period.

    Returns:
        [num_frames, D] float32.
    """
    values = np.asarray(values, dtype=np.float64)
    edges = (np.arange(num_frames + 1) - 0.5) * frame_hop_s - _EDGE_EPS  # boundary frames go right
    pooled = scipy.stats.binned_statistic(np.asarray(centres_s, dtype=np.float64), values.T,
                                          statistic="mean", bins=edges).statistic.T
    filled = np.flatnonzero(~np.isnan(pooled).any(axis=1))
    if filled.size == 0:
        raise ValueError(f"pool_to_label_frames: no frame falls within the {num_frames} label frames")
    t = np.arange(num_frames)
    pos = np.searchsorted(filled, t)
    left, right = filled[np.maximum(pos - 1, 0)], filled[np.minimum(pos, filled.size - 1)]
    source = np.where(np.abs(t - left) < np.abs(right - t), left, right)
    return pooled[source].astype(np.float32)
