"""Model shapes, the single shared head, masking, and monomodal inference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax.models import emobed, encoders


def _init(model, *args):
    return jax.jit(model.init)(jax.random.key(0), *args)


def _apply(model, params, *args):
    return jax.jit(model.apply)(params, *args)


def _inputs(batch=3, frames=12, dims=None, lengths=(12, 7, 3)):
    dims = dims or {"audio": 5, "video": 4}
    rng = np.random.default_rng(0)
    feats = {m: jnp.asarray(rng.normal(size=(batch, frames, d)), jnp.float32) for m, d in dims.items()}
    lens = {m: jnp.asarray(lengths, jnp.int32) for m in dims}
    masks = {m: encoders.length_mask(lens[m], frames) for m in dims}
    return feats, lens, masks


@pytest.mark.parametrize("encoder,level,num_outputs", [
    ("lstm", "frame", 2), ("gru", "utterance", 7), ("conv", "frame", 2), ("conv", "utterance", 7)])
def test_output_shapes(encoder, level, num_outputs):
    model = emobed.EmoBedModel(modalities=("audio", "video"), level=level, num_outputs=num_outputs,
                               encoder=encoder, hidden=8, embedding_dim=6, head_hidden=(5,))
    feats, lens, masks = _inputs()
    params = _init(model, feats, lens, masks)
    emb, out = _apply(model, params, feats, lens, masks)
    for m in ("audio", "video"):
        if level == "frame":
            assert emb[m].shape == (3, 12, 6) and out[m].shape == (3, 12, num_outputs)
        else:
            assert emb[m].shape == (3, 6) and out[m].shape == (3, num_outputs)


def test_exactly_one_shared_head():
    model = emobed.EmoBedModel(modalities=("audio", "video", "ecg"), hidden=8, embedding_dim=6,
                               head_hidden=(5,), encoder="conv")
    feats, lens, masks = _inputs(dims={"audio": 5, "video": 4, "ecg": 2})
    params = _init(model, feats, lens, masks)["params"]
    heads = [k for k in params if "head" in k]
    assert heads == ["shared_head"]
    assert sorted(k for k in params if k.startswith("encoder_")) == [
        "encoder_audio", "encoder_ecg", "encoder_video"]
    # Every modality's output is that one head applied to the modality's own embedding.
    head = encoders.MLPHead(hidden=(5,), num_outputs=2)
    emb, out = _apply(model, {"params": params}, feats, lens, masks)
    for m in ("audio", "video", "ecg"):
        np.testing.assert_allclose(head.apply({"params": params["shared_head"]}, emb[m]), out[m],
                                   rtol=1e-5, atol=1e-6)
    n_head = sum(x.size for x in jax.tree_util.tree_leaves(params["shared_head"]))
    assert n_head == 6 * 5 + 5 + 5 * 2 + 2


def test_padding_does_not_change_valid_frames():
    """Frames past a sequence's length never affect its valid frames (both directions)."""
    model = emobed.EmoBedModel(modalities=("audio",), hidden=8, embedding_dim=6)
    feats, lens, masks = _inputs(dims={"audio": 5})
    params = _init(model, feats, lens, masks)
    _, out1 = _apply(model, params, feats, lens, masks)
    noisy = {"audio": feats["audio"].at[1, 7:].set(100.0).at[2, 3:].set(-50.0)}
    _, out2 = _apply(model, params, noisy, lens, masks)
    np.testing.assert_allclose(out1["audio"][1, :7], out2["audio"][1, :7], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out1["audio"][2, :3], out2["audio"][2, :3], rtol=1e-5, atol=1e-6)


def test_monomodal_inference_needs_no_auxiliary_input():
    model = emobed.EmoBedModel(modalities=("audio", "video"), hidden=8, embedding_dim=6,
                               encoder="conv")
    feats, lens, masks = _inputs()
    params = _init(model, feats, lens, masks)
    emb_all, out_all = _apply(model, params, feats, lens, masks)
    emb, out = _apply(model, params, {"audio": feats["audio"]}, {"audio": lens["audio"]}, {})
    assert set(out) == {"audio"}
    np.testing.assert_allclose(out["audio"], out_all["audio"], rtol=1e-6)


def test_unknown_modality_is_rejected():
    model = emobed.EmoBedModel(modalities=("audio",), hidden=8, embedding_dim=6)
    feats, lens, masks = _inputs(dims={"audio": 5, "video": 4})
    with pytest.raises(ValueError, match=r"modalities \['video'\] have no parameters"):
        model.init(jax.random.key(0), feats, lens, masks)


def test_pooling_ignores_masked_frames():
    x = jnp.asarray([[[1.0], [3.0], [100.0]]])
    mask = jnp.asarray([[1.0, 1.0, 0.0]])
    np.testing.assert_allclose(encoders.masked_mean_pool(x, mask), [[2.0]])
    pool = encoders.AttentionPool()
    params = pool.init(jax.random.key(0), x, mask)
    y1 = pool.apply(params, x, mask)
    y2 = pool.apply(params, x.at[0, 2].set(-7.0), mask)
    np.testing.assert_allclose(y1, y2)
    assert 1.0 <= float(y1[0, 0]) <= 3.0
