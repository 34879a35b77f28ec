"""Tests for emobed_jax.postprocess: median smoothing and the bias/scale correction."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from emobed_jax.evaluation.postprocess import apply_bias_scale, fit_bias_scale, median_smooth


def test_median_smooth_known_values_per_dimension():
    pred = np.array([[1, 10], [5, 0], [2, 30], [8, 20], [3, 0]], dtype=np.float32)
    out = median_smooth(pred, 3)
    # Edges repeat the edge value (mode='nearest'): first window is [1, 1, 5] -> 1, not 0.
    np.testing.assert_array_equal(out[:, 0], [1, 2, 5, 3, 3])
    np.testing.assert_array_equal(out[:, 1], [10, 10, 20, 20, 0])
    assert out.dtype == np.float32 and out.shape == pred.shape


def test_median_smooth_1d_identity_and_bad_windows():
    x = np.array([0.0, 4.0, 1.0, 9.0, 2.0, 7.0])
    np.testing.assert_array_equal(median_smooth(x, 1), x)
    np.testing.assert_array_equal(median_smooth(x, 5), [0, 1, 2, 4, 7, 7])
    assert median_smooth(x, 5).ndim == 1
    for bad in (0, 2, 4, 1.5, -3):
        with pytest.raises(ValueError, match="odd positive integer"):
            median_smooth(x, bad)


def test_bias_scale_known_values():
    train_pred = np.array([0.0, 1.0, 2.0, 3.0])
    train_gold = np.array([1.0, 3.0, 5.0, 7.0])  # = 2 * pred + 1: mean 4, std twice pred's
    params = fit_bias_scale(train_pred, train_gold)
    np.testing.assert_allclose(params.pred_mean, [1.5])
    np.testing.assert_allclose(params.gold_std, [2 * np.sqrt(1.25)])  # population std (ddof=0)
    x = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    np.testing.assert_allclose(apply_bias_scale(x, params), [1, 3, 5, 7, 21])
    np.testing.assert_allclose(apply_bias_scale(x, params, scale=False), x - 1.5 + 4.0)
    np.testing.assert_allclose(apply_bias_scale(x, params, center=False), (x - 1.5) * 2 + 1.5)
    np.testing.assert_allclose(apply_bias_scale(x, params, center=False, scale=False), x)


def test_bias_scale_matches_gold_moments_per_dimension_from_recording_lists():
    rng = np.random.default_rng(0)
    preds = [rng.normal(0.2, 0.05, size=(n, 2)) for n in (30, 50)]
    golds = [rng.normal([0.0, -0.1], [0.3, 0.1], size=(n, 2)) for n in (30, 50)]
    params = fit_bias_scale(preds, golds)
    corrected = apply_bias_scale(np.concatenate(preds), params)
    gold = np.concatenate(golds)
    np.testing.assert_allclose(corrected.mean(0), gold.mean(0), atol=1e-12)
    np.testing.assert_allclose(corrected.std(0), gold.std(0), rtol=1e-12)
    assert apply_bias_scale(preds[0].astype(np.float32), params).dtype == np.float32


def test_constant_predictions_are_centred_not_scaled(caplog):
    params = fit_bias_scale(np.full((4, 2), 0.5), np.array([[0, 1], [2, 3], [4, 5], [6, 7.0]]))
    with caplog.at_level(logging.WARNING):
        out = apply_bias_scale(np.array([[0.5, 0.5], [1.5, 0.5]]), params)
    np.testing.assert_allclose(out, [[3, 4], [4, 4]])
    assert "constant" in caplog.text


def test_shape_errors():
    with pytest.raises(ValueError, match="train_pred has shape"):
        fit_bias_scale(np.zeros((4, 2)), np.zeros((5, 2)))
    params = fit_bias_scale(np.arange(8.0).reshape(4, 2), np.arange(8.0).reshape(4, 2))
    with pytest.raises(ValueError, match="fitted on 2"):
        apply_bias_scale(np.zeros((3, 3)), params)
    with pytest.raises(ValueError, match="NaN"):
        fit_bias_scale(np.array([0.0, np.nan]), np.array([0.0, 1.0]))
