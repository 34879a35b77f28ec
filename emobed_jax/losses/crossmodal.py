"""The EmoBed crossmodal alignment terms on L2-normalised emotion embeddings.

EmoBed pulls the embedding of one modality towards embeddings of *another* modality that carry the
same emotion and pushes it away from those with a different emotion, so that the shared emotion
embedding (and the shared recognition head on top of it) becomes modality-independent. Anchors come
from one modality and candidates from another; `pos`/`neg` matrices (see `mining.py`) say which
anchor-candidate pairs agree in emotion. Two alignment losses are provided: the triplet loss of the
paper (batch-hard or semi-hard mining) and a crossmodal supervised-contrastive (InfoNCE) loss.

Rows may be padding: `anchor_mask`/`cand_mask` (True = real row) remove them from every pair.
A loss with nothing to compare is 0 with zero gradient.
"""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from emobed_jax.losses.mining import MINERS, MINING

DISTANCES = ("euclidean", "squared_euclidean", "cosine")
# `config.loss.direction`: name -> (target anchors vs auxiliary candidates, the reverse).
DIRECTION_TERMS = {"both": (True, True), "target_to_aux": (True, False),
                   "aux_to_target": (False, True)}
DIRECTIONS = tuple(DIRECTION_TERMS)


def _as_float(x) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _rows(x, mask, name: str):
    """Float [N, E] rows with padding zeroed (so NaN padding cannot leak) and a bool [N] mask."""
    x = _as_float(x)
    if x.ndim != 2:
        raise ValueError(f"{name} shape {x.shape}: expected [N, E]")
    mask = jnp.ones(x.shape[:1], bool) if mask is None else jnp.asarray(mask).astype(bool)
    if mask.shape != x.shape[:1]:
        raise ValueError(f"{name} mask shape {mask.shape}: expected ({x.shape[0]},)")
    return jnp.where(mask[:, None], x, 0.0), mask


def _check_pair_matrix(m, n_rows: int, n_cols: int, name: str) -> jax.Array:
    m = jnp.asarray(m).astype(bool)
    if m.shape != (n_rows, n_cols):
        raise ValueError(
            f"{name} shape {m.shape}: expected ({n_rows}, {n_cols}) (anchors x candidates)")
    return m


def l2_normalize(x, eps: float = 1e-12) -> jax.Array:
    """Scales each row to unit L2 norm (an all-zero row stays zero).

    Args:
      x: [..., E].
      eps: lower bound on the squared norm, keeping zero rows finite.

    Returns:
      [..., E].
    """
    x = _as_float(x)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def pairwise_distances(anchors, candidates, distance: str = "euclidean") -> jax.Array:
    """Distances between L2-normalised rows.

    Args:
      anchors: [N, E], already L2-normalised.
      candidates: [M, E], already L2-normalised.
      distance: 'euclidean' (sqrt(2 - 2 cos), in [0, 2]), 'squared_euclidean' (2 - 2 cos) or
        'cosine' (1 - cos).

    Returns:
      [N, M] distances.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r}: expected one of {list(DISTANCES)}")
    cos = anchors @ candidates.T
    if distance == "cosine":
        return 1.0 - cos
    sq = jnp.maximum(2.0 - 2.0 * cos, 0.0)
    if distance == "squared_euclidean":
        return sq
    # The floor keeps the gradient of sqrt finite for identical embeddings.
    return jnp.sqrt(jnp.maximum(sq, 1e-12))


def triplet_loss(anchors, candidates, pos, neg, anchor_mask=None, cand_mask=None,
                 margin: float = 0.2, mining: str = "batch_hard", distance: str = "euclidean"):
    """Crossmodal triplet loss: relu(d(a, p) - d(a, n) + margin) with mined p and n.

    Embeddings are L2-normalised here. A pair marked both positive and negative counts as
    positive only.

    Args:
      anchors: [N, E] embeddings of the anchor modality.
      candidates: [M, E] embeddings of the other modality (positives and negatives).
      pos: bool [N, M] same-emotion pairs.
      neg: bool [N, M] different-emotion pairs.
      anchor_mask: bool [N], True = real row (None = all).
      cand_mask: bool [M], True = real row (None = all).
      margin: triplet margin.
      mining: 'batch_hard' (one triplet per anchor) or 'semi_hard' (one per anchor-positive pair).
      distance: see `pairwise_distances`.

    Returns:
      (loss, metrics): loss is the mean over valid triplets (0 if none); metrics holds float32
      scalars `fraction_active` (share of valid triplets with positive loss), `num_valid_anchors`,
      `num_triplets`, `mean_pos_dist` and `mean_neg_dist`.
    """
    if mining not in MINING:
        raise ValueError(f"mining={mining!r}: expected one of {list(MINING)}")
    anchors, anchor_mask = _rows(anchors, anchor_mask, "anchors")
    candidates, cand_mask = _rows(candidates, cand_mask, "candidates")
    n, m = anchors.shape[0], candidates.shape[0]
    pos = _check_pair_matrix(pos, n, m, "pos")
    neg = _check_pair_matrix(neg, n, m, "neg") & ~pos
    dist = pairwise_distances(l2_normalize(anchors), l2_normalize(candidates), distance)
    valid = anchor_mask[:, None] & cand_mask[None, :]
    d_ap, d_an, ok = MINERS[mining](dist, pos, neg, valid, margin)
    per_triplet = jax.nn.relu(d_ap - d_an + margin)
    num = jnp.sum(ok).astype(dist.dtype)
    denom = jnp.maximum(num, 1.0)

    def mean(x):
        return jnp.sum(jnp.where(ok, x, 0.0)) / denom

    loss = mean(per_triplet)
    metrics = {
        "fraction_active": mean((per_triplet > 0).astype(dist.dtype)),
        "num_valid_anchors": jnp.sum(jnp.any(ok.reshape(n, -1), axis=1)).astype(jnp.float32),
        "num_triplets": num.astype(jnp.float32),
        "mean_pos_dist": mean(d_ap),
        "mean_neg_dist": mean(d_an),
    }
    return loss, metrics


def supervised_contrastive_loss(anchors, candidates, pos, anchor_mask=None, cand_mask=None,
                                temperature: float = 0.1):
    """Crossmodal supervised contrastive (InfoNCE) loss.

    For each anchor: the mean over its positives p of -log softmax_p(cos(a, c) / temperature),
    the softmax running over all valid candidates; averaged over anchors with a positive.

    Args:
      anchors: [N, E] embeddings of the anchor modality.
      candidates: [M, E] embeddings of the other modality.
      pos: bool [N, M] same-emotion pairs.
      anchor_mask: bool [N], True = real row (None = all).
      cand_mask: bool [M], True = real row (None = all).
      temperature: softmax temperature (> 0).

    Returns:
      (loss, metrics): metrics holds float32 scalars `num_valid_anchors` and `top1_positive`
      (share of valid anchors whose most similar valid candidate is a positive).
    """
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature={temperature}: expected > 0")
    anchors, anchor_mask = _rows(anchors, anchor_mask, "anchors")
    candidates, cand_mask = _rows(candidates, cand_mask, "candidates")
    n, m = anchors.shape[0], candidates.shape[0]
    pos = _check_pair_matrix(pos, n, m, "pos") & anchor_mask[:, None] & cand_mask[None, :]
    logits = (l2_normalize(anchors) @ l2_normalize(candidates).T) / temperature
    # A large finite value (not -inf) keeps rows without any valid candidate finite.
    logits = jnp.where(cand_mask[None, :], logits, -1e9)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    num_pos = jnp.sum(pos, axis=1)
    anchor_valid = anchor_mask & (num_pos > 0)
    per_anchor = -jnp.sum(jnp.where(pos, log_p, 0.0), axis=1) / jnp.maximum(num_pos, 1)
    num_valid = jnp.sum(anchor_valid).astype(log_p.dtype)
    denom = jnp.maximum(num_valid, 1.0)
    loss = jnp.sum(jnp.where(anchor_valid, per_anchor, 0.0)) / denom
    best = jnp.argmax(logits, axis=1)
    hit = jnp.take_along_axis(pos, best[:, None], axis=1)[:, 0] & anchor_valid
    metrics = {
        "num_valid_anchors": num_valid.astype(jnp.float32),
        "top1_positive": (jnp.sum(hit) / denom).astype(jnp.float32),
    }
    return loss, metrics


def _crossmodal(pair_loss: Callable, embeddings: Mapping, masks: Mapping | None, target: str,
                pos, neg, direction: str):
    """Runs `pair_loss` for target<->each auxiliary modality and averages the active terms."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r}: expected one of {list(DIRECTIONS)}")
    if target not in embeddings:
        raise ValueError(f"target={target!r} is not among the embeddings {sorted(embeddings)}")
    auxiliaries = [name for name in sorted(embeddings) if name != target]
    if not auxiliaries:
        raise ValueError(f"embeddings has only the target {target!r}; expected an auxiliary "
                         "modality to align with")
    masks = {} if masks is None else masks
    unknown = sorted(set(masks) - set(embeddings))
    if unknown:
        raise ValueError(f"masks has modalities {unknown} that are not among the embeddings")
    pos = jnp.asarray(pos)
    if pos.ndim != 2 or pos.shape[0] != pos.shape[1]:
        raise ValueError(f"pos shape {pos.shape}: expected a square [N, N] batch matrix")
    neg_t = None if neg is None else jnp.asarray(neg).T
    terms = []
    forward, backward = DIRECTION_TERMS[direction]
    for aux in auxiliaries:
        if forward:
            terms.append((target, aux, pos, neg))
        if backward:
            terms.append((aux, target, pos.T, neg_t))
    losses, active, metrics = [], [], {}
    for a_name, c_name, p, q in terms:
        extra = () if q is None else (q,)
        loss, term_metrics = pair_loss(embeddings[a_name], embeddings[c_name], p, *extra,
                                       masks.get(a_name), masks.get(c_name))
        losses.append(loss)
        active.append(term_metrics["num_valid_anchors"] > 0)
        metrics[f"{a_name}_to_{c_name}/loss"] = loss.astype(jnp.float32)
        for key, value in term_metrics.items():
            metrics[f"{a_name}_to_{c_name}/{key}"] = value
    losses, active = jnp.stack(losses), jnp.stack(active)
    num_active = jnp.sum(active).astype(losses.dtype)
    # Averaging only over active terms keeps a modality missing from the whole batch from
    # diluting the others.
    total = jnp.sum(jnp.where(active, losses, 0.0)) / jnp.maximum(num_active, 1.0)
    metrics["num_active_terms"] = num_active.astype(jnp.float32)
    return total, metrics


def crossmodal_triplet_loss(embeddings: Mapping, masks: Mapping | None, target: str, pos, neg,
                            direction: str = "both", margin: float = 0.2,
                            mining: str = "batch_hard", distance: str = "euclidean"):
    """Triplet alignment between the target modality and every auxiliary modality.

    Row i of every modality is the same frame/utterance, so `pos`/`neg` are [N, N] batch matrices
    (row = anchor, column = candidate; transposed for the aux-to-target direction).

    Args:
      embeddings: modality name -> [N, E] embeddings.
      masks: modality name -> bool [N] (True = the modality is present in that row); a modality
        without an entry (or masks=None) counts as fully present.
      target: the modality used at inference.
      pos: bool [N, N] same-emotion pairs.
      neg: bool [N, N] different-emotion pairs.
      direction: 'both', 'target_to_aux' (target anchors, auxiliary candidates) or
        'aux_to_target'.
      margin, mining, distance: as in `triplet_loss`.

    Returns:
      (loss, metrics): loss is the mean over (auxiliary, direction) terms that have a valid
      triplet; metrics has `<anchor>_to_<candidate>/<name>` per term and `num_active_terms`.
    """
    def pair_loss(a, c, p, q, am, cm):
        return triplet_loss(a, c, p, q, am, cm, margin=margin, mining=mining, distance=distance)

    return _crossmodal(pair_loss, embeddings, masks, target, pos, neg, direction)


def crossmodal_supcon_loss(embeddings: Mapping, masks: Mapping | None, target: str, pos,
                           direction: str = "both", temperature: float = 0.1):
    """Supervised-contrastive alignment between the target and every auxiliary modality.

    Args:
      embeddings: modality name -> [N, E] embeddings.
      masks: modality name -> bool [N]; missing entries count as fully present.
      target: the modality used at inference.
      pos: bool [N, N] same-emotion pairs.
      direction: 'both', 'target_to_aux' or 'aux_to_target'.
      temperature: as in `supervised_contrastive_loss`.

    Returns:
      (loss, metrics) as in `crossmodal_triplet_loss`.
    """
    def pair_loss(a, c, p, am, cm):
        return supervised_contrastive_loss(a, c, p, am, cm, temperature=temperature)

    return _crossmodal(pair_loss, embeddings, masks, target, pos, None, direction)


def _align_triplet(embeddings, masks, target, pos, neg, *, direction, margin, mining,
                   temperature):
    del temperature  # a supcon option
    return crossmodal_triplet_loss(embeddings, masks, target, pos, neg, direction, margin, mining)


def _align_supcon(embeddings, masks, target, pos, neg, *, direction, margin, mining, temperature):
    del neg, margin, mining  # triplet options
    return crossmodal_supcon_loss(embeddings, masks, target, pos, direction, temperature)


# `config.loss.align`: name -> alignment term with one signature (embeddings, masks, target, pos,
# neg, *, direction, margin, mining, temperature) -> (loss, metrics), so `objective` need not
# branch on the name. ALIGN_LOSSES is its key tuple, for the config validator.
ALIGN_LOSS_FNS = {"triplet": _align_triplet, "supcon": _align_supcon}
ALIGN_LOSSES = tuple(ALIGN_LOSS_FNS)
