"""The fused LSTM equals flax's nn.RNN + OptimizedLSTMCell: parameters, outputs, gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from emobed_jax.models import cudnn_lstm, encoders, fast_lstm


def _inputs(batch=4, frames=9, dim=5, lengths=(9, 5, 1, 7), seed=0):
    x = jax.random.normal(jax.random.key(seed), (batch, frames, dim))
    return x, jnp.asarray(lengths, jnp.int32)


def _pair(**kw):
    flax_enc = encoders.RecurrentEncoder(rnn_impl="flax", **kw)
    fused_enc = encoders.RecurrentEncoder(rnn_impl="fused", **kw)
    return flax_enc, fused_enc


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(u - v)))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("bidirectional,num_layers", [(True, 1), (False, 2)])
def test_forward_and_gradients_equal_flax(bidirectional, num_layers):
    flax_enc, fused_enc = _pair(hidden=6, num_layers=num_layers, bidirectional=bidirectional)
    x, lengths = _inputs()
    params = jax.jit(flax_enc.init)(jax.random.key(1), x, lengths)
    # Same parameter tree and initial values: checkpoints and seeds carry over exactly.
    fused_params = jax.jit(fused_enc.init)(jax.random.key(1), x, lengths)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(fused_params)
    assert sorted(params["params"]) == [f"OptimizedLSTMCell_{k}" for k in
                                        range(num_layers * (2 if bidirectional else 1))]
    assert _max_diff(params, fused_params) == 0.0
    y_flax = jax.jit(flax_enc.apply)(params, x, lengths)
    y_fused = jax.jit(fused_enc.apply)(params, x, lengths)
    assert y_fused.shape == y_flax.shape == (4, 9, 6 * (2 if bidirectional else 1))
    np.testing.assert_allclose(y_fused, y_flax, atol=1e-6)
    if not bidirectional:
        return  # one stream or two, one layer or more: the same VJP code (and dx is checked)
    weights = jax.random.normal(jax.random.key(2), y_flax.shape)

    def loss(enc):
        return lambda p, x: jnp.sum(enc.apply(p, x, lengths) * weights)

    g_flax = jax.jit(jax.grad(loss(flax_enc), argnums=(0, 1)))(params, x)
    g_fused = jax.jit(jax.grad(loss(fused_enc), argnums=(0, 1)))(params, x)
    assert _max_diff(g_flax, g_fused) < 1e-5
    assert float(jnp.max(jnp.abs(g_fused[0]["params"]["OptimizedLSTMCell_0"]["hf"]["kernel"]))) > 0


def test_padding_never_reaches_valid_frames():
    _, fused_enc = _pair(hidden=3, num_layers=2)
    x, lengths = _inputs()
    params = jax.jit(fused_enc.init)(jax.random.key(1), x, lengths)
    valid = encoders.length_mask(lengths, x.shape[1])[..., None]
    noisy = x + (1.0 - valid) * 100.0 * jax.random.normal(jax.random.key(5), x.shape)
    apply = jax.jit(fused_enc.apply)
    y, y_noisy = apply(params, x, lengths), apply(params, noisy, lengths)
    np.testing.assert_allclose(y, y_noisy, atol=1e-6)
    assert float(jnp.max(jnp.abs(y * (1.0 - valid)))) == 0.0
    # The input gradient is zero on padded frames.
    grad = jax.jit(jax.grad(lambda x: jnp.sum(apply(params, x, lengths) ** 2)))(x)
    assert float(jnp.max(jnp.abs(grad * (1.0 - valid)))) == 0.0
    assert float(jnp.max(jnp.abs(grad * valid))) > 0.0
    # The one-frame sequence: its backward direction at frame 0 is one cell step from the zero
    # state, whatever the padding holds (flax's seq_lengths semantics).
    cell = nn.OptimizedLSTMCell(3)
    zero = jnp.zeros((1, 3))
    (_, h_one), _ = jax.jit(cell.apply)({"params": params["params"]["OptimizedLSTMCell_1"]},
                                        (zero, zero), x[2:3, 0])
    first_layer = encoders.RecurrentEncoder(hidden=3, num_layers=1, rnn_impl="fused")
    y1 = jax.jit(first_layer.apply)({"params": {"OptimizedLSTMCell_0": params["params"][
        "OptimizedLSTMCell_0"], "OptimizedLSTMCell_1": params["params"]["OptimizedLSTMCell_1"]}},
        noisy, lengths)
    np.testing.assert_allclose(y1[2, 0, 3:], h_one[0], atol=1e-6)


def test_dropout_draws_the_same_masks_as_flax():
    flax_enc, fused_enc = _pair(hidden=6, num_layers=2, dropout=0.5)
    x, lengths = _inputs()
    params = jax.jit(flax_enc.init)(jax.random.key(1), x, lengths)

    def train_apply(enc):
        return jax.jit(lambda p, r: enc.apply(p, x, lengths, train=True, rngs={"dropout": r}))

    y_flax = train_apply(flax_enc)(params, jax.random.key(7))
    y_fused = train_apply(fused_enc)(params, jax.random.key(7))
    np.testing.assert_allclose(y_fused, y_flax, atol=1e-6)
    assert not np.allclose(y_fused, jax.jit(fused_enc.apply)(params, x, lengths))


def test_finite_differences_on_a_tiny_case():
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.key(0), 4)
        n, t, b, d, h = 2, 4, 2, 3, 2
        xs = jax.random.normal(k[0], (n, t, b, d), jnp.float64)
        w_i = 0.5 * jax.random.normal(k[1], (n, d, 4 * h), jnp.float64)
        w_h = 0.5 * jax.random.normal(k[2], (n, h, 4 * h), jnp.float64)
        bias = 0.1 * jax.random.normal(k[3], (n, 4 * h), jnp.float64)
        hold = jnp.zeros((n, t, b, 1), jnp.float64).at[1, :2, 0].set(1.0)  # padding held at zero

        def f(xs, w_i, w_h, bias):
            return fast_lstm.lstm_streams(xs, w_i, w_h, bias, hold)

        check_grads(jax.jit(f), (xs, w_i, w_h, bias), order=1, modes=["rev"], atol=1e-6,
                    rtol=1e-6)


def test_cell_kernels_concatenate_in_gate_order():
    cell = {f"i{g}": {"kernel": jnp.full((3, 2), float(k))} for k, g in enumerate("ifgo")}
    cell.update({f"h{g}": {"kernel": jnp.full((2, 2), 10.0 + k), "bias": jnp.full((2,), 20.0 + k)}
                 for k, g in enumerate("ifgo")})
    w_i, w_h, b = fast_lstm.cell_kernels(cell)
    assert w_i.shape == (3, 8) and w_h.shape == (2, 8) and b.shape == (8,)
    np.testing.assert_array_equal(w_i[0], [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(b, [20, 20, 21, 21, 22, 22, 23, 23])


def test_unknown_rnn_impl_is_rejected_and_gru_uses_flax():
    x, lengths = _inputs()
    with pytest.raises(ValueError, match="rnn_impl='cuDNN'.*'auto', 'fused', 'cudnn', 'flax'"):
        encoders.RecurrentEncoder(hidden=4, rnn_impl="cuDNN").init(jax.random.key(0), x, lengths)
    gru = encoders.RecurrentEncoder(cell="gru", hidden=4, num_layers=1, rnn_impl="fused")
    y = jax.jit(gru.apply)(jax.jit(gru.init)(jax.random.key(0), x, lengths), x, lengths)
    assert y.shape == (4, 9, 8)


def test_auto_is_fused_without_a_gpu_and_the_config_lists_every_impl():
    from emobed_jax import config as config_lib

    if jax.default_backend() == "cpu":  # as in CI: no cuDNN kernel, so 'auto' is the fused LSTM
        assert not cudnn_lstm.available() and encoders.resolve_rnn_impl("auto") == "fused"
    else:
        assert encoders.resolve_rnn_impl("auto") == ("cudnn" if cudnn_lstm.available() else "fused")
    assert config_lib.RNN_IMPLS == encoders.RNN_IMPLS
    x, lengths = _inputs()
    auto = encoders.RecurrentEncoder(hidden=4, rnn_impl="auto")
    flax_enc = encoders.RecurrentEncoder(hidden=4, rnn_impl="flax")
    params = jax.jit(flax_enc.init)(jax.random.key(0), x, lengths)
    np.testing.assert_allclose(jax.jit(auto.apply)(params, x, lengths),
                               jax.jit(flax_enc.apply)(params, x, lengths), atol=1e-6)


@pytest.mark.parametrize("video_frames", [9, 6])
def test_modalities_in_shared_loops_equal_separate_flax_encoders(video_frames):
    # Audio and video of equal length run as four streams of one loop per layer; a different
    # video length gets loops of its own. Both must equal separate flax encoders, dropout included.
    from emobed_jax.models import emobed

    kw = dict(modalities=("audio", "video"), hidden=5, num_layers=2, dropout=0.3,
              embedding_dim=4, head_hidden=(3,))
    flax_model = emobed.EmoBedModel(rnn_impl="flax", **kw)
    fused_model = emobed.EmoBedModel(rnn_impl="fused", **kw)
    x, lengths = _inputs()
    video = jax.random.normal(jax.random.key(3), (4, video_frames, 3))
    video_lengths = jnp.minimum(jnp.asarray([9, 2, 6, 4]), video_frames)
    features = {"audio": x, "video": video}
    lens = {"audio": lengths, "video": video_lengths}
    masks = {"audio": encoders.length_mask(lengths, 9),
             "video": encoders.length_mask(video_lengths, video_frames)}
    params = jax.jit(flax_model.init)(jax.random.key(1), features, lens, masks)
    assert _max_diff(params, jax.jit(fused_model.init)(jax.random.key(1), features, lens,
                                                       masks)) == 0.0

    def loss(model):
        def f(p):
            emb, out = model.apply(p, features, lens, masks, train=True,
                                   rngs={"dropout": jax.random.key(7)})
            return sum(jnp.sum(out[m] ** 2) + jnp.sum(jnp.sin(emb[m])) for m in out), out
        return jax.jit(jax.value_and_grad(f, has_aux=True))

    (l_flax, out_flax), g_flax = loss(flax_model)(params)
    (l_fused, out_fused), g_fused = loss(fused_model)(params)
    for m in ("audio", "video"):
        np.testing.assert_allclose(out_fused[m], out_flax[m], atol=1e-5)
    assert abs(float(l_fused) - float(l_flax)) < 1e-4 * abs(float(l_flax))
    assert _max_diff(g_flax, g_fused) < 1e-4
    video_grad = g_fused["params"]["encoder_video"]["OptimizedLSTMCell_3"]["ig"]["kernel"]
    assert float(jnp.max(jnp.abs(video_grad))) > 0
