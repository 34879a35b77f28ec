"""`LSTMStack`: the project's one recurrent layer, a stacked (bidirectional) LSTM over frames.

Parameters, per layer and direction, are stored exactly as the fused kernels consume them:
`layer_<l>/forward/{w_input [D, 4H], w_hidden [H, 4H], bias [4H]}` (and `backward/` when
bidirectional), gate blocks in (i, f, g, o) order, so no call concatenates per-gate kernels.
Initialisation is flax `OptimizedLSTMCell`'s (lecun-normal input kernels, an orthogonal recurrent
kernel per gate block, zero bias), so training behaves as with the flax layer.

The implementation is a switch (`IMPLS`): 'scan' is a plain `jax.lax.scan` over time, the
readable reference the others are tested against; 'fused' is `fast_lstm` (hand-written VJP,
tuned for XLA:CPU); 'cudnn' is `cudnn_lstm` (cuDNN's kernel, GPU only); 'auto' picks 'cudnn'
where it can run, else 'fused'. All give the same outputs and gradients: zero at padded frames,
and a backward direction starts from the zero state at each sequence's last valid frame, like
`nn.RNN(reverse=True, seq_lengths=...)`.

A unidirectional stack is causal: `initial_state` and `step` run it one frame at a time (live
streams, `inference.streaming`) from the same parameters, with the cell of the 'scan' reference.

Each modality's encoder runs its own loops. Running audio's and video's stacks as streams of one
shared loop per layer was measured against this (`crossmodal` training step, 2 host devices,
alternating fresh processes): 148.6-155.3 ms shared against 146.5-151.4 ms separate, i.e. no
gain, so there is one code path per encoder.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from emobed_jax.models import cudnn_lstm, fast_lstm

IMPLS = ("auto", "fused", "cudnn", "scan")


def resolve_impl(impl: str) -> str:
    """The implementation to run: 'auto' is 'cudnn' where cuDNN's kernel can run (a GPU), else
    'fused'.

    Args:
      impl: one of `IMPLS`.

    Returns:
      'fused', 'cudnn' or 'scan'.
    """
    if impl not in IMPLS:
        raise ValueError(f"rnn_impl={impl!r}: expected one of {list(IMPLS)}")
    if impl == "auto":
        return "cudnn" if cudnn_lstm.available() else "fused"
    return impl


def _orthogonal_per_gate(key: jax.Array, shape: tuple, dtype=jnp.float32) -> jax.Array:
    """`[H, 4H]`: an orthogonal `[H, H]` block per gate, as four `OptimizedLSTMCell` kernels."""
    hidden, width = shape
    blocks = [nn.initializers.orthogonal()(k, (hidden, hidden), dtype)
              for k in jax.random.split(key, width // hidden)]
    return jnp.concatenate(blocks, axis=-1)


class _Direction(nn.Module):
    """One direction's parameters of one layer, returned rather than applied."""

    hidden: int

    @nn.compact
    def __call__(self, input_dim: int) -> fast_lstm.Weights:
        gates = 4 * self.hidden
        # lecun_normal over [D, 4H] has fan-in D, the same scale as per-gate [D, H] kernels.
        return (self.param("w_input", nn.initializers.lecun_normal(), (input_dim, gates)),
                self.param("w_hidden", _orthogonal_per_gate, (self.hidden, gates)),
                self.param("bias", nn.initializers.zeros_init(), (gates,)))


class _Layer(nn.Module):
    """One layer's parameters: a `_Direction` named 'forward' (and 'backward')."""

    hidden: int
    bidirectional: bool

    @nn.compact
    def __call__(self, input_dim: int) -> list[fast_lstm.Weights]:
        names = ("forward", "backward") if self.bidirectional else ("forward",)
        return [_Direction(self.hidden, name=n)(input_dim) for n in names]


class LSTMStack(nn.Module):
    """Stacked (bidirectional) LSTM over frames `[B, T, D]`, with dropout after each layer.

    Attributes:
      hidden: units per direction.
      num_layers: stacked layers.
      bidirectional: run a backward direction too and concatenate (forward first).
      dropout: dropout rate after each layer (training only).
      impl: one of `IMPLS` (see the module docstring).
    """

    hidden: int = 64
    num_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.0
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array, train: bool = False) -> jax.Array:
        """Encodes `x [B, T, D]` with valid `lengths [B]`, in `x`'s dtype.

        Returns:
          `[B, T, hidden * directions]`, zero at padded frames.
        """
        impl = resolve_impl(self.impl)
        # Looked up per call, so that a test can swap `cudnn_lstm.lstm_layer` for its reference.
        run_layer = {"fused": fast_lstm.lstm_layer, "cudnn": cudnn_lstm.lstm_layer,
                     "scan": scan_layer}[impl]
        reverse = (False, True) if self.bidirectional else (False,)
        h = jnp.swapaxes(x, 0, 1)  # every implementation runs time-major [T, B, D]
        for layer in range(self.num_layers):
            weights = _Layer(self.hidden, self.bidirectional, name=f"layer_{layer}")(h.shape[-1])
            weights = [tuple(w.astype(x.dtype) for w in ws) for ws in weights]
            h = jnp.concatenate(run_layer(h, lengths, weights, reverse), axis=-1)
            if train and self.dropout > 0:
                # As nn.Dropout; padded frames are zero already and stay zero.
                keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout, h.shape)
                h = jnp.where(keep, h / (1.0 - self.dropout), 0.0).astype(x.dtype)
        return jnp.swapaxes(h, 0, 1)


def _cell(x: jax.Array, carry: tuple, w_input, w_hidden, bias) -> tuple:
    """One LSTM time step, gates in (i, f, g, o) order: `(h, c)` from `x [B, D]` and `(h, c)`."""
    h, c = carry
    z = x @ w_input + h @ w_hidden + bias
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def scan_layer(x: jax.Array, lengths: jax.Array, weights: Sequence[fast_lstm.Weights],
               reverse: Sequence[bool]) -> list[jax.Array]:
    """One (bi)directional LSTM layer as a plain `lax.scan`: the reference implementation, with
    `fast_lstm.lstm_layer`'s arguments (time-major `x [T, B, D]`) and result (per direction,
    `[T, B, H]`, zero at padded frames)."""
    valid = (jnp.arange(x.shape[0])[:, None] < lengths[None, :])[..., None]
    outputs = []
    for (w_input, w_hidden, bias), rev in zip(weights, reverse):
        def step(carry, inputs, w_input=w_input, w_hidden=w_hidden, bias=bias):
            x_t, valid_t = inputs
            h, c = _cell(x_t, carry, w_input, w_hidden, bias)
            # The state stays zero over padding: a backward pass meets the padding first, so it
            # starts from zero at the last valid frame.
            h, c = jnp.where(valid_t, h, 0), jnp.where(valid_t, c, 0)
            return (h, c), h

        zeros = jnp.zeros((x.shape[1], w_hidden.shape[0]), x.dtype)
        outputs.append(jax.lax.scan(step, (zeros, zeros), (x, valid), reverse=rev)[1])
    return outputs


# ----------------------------------------------------------------------------- streaming


def _layers(params: dict) -> list[dict]:
    """The forward directions of an `LSTMStack`'s parameters, layer by layer; refuses a
    bidirectional stack (its backward direction starts at the sequence's last frame)."""
    layers = [params[f"layer_{l}"] for l in range(len(params))]
    if any("backward" in layer for layer in layers):
        raise ValueError("a bidirectional LSTM cannot run frame by frame: its backward direction "
                         "reads future frames (train with model.bidirectional=False)")
    return [layer["forward"] for layer in layers]


def initial_state(params: dict, batch: int = 1, dtype=jnp.float32) -> list[tuple]:
    """The zero `(h [B, H], c [B, H])` per layer a causal `LSTMStack` starts a sequence from.

    Args:
      params: the stack's parameters (`layer_<l>/forward/...`).
      batch: sequences run side by side.

    Raises:
      ValueError: the stack is bidirectional.
    """
    return [(jnp.zeros((batch, w["w_hidden"].shape[0]), dtype),) * 2 for w in _layers(params)]


def step(params: dict, state: list[tuple], x: jax.Array) -> tuple[list[tuple], jax.Array]:
    """One frame of a unidirectional `LSTMStack` (inference: no dropout).

    Args:
      params: the stack's parameters, the layout the fused kernels read.
      state: `initial_state`'s `(h, c)` per layer, carried from the previous frame.
      x: `[B, D]` the next frame.

    Returns:
      (new state, `[B, H]` the last layer's output at this frame): what `LSTMStack.__call__`
      returns at this frame of a sequence it runs whole.

    Raises:
      ValueError: the stack is bidirectional.
    """
    new_state = []
    for w, carry in zip(_layers(params), state):
        carry = _cell(x, carry, *(w[k].astype(x.dtype) for k in ("w_input", "w_hidden", "bias")))
        new_state.append(carry)
        x = carry[0]
    return new_state, x
