"""Tests for emobed_jax.metrics: known values, library references, masking and degenerate cases."""

from __future__ import annotations

import json
import math

import audmetric
import numpy as np
import pytest
import scipy.stats

from emobed_jax.evaluation import metrics

# CCC runs in JAX's float32 (emobed_jax.losses.ccc). Each input is rounded once (relative 6e-8)
# after a float64 shift, and the shifted two-pass sums add a few float32 ulps; the largest error
# measured against float64 over n = 10..10^6 and offsets 0..1e4 was 1.0e-7. 1e-6 leaves a 10x
# margin while still catching any real formula error (e.g. sample vs population moments: 1/n).
CCC_TOL = 1e-6


def _ref_ccc(x, y) -> float:
    """Float64 reference straight from the definition (population moments)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------- known values


def test_hand_computed_regression_case():
    # mean 2.5 / 3, var 1.25 / 1.5, cov 1.25 => CCC = 2.5 / (1.25 + 1.5 + 0.25) = 5/6.
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 5.0]
    assert metrics.ccc(x, y) == pytest.approx(0.8333333333333334, abs=CCC_TOL)
    assert metrics.pearson(x, y) == pytest.approx(0.9128709291752769, abs=1e-15)  # sqrt(5/6)
    assert metrics.mse(x, y) == pytest.approx(0.5, abs=1e-15)
    assert metrics.rmse(x, y) == pytest.approx(0.7071067811865476, abs=1e-15)


def test_identical_and_negated(rng):
    x = rng.normal(size=200)
    x -= x.mean()  # negation only gives -1 for zero-mean data
    assert metrics.ccc(x, x) == pytest.approx(1.0, abs=CCC_TOL)
    assert metrics.ccc(x, -x) == pytest.approx(-1.0, abs=CCC_TOL)
    assert metrics.pearson(x, -x) == pytest.approx(-1.0, abs=1e-12)
    assert metrics.rmse(x, x) == 0.0


def test_shifted_and_scaled(rng):
    x = rng.normal(size=500)
    x = (x - x.mean()) / x.std()  # population variance exactly 1
    # Shift by c: CCC = 2 / (2 + c^2); scale by a: CCC = 2a / (1 + a^2); Pearson stays 1.
    assert metrics.ccc(x + 1.0, x) == pytest.approx(2 / 3, abs=CCC_TOL)
    assert metrics.ccc(2.0 * x, x) == pytest.approx(0.8, abs=CCC_TOL)
    assert metrics.pearson(2.0 * x + 3.0, x) == pytest.approx(1.0, abs=1e-12)
    assert metrics.rmse(x + 1.0, x) == pytest.approx(1.0, abs=1e-12)


def test_any_shape_is_flattened(rng):
    x, y = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    assert metrics.ccc(x, y) == pytest.approx(_ref_ccc(x.ravel(), y.ravel()), abs=CCC_TOL)


def test_float32_inputs_with_a_large_offset(rng):
    # A large offset makes naive float32 accumulation lose several digits.
    x = (1e4 + rng.normal(size=10_000)).astype(np.float32)
    y = (x + rng.normal(scale=0.5, size=x.size)).astype(np.float32)
    assert metrics.ccc(x, y) == pytest.approx(_ref_ccc(x, y), abs=CCC_TOL)


@pytest.mark.parametrize("n", [10, 1000, 1_000_000])
@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (100.0, 0.01), (1e4, 1.0)])
def test_ccc_precision_against_float64(n, offset, spread):
    # Values around 100 with a spread of 0.01 keep ~3 significant digits of the spread in a raw
    # float32 value; E[x^2] - E[x]^2 in float32 would lose them all. Up to 10^6 frames, as on
    # a whole RECOLA partition.
    rng = np.random.default_rng(n)
    y = offset + spread * rng.uniform(-1, 1, n)
    x = offset + 0.05 * spread + 0.6 * (y - offset) + rng.normal(scale=0.4 * spread, size=n)
    assert metrics.ccc(x, y) == pytest.approx(_ref_ccc(x, y), abs=CCC_TOL)
    groups = np.arange(n) % 3
    expected = np.mean([_ref_ccc(x[groups == g], y[groups == g]) for g in range(3)])
    assert metrics.grouped_ccc(x, y, groups) == pytest.approx(expected, abs=CCC_TOL)


# ----------------------------------------------------------------------------- library references


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_regression_against_audmetric_and_scipy(seed):
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1, 1, size=1000)
    x = 0.6 * y + rng.normal(scale=0.4, size=y.size) + 0.1
    assert metrics.ccc(x, y) == pytest.approx(audmetric.concordance_cc(y, x), abs=CCC_TOL)
    assert metrics.ccc(x, y) == pytest.approx(_ref_ccc(x, y), abs=CCC_TOL)
    assert metrics.pearson(x, y) == pytest.approx(audmetric.pearson_cc(y, x), abs=1e-12)
    assert metrics.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
    assert metrics.mse(x, y) == pytest.approx(audmetric.mean_squared_error(y, x), abs=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_classification_against_audmetric(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, size=500)  # class 6 never occurs as a label
    preds = np.where(rng.random(500) < 0.4, labels, rng.integers(0, 7, size=500))
    present = sorted(set(labels.tolist()))
    union = sorted(set(labels.tolist()) | set(preds.tolist()))
    assert 6 in union and 6 not in present
    assert metrics.accuracy(labels, preds) == pytest.approx(audmetric.accuracy(labels, preds))
    # audmetric averages over the union of classes (class 6 with recall 0); ours over `present`.
    recall = audmetric.recall_per_class(labels, preds, labels=union)
    assert metrics.unweighted_average_recall(labels, preds) == pytest.approx(
        np.mean([recall[k] for k in present]), abs=1e-12
    )
    assert metrics.unweighted_average_recall(labels, preds) * len(present) == pytest.approx(
        audmetric.unweighted_average_recall(labels, preds) * len(union), abs=1e-12
    )
    assert metrics.macro_f1(labels, preds) == pytest.approx(
        audmetric.unweighted_average_fscore(labels, preds, labels=union), abs=1e-12
    )
    np.testing.assert_array_equal(
        metrics.confusion_matrix(labels, preds, 7),
        audmetric.confusion_matrix(labels, preds, labels=list(range(7))),
    )


def test_hand_computed_classification_case():
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    cm = metrics.confusion_matrix(labels, preds, 4)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert metrics.accuracy(labels, preds) == pytest.approx(0.6)
    assert metrics.unweighted_average_recall(labels, preds) == pytest.approx(0.5)  # (.5+1+0)/3
    # F1 per class: 2/4, 4/5, 0 (class 2 never predicted); class 3 is absent and left out.
    assert metrics.macro_f1(labels, preds) == pytest.approx(1.3 / 3)


# ----------------------------------------------------------------------------- masking and groups


def test_mask_equals_dropping(rng):
    x, y = rng.normal(size=(4, 50)), rng.normal(size=(4, 50))
    mask = rng.random((4, 50)) < 0.7
    x_padded = np.where(mask, x, np.nan)  # padding values must never leak into the result
    for fn in (metrics.ccc, metrics.pearson, metrics.mse, metrics.rmse):
        assert fn(x_padded, y, mask) == pytest.approx(fn(x[mask], y[mask]), abs=1e-12)
    labels, preds = rng.integers(0, 4, size=200), rng.integers(0, 4, size=200)
    cmask = rng.random(200) < 0.5
    labels_padded = np.where(cmask, labels, -1)
    for fn in (metrics.accuracy, metrics.unweighted_average_recall, metrics.macro_f1):
        assert fn(labels_padded, preds, cmask) == pytest.approx(fn(labels[cmask], preds[cmask]))


def test_grouped_ccc_matches_per_group_loop(rng):
    groups = np.array(["b", "a", "c", "a", "b", "c"] * 20)
    x, y = rng.normal(size=groups.size), rng.normal(size=groups.size)
    mask = rng.random(groups.size) < 0.8
    mask[groups == "c"] = False  # a group without valid elements is skipped, not counted as nan
    expected = np.mean([_ref_ccc(x[(groups == g) & mask], y[(groups == g) & mask]) for g in "ab"])
    assert metrics.grouped_ccc(x, y, groups, mask) == pytest.approx(expected, abs=CCC_TOL)


def test_sequence_ccc_skips_empty_rows(rng):
    x, y = rng.normal(size=(3, 40)), rng.normal(size=(3, 40))
    mask = np.ones((3, 40), bool)
    mask[0, 25:] = False
    mask[2] = False
    expected = np.mean([_ref_ccc(x[0, :25], y[0, :25]), _ref_ccc(x[1], y[1])])
    assert metrics.sequence_ccc(x, y, mask) == pytest.approx(expected, abs=CCC_TOL)
    assert math.isnan(metrics.sequence_ccc(x, y, np.zeros((3, 40), bool)))


def test_regression_metrics_keys_and_values(rng):
    x, y = rng.normal(size=(60, 2)), rng.normal(size=(60, 2))
    groups = np.repeat([10, 20, 30], 20)
    mask = rng.random(60) < 0.9  # one mask shared by both targets
    out = metrics.regression_metrics(x, y, mask=mask, groups=groups, group_suffix="per_video")
    assert set(out) == {
        "ccc_arousal", "pearson_arousal", "rmse_arousal", "ccc_arousal_per_video",
        "ccc_valence", "pearson_valence", "rmse_valence", "ccc_valence_per_video",
        "ccc_mean", "ccc_mean_per_video",
    }  # fmt: skip
    assert out["ccc_valence"] == pytest.approx(_ref_ccc(x[mask, 1], y[mask, 1]), abs=CCC_TOL)
    assert out["ccc_mean"] == pytest.approx((out["ccc_arousal"] + out["ccc_valence"]) / 2)
    assert out["ccc_arousal_per_video"] == pytest.approx(
        metrics.grouped_ccc(x[:, 0], y[:, 0], groups, mask), abs=1e-12
    )
    assert all(type(v) is float for v in out.values())
    plain = metrics.regression_metrics(x, y, names=("a", "v"))
    assert set(plain) == {"ccc_a", "pearson_a", "rmse_a", "ccc_v", "pearson_v", "rmse_v", "ccc_mean"}


def test_classification_metrics_from_logits_and_ids():
    labels = np.array([0, 0, 1, 1, 2, 1])
    logits = np.eye(3)[[0, 1, 1, 1, 0, 2]] * 5.0 - 1.0
    mask = np.array([1, 1, 1, 1, 1, 0])
    out = metrics.classification_metrics(labels, logits, 3, mask=mask)
    assert out == metrics.classification_metrics(labels, np.argmax(logits, -1), 3, mask=mask)
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["uar"] == pytest.approx(0.5)
    assert out["macro_f1"] == pytest.approx(1.3 / 3)
    assert out["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert json.loads(json.dumps(out)) == out


# ----------------------------------------------------------------------------- degenerate cases


def test_degenerate_regression_cases():
    assert math.isnan(metrics.ccc([], []))
    assert math.isnan(metrics.ccc([1.0, 2.0], [1.0, 2.0], mask=[0, 0]))
    assert math.isnan(metrics.rmse([1.0], [2.0], mask=[False]))
    assert math.isnan(metrics.grouped_ccc([1.0, 2.0], [1.0, 2.0], [0, 1], mask=[0, 0]))
    const = np.full(5, 0.1)  # 0.1's float mean is not exactly 0.1; still exact results
    assert metrics.ccc(const, const) == 1.0
    assert metrics.ccc(const, const + 1.0) == 0.0
    assert metrics.ccc(const, np.arange(5.0)) == 0.0
    assert metrics.pearson(const, np.arange(5.0)) == 0.0
    assert metrics.pearson(const, const) == 0.0
    assert metrics.ccc([0.5], [0.5]) == 1.0  # a single element is a constant series
    assert math.isnan(metrics.ccc([1.0, np.nan], [1.0, 2.0]))  # NaN at a valid position shows
    assert math.isnan(metrics.accuracy(np.array([], int), np.array([], int)))
    assert math.isnan(metrics.unweighted_average_recall([1, 2], [1, 2], mask=[0, 0]))
    assert math.isnan(metrics.macro_f1(np.array([], int), np.array([], int)))


# ----------------------------------------------------------------------------- bad input


def test_shape_mismatch_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        metrics.ccc(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"mask has shape \(2,\)"):
        metrics.rmse(np.zeros(3), np.zeros(3), mask=np.ones(2))
    with pytest.raises(ValueError, match=r"groups must be 1-D"):
        metrics.grouped_ccc(np.zeros(4), np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match=r"\[S, T\]"):
        metrics.sequence_ccc(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match=r"one column per name"):
        metrics.regression_metrics(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"labels has shape \(2,\) but predictions.*\(3,\)"):
        metrics.accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match=r"scores of shape \(2, 3\)"):
        metrics.classification_metrics(np.array([0, 1]), np.zeros((2, 4)), 3)


def test_bad_class_ids_are_rejected():
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 3\); found 3"):
        metrics.confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, .*found -1"):
        metrics.accuracy([-1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"labels must be an integer array.*float64"):
        metrics.classification_metrics(np.array([0.0, 1.0]), np.array([0, 1]), 2)
