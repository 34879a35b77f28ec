"""A fused (bi)directional LSTM with a hand-written VJP: `LSTMStack(impl='fused')`'s layer,
equal to its plain `lax.scan` reference (`lstm.scan_layer`) and to flax `nn.RNN` +
`nn.OptimizedLSTMCell` with `seq_lengths`.

Why: on a CPU the straightforward Flax layer spends most of a training step in ~1,200 small scan
iterations (forward and backward, per direction and layer), each with its own input matmul and,
in the backward scan, a weight-gradient update. Here (`lstm_layer`, `lstm_streams`):

* the input projections of all time steps are one matmul per stream, outside the loop;
* the directions of a layer are "streams" `[N, B, H]` of one loop, each with its own kernels (a
  batched matmul per step), so the loop count does not grow with directions. (Running several
  modalities' encoders as streams of one loop was measured not to pay: see `lstm.LSTMStack`.)
* the backward loop carries only the two state gradients (and the bias gradient's running sum)
  and stores the pre-activation gradient of each step; the kernel and input gradients are one
  matmul each over all time steps afterwards.

Variable lengths: a backward stream reads the time-reversed frames, and its state is held at
exactly zero over the padded frames (its i and f gates are forced to 0), so it starts from the
zero state at each sequence's last valid frame, like `nn.RNN(reverse=True, seq_lengths=...)`.
Outputs at padded frames are zero (flax leaves arbitrary values there; `LSTMStack` returns
zeros) and padded frames never influence valid ones, nor receive gradient. The parameters
arrive as `LSTMStack` stores them, per direction (w_input `[D, 4H]`, w_hidden `[H, 4H]`,
bias `[4H]`) with the gate blocks in (i, f, g, o) order, so no call concatenates them.

Layouts are chosen for XLA:CPU: streams-major `[N, T, B, ...]` so the weight-gradient matmuls
need no transposes; each stored per-step quantity (h, c and the four gates) in a buffer of its
own, because XLA:CPU reads one step of a single buffer ~3x faster than it slices quantities
out of one step of a stacked buffer (several quantities on one axis, or gates on the minor
axis); no reshape of (T, B) into one axis, which under a batch-sharded `jit` would force an
all-gather.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

# One direction's parameters: (w_input [D, 4H], w_hidden [H, 4H], bias [4H]), gates (i, f, g, o).
Weights = tuple[jax.Array, jax.Array, jax.Array]


def _gate_constants(hidden: int, dtype):
    """(alpha, beta) with sigmoid(z) = tanh(z / 2) / 2 + 1/2 on the i, f, o blocks, tanh on g."""
    half = jnp.full((hidden,), 0.5, dtype)
    alpha = jnp.concatenate([half, half, jnp.ones((hidden,), dtype), half])
    beta = jnp.concatenate([half, half, jnp.zeros((hidden,), dtype), half])
    return alpha, beta


def hold_value(dtype) -> float:
    """Added to the i and f pre-activations of held (padded) steps: both gates become exactly 0,
    so c = f c + i g = 0 and h = o tanh(0) = 0 without a mask in the loop, and no gradient crosses.

    A quarter of the dtype's largest finite value: far past where tanh saturates, yet adding it
    to any reasonable pre-activation stays finite (a fixed -1e9 is -inf in float16, and
    -inf * 0 on the valid steps would be NaN).
    """
    return -float(jnp.finfo(dtype).max) / 4


# Where step t goes in the buffer of each stored quantity (h, c, i, f, g, o): c's buffer keeps
# the zero initial state at index 0 (the backward loop reads c of step t - 1 there).
_SLOT_OFFSETS = (0, 1, 0, 0, 0, 0)


def _forward(gx, w_h, b, hold):
    """Runs the streams from their input projections `gx [N, T, B, 4H]` (without the biases
    `b [N, 4H]`). Returns `(h, c, i, f, g, o)`, each `[N, T, B, H]` (step t at index t), except
    `c`, `[N, T + 1, B, H]` with step t at index t + 1 and the zero initial state at 0."""
    n, t_len, batch, _ = gx.shape
    hidden = w_h.shape[1]
    alpha, beta = _gate_constants(hidden, gx.dtype)
    hold_gates = jnp.concatenate([jnp.full((2 * hidden,), hold_value(gx.dtype), gx.dtype),
                                  jnp.zeros((2 * hidden,), gx.dtype)])
    # Bias and hold are added inside the loop, to the one step's slice: as a pass over all of gx
    # before the loop they cost a full read and write of it.
    bias = b[:, None, :]
    zeros = jnp.zeros((n, batch, hidden), gx.dtype)

    def step(s, carry):
        h, c, bufs = carry
        z = (jax.lax.dynamic_index_in_dim(gx, s, 1, keepdims=False) + bias
             + jax.lax.dynamic_index_in_dim(hold, s, 1, keepdims=False) * hold_gates
             + jnp.einsum("nbh,nhg->nbg", h, w_h))
        # One tanh over all four gates (sigmoid written through tanh) vectorises well on CPU.
        act = jnp.tanh(z * alpha) * alpha + beta
        i, f, g, o = jnp.split(act, 4, axis=-1)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        # One buffer per quantity: reading one step of a single buffer is ~3x faster on XLA:CPU
        # than slicing quantities out of one step of a stacked buffer (measured in the backward
        # loop, which reads five of them per step).
        bufs = tuple(jax.lax.dynamic_update_index_in_dim(buf, v, s + offset, 1)
                     for buf, v, offset in zip(bufs, (h, c, i, f, g, o), _SLOT_OFFSETS))
        return h, c, bufs

    bufs = tuple(jnp.zeros((n, t_len + offset, batch, hidden), gx.dtype)
                 for offset in _SLOT_OFFSETS)
    return jax.lax.fori_loop(0, t_len, step, (zeros, zeros, bufs))[2]


def _project_streams(xs: jax.Array, w_i: jax.Array) -> jax.Array:
    return jnp.einsum("ntbd,ndg->ntbg", xs, w_i)


@jax.custom_vjp
def _project(xs: jax.Array, w_i: jax.Array) -> jax.Array:
    """Input projections of all steps of every stream, `[N, T, B, D] -> [N, T, B, 4H]`.

    A VJP of its own so that the kernel gradient contracts (T, B) in the order XLA:CPU needs no
    transposes for (see `_contract_time_batch`).
    """
    return _project_streams(xs, w_i)


def _project_fwd(xs, w_i):
    return _project_streams(xs, w_i), (xs, w_i)


def _project_bwd(res, dgx):
    xs, w_i = res
    return jnp.einsum("ntbg,ndg->ntbd", dgx, w_i), _contract_time_batch(xs, dgx)


_project.defvjp(_project_fwd, _project_bwd)


@jax.custom_vjp
def _recurrence(gx: jax.Array, w_h: jax.Array, b: jax.Array, hold: jax.Array) -> jax.Array:
    """The recurrent part of N streams, from their input projections `gx [N, T, B, 4H]`."""
    return _forward(gx, w_h, b, hold)[0]


def _recurrence_fwd(gx, w_h, b, hold):
    states = _forward(gx, w_h, b, hold)
    # gx is kept only as the backward loop's output buffer (same shape as the gradients it
    # collects, every step overwritten): initialising a fresh buffer costs a full memset. It
    # stays allocated until this layer's backward pass, which a fresh buffer would not.
    return states[0], (gx, w_h, hold, states)


def _recurrence_bwd(res, dy):
    gx, w_h, hold, (hs, cs, i_s, f_s, g_s, o_s) = res
    n, t_len = dy.shape[:2]
    zeros = jnp.zeros((n,) + dy.shape[2:], dy.dtype)
    w_h_t = jnp.swapaxes(w_h, 1, 2)

    def at(a, s):
        return jax.lax.dynamic_index_in_dim(a, s, 1, keepdims=False)

    def step(k, carry):
        # The backward loop carries the two state gradients and the bias gradient's running
        # sum; the pre-activation gradient dz of every step is stored for the kernel gradients.
        s = t_len - 1 - k
        dh_next, dc_next, db, dzs = carry
        c_prev, c = at(cs, s), at(cs, s + 1)
        i, f, g, o = at(i_s, s), at(f_s, s), at(g_s, s), at(o_s, s)
        dh = at(dy, s) + dh_next
        tc = jnp.tanh(c)
        dc = dc_next + dh * o * (1.0 - tc * tc)
        dz = jnp.concatenate([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                              dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
        dzs = jax.lax.dynamic_update_index_in_dim(dzs, dz, s, 1)
        return jnp.einsum("nbg,ngh->nbh", dz, w_h_t), dc * f, db + dz, dzs

    # The bias gradient is summed over time inside the loop, in a [N, B, 4H] accumulator that
    # stays in cache: summed after the loop it is one more full read of the stored dz (as large
    # as gx), which made the step 1-2 % slower (measured in docs/benchmark.md).
    db0 = jnp.zeros((n,) + gx.shape[2:], dy.dtype)
    _, _, db, dzs = jax.lax.fori_loop(0, t_len, step, (zeros, zeros, db0, gx))
    # The recurrent kernel gradient of all time steps: one matmul, after the loop. (Held steps
    # have dz = 0 exactly: their i, f gates are 0 and so is c.)
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:, :1]), hs[:, :-1]], axis=1)
    dw_h = _contract_time_batch(h_prev, dzs)
    return dzs, dw_h, jnp.sum(db, axis=1), jnp.zeros_like(hold)


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def _contract_time_batch(a: jax.Array, b: jax.Array) -> jax.Array:
    """`[N, T, B, P] x [N, T, B, Q] -> [N, P, Q]`, summed over (T, B) in that order.

    `jnp.einsum` may list the contracted axes as (B, T), and XLA:CPU then transposes both operands
    into batch-major order before the matmul; contracting (T, B) keeps `b` a free reshape. (No
    reshape of (T, B) into one axis either: under a batch-sharded jit that forces an all-gather.)
    """
    return jax.lax.dot_general(a, b, (((1, 2), (1, 2)), ((0,), (0,))))


def lstm_streams(xs: jax.Array, w_i: jax.Array, w_h: jax.Array, b: jax.Array,
                 hold: jax.Array) -> jax.Array:
    """N independent LSTM streams (one layer), each with its own parameters.

    Args:
      xs: `[N, T, B, D]` stream inputs, in each stream's processing order.
      w_i: `[N, D, 4H]` input kernels, gates (i, f, g, o).
      w_h: `[N, H, 4H]` recurrent kernels.
      b: `[N, 4H]` biases.
      hold: `[N, T, B, 1]` 1 where a stream's state is held at zero (padding), else 0.

    Returns:
      `[N, T, B, H]` hidden states, zero where `hold` is 1, from the zero initial state.
    """
    return _recurrence(_project(xs, w_i), w_h, b, hold)


def lstm_layer(x: jax.Array, lengths: jax.Array, weights: Sequence[Weights],
               reverse: Sequence[bool]) -> list[jax.Array]:
    """One (bi)directional LSTM layer, all directions as streams of one loop.

    Args:
      x: time-major frames `[T, B, D]`.
      lengths: valid frame counts `[B]`.
      weights: per direction, (w_input `[D, 4H]`, w_hidden `[H, 4H]`, bias `[4H]`).
      reverse: per direction, whether it runs backwards in time.

    Returns:
      Per direction, time-major outputs `[T, B, H]` in the original time order (zero at padded
      frames).
    """
    valid = (jnp.arange(x.shape[0])[:, None] < lengths[None, :]).astype(x.dtype)[..., None]
    # A reversed stream reads the time-reversed frames: its padding comes first and is held at
    # zero, so it starts from the zero state at each sequence's last valid frame.
    streams = jnp.stack([jnp.flip(x, 0) if rev else x for rev in reverse])
    hold = jnp.stack([jnp.flip(valid, 0) if rev else valid for rev in reverse])
    w_i, w_h, b = (jnp.stack([w[j] for w in weights]) for j in range(3))
    h = _recurrence(_project(streams, w_i), w_h, b, 1.0 - hold)
    return [jnp.flip(h[d], 0) if rev else h[d] for d, rev in enumerate(reverse)]
