"""The cuDNN LSTM layer has fast_lstm's parameters and semantics: weight packing, outputs and
gradients (through `lstm_ref` on any backend; through the cuDNN kernel where a GPU has it).
Equality with flax's nn.RNN, through LSTMStack, is in test_lstm.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

from emobed_jax.models import cudnn_lstm, fast_lstm, lstm

D, H, T = 5, 4, 7
DIRECTIONS = [(False,), (False, True)]


def _cell(key, input_dim=D, hidden=H):
    """Random (w_input, w_hidden, bias) of one direction; nonzero biases so their layout counts."""
    k1, k2, k3 = jax.random.split(key, 3)
    return (0.5 * jax.random.normal(k1, (input_dim, 4 * hidden)),
            0.5 * jax.random.normal(k2, (hidden, 4 * hidden)),
            0.5 * jax.random.normal(k3, (4 * hidden,)))


def _setup(reverse, lengths=(7, 4, 1), seed=0):
    kx, *kc = jax.random.split(jax.random.key(seed), 1 + len(reverse))
    x = jax.random.normal(kx, (T, len(lengths), D))
    return x, jnp.asarray(lengths, jnp.int32), [_cell(k) for k in kc]


def _valid(lengths):
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(u - v)))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("reverse", DIRECTIONS)
@pytest.mark.parametrize("lengths", [(7, 4, 1), (7, 0, 3)])
def test_reference_path_equals_fast_lstm_and_scan(reverse, lengths):
    x, lens, cells = _setup(reverse, lengths)
    got = jax.jit(lambda x, l, c: cudnn_lstm.lstm_layer(x, l, c, reverse, use_reference=True))(
        x, lens, cells)
    want = jax.jit(lambda x, l, c: fast_lstm.lstm_layer(x, l, c, reverse))(x, lens, cells)
    # The plain lax.scan reference pins the gate order and bias placement independently.
    ref = jax.jit(lambda x, l, c: lstm.scan_layer(x, l, c, reverse))(x, lens, cells)
    valid = _valid(lengths)
    assert len(got) == len(reverse)
    for d in range(len(reverse)):
        assert got[d].shape == (T, len(lengths), H)
        np.testing.assert_allclose(got[d][valid], want[d][valid], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(got[d][valid], ref[d][valid], atol=1e-5, rtol=1e-5)
        assert np.all(np.asarray(got[d])[~valid] == 0.0)


def _loss(layer, reverse, lengths):
    weight = jax.random.normal(jax.random.key(7), (T, len(lengths), H * len(reverse)))

    def loss(cells, x):
        out = jnp.concatenate(layer(x, jnp.asarray(lengths, jnp.int32), cells, reverse), -1)
        return jnp.sum(weight * out ** 2)
    return loss


@pytest.mark.parametrize("reverse", DIRECTIONS)
def test_reference_path_gradients_equal_fast_lstm(reverse):
    lengths = (7, 4, 1)
    x, _, cells = _setup(reverse, lengths, seed=3)
    ref_layer = lambda *a: cudnn_lstm.lstm_layer(*a, use_reference=True)
    got = jax.jit(jax.grad(_loss(ref_layer, reverse, lengths), argnums=(0, 1)))(cells, x)
    want = jax.jit(jax.grad(_loss(fast_lstm.lstm_layer, reverse, lengths), argnums=(0, 1)))(cells, x)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    assert _max_diff(got, want) < 1e-4
    assert float(jnp.max(jnp.abs(got[0][0][2]))) > 0.0  # the biases do get gradient


@pytest.mark.parametrize("reverse", DIRECTIONS)
def test_pack_weights_round_trip(reverse):
    _, _, cells = _setup(reverse)
    bidirectional = len(reverse) == 2
    packed = cudnn_lstm.pack_weights(cells)
    assert packed.shape == (rnn.get_num_params_in_lstm(D, H, 1, bidirectional),)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(packed, D, H, 1, bidirectional)
    assert sorted(w_ih) == list(range(len(cells)))
    for d, (w_i, w_h, b) in enumerate(cells):
        np.testing.assert_array_equal(w_ih[d], w_i.T)
        np.testing.assert_array_equal(w_hh[d], w_h.T)
        np.testing.assert_array_equal(b_ih[d], np.zeros(4 * H))
        np.testing.assert_array_equal(b_hh[d], b)


def test_pack_weights_gradient_reaches_every_parameter():
    _, _, cells = _setup((False, True))
    grads = jax.grad(lambda c: jnp.sum(jnp.arange(4.0 * (D + H + 2) * H * 2)
                                       * cudnn_lstm.pack_weights(c)))(cells)
    # W_ih[0] is w_input transposed, raveled row-major; element [0, 0] comes first.
    assert float(grads[0][0][0, 0]) == 0.0
    assert float(grads[0][0][1, 0]) == 1.0  # W_ih[0][0, 1]
    assert float(grads[0][0][0, 1]) == D  # W_ih[0][1, 0]
    # Every parameter of the second direction sits somewhere past index 0.
    assert all(float(jnp.min(g)) > 0 for g in jax.tree_util.tree_leaves(grads[1]))


@pytest.mark.parametrize("reverse", [(True,), (True, False), (False, False), (False, True, False)])
def test_bad_reverse_raises(reverse):
    x, lens, cells = _setup((False,) * len(reverse))
    with pytest.raises(ValueError, match=r"reverse=\(" + ", ".join(map(str, reverse))):
        cudnn_lstm.lstm_layer(x, lens, cells, reverse, use_reference=True)


def test_cells_must_match_directions():
    x, lens, cells = _setup((False,))
    with pytest.raises(ValueError, match="one per direction"):
        cudnn_lstm.lstm_layer(x, lens, cells, (False, True), use_reference=True)


@pytest.mark.skipif(cudnn_lstm.available(), reason="checks the error where there is no kernel")
def test_kernel_path_without_gpu_raises_clearly():
    x, lens, cells = _setup((False,))
    with pytest.raises(RuntimeError, match="use_reference=True"):
        cudnn_lstm.lstm_layer(x, lens, cells, (False,))


def test_kernel_path_traces_with_tf32_off(monkeypatch):
    """The cuDNN call's wiring (shapes, static args, precision), traced without a GPU."""
    monkeypatch.setattr(cudnn_lstm, "_platform", lambda: "cuda")
    monkeypatch.setattr(rnn.gpu_rnn, "compute_rnn_workspace_reserve_space_sizes",
                        lambda *args: (1, 1), raising=False)
    reverse = (False, True)
    x, _, cells = _setup(reverse)
    jaxpr = str(jax.make_jaxpr(jax.grad(_loss(cudnn_lstm.lstm_layer, reverse, (7, 4, 1)),
                                        argnums=(0, 1)))(cells, x))
    assert "rnn_fwd" in jaxpr and "rnn_bwd" in jaxpr
    assert "cudnn_allow_tf32=False" in jaxpr and "cudnn_allow_tf32=True" not in jaxpr
    assert "bidirectional=True" in jaxpr


@pytest.mark.skipif(not cudnn_lstm.available(), reason="needs a GPU with the cuDNN LSTM kernel")
@pytest.mark.parametrize("reverse", DIRECTIONS)
def test_cudnn_path_equals_fast_lstm(reverse):
    lengths = (7, 4, 1)
    x, lens, cells = _setup(reverse, lengths)
    with jax.default_matmul_precision("highest"):  # no TF32 in fast_lstm's matmuls either
        got = jax.jit(lambda x, l, c: cudnn_lstm.lstm_layer(x, l, c, reverse))(x, lens, cells)
        want = fast_lstm.lstm_layer(x, lens, cells, reverse)
        g_got = jax.jit(jax.grad(_loss(cudnn_lstm.lstm_layer, reverse, lengths),
                                 argnums=(0, 1)))(cells, x)
        g_want = jax.grad(_loss(fast_lstm.lstm_layer, reverse, lengths), argnums=(0, 1))(cells, x)
    valid = _valid(lengths)
    for d in range(len(reverse)):
        np.testing.assert_allclose(got[d][valid], want[d][valid], atol=2e-5, rtol=2e-5)
        assert np.all(np.asarray(got[d])[~valid] == 0.0)
    assert _max_diff(g_got, g_want) < 1e-4
