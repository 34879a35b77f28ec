"""The pooled-statistics encoder, the training-only regularisers (frame dropout, feature noise)
and per-group normalisation: exact values against numpy on hand-made masked data, and the
config checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import config as config_lib
from emobed_jax.data import loading
from emobed_jax.models import emobed, pooled


def _masked_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 4)).astype(np.float32)
    mask = np.array([[1, 1, 0, 1, 0, 0],   # frames 0, 1, 3 valid
                     [1, 1, 1, 1, 1, 1],   # all valid
                     [0, 0, 0, 0, 0, 0]],  # none valid
                    np.float32)
    return x, mask


def test_masked_statistics_match_numpy():
    x, mask = _masked_batch()
    got = np.asarray(pooled.masked_statistics(jnp.asarray(x), jnp.asarray(mask),
                                              ("mean", "std", "min", "max")))
    for b in range(2):
        v = x[b][mask[b] > 0]
        want = np.concatenate([v.mean(0), v.std(0), v.min(0), v.max(0)])
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-4)  # std: 1e-8 var floor
    np.testing.assert_array_equal(got[2], np.zeros(16))  # no valid frame: zeros
    only_mean = pooled.masked_statistics(jnp.asarray(x), jnp.asarray(mask), ("mean",))
    assert only_mean.shape == (3, 4)


def test_masked_statistics_ignore_invalid_frame_values_and_are_differentiable():
    x, mask = _masked_batch()
    y = x.copy()
    y[0, 2] = 1e6  # an invalid frame: must not change anything
    a = pooled.masked_statistics(jnp.asarray(x), jnp.asarray(mask), ("mean", "std", "max"))
    b = pooled.masked_statistics(jnp.asarray(y), jnp.asarray(mask), ("mean", "std", "max"))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    const = jnp.ones((1, 5, 2))
    grad = jax.grad(lambda v: pooled.masked_statistics(v, jnp.ones((1, 5)), ("std",)).sum())(const)
    assert np.all(np.isfinite(np.asarray(grad)))


def _model(**kw):
    return emobed.EmoBedModel(modalities=("video",), level="utterance", num_outputs=3,
                              encoder="pooled", hidden=8, num_layers=1, embedding_dim=4, **kw)


def test_pooled_model_outputs_and_training_only_regularisers():
    x, mask = _masked_batch()
    feats, lens, masks = {"video": jnp.asarray(x)}, {"video": jnp.asarray([6, 6, 6])}, \
        {"video": jnp.asarray(mask)}
    model = _model(frame_dropout=0.5, feature_noise=1.0, dropout=0.3)
    params = model.init(jax.random.key(0), feats, lens, masks)["params"]
    assert set(params) == {"encoder_video", "projector_video", "shared_head"}
    emb, out = model.apply({"params": params}, feats, lens, masks)
    assert emb["video"].shape == (3, 4) and out["video"].shape == (3, 3)
    # Evaluation: the regularisers do nothing (same outputs as a model without them).
    _, plain = _model().apply({"params": params}, feats, lens, masks)
    np.testing.assert_array_equal(np.asarray(out["video"]), np.asarray(plain["video"]))
    # Training: they change the outputs, differently per key.
    train = [model.apply({"params": params}, feats, lens, masks, train=True,
                         rngs={"dropout": jax.random.key(k)})[1]["video"] for k in (1, 2)]
    assert not np.allclose(np.asarray(train[0]), np.asarray(plain["video"]))
    assert not np.allclose(np.asarray(train[0]), np.asarray(train[1]))


def test_pooled_encoder_refuses_frame_level():
    x, mask = _masked_batch()
    model = emobed.EmoBedModel(modalities=("video",), level="frame", encoder="pooled")
    with pytest.raises(ValueError, match="pooled.*per frame"):
        model.init(jax.random.key(0), {"video": jnp.asarray(x)}, {"video": jnp.asarray([6] * 3)},
                   {"video": jnp.asarray(mask)})


def test_config_checks():
    c = config_lib.get_base_config()
    c.model.pooled_statistics = ("mean", "median")
    with pytest.raises(ValueError, match="pooled_statistics"):
        config_lib.validate_config(c)
    c = config_lib.get_base_config()
    c.model.feature_noise = -0.1
    with pytest.raises(ValueError, match="feature_noise"):
        config_lib.validate_config(c)
    c = config_lib.get_base_config()
    c.data.normalize = "speaker"
    with pytest.raises(ValueError, match="data.normalize='speaker' is not valid"):
        config_lib.validate_config(c)
    for value in ("global", "group", "none"):
        c = config_lib.get_base_config()
        c.data.normalize = value
        config_lib.validate_config(c)
    # True / False: what runs stored before the names existed hold.
    assert [loading.normalize_mode(v) for v in ("global", True, "group", "none", False)] == \
        ["global", "global", "group", None, None]


def test_pooled_encoder_refused_for_frame_level_dataset():
    c = config_lib.get_base_config()
    c.model.encoder = "pooled"
    info = loading.DatasetInfo(name="d", level="frame", modalities=("audio", "video"),
                               feature_dims={}, class_names=None, splits=("train",), metadata={},
                               label_names=("arousal", "valence"))
    with pytest.raises(ValueError, match="labelled per frame"):
        config_lib.validate_against_dataset(c, info)
    c.model.encoder = "lstm"
    c.data.normalize = "group"
    with pytest.raises(ValueError, match="declares none"):
        config_lib.validate_against_dataset(c, info)


def test_center_groups_matches_numpy():
    rng = np.random.default_rng(1)
    feats = [rng.normal(loc, 1.0, size=(n, 3)).astype(np.float32)
             for loc, n in ((5, 4), (5, 3), (-2, 5), (0, 0))]
    valid = [np.array([1, 0, 1, 1], bool), np.ones(3, bool), np.array([1, 1, 0, 1, 1], bool),
             np.zeros(0, bool)]
    groups = ["a", "a", "b", "c"]
    data = loading.SplitData(names=list("wxyz"), features={"video": [f.copy() for f in feats]},
                             valid={"video": valid}, regression=[np.zeros(0)] * 4,
                             categories=None, extra={"video_id": groups},
                             nonfinite_frames={"video": 0})
    means = loading.center_groups(data, "video_id")
    mean_a = np.concatenate([feats[0][valid[0]], feats[1]]).mean(0)
    mean_b = feats[2][valid[2]].mean(0)
    np.testing.assert_allclose(means["video"]["a"], mean_a, rtol=1e-6)
    np.testing.assert_allclose(data.features["video"][0][valid[0]], feats[0][valid[0]] - mean_a,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.features["video"][1], feats[1] - mean_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.features["video"][2][valid[2]], feats[2][valid[2]] - mean_b,
                               rtol=1e-5, atol=1e-6)
    # Invalid frames are left alone (normalize() zeroes them); a group without frames: no mean.
    np.testing.assert_array_equal(data.features["video"][0][1], feats[0][1])
    assert "c" not in means["video"]
    # After centring, the training statistics have mean 0 and the centred frames' std.
    stats = loading.feature_statistics(data)
    centred = np.concatenate([x[v] for x, v in zip(data.features["video"], valid) if len(x)])
    np.testing.assert_allclose(stats["video"][0], 0.0, atol=1e-5)
    np.testing.assert_allclose(stats["video"][1], centred.std(0), rtol=1e-5)
    with pytest.raises(ValueError, match="group field 'speaker'"):
        loading.center_groups(data, "speaker")
