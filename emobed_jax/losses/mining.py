"""Choosing what the crossmodal alignment loss compares: label agreement, triplet mining, frames.

Label agreement turns the batch's labels into boolean [N, M] matrices `pos` (same emotion) and
`neg` (different emotion) between anchor rows and candidate rows, from categories, from a label
distance, or from quantile bins of continuous labels. Mining picks, for each anchor, which positive
and negative enter the triplet loss. `subsample_frames` draws the frames of a sequence batch that
take part (the loss is quadratic/cubic in their number).

All functions except `quantile_edges` (numpy, run once on training labels) are jit-able.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _as_float(x) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _as_2d(labels, name: str) -> jax.Array:
    labels = _as_float(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2:
        raise ValueError(f"{name} shape {labels.shape}: expected [N, K] (or [N])")
    return labels


def positive_matrix_from_classes(anchor_labels, cand_labels) -> jax.Array:
    """Positives are pairs with the same class; labels < 0 (unknown) are never positive.

    Args:
      anchor_labels: int [N] class ids (or bin ids from `quantile_bins`).
      cand_labels: int [M].

    Returns:
      bool [N, M].
    """
    a, c = jnp.asarray(anchor_labels)[:, None], jnp.asarray(cand_labels)[None, :]
    return (a == c) & (a >= 0) & (c >= 0)


def negative_matrix_from_classes(anchor_labels, cand_labels) -> jax.Array:
    """Negatives are pairs with different known classes (labels < 0 are never negative).

    Args:
      anchor_labels: int [N].
      cand_labels: int [M].

    Returns:
      bool [N, M].
    """
    a, c = jnp.asarray(anchor_labels)[:, None], jnp.asarray(cand_labels)[None, :]
    return (a != c) & (a >= 0) & (c >= 0)


def positive_matrix_from_distance(anchor_labels, cand_labels, pos_threshold, neg_threshold):
    """Positives/negatives from the Euclidean distance between continuous label vectors.

    Pairs with distance <= pos_threshold are positive, >= neg_threshold negative, pairs in
    between (and pairs with a non-finite label) neither.

    Args:
      anchor_labels: [N, K] (or [N]) labels, e.g. arousal/valence.
      cand_labels: [M, K] (or [M]).
      pos_threshold: largest label distance of a positive pair.
      neg_threshold: smallest label distance of a negative pair (>= pos_threshold).

    Returns:
      (pos, neg): bool [N, M] each.
    """
    if (isinstance(pos_threshold, (int, float)) and isinstance(neg_threshold, (int, float))
            and pos_threshold > neg_threshold):
        raise ValueError(
            f"pos_threshold={pos_threshold} > neg_threshold={neg_threshold}: expected "
            "pos_threshold <= neg_threshold so that no pair is both positive and negative")
    a = _as_2d(anchor_labels, "anchor_labels")
    c = _as_2d(cand_labels, "cand_labels")
    if a.shape[1] != c.shape[1]:
        raise ValueError(f"anchor_labels {a.shape} and cand_labels {c.shape}: label dims differ")
    dist = jnp.sqrt(jnp.sum((a[:, None, :] - c[None, :, :]) ** 2, axis=-1))
    # NaN compares False on both sides, so a missing label makes a pair neither.
    return dist <= pos_threshold, dist >= neg_threshold


def quantile_edges(train_labels, num_bins: int) -> np.ndarray:
    """Per-dimension quantile bin edges from training labels (numpy; compute once per dataset).

    Args:
      train_labels: [N, K] (or [N]) finite training labels.
      num_bins: bins per dimension (>= 1); edges are the i/num_bins quantiles, i = 1..num_bins-1.

    Returns:
      float32 [K, num_bins - 1] inner edges, ascending per row.
    """
    if not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins={num_bins!r}: expected a positive integer")
    labels = np.asarray(train_labels, dtype=np.float64)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise ValueError(f"train_labels shape {labels.shape}: expected a non-empty [N, K] array")
    bad = ~np.isfinite(labels)
    if bad.any():
        raise ValueError(
            f"train_labels: {int(bad.sum())} non-finite values; expected finite labels "
            "(drop unlabelled rows before computing edges)")
    levels = np.arange(1, num_bins) / num_bins
    return np.quantile(labels, levels, axis=0).T.astype(np.float32).reshape(labels.shape[1], -1)


def quantile_bins(labels, edges) -> jax.Array:
    """Joint bin id of each label vector (mixed radix over dimensions, dimension 0 fastest).

    Dimension k's bin is the number of edges[k] that are <= the label (so values equal to an edge
    go to the upper bin). Feed the ids to `positive_matrix_from_classes`/
    `negative_matrix_from_classes`.

    Args:
      labels: [N, K] (or [N]) labels.
      edges: [K, B - 1] (or [B - 1]) from `quantile_edges`.

    Returns:
      int32 [N] bin ids in [0, B**K), or -1 where a label is not finite.
    """
    labels = _as_2d(labels, "labels")
    edges = _as_float(edges)
    if edges.ndim == 1:
        edges = edges[None, :]
    if edges.ndim != 2 or edges.shape[0] != labels.shape[1]:
        raise ValueError(
            f"edges shape {edges.shape}: expected [K, num_bins - 1] with K={labels.shape[1]}")
    num_bins = edges.shape[1] + 1
    per_dim = jnp.sum(labels[:, :, None] >= edges[None, :, :], axis=-1).astype(jnp.int32)
    radix = (num_bins ** np.arange(labels.shape[1])).astype(np.int32)
    ids = jnp.sum(per_dim * radix, axis=-1)
    return jnp.where(jnp.all(jnp.isfinite(labels), axis=-1), ids, -1)


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
