"""Label-delay compensation on the 40 ms label grid.

Annotators react to what they see and hear with a delay, so features at frame t are trained on
the label at frame t + delay (`shift_labels`), and predictions are mapped back onto the label
time line before scoring or export (`unshift_predictions`). Delays are per label dimension,
configured in seconds (`config.data.label_delay_s`).
"""
from __future__ import annotations

import numpy as np



def delay_frames(config, label_names) -> np.ndarray:
    """Label delays in frames per label dimension, from `config.data.label_delay_s`
    (dimension name -> seconds; a dimension not named there has no delay).

    A non-zero delay for a name that is not one of `label_names` is an error (a misspelt
    dimension would otherwise silently get no delay).
    """
    configured = dict(config.data.label_delay_s)
    stray = sorted(k for k, v in configured.items() if float(v) and k not in label_names)
    if stray:
        raise ValueError(f"config.data.label_delay_s names {stray}, which are not label dimensions "
                         f"of this run; expected names among {list(label_names)}")
    delays = [float(configured.get(k, 0.0)) for k in label_names]
    if any(d < 0 for d in delays):
        raise ValueError(f"config.data.label_delay_s={configured}: expected delays >= 0")
    return np.round(np.asarray(delays, np.float64) * config.data.frame_rate_hz).astype(int)


def shift_labels(labels: np.ndarray, delays: np.ndarray):
    """Delay compensation: features at frame t are trained on the label at t + delay.

    Args:
      labels: `[T, K]` labels.
      delays: `[K]` delays in frames.

    Returns:
      (targets `[T, K]`, valid `[T]` bool): frames whose shifted label falls past the end are
      invalid for every dimension (so one mask serves all dimensions).
    """
    num = len(labels)
    out = np.zeros_like(labels)
    for k, d in enumerate(delays):
        out[: max(num - d, 0), k] = labels[d:, k]
    valid = np.arange(num) < num - int(np.max(delays, initial=0))
    return out, valid


def unshift_predictions(predictions: np.ndarray, delays: np.ndarray) -> np.ndarray:
    """Maps predictions made at frame t for label t + d back onto the label time line.

    The first d label frames have no prediction and take the first one (edge padding), so
    every label frame is scored, as the challenge evaluation does.
    """
    num = len(predictions)
    out = np.empty_like(predictions)
    for k, d in enumerate(delays):
        d = min(int(d), num)
        out[d:, k] = predictions[: num - d, k]
        out[:d, k] = predictions[0, k] if num else 0.0
    return out
