"""AVEC-baseline post-processing of continuous emotion predictions (pure numpy / scipy).

The AVEC 2016 baselines (and e.g. Han et al., "Prediction-based learning for continuous emotion
recognition in speech", ICASSP 2017) improve frame-level predictions with steps fitted on the
training partition and then applied unchanged to every partition:

1. **Median smoothing**, per recording: ``scipy.ndimage.median_filter`` over time with an odd
   window of ``window_frames`` label frames and ``mode='nearest'`` (edge frames repeat, instead of
   the zero padding of ``scipy.signal.medfilt``, which would pull the first and last frames towards
   0). Never smooth across the boundary between two concatenated recordings.
2. **Bias / scale correction**, per dimension k, with moments computed over all training frames
   (population std, ddof=0) of the *training predictions* p and the *training gold standard* g:

   - centre and scale (default): ``y = (x - mean(p)) * std(g) / std(p) + mean(g)``;
   - centre only: ``y = x - mean(p) + mean(g)``;
   - scale only: ``y = (x - mean(p)) * std(g) / std(p) + mean(p)``.

   With both steps the corrected training predictions have exactly the gold mean and std. (The
   AVEC MATLAB baseline adds the bias and then multiplies by the std ratio, which moves the mean
   again; the form above is the affine map that matches both moments.) A dimension whose training
   predictions are constant (std below ``1e-8``) is centred but not scaled, and a warning is logged.

Predictions are ``[T, K]`` arrays (K dimensions, e.g. arousal and valence); 1-D ``[T]`` arrays are
treated as K = 1 and returned 1-D.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import scipy.ndimage

__all__ = ["BiasScaleParams", "median_smooth", "fit_bias_scale", "apply_bias_scale"]

_MIN_STD = 1e-8


@dataclasses.dataclass(frozen=True)
class BiasScaleParams:
    """Moments fitted on the training partition, float64 [K] each.

    Attributes:
        pred_mean: mean of the training predictions.
        pred_std: population std of the training predictions.
        gold_mean: mean of the training gold standard.
        gold_std: population std of the training gold standard.
    """

    pred_mean: np.ndarray
    pred_std: np.ndarray
    gold_mean: np.ndarray
    gold_std: np.ndarray


def _as_2d(x: np.ndarray | Sequence[np.ndarray], what: str) -> np.ndarray:
    """[T] or [T, K] (or a list of those, concatenated over time) -> float64 [T, K]."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"{what}: expected at least one sequence, got an empty list")
        x = np.concatenate([_as_2d(s, what) for s in x], axis=0)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty [T] or [T, K] array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: contains NaN or inf values")
    return x


def median_smooth(pred: np.ndarray, window_frames: int) -> np.ndarray:
    """Median-filters one recording's predictions over time, each dimension separately.

    Args:
        pred: [T, K] (or [T]) predictions of a single recording.
        window_frames: odd window length in label frames; 1 returns the input unchanged.

    Returns:
        Array of pred's shape and dtype (float32 input stays float32).
    """
    if isinstance(window_frames, bool) or int(window_frames) != window_frames or window_frames < 1 \
            or window_frames % 2 == 0:
        raise ValueError(f"median_smooth: window_frames must be an odd positive integer, got "
                         f"{window_frames!r}")
    arr = np.asarray(pred)
    x = _as_2d(arr, "median_smooth pred")
    out = scipy.ndimage.median_filter(x, size=(int(window_frames), 1), mode="nearest")
    out = out.astype(arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64)
    return out[:, 0] if arr.ndim == 1 else out


def fit_bias_scale(train_pred: np.ndarray | Sequence[np.ndarray],
                   train_gold: np.ndarray | Sequence[np.ndarray]) -> BiasScaleParams:
    """Fits the bias/scale correction on training predictions and gold standard.

    Args:
        train_pred: [N, K] training predictions over all training frames, or a list of per
            recording [T_i, K] arrays (concatenated).
        train_gold: the matching gold standard, same shape(s).

    Returns:
        BiasScaleParams with per-dimension moments.
    """
    p = _as_2d(train_pred, "fit_bias_scale train_pred")
    g = _as_2d(train_gold, "fit_bias_scale train_gold")
    if p.shape != g.shape:
        raise ValueError(f"fit_bias_scale: train_pred has shape {p.shape} but train_gold has shape "
                         f"{g.shape}; expected the same frames and dimensions")
    return BiasScaleParams(pred_mean=p.mean(axis=0), pred_std=p.std(axis=0),
                           gold_mean=g.mean(axis=0), gold_std=g.std(axis=0))


def apply_bias_scale(pred: np.ndarray, params: BiasScaleParams, center: bool = True,
                     scale: bool = True) -> np.ndarray:
    """Applies a fitted bias/scale correction (formulas in the module docstring).

    Args:
        pred: [T, K] (or [T] when K = 1) predictions of any partition.
        params: from ``fit_bias_scale``.
        center: move the training-prediction mean onto the training-gold mean.
        scale: stretch deviations by std(gold) / std(pred).

    Returns:
        Corrected predictions, pred's shape, float32 if pred is float32 else float64.
    """
    arr = np.asarray(pred)
    x = _as_2d(arr, "apply_bias_scale pred")
    k = params.pred_mean.shape[0]
    if x.shape[1] != k:
        raise ValueError(f"apply_bias_scale: pred has {x.shape[1]} dimensions but the parameters "
                         f"were fitted on {k}")
    ratio = np.ones(k)
    if scale:
        flat = params.pred_std < _MIN_STD
        if np.any(flat):
            logging.warning("apply_bias_scale: training predictions are constant in dimension(s) "
                            "%s; those are not scaled", np.flatnonzero(flat).tolist())
        ratio = np.where(flat, 1.0, params.gold_std / np.maximum(params.pred_std, _MIN_STD))
    target_mean = params.gold_mean if center else params.pred_mean
    out = (x - params.pred_mean) * ratio + target_mean
    out = out.astype(np.float32 if arr.dtype == np.float32 else np.float64)
    return out[:, 0] if arr.ndim == 1 else out
