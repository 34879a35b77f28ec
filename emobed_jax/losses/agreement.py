"""Label agreement: which anchor-candidate pairs of a batch carry the same emotion.

Turns the batch's labels into boolean [N, M] matrices `pos` (same emotion) and `neg` (different
emotion) between anchor rows and candidate rows, from categories (`class`), from a label distance
(`distance`) or from quantile bins of continuous labels (`bins`); or, needing no label, from the
instance itself (`instance`: the same frame or utterance in two modalities). `PAIR_RULES` maps each rule's name
(`config.loss.positives`; `POSITIVES` is the tuple of names) to its (pos, neg) builder.

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


def pairs_from_classes(labels) -> tuple[jax.Array, jax.Array]:
    """(pos, neg) [N, N] of a batch with itself from int [N] class ids (< 0 = unknown)."""
    labels = jnp.asarray(labels).astype(jnp.int32)
    return positive_matrix_from_classes(labels, labels), negative_matrix_from_classes(labels, labels)


def pairs_from_distance(labels, pos_threshold, neg_threshold) -> tuple[jax.Array, jax.Array]:
    """(pos, neg) [N, N] of a batch with itself by label distance (`positive_matrix_from_distance`)."""
    return positive_matrix_from_distance(labels, labels, pos_threshold, neg_threshold)


def pairs_from_instances(num: int) -> tuple[jax.Array, jax.Array]:
    """(pos, neg) [N, N] needing no label: a row is positive only with itself (the same frame or
    utterance seen in another modality) and negative with every other row."""
    same = jnp.eye(num, dtype=bool)
    return same, ~same


def pairs_from_bins(labels, edges) -> tuple[jax.Array, jax.Array]:
    """(pos, neg) [N, N] of a batch with itself: same joint quantile bin (`quantile_bins`) or not."""
    return pairs_from_classes(quantile_bins(labels, edges))


# `config.loss.positives`: name -> (labels, *, edges, pos_threshold, neg_threshold) -> (pos, neg)
# [N, N] of a batch with itself. POSITIVES is its key tuple, for the config validator.
PAIR_RULES = {
    "bins": lambda labels, *, edges, pos_threshold, neg_threshold: pairs_from_bins(labels, edges),
    "distance": lambda labels, *, edges, pos_threshold, neg_threshold: pairs_from_distance(
        labels, pos_threshold, neg_threshold),
    "class": lambda labels, *, edges, pos_threshold, neg_threshold: pairs_from_classes(labels),
    "instance": lambda labels, *, edges, pos_threshold, neg_threshold: pairs_from_instances(
        labels.shape[0]),
}
POSITIVES = tuple(PAIR_RULES)
