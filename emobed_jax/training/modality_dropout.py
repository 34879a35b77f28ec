"""Modality dropout: each auxiliary modality of each training example is dropped with probability p.

A dropped modality is made to look exactly as a missing one does in a batch (`data.batching`:
features 0, length 0, mask 0), so every term that already masks missing auxiliaries (auxiliary
task losses, the crossmodal term, the distillation teacher's presence mask) leaves that example
out for that modality. The target modality is never dropped: it is what inference sees.

The keep mask is drawn for the global batch from the step's key, so training stays a pure
function of (seed, step), and a pmap device takes its own rows of the same draw (the result
equals the jit one).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def keep_mask(rng: jax.Array, batch_size: int, modalities, target: str, rate: float) -> dict:
    """Which (example, modality) pairs are kept.

    Args:
      rng: the step's modality-dropout key.
      batch_size: global batch size B.
      modalities: the batch's modalities, in a fixed order (their order sets the draw's columns).
      target: the target modality (always kept).
      rate: drop probability p in [0, 1).

    Returns:
      modality -> bool [B]; the target's is all True.
    """
    aux = [m for m in modalities if m != target]
    draws = jax.random.bernoulli(rng, 1.0 - rate, (batch_size, max(len(aux), 1)))
    keep = {m: draws[:, i] for i, m in enumerate(aux)}
    keep[target] = jnp.ones((batch_size,), bool)
    return keep


def apply(batch: dict, keep: dict) -> dict:
    """The batch with every dropped (example, modality) made missing.

    Args:
      batch: a batch dict (`features`, `lengths`, `masks` per modality; other keys kept as is).
      keep: modality -> bool [B] (`keep_mask`, rows of this batch).

    Returns:
      A new batch dict (the input is not changed).
    """
    out = dict(batch)
    out["features"] = {m: jnp.where(keep[m][:, None, None], x, 0.0) if m in keep else x
                       for m, x in batch["features"].items()}
    out["lengths"] = {m: jnp.where(keep[m], n, 0).astype(n.dtype) if m in keep else n
                      for m, n in batch["lengths"].items()}
    out["masks"] = {m: jnp.where(keep[m][:, None], x, 0.0).astype(x.dtype) if m in keep else x
                    for m, x in batch["masks"].items()}
    return out


def drop(batch: dict, rng: jax.Array, target: str, rate: float, axis_name=None) -> dict:
    """Draws the keep mask for the global batch and applies it to `batch`.

    Args:
      batch: the global batch (jit) or this device's shard (pmap).
      rng: the step's modality-dropout key (the same on every device).
      target: the target modality.
      rate: drop probability.
      axis_name: the pmap axis name, or None under jit.

    Returns:
      The batch with dropped modalities missing.
    """
    modalities = sorted(batch["features"])
    rows = batch["target_mask"].shape[0]
    if axis_name is None:
        return apply(batch, keep_mask(rng, rows, modalities, target, rate))
    # One draw for the global batch; this device takes its rows, as jit would give it.
    devices = jax.lax.psum(1, axis_name)
    keep = keep_mask(rng, rows * devices, modalities, target, rate)
    start = jax.lax.axis_index(axis_name) * rows
    keep = {m: jax.lax.dynamic_slice_in_dim(k, start, rows) for m, k in keep.items()}
    return apply(batch, keep)
