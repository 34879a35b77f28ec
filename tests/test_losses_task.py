"""Tests for emobed_jax.losses.task: CCC and sequence CCC, MSE, weighted CE, class weights."""
from __future__ import annotations

import audmetric
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from jax.test_util import check_grads

from emobed_jax.losses.task import (
    ccc_loss,
    class_weights_from_counts,
    cross_entropy_loss,
    mse_loss,
    sequence_ccc_loss,
)

# Jitted once: compiling a whole loss is much cheaper than eager op-by-op dispatch, which keeps the
# file fast; `test_jit_matches_eager` checks the eager path gives the same values.
ccc = jax.jit(ccc_loss)
seq_ccc = jax.jit(sequence_ccc_loss)
mse = jax.jit(mse_loss)
ce = jax.jit(cross_entropy_loss)


def _batch(seed=0, b=3, t=20, k=2):
    rng = np.random.default_rng(seed)
    targets = rng.normal(size=(b, t, k)).astype(np.float32)
    predictions = (0.6 * targets + 0.5 * rng.normal(size=(b, t, k)) + 0.2).astype(np.float32)
    mask = rng.random((b, t)) > 0.3
    mask[:, :2] = True  # every sequence keeps at least two valid frames
    return predictions, targets, mask


def test_ccc_known_value():
    x = np.array([[1.0], [2.0], [3.0]], np.float32)
    loss, per_dim = ccc(x + 1.0, x)
    # var = cov = 2/3, mean gap 1: CCC = (4/3) / (2/3 + 2/3 + 1) = 4/7.
    np.testing.assert_allclose(per_dim, [3.0 / 7.0], rtol=1e-6)
    np.testing.assert_allclose(loss, 3.0 / 7.0, rtol=1e-6)
    np.testing.assert_allclose(ccc(x, x)[0], 0.0, atol=1e-6)


def test_ccc_loss_equals_one_minus_float64_ccc():
    predictions, targets, mask = _batch()
    loss, per_dim = ccc(predictions, targets, mask)
    expected = [1.0 - audmetric.concordance_cc(targets[..., k][mask].astype(np.float64),
                                               predictions[..., k][mask].astype(np.float64))
                for k in range(2)]
    np.testing.assert_allclose(per_dim, expected, atol=1e-5)
    np.testing.assert_allclose(loss, np.mean(expected), atol=1e-5)
    assert per_dim.dtype == jnp.float32


def test_ccc_utterance_level_shapes():
    predictions, targets, mask = _batch()
    p, t, m = predictions[:, 0], targets[:, 0], np.array([True, True, False])
    _, per_dim = ccc(p, t, m)
    expected = [1.0 - audmetric.concordance_cc(t[:2, k], p[:2, k]) for k in range(2)]
    np.testing.assert_allclose(per_dim, expected, atol=1e-5)


def test_ccc_ignores_nan_padding_and_gives_it_no_gradient():
    predictions, targets, mask = _batch()
    bad = np.where(mask[..., None], predictions, np.nan).astype(np.float32)
    np.testing.assert_allclose(ccc(bad, targets, mask)[0],
                               ccc(predictions, targets, mask)[0], rtol=1e-6)
    grad = jax.jit(jax.grad(lambda p: ccc_loss(p, targets, mask)[0]))(bad)
    assert np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad)[~mask] == 0.0)
    assert np.any(np.asarray(grad)[mask] != 0.0)


def test_fully_masked_losses_are_zero_with_zero_gradient():
    predictions, targets, _ = _batch()
    mask = np.zeros(predictions.shape[:2], bool)
    for fn in (ccc_loss, sequence_ccc_loss, mse_loss):
        loss, per_dim = jax.jit(fn)(predictions, targets, mask)
        assert float(loss) == 0.0 and np.all(np.asarray(per_dim) == 0.0)
        grad = jax.jit(jax.grad(lambda p, fn=fn: fn(p, targets, mask)[0]))(predictions)
        assert np.all(np.asarray(grad) == 0.0)


def test_constant_predictions_are_finite():
    targets = np.array([[0.1], [0.3], [0.2]], np.float32)
    loss, _ = ccc(np.zeros_like(targets), targets)
    grad = jax.jit(jax.grad(lambda p: ccc_loss(p, targets)[0]))(np.zeros_like(targets))
    np.testing.assert_allclose(loss, 1.0, atol=1e-6)
    assert np.all(np.isfinite(grad)) and np.any(np.asarray(grad) != 0.0)


def test_sequence_ccc_matches_loop_and_skips_empty_sequences():
    predictions, targets, mask = _batch(b=4)
    mask[2] = False  # an all-padding sequence must not count
    loss, per_dim = seq_ccc(predictions, targets, mask)
    expected = np.zeros(2)
    for k in range(2):
        expected[k] = np.mean([1.0 - audmetric.concordance_cc(targets[b, :, k][mask[b]],
                                                              predictions[b, :, k][mask[b]])
                               for b in (0, 1, 3)])
    np.testing.assert_allclose(per_dim, expected, atol=1e-5)
    np.testing.assert_allclose(loss, expected.mean(), atol=1e-5)
    assert not np.allclose(per_dim, ccc(predictions, targets, mask)[1], atol=1e-3)


def test_mse_matches_numpy():
    predictions, targets, mask = _batch()
    loss, per_dim = mse(predictions, targets, mask)
    expected = ((predictions - targets)[mask] ** 2).mean(axis=0)
    np.testing.assert_allclose(per_dim, expected, rtol=1e-5)
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)


def _ce_reference(logits, labels, mask, weights, smoothing):
    """torch.nn.functional.cross_entropy(weight, label_smoothing, reduction='mean') in numpy."""
    keep = mask & (labels >= 0)
    log_p = scipy.special.log_softmax(logits[keep].astype(np.float64), axis=-1)
    y = labels[keep]
    num_classes = logits.shape[-1]
    w = np.ones(num_classes) if weights is None else np.asarray(weights, np.float64)
    wy = w[y]
    nll = np.sum(wy * -log_p[np.arange(len(y)), y]) / wy.sum()
    smooth = np.sum(-(log_p * w).sum(axis=1)) / wy.sum()
    return (1 - smoothing) * nll + smoothing / num_classes * smooth


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 0.25]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch_formula(weights, smoothing):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 5, 4)).astype(np.float32) * 2
    labels = rng.integers(0, 4, size=(3, 5))
    labels[0, 0] = -1  # ignored
    mask = rng.random((3, 5)) > 0.2
    logits[~mask] = np.nan  # padding must not leak
    w = None if weights is None else np.asarray(weights, np.float32)
    loss = ce(logits, labels, mask, w, smoothing)
    np.testing.assert_allclose(loss, _ce_reference(logits, labels, mask, weights, smoothing),
                               rtol=1e-5)


def test_cross_entropy_known_values():
    # Uniform logits: log C without class weights, whatever the smoothing.
    uniform, labels = np.zeros((3, 4)), np.array([0, 1, 3])
    np.testing.assert_allclose(ce(uniform, labels, label_smoothing=0.2),
                               np.log(4.0), rtol=1e-6)
    # With weights [1, 2, 3, 4] torch normalises the smoothing term (sum_c w_c = 10 per element)
    # by sum_i w[y_i] = 7 too: (0.8 * 7 + 0.2 / 4 * 3 * 10) / 7 * log 4.
    loss = ce(uniform, labels, class_weights=np.array([1.0, 2.0, 3.0, 4.0]),
                              label_smoothing=0.2)
    np.testing.assert_allclose(loss, 7.1 / 7.0 * np.log(4.0), rtol=1e-6)
    # One confident correct (loss log(1 + 2e^-2)) and one wrong with weight 3 (log(1 + 2e^2) - ...).
    logits = np.array([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    l_right, l_wrong = np.log(1 + 2 * np.exp(-2.0)), 2.0 + np.log(1 + 2 * np.exp(-2.0))
    loss = ce(logits, np.array([0, 1]), class_weights=np.array([1.0, 3.0, 1.0]))
    np.testing.assert_allclose(loss, (l_right + 3 * l_wrong) / 4, rtol=1e-6)
    assert float(ce(logits, np.array([0, 1]), np.array([False, False]))) == 0.0


def test_cross_entropy_rejects_out_of_range_labels():
    logits = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="labels"):
        cross_entropy_loss(logits, np.array([0, 3]))
    assert np.isnan(ce(logits, jnp.array([0, 3])))
    with pytest.raises(ValueError, match="integer"):
        cross_entropy_loss(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="class_weights"):
        cross_entropy_loss(logits, np.array([0, 1]), class_weights=np.ones(2))


def test_class_weights_from_counts():
    counts = [293, 113, 60, 713, 891, 346, 26]  # OMG-Emotion train
    inv = 1.0 / np.array(counts)
    np.testing.assert_allclose(class_weights_from_counts(counts), inv / inv.mean(), rtol=1e-6)
    sq = 1.0 / np.sqrt(counts)
    np.testing.assert_allclose(class_weights_from_counts(counts, "sqrt_inverse"), sq / sq.mean(),
                               rtol=1e-6)
    np.testing.assert_array_equal(class_weights_from_counts(counts, "none"), np.ones(7))
    w = class_weights_from_counts([10, 0, 30])
    np.testing.assert_allclose(w, [1.5, 0.0, 0.5], rtol=1e-6)
    assert w.dtype == np.float32
    for bad in ([1, -1], [0, 0], [[1, 2]]):
        with pytest.raises(ValueError, match="counts"):
            class_weights_from_counts(bad)
    with pytest.raises(ValueError, match="mode"):
        class_weights_from_counts(counts, "balanced")


def test_shape_errors_name_the_argument():
    predictions, targets, mask = _batch()
    with pytest.raises(ValueError, match="targets shape"):
        ccc_loss(predictions, targets[:, :-1], mask)
    with pytest.raises(ValueError, match="mask shape"):
        mse_loss(predictions, targets, mask[:, :-1])
    with pytest.raises(ValueError, match=r"\[B, T, K\]"):
        sequence_ccc_loss(predictions[:, 0], targets[:, 0], mask[:, 0])


def test_jit_matches_eager():
    predictions, targets, mask = _batch()
    for fn in (ccc_loss, sequence_ccc_loss, mse_loss):
        eager, jitted = fn(predictions, targets, mask), jax.jit(fn)(predictions, targets, mask)
        np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-6)
        np.testing.assert_allclose(jitted[1], eager[1], rtol=1e-6)
    logits, labels = predictions.reshape(-1, 2), (targets[..., 0] > 0).astype(np.int32).reshape(-1)
    args = (logits, labels, mask.reshape(-1), jnp.array([0.7, 1.3]), 0.1)
    np.testing.assert_allclose(jax.jit(cross_entropy_loss)(*args), cross_entropy_loss(*args),
                               rtol=1e-6)


def test_gradients_match_finite_differences():
    predictions, targets, mask = _batch(b=2, t=8)
    with jax.enable_x64(True):
        p, t = jnp.asarray(predictions, jnp.float64), jnp.asarray(targets, jnp.float64)
        for fn in (ccc_loss, sequence_ccc_loss):
            check_grads(jax.jit(lambda x, fn=fn: fn(x, t, mask)[0]), (p,), order=1, modes=("rev",))
        logits = jnp.asarray(np.random.default_rng(2).normal(size=(6, 3)), jnp.float64)
        labels, weights = jnp.array([0, 1, 2, 2, 1, -1]), jnp.array([1.0, 2.0, 0.5])
        check_grads(jax.jit(lambda x: cross_entropy_loss(x, labels, None, weights, 0.1)),
                    (logits,), order=1, modes=("rev",))
