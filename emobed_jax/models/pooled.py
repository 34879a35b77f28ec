"""The pooled-statistics encoder (`model.encoder='pooled'`): statistics of the valid frames, then
an MLP; one vector per utterance, or per frame over a centred window.

On small corpora (a few hundred to a few thousand utterances) a recurrent encoder memorises the
training utterances, while a linear model on per-utterance means and standard deviations of the
frame features generalises (docs/small_corpus.md). This encoder is that recipe inside EmoBed:
its output feeds the modality's projector into the shared embedding space like any encoder's
output, so every method (monomodal, joint, crossmodal, emobed) works with it.

- Utterance level (`window_frames=None`): `masked_statistics` over the whole utterance, `[B, H]`.
- Frame level (`window_frames=W`, `model.pooled_window_frames`): for every frame t,
  `windowed_statistics` over the valid frames of the centred window of W frames around t, the
  same MLP per frame, `[B, T, H]` and zero at padding, like the LSTM and conv encoders. The
  window reads future frames, so such a model is not causal and cannot stream.

`STATISTICS` lists the statistics `model.pooled_statistics` may name; each is computed per
feature over the frames whose mask is nonzero (no valid frame gives zeros).
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from emobed_jax.models.pooling import length_mask

STATISTICS = ("mean", "std", "min", "max")
# Added under the square root of the variance: keeps the gradient finite for constant features.
_VAR_EPS = 1e-8


def _check_names(statistics: Sequence[str]) -> None:
    unknown = [n for n in statistics if n not in STATISTICS]
    if unknown:
        raise ValueError(f"model.pooled_statistics names {unknown[0]!r}; expected names from "
                         f"{list(STATISTICS)}")


def masked_statistics(x: jax.Array, mask: jax.Array, statistics: Sequence[str]) -> jax.Array:
    """Statistics of `x [B, T, D]` over the frames where `mask [B, T]` is nonzero.

    Args:
      x: frame features.
      mask: 1 for valid frames.
      statistics: names from `STATISTICS`, concatenated in this order.

    Returns:
      `[B, len(statistics) * D]`; zeros for a row without a valid frame. 'std' is the population
      standard deviation (ddof 0) as numpy's `std`, plus a 1e-8 variance floor.
    """
    _check_names(statistics)
    valid = (mask > 0)[..., None]
    w = valid.astype(x.dtype)
    count = jnp.sum(w, axis=1)
    any_valid = count > 0
    count = jnp.maximum(count, 1.0)
    mean = jnp.sum(x * w, axis=1) / count
    out = []
    for name in statistics:
        if name == "mean":
            value = mean
        elif name == "std":
            var = jnp.sum(jnp.square(x - mean[:, None]) * w, axis=1) / count
            value = jnp.sqrt(var + _VAR_EPS)
        elif name == "min":
            value = jnp.min(jnp.where(valid, x, jnp.inf), axis=1)
        else:  # "max"
            value = jnp.max(jnp.where(valid, x, -jnp.inf), axis=1)
        out.append(jnp.where(any_valid, value, 0.0))
    return jnp.concatenate(out, axis=-1)


def window_bounds(window: int) -> tuple[int, int]:
    """(frames before t, frames after t) of the centred window of `window` frames around t.

    An even window has one more frame after t than before, as XLA's 'SAME' padding (the conv
    encoder's centring)."""
    before = (window - 1) // 2
    return before, window - 1 - before


def windowed_statistics(x: jax.Array, mask: jax.Array, statistics: Sequence[str],
                        window: int) -> jax.Array:
    """For every frame t, the statistics of `x [B, T, D]` over the frames of the centred window
    of `window` frames around t (`window_bounds`) where `mask [B, T]` is nonzero.

    Mean and std come from cumulative sums (O(T) for any window), min and max from
    `jax.lax.reduce_window`; the window is clipped at the sequence's ends.

    Args:
      x: frame features.
      mask: 1 for valid frames.
      statistics: names from `STATISTICS`, concatenated in this order.
      window: frames per window (positive; longer than T means the whole sequence everywhere).

    Returns:
      `[B, T, len(statistics) * D]` in `x`'s dtype; zeros at a frame whose window has no valid
      frame. 'std' is the population standard deviation plus a 1e-8 variance floor, as in
      `masked_statistics`, up to float32 rounding of the cumulative sums: about 1e-7 on the
      variance per unit of squared (centred) feature, so ~1e-3 on a window of near-zero variance.
    """
    _check_names(statistics)
    if window <= 0:
        raise ValueError(f"model.pooled_window_frames={window}: expected a positive integer")
    before, after = window_bounds(window)
    t_len = x.shape[1]
    valid = (mask > 0)[..., None]
    # Sums in float32: a bfloat16 cumulative sum loses the window's sum to rounding.
    xf = x.astype(jnp.float32)
    w = valid.astype(jnp.float32)
    # Shifting by the utterance mean leaves mean and variance unchanged but keeps the cumulative
    # sums of squares small, so E[x^2] - E[x]^2 does not cancel catastrophically for features far
    # from zero. Its gradient would be exactly zero in exact arithmetic, hence stop_gradient.
    shift = jax.lax.stop_gradient(jnp.sum(xf * w, axis=1, keepdims=True)
                                  / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0))
    xc = (xf - shift) * w
    hi = jnp.minimum(jnp.arange(t_len) + after + 1, t_len)
    lo = jnp.maximum(jnp.arange(t_len) - before, 0)

    def window_sum(v):
        # c[k] = sum of the first k frames, so the window [lo, hi) sums to c[hi] - c[lo].
        c = jnp.concatenate([jnp.zeros_like(v[:, :1]), jnp.cumsum(v, axis=1)], axis=1)
        return c[:, hi] - c[:, lo]

    count = window_sum(w)
    any_valid = count > 0
    count = jnp.maximum(count, 1.0)
    mean_c = window_sum(xc) / count
    pad = ((0, 0), (before, after), (0, 0))
    out = []
    for name in statistics:
        if name == "mean":
            value = mean_c + shift
        elif name == "std":
            # Rounding can leave a tiny negative variance where the window is constant.
            var = jnp.maximum(window_sum(jnp.square(xc)) / count - jnp.square(mean_c), 0.0)
            value = jnp.sqrt(var + _VAR_EPS)
        elif name == "min":
            value = jax.lax.reduce_window(jnp.where(valid, xf, jnp.inf), jnp.inf, jax.lax.min,
                                          (1, window, 1), (1, 1, 1), pad)
        else:  # "max"
            value = jax.lax.reduce_window(jnp.where(valid, xf, -jnp.inf), -jnp.inf, jax.lax.max,
                                          (1, window, 1), (1, 1, 1), pad)
        out.append(jnp.where(any_valid, value, 0.0))
    return jnp.concatenate(out, axis=-1).astype(x.dtype)


class PooledEncoder(nn.Module):
    """Masked statistics, then `num_layers` x (Dense(hidden) + GELU + dropout).

    Attributes:
      hidden: MLP width (`model.hidden`).
      num_layers: MLP depth (`model.num_layers`).
      dropout: dropout after each layer (training only; `model.dropout`).
      statistics: the statistics to pool (`model.pooled_statistics`).
      window_frames: None: one vector per utterance; else one vector per frame from the centred
        window of this many frames (`model.pooled_window_frames`, frame level).
    """

    hidden: int = 64
    num_layers: int = 1
    dropout: float = 0.0
    statistics: Sequence[str] = ("mean", "std")
    window_frames: Optional[int] = None

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, train: bool = False,
                 lengths: Optional[jax.Array] = None) -> jax.Array:
        """Maps `x [B, T, D]` and its frame mask `[B, T]` to `[B, H]` (utterance level) or to
        `[B, T, H]` (frame level; zero at frames >= `lengths [B]`, which it then needs)."""
        if self.window_frames is None:
            h = masked_statistics(x, mask, tuple(self.statistics))
        else:
            if lengths is None:
                raise ValueError("PooledEncoder at frame level needs `lengths` (it zeroes padding)")
            h = windowed_statistics(x, mask, tuple(self.statistics), self.window_frames)
        for i in range(self.num_layers):
            # Dense acts on the last axis: at frame level the same MLP runs on every frame.
            h = nn.gelu(nn.Dense(self.hidden, name=f"dense_{i}")(h))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        if self.window_frames is not None:
            # The MLP maps zero statistics to gelu(bias) != 0; padding must be zero, as the LSTM's.
            h = h * length_mask(lengths, x.shape[1])[..., None].astype(h.dtype)
        return h
