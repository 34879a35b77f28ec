"""LSTMStack equals flax's nn.RNN + OptimizedLSTMCell (outputs and gradients) in every
implementation that runs on a CPU, keeps padding out of valid frames, and survives float16."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from emobed_jax.models import cudnn_lstm, fast_lstm, lstm

GATES = "ifgo"
LENGTHS = (9, 5, 1, 7)
IMPLS_ON_CPU = ["scan", "fused", "cudnn_reference"]
CUDNN_KERNEL = pytest.param("cudnn", marks=pytest.mark.skipif(
    not cudnn_lstm.available(), reason="needs a GPU with the cuDNN LSTM kernel"))


def from_flax_cell(cell: dict) -> dict:
    """One flax `OptimizedLSTMCell`'s params (`i<g>/kernel`, `h<g>/kernel`, `h<g>/bias`) in
    LSTMStack's layout: gate blocks concatenated in (i, f, g, o) order."""
    return {"w_input": jnp.concatenate([cell[f"i{g}"]["kernel"] for g in GATES], -1),
            "w_hidden": jnp.concatenate([cell[f"h{g}"]["kernel"] for g in GATES], -1),
            "bias": jnp.concatenate([cell[f"h{g}"]["bias"] for g in GATES], -1)}


def from_flax_stack(params: dict, num_layers: int, bidirectional: bool) -> dict:
    """`_FlaxStack`'s params as LSTMStack's. Linear, so it converts gradients too."""
    out = {}
    for layer in range(num_layers):
        out[f"layer_{layer}"] = {"forward": from_flax_cell(params[f"fwd_{layer}"])}
        if bidirectional:
            out[f"layer_{layer}"]["backward"] = from_flax_cell(params[f"bwd_{layer}"])
    return out


class _FlaxStack(nn.Module):
    """The reference: flax nn.RNN layers with seq_lengths, outputs zeroed at padding."""

    hidden: int
    num_layers: int
    bidirectional: bool

    @nn.compact
    def __call__(self, x, lengths):
        mask = (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
        for layer in range(self.num_layers):
            outs = [nn.RNN(nn.OptimizedLSTMCell(self.hidden, name=f"fwd_{layer}"),
                           keep_order=True)(x, seq_lengths=lengths)]
            if self.bidirectional:
                outs.append(nn.RNN(nn.OptimizedLSTMCell(self.hidden, name=f"bwd_{layer}"),
                                   reverse=True, keep_order=True)(x, seq_lengths=lengths))
            x = jnp.concatenate(outs, axis=-1) * mask
        return x


def _inputs(seed=0, dim=5, dtype=jnp.float32):
    x = jax.random.normal(jax.random.key(seed), (len(LENGTHS), 9, dim), dtype)
    return x, jnp.asarray(LENGTHS, jnp.int32)


def _stack(impl, monkeypatch, **kw):
    """An LSTMStack; 'cudnn_reference' is impl='cudnn' computed by `lax`'s `lstm_ref`."""
    if impl == "cudnn_reference":
        monkeypatch.setattr(cudnn_lstm, "lstm_layer",
                            functools.partial(cudnn_lstm.lstm_layer, use_reference=True))
        impl = "cudnn"
    return lstm.LSTMStack(impl=impl, **kw)


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(u - v)))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


# cuDNN's reference path is compared with fused and scan in tests/test_cudnn_lstm.py.
@pytest.mark.parametrize("impl", ["scan", "fused", CUDNN_KERNEL])
@pytest.mark.parametrize("bidirectional,num_layers", [(False, 2), (True, 2)])
def test_equals_flax_rnn_outputs_and_gradients(impl, bidirectional, num_layers, monkeypatch):
    with jax.default_matmul_precision("highest"):  # no TF32 on a GPU: compare float32 exactly
        _check_equals_flax(impl, bidirectional, num_layers, monkeypatch)


def _check_equals_flax(impl, bidirectional, num_layers, monkeypatch):
    kw = dict(hidden=6, num_layers=num_layers, bidirectional=bidirectional)
    reference = _FlaxStack(**kw)
    stack = _stack(impl, monkeypatch, **kw)
    x, lengths = _inputs()
    flax_params = jax.jit(reference.init)(jax.random.key(1), x, lengths)["params"]
    params = from_flax_stack(flax_params, num_layers, bidirectional)
    y_ref = jax.jit(reference.apply)({"params": flax_params}, x, lengths)
    y = jax.jit(stack.apply)({"params": params}, x, lengths)
    assert y.shape == (4, 9, 6 * (2 if bidirectional else 1))
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    weights = jax.random.normal(jax.random.key(2), y.shape)

    def loss(module):
        return lambda p, x: jnp.sum(jnp.sin(module.apply({"params": p}, x, lengths)) * weights)

    g_ref_params, g_ref_x = jax.jit(jax.grad(loss(reference), argnums=(0, 1)))(flax_params, x)
    g_params, g_x = jax.jit(jax.grad(loss(stack), argnums=(0, 1)))(params, x)
    assert _max_diff(g_params, from_flax_stack(g_ref_params, num_layers, bidirectional)) < 1e-5
    np.testing.assert_allclose(g_x, g_ref_x, atol=1e-5)
    assert float(jnp.max(jnp.abs(g_params["layer_0"]["forward"]["bias"]))) > 0


@pytest.mark.parametrize("impl", ["scan", "fused"])
def test_finite_differences_on_a_tiny_case(impl):
    with jax.enable_x64(True):
        stack = lstm.LSTMStack(hidden=2, num_layers=2, bidirectional=True, impl=impl)
        x = jax.random.normal(jax.random.key(0), (2, 4, 3), jnp.float64)
        lengths = jnp.asarray([4, 2], jnp.int32)
        params = jax.tree_util.tree_map(
            lambda p: p.astype(jnp.float64) + 0.1, stack.init(jax.random.key(1), x, lengths)["params"])
        f = jax.jit(lambda p, x: stack.apply({"params": p}, x, lengths))
        check_grads(f, (params, x), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS_ON_CPU)
def test_padding_never_reaches_valid_frames(impl, monkeypatch):
    stack = _stack(impl, monkeypatch, hidden=3, num_layers=2)
    x, lengths = _inputs()
    params = jax.jit(stack.init)(jax.random.key(1), x, lengths)
    valid = (jnp.arange(9)[None, :] < lengths[:, None])[..., None]
    noisy = jnp.where(valid, x, 100.0 * jax.random.normal(jax.random.key(5), x.shape))
    apply = jax.jit(stack.apply)
    y, y_noisy = apply(params, x, lengths), apply(params, noisy, lengths)
    np.testing.assert_allclose(y, y_noisy, atol=1e-6)
    assert float(jnp.max(jnp.abs(jnp.where(valid, 0.0, y)))) == 0.0
    grad = jax.jit(jax.grad(lambda x: jnp.sum(apply(params, x, lengths) ** 2)))(x)
    assert float(jnp.max(jnp.abs(jnp.where(valid, 0.0, grad)))) == 0.0
    assert float(jnp.max(jnp.abs(jnp.where(valid, grad, 0.0)))) > 0.0


def test_parameter_layout_and_initialisers():
    stack = lstm.LSTMStack(hidden=4, num_layers=2, bidirectional=True)
    x, lengths = _inputs(dim=5)
    params = stack.init(jax.random.key(0), x, lengths)["params"]
    shapes = jax.tree_util.tree_map(jnp.shape, params)
    direction = {"w_input": (5, 16), "w_hidden": (4, 16), "bias": (16,)}
    assert shapes == {"layer_0": {"forward": direction, "backward": direction},
                      "layer_1": {"forward": dict(direction, w_input=(8, 16)),
                                  "backward": dict(direction, w_input=(8, 16))}}
    for layer in params.values():
        for p in layer.values():
            assert float(jnp.max(jnp.abs(p["bias"]))) == 0.0
            for k in range(4):  # one orthogonal block per gate, as OptimizedLSTMCell's kernels
                block = p["w_hidden"][:, 4 * k:4 * (k + 1)]
                np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-5)
    big = lstm.LSTMStack(hidden=64, num_layers=1, bidirectional=False).init(
        jax.random.key(0), jnp.zeros((1, 2, 400)), jnp.ones((1,), jnp.int32))
    # lecun_normal: variance 1 / fan_in, per gate block as over the whole kernel.
    std = float(jnp.std(big["params"]["layer_0"]["forward"]["w_input"]))
    assert abs(std - 400 ** -0.5) < 0.1 * 400 ** -0.5


@pytest.mark.parametrize("impl", ["scan", "fused"])
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_is_finite_and_zero_at_padding(impl, dtype):
    stack = lstm.LSTMStack(hidden=8, num_layers=2, impl=impl)
    x, lengths = _inputs()
    params = jax.jit(stack.init)(jax.random.key(1), x, lengths)
    y32 = jax.jit(stack.apply)(params, x, lengths)
    y = jax.jit(stack.apply)(params, x.astype(dtype), lengths)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(stack.apply(params, x, lengths).astype(
        jnp.float32) ** 2)))(x.astype(dtype))
    valid = np.asarray(jnp.arange(9)[None, :] < lengths[:, None])
    assert y.dtype == dtype
    assert np.all(np.isfinite(np.asarray(y, np.float32))) and np.all(
        np.isfinite(np.asarray(grad, np.float32)))
    assert np.all(np.asarray(y, np.float32)[~valid] == 0.0)
    np.testing.assert_allclose(np.asarray(y, np.float32), y32, atol=5e-2)
    assert float(fast_lstm.hold_value(dtype)) > -np.inf


def test_dropout_masks_are_the_same_in_every_impl():
    x, lengths = _inputs()
    stacks = {impl: lstm.LSTMStack(hidden=6, num_layers=2, dropout=0.5, impl=impl)
              for impl in ("scan", "fused")}
    params = jax.jit(stacks["scan"].init)(jax.random.key(1), x, lengths)

    def train(stack, key):
        return jax.jit(lambda p: stack.apply(p, x, lengths, train=True,
                                             rngs={"dropout": key}))(params)

    y_scan, y_fused = (train(stacks[i], jax.random.key(7)) for i in ("scan", "fused"))
    np.testing.assert_allclose(y_fused, y_scan, atol=1e-6)
    y_eval = jax.jit(stacks["fused"].apply)(params, x, lengths)
    valid = np.asarray(jnp.arange(9)[None, :] < lengths[:, None])
    dropped = np.asarray(y_fused)[valid] == 0.0
    assert 0.3 < dropped.mean() < 0.7  # the last layer's mask: about half the units
    assert not np.allclose(y_fused, train(stacks["fused"], jax.random.key(8)))
    assert not np.allclose(y_fused, y_eval)


def test_auto_equals_the_scan_reference_and_unknown_impls_are_rejected():
    x, lengths = _inputs()
    ref = lstm.LSTMStack(hidden=4, impl="scan")
    params = jax.jit(ref.init)(jax.random.key(0), x, lengths)
    auto = lstm.LSTMStack(hidden=4, impl="auto")
    np.testing.assert_allclose(jax.jit(auto.apply)(params, x, lengths),
                               jax.jit(ref.apply)(params, x, lengths), atol=1e-5)
    with pytest.raises(ValueError, match=r"rnn_impl='flax'.*'auto', 'fused', 'cudnn', 'scan'"):
        lstm.LSTMStack(hidden=4, impl="flax").init(jax.random.key(0), x, lengths)
