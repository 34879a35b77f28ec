"""Tests for the crossmodal alignment losses and for label agreement, mining and frame sampling."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from jax.test_util import check_grads

from emobed_jax.losses.crossmodal import (
    crossmodal_supcon_loss,
    crossmodal_triplet_loss,
    l2_normalize,
    pairwise_distances,
    supervised_contrastive_loss,
    triplet_loss,
)
from emobed_jax.losses.agreement import (
    negative_matrix_from_classes,
    positive_matrix_from_classes,
    positive_matrix_from_distance,
    quantile_bins,
    quantile_edges,
)
from emobed_jax.losses.mining import gather_frames, mine_semi_hard, subsample_frames

SQ3 = np.sqrt(3.0)

# Jitted once: compiling a whole loss is much cheaper than eager op-by-op dispatch, which keeps the
# file fast; `test_jit_matches_eager` checks the eager path gives the same values.
triplet = jax.jit(triplet_loss, static_argnames=("mining", "distance"))
supcon = jax.jit(supervised_contrastive_loss)
cm_triplet = jax.jit(crossmodal_triplet_loss,
                     static_argnames=("target", "direction", "mining", "distance"))
cm_supcon = jax.jit(crossmodal_supcon_loss, static_argnames=("target", "direction"))


def _at(degrees, scale=1.0):
    """2-D embeddings at the given angles (their Euclidean distance is 2 sin(angle gap / 2))."""
    rad = np.deg2rad(np.asarray(degrees, np.float64))
    return (np.stack([np.cos(rad), np.sin(rad)], -1) * np.asarray(scale)[..., None]).astype(
        np.float32)


def _gap(degrees):
    return 2.0 * np.sin(np.deg2rad(degrees) / 2.0)


# Hand-made batch: audio anchors at 0/60/180/240 deg, video at 60/120/240/300 deg, classes 0,0,1,1.
# Unit vectors 60/120/180 deg apart are 1, sqrt(3), 2 apart. Batch hard per audio anchor:
#   a0: positives {1, sqrt3} -> sqrt3, negatives {sqrt3, 1} -> 1: loss sqrt3 - 1 + 0.2
#   a1: positives {0, 1} -> 1, negatives {2, sqrt3} -> sqrt3: loss 0
#   a2: as a0; a3: as a1.
AUDIO = _at([0, 60, 180, 240], scale=[2.0, 0.5, 1.0, 3.0])  # norms differ: normalised inside
VIDEO = _at([60, 120, 240, 300])
CLASSES = np.array([0, 0, 1, 1])


def _pos_neg(classes=CLASSES):
    return positive_matrix_from_classes(classes, classes), negative_matrix_from_classes(
        classes, classes)


def test_batch_hard_hand_computed():
    pos, neg = _pos_neg()
    loss, metrics = triplet(AUDIO, VIDEO, pos, neg, margin=0.2)
    np.testing.assert_allclose(loss, (SQ3 - 0.8) / 2.0, rtol=1e-5)
    np.testing.assert_allclose(metrics["mean_pos_dist"], (SQ3 + 1) / 2, rtol=1e-5)
    np.testing.assert_allclose(metrics["mean_neg_dist"], (SQ3 + 1) / 2, rtol=1e-5)
    assert float(metrics["fraction_active"]) == 0.5
    assert float(metrics["num_valid_anchors"]) == 4.0 and float(metrics["num_triplets"]) == 4.0


def test_semi_hard_hand_computed_picks():
    # One anchor at 0 deg. Positives at 40, 70, 175 deg; negatives at 10, 50, 100, -150 deg.
    # margin 0.3: positive 40 -> semi-hard negative 50 (in (d40, d40 + 0.3));
    # positive 70 -> none in (d70, d70 + 0.3) (d100 is beyond), so the hardest negative, 10;
    # positive 175 -> nothing farther, hardest negative 10.
    cands = _at([40, 70, 175, 10, 50, 100, -150])
    pos = np.array([[True, True, True, False, False, False, False]])
    neg = ~pos
    dist = jax.jit(lambda a, c: pairwise_distances(l2_normalize(a), l2_normalize(c)))(
        _at([0]), cands)
    np.testing.assert_allclose(dist[0], _gap([40, 70, 175, 10, 50, 100, 150]), rtol=1e-5)
    d_ap, d_an, ok = jax.jit(mine_semi_hard)(dist, pos, neg, np.ones_like(pos), 0.3)
    np.testing.assert_array_equal(ok, pos)
    np.testing.assert_allclose(d_ap[0, :3], _gap([40, 70, 175]), rtol=1e-5)
    np.testing.assert_allclose(d_an[0, :3], _gap([50, 10, 10]), rtol=1e-5)
    loss, metrics = triplet(_at([0]), cands, pos, neg, margin=0.3, mining="semi_hard")
    per_pair = np.maximum(_gap(np.array([40, 70, 175])) - _gap(np.array([50, 10, 10])) + 0.3, 0)
    np.testing.assert_allclose(loss, per_pair.mean(), rtol=1e-5)
    assert float(metrics["num_triplets"]) == 3.0 and float(metrics["num_valid_anchors"]) == 1.0
    # Batch hard on the same anchor: farthest positive 175, closest negative 10.
    loss_bh, _ = triplet(_at([0]), cands, pos, neg, margin=0.3)
    np.testing.assert_allclose(loss_bh, _gap(175) - _gap(10) + 0.3, rtol=1e-5)


def _semi_hard_reference(dist, pos, neg, margin):
    rows = []
    for a in range(dist.shape[0]):
        negs = dist[a][neg[a]]
        for p in np.flatnonzero(pos[a]):
            if negs.size == 0:
                continue
            semi = negs[(negs > dist[a, p]) & (negs < dist[a, p] + margin)]
            d_an = semi.min() if semi.size else negs.min()
            rows.append(max(dist[a, p] - d_an + margin, 0.0))
    return np.mean(rows)


def test_semi_hard_matches_loop_on_random_batch():
    rng = np.random.default_rng(0)
    a, c = rng.normal(size=(12, 8)), rng.normal(size=(12, 8))
    labels = rng.integers(0, 3, size=12)
    pos, neg = _pos_neg(labels)
    loss, _ = triplet(a, c, pos, neg, margin=0.5, mining="semi_hard")
    dist = np.asarray(pairwise_distances(l2_normalize(a), l2_normalize(c)), np.float64)
    np.testing.assert_allclose(loss, _semi_hard_reference(dist, np.asarray(pos), np.asarray(neg),
                                                          0.5), rtol=1e-5)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_masked_rows_are_ignored(mining):
    pos, neg = _pos_neg(np.array([0, 0, 1, 1, 0, 1]))
    pad = np.full((2, 2), np.nan, np.float32)
    audio, video = np.concatenate([AUDIO, pad]), np.concatenate([VIDEO, pad])
    mask = np.array([True] * 4 + [False] * 2)
    ref, _ = triplet(AUDIO, VIDEO, pos[:4, :4], neg[:4, :4], margin=0.2, mining=mining)
    loss, metrics = triplet(audio, video, pos, neg, mask, mask, margin=0.2, mining=mining)
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
    assert float(metrics["num_valid_anchors"]) == 4.0
    grad = jax.jit(jax.grad(
        lambda x: triplet_loss(x, video, pos, neg, mask, mask, mining=mining)[0]))(audio)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[4:] == 0.0)
    # Anchors without any negative are invalid; no valid triplet at all gives 0.
    same = np.ones((4, 4), bool)
    loss, metrics = triplet(AUDIO, VIDEO, same, ~same, mining=mining)
    assert float(loss) == 0.0 and float(metrics["num_valid_anchors"]) == 0.0


def test_crossmodal_triplet_directions_and_inactive_modalities():
    pos, neg = _pos_neg()
    embeddings = {"audio": AUDIO, "video": VIDEO, "ecg": np.ones((4, 2), np.float32)}
    masks = {"ecg": np.zeros(4, bool)}  # ECG missing for the whole batch: must not dilute
    loss, metrics = cm_triplet(embeddings, masks, "audio", pos, neg, margin=0.2)
    # Video anchors (60/120/240/300 deg) against audio: 120 and 300 deg give sqrt3 - 0.8 too.
    np.testing.assert_allclose(metrics["video_to_audio/loss"], (SQ3 - 0.8) / 2, rtol=1e-5)
    np.testing.assert_allclose(loss, (SQ3 - 0.8) / 2, rtol=1e-5)
    assert float(metrics["num_active_terms"]) == 2.0
    assert float(metrics["ecg_to_audio/num_valid_anchors"]) == 0.0
    # The reverse direction uses the transposed matrices.
    rng = np.random.default_rng(3)
    a, v = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    p = rng.random((6, 6)) > 0.5
    _, m = cm_triplet({"audio": a, "video": v}, None, "audio", p, ~p,
                                   direction="aux_to_target")
    assert set(m) == {"video_to_audio/" + k for k in
                      ("loss", "fraction_active", "num_valid_anchors", "num_triplets",
                       "mean_pos_dist", "mean_neg_dist")} | {"num_active_terms"}
    np.testing.assert_allclose(m["video_to_audio/loss"], triplet(v, a, p.T, ~p.T)[0],
                               rtol=1e-6)


def test_supcon_hand_computed_and_reference():
    # Temperature 1: a0=(1,0) sees logits [1, 0] with positive c0; a1=(0,1) sees [0, 1] with
    # positives c0 and c1.
    a, c = _at([0, 90]), _at([0, 90])
    pos = np.array([[True, False], [True, True]])
    loss, metrics = supcon(a, c, pos, temperature=1.0)
    expected = (np.log1p(np.exp(-1.0)) + np.log1p(np.e) - 0.5) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert float(metrics["top1_positive"]) == 1.0
    # Random batch with padded candidates against a numpy reference.
    rng = np.random.default_rng(4)
    a, c = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    pos = rng.random((7, 9)) > 0.6
    am, cm = np.arange(7) < 6, np.arange(9) < 7
    loss, metrics = supcon(a, c, pos, am, cm, temperature=0.1)
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    log_p = scipy.special.log_softmax(an[:6] @ cn[:7].T / 0.1, axis=1)
    per = [-log_p[i][pos[i, :7]].mean() for i in range(6) if pos[i, :7].any()]
    np.testing.assert_allclose(loss, np.mean(per), rtol=1e-5)
    assert float(metrics["num_valid_anchors"]) == len(per)
    total, m = cm_supcon({"audio": a[:7], "video": c[:7]}, None, "audio",
                                      pos[:, :7], temperature=0.1)
    np.testing.assert_allclose(total, (m["audio_to_video/loss"] + m["video_to_audio/loss"]) / 2,
                               rtol=1e-6)


def test_positive_matrices():
    np.testing.assert_array_equal(
        positive_matrix_from_classes(np.array([0, 1, -1]), np.array([1, 0, -1])),
        [[False, True, False], [True, False, False], [False, False, False]])
    np.testing.assert_array_equal(
        negative_matrix_from_classes(np.array([0, -1]), np.array([1, 0, -1])),
        [[True, False, False], [False, False, False]])
    # Label distances: a0 to (0, .05) 0.05, to (.3, .4) 0.5, to (1, 1) sqrt2; a1 to them
    # 1.379, 0.922, 0. Thresholds 0.1 / 0.6.
    pos, neg = positive_matrix_from_distance(
        np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 0.05], [0.3, 0.4], [1.0, 1.0]]),
        0.1, 0.6)
    np.testing.assert_array_equal(pos, [[True, False, False], [False, False, True]])
    np.testing.assert_array_equal(neg, [[False, False, True], [True, True, False]])
    with pytest.raises(ValueError, match="pos_threshold"):
        positive_matrix_from_distance(np.zeros((2, 2)), np.zeros((2, 2)), 0.5, 0.1)


def test_quantile_edges_and_bins():
    edges = quantile_edges(np.arange(100.0), 4)
    np.testing.assert_allclose(edges, [[24.75, 49.5, 74.25]])
    two_d = quantile_edges(np.stack([np.arange(5.0), 10 * np.arange(5.0)], 1), 2)
    np.testing.assert_allclose(two_d, [[2.0], [20.0]])
    labels = np.array([[-1, 0], [1, 0], [-1, 1], [1, 1], [0.0, 0.5], [np.nan, 0]])
    ids = quantile_bins(labels, np.array([[0.0], [0.5]]))
    # dim 0 bins [0,1,0,1,1], dim 1 bins [0,0,1,1,1] (edge values go up); id = b0 + 2 b1.
    np.testing.assert_array_equal(ids, [0, 1, 2, 3, 3, -1])
    with pytest.raises(ValueError, match="non-finite"):
        quantile_edges(np.array([0.0, np.nan]), 2)
    with pytest.raises(ValueError, match="num_bins"):
        quantile_edges(np.zeros(3), 0)
    with pytest.raises(ValueError, match="edges shape"):
        quantile_bins(labels, np.zeros((3, 1)))


def test_subsample_frames():
    mask = np.zeros((3, 5), bool)
    mask[0, :4] = True
    mask[2, 1] = True  # 5 valid frames
    idx, ok = jax.jit(subsample_frames, static_argnums=2)(jax.random.key(0), mask, 3)
    assert idx.shape == (3, 2) and bool(ok.all())
    assert np.all(mask[idx[:, 0], idx[:, 1]]) and len({tuple(i) for i in np.asarray(idx)}) == 3
    idx, ok = subsample_frames(jax.random.key(1), mask, 8)
    np.testing.assert_array_equal(ok, [True] * 5 + [False] * 3)
    assert {tuple(i) for i in np.asarray(idx)[:5]} == {(0, 0), (0, 1), (0, 2), (0, 3), (2, 1)}
    x = np.arange(15.0).reshape(3, 5, 1)
    np.testing.assert_array_equal(gather_frames(x, idx)[:5, 0], x[idx[:5, 0], idx[:5, 1], 0])
    # Uniform: each valid frame is drawn with probability 3/5.
    keys = jax.random.split(jax.random.key(2), 2000)
    draws = jax.jit(jax.vmap(lambda k: subsample_frames(k, mask, 3)[0]))(keys)
    flat = np.asarray(draws[..., 0] * 5 + draws[..., 1]).reshape(-1)
    freq = np.bincount(flat, minlength=15)[mask.reshape(-1)] / 2000
    np.testing.assert_allclose(freq, 0.6, atol=0.05)


def test_bad_arguments_raise():
    pos, neg = _pos_neg()
    with pytest.raises(ValueError, match="mining"):
        triplet_loss(AUDIO, VIDEO, pos, neg, mining="hardest")
    with pytest.raises(ValueError, match="distance"):
        triplet_loss(AUDIO, VIDEO, pos, neg, distance="manhattan")
    with pytest.raises(ValueError, match="pos shape"):
        triplet_loss(AUDIO, VIDEO[:3], pos, neg)
    with pytest.raises(ValueError, match="direction"):
        crossmodal_triplet_loss({"audio": AUDIO, "video": VIDEO}, None, "audio", pos, neg,
                                direction="up")
    with pytest.raises(ValueError, match="target"):
        crossmodal_triplet_loss({"audio": AUDIO, "video": VIDEO}, None, "ecg", pos, neg)
    with pytest.raises(ValueError, match="temperature"):
        supervised_contrastive_loss(AUDIO, VIDEO, pos, temperature=0.0)


def test_jit_matches_eager():
    pos, neg = _pos_neg()
    emb = {"audio": AUDIO, "video": VIDEO}
    for mining in ("batch_hard", "semi_hard"):
        fn = lambda e, p, n, mining=mining: crossmodal_triplet_loss(e, None, "audio", p, n,
                                                                   mining=mining)
        eager, jitted = fn(emb, pos, neg), jax.jit(fn)(emb, pos, neg)
        np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-6)
        for key in eager[1]:
            np.testing.assert_allclose(jitted[1][key], eager[1][key], rtol=1e-6)
    fn = lambda e, p: crossmodal_supcon_loss(e, None, "audio", p)[0]
    np.testing.assert_allclose(jax.jit(fn)(emb, pos), fn(emb, pos), rtol=1e-6)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    labels = np.array([0, 1, 0, 1, 2, 2])
    pos, neg = _pos_neg(labels)
    mask = np.array([True] * 5 + [False])
    with jax.enable_x64(True):
        a = jnp.asarray(rng.normal(size=(6, 3)), jnp.float64)
        c = jnp.asarray(rng.normal(size=(6, 3)), jnp.float64)
        for mining, distance in (("batch_hard", "euclidean"), ("semi_hard", "euclidean"),
                                 ("batch_hard", "cosine")):
            f = jax.jit(lambda x, y, mining=mining, distance=distance: triplet_loss(
                x, y, pos, neg, mask, mask, margin=1.0, mining=mining, distance=distance)[0])
            assert float(f(a, c)) > 0.0
            check_grads(f, (a, c), order=1, modes=("rev",))
        g = jax.jit(lambda x, y: supervised_contrastive_loss(x, y, pos, mask, mask, 0.5)[0])
        check_grads(g, (a, c), order=1, modes=("rev",))
