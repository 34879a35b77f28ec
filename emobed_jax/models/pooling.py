"""Frame masks and utterance-level pooling over valid frames.

`POOLING` lists the pooling kinds (`model.pooling`): 'mean' (`masked_mean_pool`, no parameters)
and 'attention' (`AttentionPool`). Both ignore frames whose mask is zero entirely.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

POOLING = ("mean", "attention")


def length_mask(lengths: jax.Array, num_frames: int) -> jax.Array:
    """Returns a float mask `[B, T]` that is 1 for frames before each sequence's length."""
    return (jnp.arange(num_frames)[None, :] < lengths[:, None]).astype(jnp.float32)


def masked_mean_pool(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `x [B, T, H]` over frames where `mask [B, T]` is nonzero; zeros for empty rows."""
    mask = mask.astype(x.dtype)[..., None]
    return jnp.sum(x * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


class AttentionPool(nn.Module):
    """Masked attention pooling: softmax over frames of a learned score, weighted sum."""

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """Pools `x [B, T, H]` over valid frames of `mask [B, T]`; returns `[B, H]`."""
        scores = nn.Dense(1, name="score")(jnp.tanh(nn.Dense(x.shape[-1], name="key")(x)))[..., 0]
        valid = mask > 0
        # The dtype's lowest finite value, not -inf (or -1e9, which is -inf in float16): a row
        # with no valid frame then gets uniform weights, zeroed below, instead of NaN.
        scores = jnp.where(valid, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1) * valid  # all-invalid rows pool to zero
        return jnp.einsum("bt,bth->bh", weights, x)


class Pool(nn.Module):
    """Utterance pooling of the kind `kind` (one of `POOLING`).

    Attributes:
      kind: 'mean' or 'attention'.
    """

    kind: str = "mean"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """Pools `x [B, T, H]` over the frames where `mask [B, T]` is nonzero; returns `[B, H]`."""
        if self.kind == "attention":
            return AttentionPool(name="attention")(x, mask)
        if self.kind == "mean":
            return masked_mean_pool(x, mask)
        raise ValueError(f"model.pooling={self.kind!r}: expected one of {list(POOLING)}")
