"""Tests for features.align: the label-grid rule against scipy's binned_statistic and hand means."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from emobed_jax.features import align

H = 0.04
GRID = np.arange(126) * H  # 0 .. 5 s at 25 Hz


def _binned_mean(values, times, grid, h):
    """The reference: scipy's per-bin mean over [t_k - h/2, t_k + h/2)."""
    edges = np.append(grid - h / 2, grid[-1] + h / 2) - 1e-9
    return scipy.stats.binned_statistic(times, values.T, statistic="mean", bins=edges).statistic.T


@pytest.mark.parametrize("rate", [50.0, 100.0, 30.0])
def test_faster_and_30fps_streams_are_the_binned_mean(rate):
    rng = np.random.default_rng(int(rate))
    times = np.arange(int(5 * rate) + 1) / rate
    values = rng.normal(size=(len(times), 3))
    out, valid, counts = align.to_label_grid(values, times, None, GRID)
    expected = _binned_mean(values, times, GRID, H)
    assert not np.isnan(expected).any()  # every label frame has a stream frame at these rates
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert valid.all() and counts == {"padded": 0, "trimmed": 0}


def test_50hz_by_hand():
    # Frames at 0, 0.02, 0.04, ...: label frame 0 = [-0.02, 0.02) holds frame 0 only, frame k >= 1
    # holds frames 2k - 1 and 2k (the one on the lower boundary goes right).
    times = np.arange(11) * 0.02
    values = np.arange(11, dtype=np.float64)[:, None]
    out, valid, _ = align.to_label_grid(values, times, None, np.arange(6) * H)
    np.testing.assert_allclose(out[:, 0], [0, 1.5, 3.5, 5.5, 7.5, 9.5])
    assert valid.all()


def test_10hz_repeats_the_nearest_frame():
    times = np.arange(51) * 0.1
    values = np.arange(51, dtype=np.float64)[:, None]
    out, valid, counts = align.to_label_grid(values, times, None, GRID)
    nearest = np.abs(GRID[:, None] - times[None, :]).argmin(axis=1)  # ties: the earlier frame
    np.testing.assert_allclose(out[:, 0], values[nearest, 0])
    assert valid.all() and counts == {"padded": 0, "trimmed": 0}


def test_masked_frames_are_left_out_of_the_mean():
    times = np.arange(251) * 0.02
    values = np.arange(251, dtype=np.float64)[:, None]
    valid = np.ones(251, bool)
    valid[3] = False  # label frame 2 = frames 3, 4 -> frame 4 alone
    valid[100:200] = False  # 2 s without data: frames beyond 0.5 s of a valid one are masked
    out, out_valid, _ = align.to_label_grid(values, times, valid, GRID)
    assert out[2, 0] == 4.0
    expected = _binned_mean(np.where(valid[:, None], values, np.nan), times, GRID, H)
    pooled = ~np.isnan(expected[:, 0])
    np.testing.assert_allclose(out[pooled], expected[pooled])
    empty = np.flatnonzero(~pooled)  # label frames 50 .. 99 (1.98 .. 3.98 s minus the edges)
    valid_times = times[valid]
    distance = np.abs(GRID[empty, None] - valid_times[None, :]).min(axis=1)
    np.testing.assert_array_equal(out_valid[empty], distance <= 0.5 + 1e-9)
    assert not out_valid[75] and (out[~out_valid] == 0).all()


def test_coverage_within_tolerance_pads_and_trims():
    # 30 fps starting 0.3 s late and running 0.7 s past the labels' end.
    times = 0.3 + np.arange(int(5.4 * 30)) / 30
    values = np.sin(times)[:, None]
    out, valid, counts = align.to_label_grid(values, times, None, GRID)
    assert counts["padded"] == int(np.sum(GRID < times[0] - H / 2 + 1e-9))  # 0.00 .. 0.28 s: 8 frames
    assert counts["padded"] == 8
    assert counts["trimmed"] == int(np.sum(times >= GRID[-1] + H / 2 - 1e-9))
    np.testing.assert_allclose(out[:8, 0], values[0, 0], rtol=1e-6)  # padded by the first frame
    assert valid.all()


def test_coverage_beyond_tolerance_is_refused():
    times = 0.6 + np.arange(100) * 0.04
    with pytest.raises(align.AlignError, match=r"s.csv: frames span 0.600 to 4.560 s but the labels "
                                               r"l.csv span 0.000 to 5.000 s"):
        align.to_label_grid(np.zeros((100, 1)), times, None, GRID, path="s.csv", labels_path="l.csv")
    with pytest.raises(align.AlignError, match="strictly increasing"):
        align.to_label_grid(np.zeros((3, 1)), np.array([0.0, 0.1, 0.1]), None, GRID[:3])


def test_label_period():
    assert align.label_period(GRID) == pytest.approx(H)
    jitter = GRID + np.random.default_rng(0).uniform(-1e-4, 1e-4, GRID.shape)
    assert align.label_period(jitter) == pytest.approx(H, rel=0.01)
    gap = np.delete(GRID, 10)
    with pytest.raises(align.AlignError, match=r"l.csv: label frames 9 and 10 are 0.08 s apart"):
        align.label_period(gap, "l.csv")


def test_pool_to_label_frames_and_align_length():
    centres = 0.01 * np.arange(1, 10)
    values = np.arange(1, 10, dtype=np.float64)[:, None]
    np.testing.assert_allclose(align.pool_to_label_frames(values, centres, 5)[:, 0],
                               [1.0, 3.5, 7.5, 7.5, 7.5])
    x = np.arange(5)[:, None]
    assert align.align_length(x, 7, "f", "g")[-2:, 0].tolist() == [4, 4]
    with pytest.raises(align.AlignError, match="f has 5 frames but the gold standard g has 8"):
        align.align_length(x, 8, "f", "g")
