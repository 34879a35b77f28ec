"""fast_lstm's own contracts: its hand-written VJP against finite differences, the padding hold
in every float dtype, and its layer against the plain lax.scan reference in a mixed batch.
(Equality with flax's nn.RNN, through LSTMStack, is in test_lstm.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from emobed_jax.models import fast_lstm, lstm


def test_finite_differences_of_the_streams():
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


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_hold_is_finite_and_closes_the_gates(dtype):
    hold = jnp.asarray(fast_lstm.hold_value(dtype), dtype)
    assert np.isfinite(float(hold))
    # Added to any pre-activation the sigmoid (written through tanh) is exactly 0, and adding it
    # to a large pre-activation stays finite.
    z = (jnp.asarray([0.0, 30.0, 1000.0], dtype) + hold) * jnp.asarray(0.5, dtype)
    gate = jnp.tanh(z) * jnp.asarray(0.5, dtype) + jnp.asarray(0.5, dtype)
    np.testing.assert_array_equal(np.asarray(gate, np.float32), 0.0)
    assert float(hold * jnp.asarray(0.0, dtype)) == 0.0  # valid steps: 0 * hold, never NaN


@pytest.mark.parametrize("reverse", [(False,), (False, True)])
def test_layer_equals_the_scan_reference(reverse):
    t, b, d, h = 11, 5, 3, 4
    k = jax.random.split(jax.random.key(1), 1 + 3 * len(reverse))
    x = jax.random.normal(k[0], (t, b, d))
    lengths = jnp.asarray([11, 6, 1, 0, 9], jnp.int32)
    weights = [(0.5 * jax.random.normal(k[1 + 3 * j], (d, 4 * h)),
                0.5 * jax.random.normal(k[2 + 3 * j], (h, 4 * h)),
                0.5 * jax.random.normal(k[3 + 3 * j], (4 * h,))) for j in range(len(reverse))]
    weight = jax.random.normal(k[-1], (t, b, h * len(reverse)))

    def loss(layer):
        return lambda x, w: jnp.sum(weight * jnp.concatenate(layer(x, lengths, w, reverse), -1))

    got = jax.jit(lambda x, w: fast_lstm.lstm_layer(x, lengths, w, reverse))(x, weights)
    want = jax.jit(lambda x, w: lstm.scan_layer(x, lengths, w, reverse))(x, weights)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)
    g_got = jax.jit(jax.grad(loss(fast_lstm.lstm_layer), argnums=(0, 1)))(x, weights)
    g_want = jax.jit(jax.grad(loss(lstm.scan_layer), argnums=(0, 1)))(x, weights)
    for a, c in zip(jax.tree_util.tree_leaves(g_got), jax.tree_util.tree_leaves(g_want)):
        np.testing.assert_allclose(a, c, atol=1e-5)
