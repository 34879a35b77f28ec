"""A fused (bi)directional LSTM with a hand-written VJP, equivalent to flax `nn.RNN` +
`nn.OptimizedLSTMCell` with `seq_lengths`.

Why: on a CPU the straightforward Flax layer spends most of a training step in ~1,200 small scan
iterations (forward and backward, per direction and layer), each with its own matmul and, in the
backward scan, a weight-gradient update. Here:

* the input projections of all time steps are one matmul outside the scan;
* all directions (and, through `lstm_stack`, any number of independent LSTMs with the same hidden
  size and length) advance in one scan: their states are a batch of "streams" `[N, B, H]`, each
  stream with its own recurrent kernel (a batched matmul);
* the backward scan propagates only the state gradients; the recurrent-kernel gradient is one
  matmul over all time steps afterwards, and the input-kernel and bias gradients come from
  autodiff of the outside projection (again one matmul each).

Variable lengths: a backward stream runs over the time-reversed sequence, and its state is held at
zero over the padded frames `t >= length`, so it starts from the zero state at each sequence's last
valid frame, exactly like `nn.RNN(reverse=True, seq_lengths=...)`. Outputs at padded frames are
zero (flax leaves arbitrary values there; `RecurrentEncoder` zeroes them anyway), and padded
frames never influence valid ones. The parameters are flax's `OptimizedLSTMCell` kernels,
concatenated over the gates in (i, f, g, o) order: see `cell_kernels`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

GATES = ("i", "f", "g", "o")


def cell_kernels(cell_params: Mapping) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Concatenates one flax `OptimizedLSTMCell`'s parameters over the gates.

    Args:
      cell_params: the cell's param dict: `i<gate>/kernel` `[D, H]` and `h<gate>/kernel` `[H, H]`,
        `h<gate>/bias` `[H]` for gates i, f, g, o.

    Returns:
      (w_input `[D, 4H]`, w_hidden `[H, 4H]`, bias `[4H]`), gate blocks in (i, f, g, o) order.
    """
    w_i = jnp.concatenate([cell_params[f"i{g}"]["kernel"] for g in GATES], axis=-1)
    w_h = jnp.concatenate([cell_params[f"h{g}"]["kernel"] for g in GATES], axis=-1)
    b = jnp.concatenate([cell_params[f"h{g}"]["bias"] for g in GATES], axis=-1)
    return w_i, w_h, b


def _cell_forward(z: jax.Array, c_prev: jax.Array, m: jax.Array):
    """Gate activations and the masked new state from pre-activations `z [..., 4H]`."""
    zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
    i, f, o = jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jax.nn.sigmoid(zo)
    g = jnp.tanh(zg)
    c = m * (f * c_prev + i * g)
    h = o * jnp.tanh(c)
    return i, f, g, o, c, h


def _recurrence_fwd_impl(gx, w_h, mask):
    """Runs the streams; returns outputs and what the backward pass needs."""
    _, n, b, four_h = gx.shape
    hidden = four_h // 4
    zeros = jnp.zeros((n, b, hidden), gx.dtype)

    def step(carry, inputs):
        h_prev, c_prev = carry
        gx_t, m_t = inputs
        z = gx_t + jnp.einsum("nbh,nhg->nbg", h_prev, w_h)
        i, f, g, o, c, h = _cell_forward(z, c_prev, m_t)
        return (h, c), (h, c, jnp.concatenate([i, f, g, o], axis=-1))

    _, (h, c, acts) = jax.lax.scan(step, (zeros, zeros), (gx, mask))
    return h, (h, c, acts)


@jax.custom_vjp
def lstm_recurrence(gx: jax.Array, w_h: jax.Array, mask: jax.Array) -> jax.Array:
    """The LSTM recurrence of N independent streams over time-major gate inputs.

    Args:
      gx: `[T, N, B, 4H]` input pre-activations (input projection plus bias), gates (i, f, g, o).
      w_h: `[N, H, 4H]` recurrent kernels, one per stream.
      mask: `[T, N, B, 1]` 1 where a stream's state is live, 0 where it is held at zero.

    Returns:
      `[T, N, B, H]` hidden states (zero where `mask` is 0), starting from the zero state.
    """
    return _recurrence_fwd_impl(gx, w_h, mask)[0]


def _recurrence_fwd(gx, w_h, mask):
    h, (_, c, acts) = _recurrence_fwd_impl(gx, w_h, mask)
    return h, (h, c, acts, w_h, mask)


def _recurrence_bwd(res, dh_out):
    h, c, acts, w_h, mask = res
    n, b, hidden = h.shape[1:]
    zeros = jnp.zeros((n, b, hidden), h.dtype)
    c_prev = jnp.concatenate([zeros[None], c[:-1]], axis=0)
    w_h_t = jnp.swapaxes(w_h, 1, 2)

    def step(carry, inputs):
        dh_next, dc_next = carry
        dh_t, act, c_t, cp_t, m_t = inputs
        i, f, g, o = jnp.split(act, 4, axis=-1)
        tc = jnp.tanh(c_t)
        dh = dh_t + dh_next
        # c_t = m * (f * c_prev + i * g) and h_t = o * tanh(c_t): the mask zeroes the gradient
        # of the pre-mask cell state, so no gradient crosses a held (padded) frame.
        dc = m_t * (dc_next + dh * o * (1.0 - tc * tc))
        dz = jnp.concatenate([dc * g * i * (1.0 - i), dc * cp_t * f * (1.0 - f),
                              dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
        dh_prev = jnp.einsum("nbg,ngh->nbh", dz, w_h_t)
        return (dh_prev, dc * f), dz

    _, dz = jax.lax.scan(step, (zeros, zeros), (dh_out, acts, c, c_prev, mask), reverse=True)
    h_prev = jnp.concatenate([zeros[None], h[:-1]], axis=0)
    # The recurrent-kernel gradient of all time steps at once (not inside the scan).
    dw_h = jnp.einsum("tnbh,tnbg->nhg", h_prev, dz)
    return dz, dw_h, jnp.zeros_like(mask)


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def lstm_stack(inputs: Sequence[jax.Array], lengths: Sequence[jax.Array],
               cells: Sequence[Sequence[Mapping]], reverse: Sequence[bool]) -> list[list[jax.Array]]:
    """One LSTM layer for several independent sequences and directions, in a single scan.

    All sequences share the time length T and batch size B (they are stacked as streams); input
    sizes may differ.

    Args:
      inputs: per sequence, time-major frames `[T, B, D_k]`.
      lengths: per sequence, valid frame counts `[B]`.
      cells: per sequence, one flax `OptimizedLSTMCell` param dict per direction.
      reverse: per direction (the same for every sequence), whether it runs backwards in time.

    Returns:
      Per sequence, per direction, time-major outputs `[T, B, H]` in the original time order
      (zero at padded frames).
    """
    num_frames = inputs[0].shape[0]
    time = jnp.arange(num_frames)
    gx, w_h, masks = [], [], []
    for x, length, seq_cells in zip(inputs, lengths, cells):
        kernels = [cell_kernels(p) for p in seq_cells]
        w_i = jnp.concatenate([k[0] for k in kernels], axis=-1)
        bias = jnp.concatenate([k[2] for k in kernels], axis=-1)
        # Every direction's input projection in one matmul over all time steps.
        proj = jnp.einsum("tbd,dg->tbg", x, w_i) + bias
        valid = (time[:, None] < length[None, :]).astype(x.dtype)[..., None]  # [T, B, 1]
        for d, (rev, k) in enumerate(zip(reverse, kernels)):
            block = proj[..., d * k[1].shape[-1]:(d + 1) * k[1].shape[-1]]
            gx.append(jnp.flip(block, 0) if rev else block)
            masks.append(jnp.flip(valid, 0) if rev else valid)
            w_h.append(k[1])
    h = lstm_recurrence(jnp.stack(gx, axis=1), jnp.stack(w_h), jnp.stack(masks, axis=1))
    outputs, stream = [], 0
    for _ in inputs:
        per_dir = []
        for rev in reverse:
            out = h[:, stream]
            per_dir.append(jnp.flip(out, 0) if rev else out)
            stream += 1
        outputs.append(per_dir)
    return outputs
