"""The pooled-statistics encoder (per utterance and per frame window), the training-only
regularisers (frame dropout, feature noise) and per-group normalisation: exact values against
numpy on hand-made masked data, and the config checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import config as config_lib
from emobed_jax.data import loading
from emobed_jax.models import emobed, pooled, pooling


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


def _windowed_numpy(x, mask, window):
    """The plain loop `pooled.windowed_statistics` must match: mean, std, min, max per frame."""
    before, after = pooled.window_bounds(window)
    b_len, t_len, d = x.shape
    out = np.zeros((b_len, t_len, 4 * d), np.float64)
    for b in range(b_len):
        for t in range(t_len):
            lo, hi = max(0, t - before), min(t_len, t + after + 1)
            v = x[b, lo:hi][mask[b, lo:hi] > 0].astype(np.float64)
            if len(v):
                out[b, t] = np.concatenate([v.mean(0), np.sqrt(v.var(0) + 1e-8), v.min(0),
                                            v.max(0)])
    return out


@pytest.mark.parametrize("window", [1, 2, 3, 4, 7, 50])  # odd, even, longer than T=9
def test_windowed_statistics_match_numpy_loop(window):
    rng = np.random.default_rng(window)
    x = (rng.normal(size=(3, 9, 2)) + 5.0).astype(np.float32)  # off-centre: cumsum cancellation
    mask = np.ones((3, 9), np.float32)
    mask[0, [2, 3, 4, 5, 6]] = 0   # a gap wider than small windows: those frames give zeros
    mask[1, [0, 8]] = 0            # invalid frames at both edges
    mask[2] = 0                    # nothing valid
    x[mask == 0] = 0.0             # as the pipeline passes them
    got = np.asarray(pooled.windowed_statistics(jnp.asarray(x), jnp.asarray(mask),
                                                pooled.STATISTICS, window))
    assert got.shape == (3, 9, 8)
    want = _windowed_numpy(x, mask, window)
    # std from float32 cumulative sums: var = E[x^2] - E[x]^2 carries ~1e-7 rounding, which the
    # square root lifts to ~5e-4 where the window's variance is ~0 (one valid frame).
    exact = np.r_[0:2, 4:8]
    np.testing.assert_allclose(got[..., exact], want[..., exact], rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(got[..., 2:4], want[..., 2:4], rtol=1e-5, atol=1e-3)
    if window == 1:
        np.testing.assert_array_equal(got[0, 4], np.zeros(8))  # all-masked window: zeros
    if window == 50:  # wider than the sequence: every frame sees the whole utterance
        whole = np.asarray(pooled.masked_statistics(jnp.asarray(x), jnp.asarray(mask),
                                                    pooled.STATISTICS))
        np.testing.assert_allclose(got, np.broadcast_to(whole[:, None], got.shape), rtol=1e-5,
                                   atol=1e-3)
    # Invalid frames' values are ignored.
    y = x.copy()
    y[0, 3] = 1e3
    other = pooled.windowed_statistics(jnp.asarray(y), jnp.asarray(mask), ("mean", "max"), window)
    np.testing.assert_allclose(np.asarray(other), got[..., [0, 1, 6, 7]], rtol=1e-6, atol=1e-6)


def test_windowed_statistics_gradient_finite_for_constant_features():
    const, mask = jnp.full((1, 6, 2), 3.0), jnp.asarray([[1, 1, 0, 1, 1, 0]], jnp.float32)
    grad = jax.jit(jax.grad(
        lambda v: pooled.windowed_statistics(v, mask, pooled.STATISTICS, 3).sum()))(const)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_pooled_encoder_per_frame_matches_lstm_interface():
    x, mask = _masked_batch()
    lens = jnp.asarray([4, 6, 0])
    feats, lengths, masks = {"video": jnp.asarray(x)}, {"video": lens}, {"video": jnp.asarray(mask)}
    model = emobed.EmoBedModel(modalities=("video",), level="frame", encoder="pooled", hidden=8,
                               num_layers=2, embedding_dim=4, pooled_window_frames=3)
    (emb, out), variables = jax.jit(model.init_with_output)(jax.random.key(0), feats, lengths,
                                                              masks)
    params = variables["params"]
    assert set(params) == {"encoder_video", "projector_video", "shared_head"}
    h = pooled.PooledEncoder(hidden=8, num_layers=2, window_frames=3).apply(
        {"params": params["encoder_video"]}, feats["video"], masks["video"], False, lens)
    assert h.shape == (3, 6, 8)
    np.testing.assert_array_equal(np.asarray(h[0, 4:]), 0.0)  # zero at padding, as the LSTM
    np.testing.assert_array_equal(np.asarray(h[2]), 0.0)
    assert emb["video"].shape == (3, 6, 4) and out["video"].shape == (3, 6, 2)
    causal = emobed.EmoBedModel(modalities=("video",), level="frame", encoder="pooled",
                                bidirectional=False, causal=True)
    with pytest.raises(ValueError, match="centred window reads future frames"):
        causal.init(jax.random.key(0), feats, lengths, masks)


def test_pooled_encoder_end_to_end_on_synthetic_config():
    from configs import synthetic

    c = synthetic.get_config("monomodal,audio")
    c.model.encoder = "pooled"
    config_lib.validate_config(c)
    info = loading.DatasetInfo(name="synthetic_emotion", level="frame",
                               modalities=("audio", "video"), feature_dims={"audio": 40},
                               class_names=None, splits=("train",), metadata={},
                               label_names=("arousal", "valence"))
    config_lib.validate_against_dataset(c, info)  # pooled is no longer refused per frame
    model = emobed.model_from_config(c, level="frame", num_outputs=2)
    assert model.pooled_window_frames == c.model.pooled_window_frames == 50
    t_len = c.data.window_frames
    x = jax.random.normal(jax.random.key(0), (2, t_len, 40))
    feats, lengths = {"audio": x}, {"audio": jnp.asarray([t_len, 60])}
    masks = {"audio": pooling.length_mask(lengths["audio"], t_len)}
    # jit: one compilation is faster here than dispatching every op eagerly.
    (emb, out), _ = jax.jit(model.init_with_output)(jax.random.key(0), feats, lengths, masks)
    assert emb["audio"].shape == (2, t_len, c.model.embedding_dim)
    assert out["audio"].shape == (2, t_len, 2)
    c.model.pooled_window_frames = 0
    with pytest.raises(ValueError, match="pooled_window_frames"):
        config_lib.validate_config(c)


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


def test_group_normalisation_refused_without_groups():
    c = config_lib.get_base_config()
    info = loading.DatasetInfo(name="d", level="frame", modalities=("audio", "video"),
                               feature_dims={}, class_names=None, splits=("train",), metadata={},
                               label_names=("arousal", "valence"))
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
