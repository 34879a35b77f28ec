"""Evaluation metrics for emotion regression and classification, computed on the host.

These are the numbers reported for RECOLA (AVEC 2016) and OMG-Emotion: Lin's concordance
correlation coefficient (CCC) with population moments, Pearson's r, (R)MSE, and for categories
accuracy, unweighted average recall (UAR) and macro-F1.

CCC is the training loss's own function (``emobed_jax.losses.ccc``, jitted on the host CPU), so the
number optimised and the number reported cannot drift apart; in float32 its error against float64
stays below 1e-6 even for 10^6 frames or values near 100 with a tiny spread (tests/test_metrics.py).
Pearson's r, (R)MSE and the class metrics are numpy float64.

Conventions shared by every function:

* ``predictions`` and ``targets`` (``labels`` and ``predictions`` for classes) must have identical
  shapes, otherwise ``ValueError`` names both shapes. Regression metrics flatten their inputs and
  compute one global value over all valid elements.
* ``mask`` (optional) has the same shape; a nonzero entry marks a valid element. Masked elements
  are dropped before anything is computed, so padding may hold any value, even NaN.
* No valid element at all gives ``nan``. NaN at a *valid* position propagates to a NaN result.
* Degenerate CCC: a side with zero variance contributes zero covariance, so a constant series
  against a varying one gives 0.0 and two different constants give 0.0; two identical constant
  series agree perfectly and give 1.0 (where ``audmetric.concordance_cc`` returns NaN).
* Degenerate Pearson: r is undefined when either side is constant; we return 0.0 (no measurable
  linear association) so logged metrics stay finite and JSON-serialisable.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from emobed_jax.losses.ccc import ccc_rows

__all__ = [
    "ccc", "pearson", "mse", "rmse", "grouped_ccc", "sequence_ccc", "regression_metrics",
    "confusion_matrix", "accuracy", "unweighted_average_recall", "macro_f1",
    "classification_metrics",
]  # fmt: skip


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must match"
        )


def _valid_pair(predictions, targets, mask) -> tuple[np.ndarray, np.ndarray]:
    """Returns the valid elements of both arrays as flat float64 vectors."""
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    _check_same_shape(x, y, "predictions", "targets")
    if mask is None:
        return x.ravel(), y.ravel()
    m = np.asarray(mask)
    _check_same_shape(m, x, "mask", "predictions")
    keep = m.astype(bool).ravel()
    return x.ravel()[keep], y.ravel()[keep]


def _valid_int_pair(labels, predictions, num_classes: int | None, mask):
    """Returns valid labels and predictions as flat int64 vectors, range-checked.

    With ``num_classes=None`` only non-negativity is checked (the metrics size themselves).
    """
    if num_classes is not None and (int(num_classes) != num_classes or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    arrays = []
    for name, values in (("labels", labels), ("predictions", predictions)):
        a = np.asarray(values)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be an integer array of class ids, got dtype {a.dtype}")
        arrays.append(a.astype(np.int64))
    y, p = arrays
    _check_same_shape(y, p, "labels", "predictions")
    y, p = y.ravel(), p.ravel()
    if mask is not None:
        m = np.asarray(mask)
        _check_same_shape(m, np.asarray(labels), "mask", "labels")
        keep = m.astype(bool).ravel()
        y, p = y[keep], p[keep]
    upper = np.inf if num_classes is None else num_classes
    for name, a in (("labels", y), ("predictions", p)):
        bad = (a < 0) | (a >= upper)
        if bad.any():
            raise ValueError(
                f"{name} must lie in [0, {upper}); found {a[bad][0]} "
                f"({int(bad.sum())} out-of-range values)"
            )
    return y, p


def _moments(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float]:
    """Population means, variances and covariance; exactly zero spread for constant inputs.

    A constant vector's float mean can differ from its value in the last bit, which would leave
    a tiny spurious variance; checking the range first keeps the degenerate cases exact.
    """
    mx, my = float(x.mean()), float(y.mean())
    dx = np.zeros_like(x) if np.ptp(x) == 0 else x - mx
    dy = np.zeros_like(y) if np.ptp(y) == 0 else y - my
    return mx, my, float(np.mean(dx * dx)), float(np.mean(dy * dy)), float(np.mean(dx * dy))


def ccc(predictions, targets, mask=None) -> float:
    """Lin's concordance correlation coefficient over all valid elements.

    CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2) with population moments (ddof=0).

    Args:
        predictions, targets: arrays of the same (any) shape.
        mask: optional array of the same shape; nonzero marks a valid element.

    Returns:
        The CCC as a Python float; nan when no element is valid, 1.0 for identical constant
        series, 0.0 when exactly one side is constant or both are different constants.
    """
    x, y = _valid_pair(predictions, targets, mask)
    return float(ccc_rows(x[None], y[None], np.ones((1, x.size), bool))[0])


def pearson(predictions, targets, mask=None) -> float:
    """Pearson's correlation coefficient over all valid elements.

    Args:
        predictions, targets: arrays of the same (any) shape.
        mask: optional array of the same shape; nonzero marks a valid element.

    Returns:
        r as a Python float; nan when no element is valid, 0.0 when either side is constant.
    """
    x, y = _valid_pair(predictions, targets, mask)
    if x.size == 0:
        return float("nan")
    _, _, vx, vy, cov = _moments(x, y)
    if vx == 0.0 or vy == 0.0:
        return 0.0
    # Clip: rounding can push |r| of perfectly linear data a hair above 1.
    return float(np.clip(cov / np.sqrt(vx * vy), -1.0, 1.0))


def mse(predictions, targets, mask=None) -> float:
    """Mean squared error over all valid elements (arguments as for `ccc`; nan if none valid)."""
    x, y = _valid_pair(predictions, targets, mask)
    if x.size == 0:
        return float("nan")
    return float(np.mean((x - y) ** 2))


def rmse(predictions, targets, mask=None) -> float:
    """Root mean squared error over all valid elements (arguments as for `ccc`; nan if none)."""
    return float(np.sqrt(mse(predictions, targets, mask)))


def grouped_ccc(predictions, targets, groups, mask=None) -> float:
    """Mean of per-group CCCs, e.g. per recording (RECOLA) or per video (OMG-Emotion).

    Args:
        predictions: array of shape [N, ...].
        targets: array of the same shape.
        groups: 1-D array of N group ids (any hashable dtype); every element of row i belongs to
            group ``groups[i]``.
        mask: optional array shaped like ``predictions``; nonzero marks a valid element.

    Returns:
        The unweighted mean over groups that have at least one valid element of each group's
        `ccc`; nan when no group has a valid element.
    """
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    _check_same_shape(x, y, "predictions", "targets")
    g = np.asarray(groups)
    if g.ndim != 1 or x.ndim == 0 or g.shape[0] != x.shape[0]:
        raise ValueError(
            f"groups must be 1-D with one id per row of predictions {x.shape}, got shape {g.shape}"
        )
    m = np.ones(x.shape, dtype=bool) if mask is None else np.asarray(mask)
    _check_same_shape(m, x, "mask", "predictions")
    group_ids, group_index = np.unique(g, return_inverse=True)
    # One padded row per group, holding that group's valid elements, so that every group's CCC
    # comes from one call (memory: groups x largest group).
    keep = m.astype(bool)
    element_group = np.broadcast_to(group_index.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape)
    order = np.argsort(element_group[keep], kind="stable")
    xs, ys, gs = x[keep][order], y[keep][order], element_group[keep][order]
    counts = np.bincount(gs, minlength=group_ids.size)
    if not counts.any():
        return float("nan")
    column = np.arange(gs.size) - (np.cumsum(counts) - counts)[gs]
    rows = [np.zeros((group_ids.size, counts.max()), dtype) for dtype in (np.float64, np.float64, bool)]
    for out, values in zip(rows, (xs, ys, True)):
        out[gs, column] = values
    scores = ccc_rows(*rows)
    return float(np.mean(scores[counts > 0]))


def sequence_ccc(predictions, targets, mask=None) -> float:
    """Mean of per-sequence CCCs over a padded batch.

    Args:
        predictions: array [S, T] (S sequences padded to T frames).
        targets: array [S, T].
        mask: optional array [S, T]; nonzero marks a real (non-padding) frame.

    Returns:
        The unweighted mean of the CCCs of rows with at least one valid frame; nan if none has.
    """
    x = np.asarray(predictions)
    if x.ndim != 2:
        raise ValueError(f"predictions must have shape [S, T], got {x.shape}")
    return grouped_ccc(predictions, targets, np.arange(x.shape[0]), mask)


def regression_metrics(
    predictions,
    targets,
    names: Sequence[str] = ("arousal", "valence"),
    mask=None,
    groups=None,
    group_suffix: str = "per_recording",
) -> dict[str, float]:
    """CCC, Pearson's r and RMSE for each regression target, plus their mean CCC.

    Args:
        predictions: array [N, K] (or [..., K]); the last axis holds the K named targets.
        targets: array of the same shape.
        names: K names, used as key suffixes.
        mask: optional validity mask, shaped like ``predictions`` or like ``predictions[..., 0]``
            (then shared by all targets); nonzero marks a valid element.
        groups: optional 1-D array of ids, one per row (first axis) of ``predictions``; adds the
            mean of per-group CCCs.
        group_suffix: suffix of the grouped keys, e.g. ``per_recording`` or ``per_video``.

    Returns:
        A dict of floats with ``ccc_<name>``, ``pearson_<name>``, ``rmse_<name>``, ``ccc_mean``
        and, when groups are given, ``ccc_<name>_<group_suffix>`` and ``ccc_mean_<group_suffix>``.
    """
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    _check_same_shape(x, y, "predictions", "targets")
    names = tuple(names)
    if not names or x.ndim < 2 or x.shape[-1] != len(names):
        raise ValueError(
            f"predictions {x.shape} must be [N, K] with one column per name {names} ({len(names)})"
        )
    if mask is not None:
        m = np.asarray(mask)
        if m.shape == x.shape[:-1]:
            m = np.broadcast_to(m[..., None], x.shape)
        elif m.shape != x.shape:
            raise ValueError(
                f"mask has shape {m.shape}; expected {x.shape} or {x.shape[:-1]} "
                f"for predictions of shape {x.shape}"
            )
    result: dict[str, float] = {}
    global_cccs, grouped_cccs = [], []
    for k, name in enumerate(names):
        mk = None if mask is None else m[..., k]
        global_cccs.append(ccc(x[..., k], y[..., k], mk))
        result[f"ccc_{name}"] = global_cccs[-1]
        result[f"pearson_{name}"] = pearson(x[..., k], y[..., k], mk)
        result[f"rmse_{name}"] = rmse(x[..., k], y[..., k], mk)
        if groups is not None:
            grouped_cccs.append(grouped_ccc(x[..., k], y[..., k], groups, mk))
            result[f"ccc_{name}_{group_suffix}"] = grouped_cccs[-1]
    result["ccc_mean"] = float(np.mean(global_cccs))
    if groups is not None:
        result[f"ccc_mean_{group_suffix}"] = float(np.mean(grouped_cccs))
    return result


def confusion_matrix(labels, predictions, num_classes: int, mask=None) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
        labels: integer array of true class ids in [0, num_classes).
        predictions: integer array of predicted class ids, same shape.
        num_classes: K.
        mask: optional array of the same shape; nonzero marks a valid element.

    Returns:
        int64 array [K, K]; rows are true classes, columns predicted classes.
    """
    y, p = _valid_int_pair(labels, predictions, num_classes, mask)
    k = int(num_classes)
    return np.bincount(y * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def _observed_confusion(labels, predictions, mask) -> np.ndarray:
    """Confusion matrix of the valid elements, sized by the largest class id they contain.

    Masking happens before sizing, so padding values (e.g. -1) never reach the range check.
    """
    y, p = _valid_int_pair(labels, predictions, None, mask)
    k = 1 + int(max(y.max(initial=0), p.max(initial=0)))
    return confusion_matrix(y, p, k)


def _accuracy_from_confusion(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def _uar_from_confusion(cm: np.ndarray) -> float:
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def _macro_f1_from_confusion(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(np.float64)
    denominator = (cm.sum(axis=0) + cm.sum(axis=1)).astype(np.float64)  # = 2 TP + FP + FN
    present = denominator > 0
    if not present.any():
        return float("nan")
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros_like(tp), where=present)
    return float(np.mean(f1[present]))


def accuracy(labels, predictions, mask=None) -> float:
    """Fraction of valid elements whose prediction equals the label.

    Args:
        labels, predictions: integer arrays of non-negative class ids, same shape.
        mask: optional array of the same shape; nonzero marks a valid element.

    Returns:
        Accuracy as a Python float; nan when no element is valid.
    """
    return _accuracy_from_confusion(_observed_confusion(labels, predictions, mask))


def unweighted_average_recall(labels, predictions, mask=None) -> float:
    """Mean per-class recall over the classes present in the valid labels (UAR).

    Classes that occur only among predictions are not averaged over: they have no recall, and
    predicting them already lowers the recall of the true classes. (``audmetric`` by default
    averages over the union of classes, counting such classes as recall 0.)

    Args:
        labels, predictions: integer arrays of non-negative class ids, same shape.
        mask: optional array of the same shape; nonzero marks a valid element.

    Returns:
        UAR as a Python float; nan when no element is valid.
    """
    return _uar_from_confusion(_observed_confusion(labels, predictions, mask))


def macro_f1(labels, predictions, mask=None) -> float:
    """Mean per-class F1 over classes present in the valid labels or predictions.

    F1 = 2 TP / (2 TP + FP + FN), 0/0 counted as 0. Classes absent from both sides are left out,
    so the value does not depend on how many unused classes a label set declares.

    Args:
        labels, predictions: integer arrays of non-negative class ids, same shape.
        mask: optional array of the same shape; nonzero marks a valid element.

    Returns:
        Macro-F1 as a Python float; nan when no element is valid.
    """
    return _macro_f1_from_confusion(_observed_confusion(labels, predictions, mask))


def classification_metrics(labels, logits_or_predictions, num_classes: int, mask=None) -> dict:
    """Accuracy, UAR, macro-F1 and the confusion matrix for categorical predictions.

    Args:
        labels: integer array of class ids, shape [...].
        logits_or_predictions: either scores of shape [..., num_classes] (logits or
            probabilities; the argmax is taken) or integer class ids shaped like ``labels``.
        num_classes: K; labels and predictions must lie in [0, K).
        mask: optional array shaped like ``labels``; nonzero marks a valid element.

    Returns:
        A JSON-serialisable dict: ``accuracy``, ``uar``, ``macro_f1`` (floats, nan without valid
        elements) and ``confusion_matrix`` (K lists of K ints, rows = true classes).
    """
    y = np.asarray(labels)
    scores = np.asarray(logits_or_predictions)
    if scores.shape == y.shape + (num_classes,):
        predictions = np.argmax(scores, axis=-1)
    elif scores.shape == y.shape:
        predictions = scores
    else:
        raise ValueError(
            f"logits_or_predictions has shape {scores.shape}; expected class ids shaped like "
            f"labels {y.shape} or scores of shape {y.shape + (num_classes,)}"
        )
    cm = confusion_matrix(y, predictions, num_classes, mask)
    return {
        "accuracy": _accuracy_from_confusion(cm),
        "uar": _uar_from_confusion(cm),
        "macro_f1": _macro_f1_from_confusion(cm),
        "confusion_matrix": cm.tolist(),
    }
