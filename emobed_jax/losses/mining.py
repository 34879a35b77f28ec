"""Triplet mining and frame subsampling for the crossmodal alignment loss.

Mining picks, for each anchor, which positive and negative enter the triplet loss (`MINING` names
the rules, `config.loss.mining`). `subsample_frames` draws the frames of a sequence batch that take
part (the loss is quadratic/cubic in their number) and `gather_frames` collects them. Which pairs
count as positive/negative at all is decided in `agreement.py`.

All functions are jit-able.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

def mine_batch_hard(dist, pos, neg, valid):
    """Batch-hard mining: the farthest positive and the closest negative of every anchor.

    Args:
      dist: [N, M] anchor-candidate distances.
      pos: bool [N, M] positive pairs.
      neg: bool [N, M] negative pairs.
      valid: bool [N, M] pairs whose anchor and candidate are both real rows.

    Returns:
      (pos_dist [N], neg_dist [N], anchor_valid [N]); anchors without a valid positive or a valid
      negative are invalid and get distances 0.
    """
    pos, neg = pos & valid, neg & valid
    anchor_valid = jnp.any(pos, axis=1) & jnp.any(neg, axis=1)
    pos_dist = jnp.max(jnp.where(pos, dist, -jnp.inf), axis=1)
    neg_dist = jnp.min(jnp.where(neg, dist, jnp.inf), axis=1)
    return (jnp.where(anchor_valid, pos_dist, 0.0), jnp.where(anchor_valid, neg_dist, 0.0),
            anchor_valid)


def mine_semi_hard(dist, pos, neg, valid, margin):
    """Semi-hard mining (FaceNet): one negative for every (anchor, positive) pair.

    For the pair (a, p) the negative is the closest n with d_ap < d_an < d_ap + margin; when no
    such semi-hard negative exists it falls back to the hardest (closest) negative of the anchor.
    (TensorFlow Addons' variant falls back to the farthest negative instead.) Memory is
    O(N * M * M).

    Args:
      dist: [N, M] anchor-candidate distances.
      pos: bool [N, M] positive pairs.
      neg: bool [N, M] negative pairs.
      valid: bool [N, M] pairs whose anchor and candidate are both real rows.
      margin: the triplet margin.

    Returns:
      (pos_dist [N, M], neg_dist [N, M], pair_valid [N, M]); a pair is valid when it is a valid
      positive and its anchor has a valid negative. Invalid pairs get distances 0.
    """
    pos, neg = pos & valid, neg & valid
    has_neg = jnp.any(neg, axis=1)
    d_ap = dist[:, :, None]  # [N, M(positive), 1]
    d_an = dist[:, None, :]  # [N, 1, M(negative)]
    semi = neg[:, None, :] & (d_an > d_ap) & (d_an < d_ap + margin)
    semi_dist = jnp.min(jnp.where(semi, d_an, jnp.inf), axis=-1)
    hardest = jnp.min(jnp.where(neg, dist, jnp.inf), axis=1, keepdims=True)
    neg_dist = jnp.where(jnp.any(semi, axis=-1), semi_dist, hardest)
    pair_valid = pos & has_neg[:, None]
    return (jnp.where(pair_valid, dist, 0.0), jnp.where(pair_valid, neg_dist, 0.0), pair_valid)


def subsample_frames(rng, mask, num_frames: int):
    """Draws up to `num_frames` valid frames of a [B, T] batch uniformly without replacement.

    Args:
      rng: a jax.random key.
      mask: bool [B, T]; True = valid frame.
      num_frames: static number of frames to return.

    Returns:
      (indices int32 [num_frames, 2] of (row, frame), valid bool [num_frames]); when fewer than
      num_frames valid frames exist, the surplus entries are invalid (and point at (0, 0)).
    """
    mask = jnp.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask shape {mask.shape}: expected [B, T]")
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames={num_frames!r}: expected a positive (static) integer")
    batch, length = mask.shape
    flat_mask = mask.reshape(-1)
    k = min(int(num_frames), batch * length)
    # Uniform scores in [0, 1) for valid frames and -1 for padding: the top k are a uniformly
    # random subset of the valid frames, and padding is only taken when valid frames run out.
    scores = jnp.where(flat_mask, jax.random.uniform(rng, flat_mask.shape), -1.0)
    _, flat_idx = jax.lax.top_k(scores, k)
    picked_valid = flat_mask[flat_idx]
    flat_idx = jnp.where(picked_valid, flat_idx, 0)
    pad = num_frames - k
    flat_idx = jnp.concatenate([flat_idx, jnp.zeros((pad,), flat_idx.dtype)]).astype(jnp.int32)
    picked_valid = jnp.concatenate([picked_valid, jnp.zeros((pad,), bool)])
    indices = jnp.stack([flat_idx // length, flat_idx % length], axis=-1)
    return indices, picked_valid


def gather_frames(x, indices) -> jax.Array:
    """Gathers frames picked by `subsample_frames` from a [B, T, ...] array.

    Args:
      x: [B, T, ...] per-frame values (embeddings, labels, masks).
      indices: int [F, 2] of (row, frame).

    Returns:
      [F, ...].
    """
    return jnp.asarray(x)[indices[:, 0], indices[:, 1]]


def _batch_hard_with_margin(dist, pos, neg, valid, margin):
    del margin  # batch-hard mining does not depend on the margin
    return mine_batch_hard(dist, pos, neg, valid)


# `config.loss.mining`: name -> miner (dist, pos, neg, valid, margin) -> (pos_dist, neg_dist,
# valid). MINING is its key tuple, for the config validator.
MINERS = {"batch_hard": _batch_hard_with_margin, "semi_hard": mine_semi_hard}
MINING = tuple(MINERS)
