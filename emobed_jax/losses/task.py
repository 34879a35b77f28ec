"""Recognition-head losses: CCC and MSE for arousal/valence, weighted cross-entropy for categories.

All losses are pure, jit-able JAX functions of arrays. Padding is handled by boolean masks (True =
valid element); masked elements never influence the value or receive gradient, even when they hold
NaN or inf. A loss with no valid element is 0 with zero gradient, so a fully padded batch (or a
device shard without labels) is harmless.

Inputs keep their floating dtype (float32 in training; float64 works under `jax.enable_x64`, which
the gradient tests use); integer inputs are promoted to float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from emobed_jax.losses.ccc import masked_ccc

# `config.loss.class_weights`: name -> the power p of the weight 1/n_c**p that
# `class_weights_from_counts` gives class c (None: every weight 1). CLASS_WEIGHTS is its key tuple.
CLASS_WEIGHT_POWERS = {"inverse": 1.0, "sqrt_inverse": 0.5, "none": None}
CLASS_WEIGHTS = tuple(CLASS_WEIGHT_POWERS)


def _as_float(x) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _regression_inputs(predictions, targets, mask):
    """Validates shapes and returns float predictions/targets and a bool mask [...] ."""
    predictions, targets = _as_float(predictions), _as_float(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions shape {predictions.shape} and targets shape {targets.shape} differ; "
            "expected identical [..., K] shapes")
    if predictions.ndim < 1:
        raise ValueError("predictions: expected shape [..., K] with a trailing label dimension")
    if mask is None:
        mask = jnp.ones(predictions.shape[:-1], bool)
    mask = jnp.asarray(mask).astype(bool)
    if mask.shape != predictions.shape[:-1]:
        raise ValueError(
            f"mask shape {mask.shape} does not match predictions shape {predictions.shape}; "
            f"expected {predictions.shape[:-1]}")
    return predictions, targets, mask


def ccc_loss(predictions, targets, mask=None, eps: float = 1e-8):
    """1 - concordance correlation coefficient, one CCC per label dimension over the whole batch.

    Moments are population moments (ddof = 0) over all valid elements of the batch, as the
    RECOLA/OMG benchmarks compute CCC over a whole partition.

    Args:
      predictions: [..., K] predictions (e.g. [B, T, K] frames or [B, K] utterances).
      targets: [..., K] gold labels, same shape.
      mask: bool [...] (predictions.shape[:-1]); True = valid. None = all valid.
      eps: added to the CCC denominator so constant inputs give CCC 0 instead of NaN.

    Returns:
      (loss, per_dim): scalar mean over K of per_dim, and per_dim [K] = 1 - CCC_k
      (0 for every k when no element is valid).
    """
    predictions, targets, mask = _regression_inputs(predictions, targets, mask)
    k = predictions.shape[-1]
    flat_mask = mask.reshape(-1)
    ccc, count = masked_ccc(predictions.reshape(-1, k), targets.reshape(-1, k), flat_mask,
                             axis=0, eps=eps, exact_constants=False)
    per_dim = jnp.where(count > 0, 1.0 - ccc, 0.0)
    return jnp.mean(per_dim), per_dim


def sequence_ccc_loss(predictions, targets, mask=None, eps: float = 1e-8):
    """1 - CCC computed per sequence, averaged over the sequences that have a valid frame.

    This is the per-recording variant (later AVEC editions report the mean of per-recording
    CCCs). A sequence with a single valid frame has zero variance and so CCC 0 (loss 1).

    Args:
      predictions: [B, T, K] frame predictions.
      targets: [B, T, K] gold labels.
      mask: bool [B, T]; True = valid frame. None = all valid.
      eps: added to each CCC denominator.

    Returns:
      (loss, per_dim): scalar mean over K, and per_dim [K] = mean over valid sequences of
      1 - CCC (0 when no sequence has a valid frame).
    """
    predictions, targets, mask = _regression_inputs(predictions, targets, mask)
    if predictions.ndim != 3:
        raise ValueError(
            f"predictions shape {predictions.shape}: sequence_ccc_loss expects [B, T, K]")
    ccc, count = masked_ccc(predictions, targets, mask, axis=1, eps=eps,
                             exact_constants=False)  # [B, K]
    seq_valid = count > 0
    num_valid = jnp.sum(seq_valid, axis=0).astype(ccc.dtype)
    per_dim = jnp.sum(jnp.where(seq_valid, 1.0 - ccc, 0.0), axis=0) / jnp.maximum(num_valid, 1.0)
    return jnp.mean(per_dim), per_dim


def mse_loss(predictions, targets, mask=None):
    """Mean squared error over valid elements, per label dimension.

    Args:
      predictions: [..., K] predictions.
      targets: [..., K] gold labels.
      mask: bool [...]; True = valid. None = all valid.

    Returns:
      (loss, per_dim): scalar mean over K, and per_dim [K] (0 when no element is valid).
    """
    predictions, targets, mask = _regression_inputs(predictions, targets, mask)
    m = mask[..., None]
    sq = jnp.where(m, predictions - targets, 0.0) ** 2
    axes = tuple(range(predictions.ndim - 1))
    count = jnp.sum(m, axis=axes).astype(sq.dtype)
    per_dim = jnp.sum(sq, axis=axes) / jnp.maximum(count, 1.0)
    return jnp.mean(per_dim), per_dim


def _check_concrete_labels(labels, num_classes: int) -> None:
    """Raises for out-of-range labels when they are concrete (not traced under jit)."""
    if isinstance(labels, jax.core.Tracer):
        return
    values = np.asarray(labels)
    if values.size and values.max() >= num_classes:
        raise ValueError(
            f"labels: found class {int(values.max())} but logits have {num_classes} classes; "
            f"expected labels in [0, {num_classes}) (or < 0 to ignore an element)")


def cross_entropy_loss(logits, labels, mask=None, class_weights=None, label_smoothing: float = 0.0):
    """Softmax cross-entropy with optional class weights and label smoothing (torch semantics).

    Matches `torch.nn.functional.cross_entropy(weight=w, label_smoothing=s, reduction='mean')`:
    the loss is (1 - s) * NLL + (s / C) * SMOOTH, where
    NLL = sum_i w[y_i] * -log p_i[y_i] / sum_i w[y_i] and
    SMOOTH = sum_i sum_c w[c] * -log p_i[c] / sum_i w[y_i], both over valid elements i.
    Without class weights this is the plain mean over valid elements.

    Labels < 0 are ignored (as torch's ignore_index; e.g. OMG rows with no EmotionMaxVote).
    Labels >= C raise ValueError when concrete; under jit they make the loss NaN, never a silently
    wrong value.

    Args:
      logits: [..., C] unnormalised scores.
      labels: int [...] class ids.
      mask: bool [...]; True = valid. None = all valid.
      class_weights: optional [C] non-negative weights (see `class_weights_from_counts`).
      label_smoothing: s in [0, 1].

    Returns:
      Scalar loss (0 when no element is valid or all valid weights are 0).
    """
    logits = _as_float(logits)
    labels = jnp.asarray(labels)
    num_classes = logits.shape[-1]
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels shape {labels.shape} does not match logits shape {logits.shape}; "
            f"expected {logits.shape[:-1]}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels: expected an integer dtype, got {labels.dtype}")
    if isinstance(label_smoothing, (int, float)) and not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing={label_smoothing}: expected a value in [0, 1]")
    _check_concrete_labels(labels, num_classes)
    if mask is None:
        mask = jnp.ones(labels.shape, bool)
    mask = jnp.asarray(mask).astype(bool)
    if mask.shape != labels.shape:
        raise ValueError(f"mask shape {mask.shape} does not match labels shape {labels.shape}")

    valid = mask & (labels >= 0)
    too_large = jnp.any(valid & (labels >= num_classes))
    safe_labels = jnp.clip(labels, 0, num_classes - 1)
    log_p = jax.nn.log_softmax(jnp.where(valid[..., None], logits, 0.0), axis=-1)
    nll = -jnp.take_along_axis(log_p, safe_labels[..., None], axis=-1)[..., 0]
    if class_weights is None:
        weights_c = jnp.ones((num_classes,), log_p.dtype)
    else:
        weights_c = _as_float(class_weights)
        if weights_c.shape != (num_classes,):
            raise ValueError(
                f"class_weights shape {weights_c.shape}: expected ({num_classes},) to match logits")
    w = jnp.where(valid, weights_c[safe_labels], 0.0)
    smooth = -jnp.sum(log_p * weights_c, axis=-1)
    total_w = jnp.sum(w)
    numerator = ((1.0 - label_smoothing) * jnp.sum(w * nll)
                 + (label_smoothing / num_classes) * jnp.sum(jnp.where(valid, smooth, 0.0)))
    loss = jnp.where(total_w > 0, numerator / jnp.where(total_w > 0, total_w, 1.0), 0.0)
    return jnp.where(too_large, jnp.nan, loss)


def class_weights_from_counts(counts, mode: str = "inverse") -> np.ndarray:
    """Class weights from training-set class counts, normalised to mean 1 over present classes.

    Args:
      counts: [C] non-negative class counts (e.g. OMG train 293/113/60/713/891/346/26).
      mode: 'inverse' (1/n_c), 'sqrt_inverse' (1/sqrt(n_c)) or 'none' (all ones).

    Returns:
      float32 [C] weights; classes with count 0 get weight 0 (they never occur as labels) except
      in mode 'none'.
    """
    if mode not in CLASS_WEIGHTS:
        raise ValueError(f"mode={mode!r}: expected one of {list(CLASS_WEIGHTS)}")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts shape {counts.shape}: expected a non-empty 1-D array [C]")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"counts={counts.tolist()}: expected finite non-negative class counts")
    power = CLASS_WEIGHT_POWERS[mode]
    if power is None:
        return np.ones(counts.shape, np.float32)
    present = counts > 0
    if not present.any():
        raise ValueError("counts: every class count is 0; expected at least one present class")
    raw = np.where(present, 1.0 / np.where(present, counts, 1.0) ** power, 0.0)
    return (raw / raw[present].mean()).astype(np.float32)


# `config.loss.regression`: name -> loss (predictions, targets, mask) -> (loss, per_dim) of the
# arousal/valence heads. REGRESSION_LOSSES is its key tuple, for the config validator.
REGRESSION_LOSS_FNS = {"ccc": ccc_loss, "sequence_ccc": sequence_ccc_loss, "mse": mse_loss}
REGRESSION_LOSSES = tuple(REGRESSION_LOSS_FNS)
