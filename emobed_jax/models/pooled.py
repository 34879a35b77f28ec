"""The pooled-statistics encoder (`model.encoder='pooled'`): per utterance, statistics of the
valid frames, then an MLP.

On small corpora (a few hundred to a few thousand utterances) a recurrent encoder memorises the
training utterances, while a linear model on per-utterance means and standard deviations of the
frame features generalises (docs/small_corpus.md). This encoder is that recipe inside EmoBed:
its output feeds the modality's projector into the shared embedding space like any encoder's
pooled output, so every method (monomodal, joint, crossmodal, emobed) works with it. It is
utterance level only: it has no per-frame output.

`STATISTICS` lists the statistics `model.pooled_statistics` may name; each is computed per
feature over the frames whose mask is nonzero (an utterance without a valid frame gives zeros).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

STATISTICS = ("mean", "std", "min", "max")
# Added under the square root of the variance: keeps the gradient finite for constant features.
_VAR_EPS = 1e-8


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
        elif name == "max":
            value = jnp.max(jnp.where(valid, x, -jnp.inf), axis=1)
        else:
            raise ValueError(f"model.pooled_statistics names {name!r}; expected names from "
                             f"{list(STATISTICS)}")
        out.append(jnp.where(any_valid, value, 0.0))
    return jnp.concatenate(out, axis=-1)


class PooledEncoder(nn.Module):
    """Masked statistics per utterance, then `num_layers` x (Dense(hidden) + GELU + dropout).

    Attributes:
      hidden: MLP width (`model.hidden`).
      num_layers: MLP depth (`model.num_layers`).
      dropout: dropout after each layer (training only; `model.dropout`).
      statistics: the statistics to pool (`model.pooled_statistics`).
    """

    hidden: int = 64
    num_layers: int = 1
    dropout: float = 0.0
    statistics: Sequence[str] = ("mean", "std")

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
        """Maps `x [B, T, D]` and its frame mask `[B, T]` to one vector `[B, H]` per utterance."""
        h = masked_statistics(x, mask, tuple(self.statistics))
        for i in range(self.num_layers):
            h = nn.gelu(nn.Dense(self.hidden, name=f"dense_{i}")(h))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return h
