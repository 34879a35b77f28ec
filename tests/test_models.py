"""EmoBedModel: parameter names, the single shared head, masking, pooling and monomodal inference,
each checked on values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax.models import emobed, lstm
from emobed_jax.models.conv import ConvEncoder
from emobed_jax.models.head import SharedHead
from emobed_jax.models.pooling import AttentionPool, Pool, length_mask, masked_mean_pool
from emobed_jax.models.projector import Projector

LENGTHS = (12, 7, 3)


def _init(model, *args):
    return jax.jit(model.init)(jax.random.key(0), *args)


def _apply(model, params, *args):
    return jax.jit(model.apply)(params, *args)


def _inputs(batch=3, frames=12, dims=None, lengths=LENGTHS):
    dims = dims or {"audio": 5, "video": 4}
    rng = np.random.default_rng(0)
    feats = {m: jnp.asarray(rng.normal(size=(batch, frames, d)), jnp.float32)
             for m, d in dims.items()}
    lens = {m: jnp.asarray(lengths, jnp.int32) for m in dims}
    masks = {m: length_mask(lens[m], frames) for m in dims}
    return feats, lens, masks


def _model(**kw):
    kw = dict(dict(modalities=("audio", "video"), hidden=8, embedding_dim=6, head_hidden=(5,)),
              **kw)
    return emobed.EmoBedModel(**kw)


@pytest.mark.parametrize("encoder,level,pooling", [
    ("lstm", "frame", "mean"), ("lstm", "utterance", "attention"), ("conv", "utterance", "mean")])
def test_model_is_its_parts_composed(encoder, level, pooling):
    """Each modality's output is encoder -> pooling -> projector -> the one shared head, applied
    as standalone modules with the model's own parameters."""
    model = _model(encoder=encoder, level=level, pooling=pooling, num_outputs=3,
                   projector_activation="relu", rnn_impl="fused")
    feats, lens, masks = _inputs()
    params = _init(model, feats, lens, masks)["params"]
    emb, out = _apply(model, {"params": params}, feats, lens, masks)
    if encoder == "lstm":
        enc = lstm.LSTMStack(hidden=8, num_layers=2, bidirectional=True, impl="scan")
    else:
        enc = ConvEncoder(hidden=8, num_layers=2, kernel_size=5)
    head = SharedHead(hidden=(5,), num_outputs=3)
    for m in ("audio", "video"):
        h = enc.apply({"params": params[f"encoder_{m}"]}, feats[m], lens[m])
        if level == "utterance":
            h = Pool(pooling).apply({"params": params.get(f"pool_{m}", {})}, h, masks[m])
        e = Projector(6, "relu").apply({"params": params[f"projector_{m}"]}, h)
        np.testing.assert_allclose(emb[m], e, atol=1e-5)
        np.testing.assert_allclose(out[m], head.apply({"params": params["shared_head"]}, e),
                                   atol=1e-5)
    assert emb["audio"].shape == ((3, 12, 6) if level == "frame" else (3, 6))
    assert float(jnp.min(emb["audio"])) >= 0.0  # relu
    assert not np.allclose(emb["audio"], emb["video"][..., :6])  # distinct encoders


def test_parameter_names():
    model = _model(level="utterance", pooling="attention", head_hidden=(5, 4))
    feats, lens, masks = _inputs()
    params = _init(model, feats, lens, masks)["params"]
    assert sorted(params) == ["encoder_audio", "encoder_video", "pool_audio", "pool_video",
                              "projector_audio", "projector_video", "shared_head"]
    assert sorted(params["encoder_audio"]) == ["layer_0", "layer_1"]
    assert params["encoder_audio"]["layer_0"]["backward"]["w_input"].shape == (5, 32)
    assert params["encoder_video"]["layer_1"]["forward"]["w_input"].shape == (16, 32)
    assert params["projector_audio"]["dense"]["kernel"].shape == (16, 6)
    assert sorted(params["pool_audio"]["attention"]) == ["key", "score"]
    assert sorted(params["shared_head"]) == ["hidden_0", "hidden_1", "output"]


def test_exactly_one_shared_head():
    model = _model(modalities=("audio", "video", "ecg"), encoder="conv")
    feats, lens, masks = _inputs(dims={"audio": 5, "video": 4, "ecg": 2})
    params = _init(model, feats, lens, masks)["params"]
    assert [k for k in params if "head" in k] == ["shared_head"]
    head = SharedHead(hidden=(5,), num_outputs=2)
    emb, out = _apply(model, {"params": params}, feats, lens, masks)
    for m in ("audio", "video", "ecg"):
        np.testing.assert_allclose(head.apply({"params": params["shared_head"]}, emb[m]), out[m],
                                   rtol=1e-5, atol=1e-6)
    n_head = sum(x.size for x in jax.tree_util.tree_leaves(params["shared_head"]))
    assert n_head == 6 * 5 + 5 + 5 * 2 + 2
    # Changing the head changes every modality's output: it is shared, not copied.
    bumped = dict(params, shared_head=jax.tree_util.tree_map(lambda p: p + 0.5,
                                                             params["shared_head"]))
    _, out2 = _apply(model, {"params": bumped}, feats, lens, masks)
    assert all(not np.allclose(out[m], out2[m]) for m in out)


@pytest.mark.parametrize("encoder", ["lstm", "conv"])
def test_padding_does_not_change_valid_frames(encoder):
    model = _model(modalities=("audio",), encoder=encoder, level="frame")
    feats, lens, masks = _inputs(dims={"audio": 5})
    params = _init(model, feats, lens, masks)
    _, out1 = _apply(model, params, feats, lens, masks)
    noisy = {"audio": feats["audio"].at[1, 7:].set(100.0).at[2, 3:].set(-50.0)}
    _, out2 = _apply(model, params, noisy, lens, masks)
    valid = np.asarray(masks["audio"], bool)
    np.testing.assert_allclose(out1["audio"][valid], out2["audio"][valid], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out1["audio"][1, :7], out1["audio"][2, :7])


@pytest.mark.parametrize("encoder", ["lstm", "conv"])
def test_monomodal_inference_needs_no_auxiliary_input(encoder):
    model = _model(encoder=encoder)
    feats, lens, masks = _inputs()
    params = _init(model, feats, lens, masks)
    emb_all, out_all = _apply(model, params, feats, lens, masks)
    emb, out = _apply(model, params, {"audio": feats["audio"]}, {"audio": lens["audio"]}, {})
    assert set(out) == set(emb) == {"audio"}
    np.testing.assert_allclose(out["audio"], out_all["audio"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb["audio"], emb_all["audio"], rtol=1e-5, atol=1e-6)


def test_unknown_choices_are_rejected():
    feats, lens, masks = _inputs(dims={"audio": 5, "video": 4})
    with pytest.raises(ValueError, match=r"modalities \['video'\] have no parameters"):
        _model(modalities=("audio",)).init(jax.random.key(0), feats, lens, masks)
    with pytest.raises(ValueError, match=r"model.encoder='gru': expected one of \['lstm', 'conv', 'pooled'\]"):
        _model(encoder="gru").init(jax.random.key(0), feats, lens, masks)
    with pytest.raises(ValueError, match=r"projector_activation='gelu'"):
        _model(projector_activation="gelu").init(jax.random.key(0), feats, lens, masks)
    with pytest.raises(ValueError, match=r"model.pooling='max'"):
        _model(level="utterance", pooling="max").init(jax.random.key(0), feats, lens, masks)


def test_pooling_ignores_masked_frames():
    x = jnp.asarray([[[1.0], [3.0], [100.0]], [[5.0], [6.0], [7.0]]])
    mask = jnp.asarray([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(masked_mean_pool(x, mask), [[2.0], [0.0]])
    pool = AttentionPool()
    params = pool.init(jax.random.key(0), x, mask)
    y1 = pool.apply(params, x, mask)
    y2 = pool.apply(params, x.at[0, 2].set(-7.0), mask)
    np.testing.assert_allclose(y1, y2)
    assert 1.0 <= float(y1[0, 0]) <= 3.0
    assert float(y1[1, 0]) == 0.0  # no valid frame: zero, not NaN
    y16 = pool.apply(params, x.astype(jnp.float16), mask)
    assert np.all(np.isfinite(np.asarray(y16, np.float32)))
