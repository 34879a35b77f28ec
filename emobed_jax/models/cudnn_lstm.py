"""A (bi)directional LSTM layer on cuDNN's fused RNN kernel (`jax.experimental.rnn.lstm`):
`LSTMStack(impl='cudnn')`'s layer, with the parameters and semantics of one encoder's layer in
`fast_lstm.lstm_layer` and of the `lax.scan` reference `lstm.scan_layer`.

Why: `fast_lstm` is laid out for XLA:CPU; on a GPU its time loop is a chain of small kernels per
step. cuDNN runs a whole layer, both directions, forward and backward, in one fused call. The
parameters stay `LSTMStack`'s per-direction (w_input, w_hidden, bias): `pack_weights` builds
cuDNN's flat weight vector from them differentiably, so gradients (and optimizer updates) land on
the same tree whichever implementation runs.

The cuDNN kernel only lowers on CUDA (or ROCm, through MIOpen); `available()` says whether it can
run here. `use_reference=True` computes the same function with `jax.experimental.rnn.lstm_ref`,
which runs on any backend, so the weight conversion is testable on a CPU.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.experimental import rnn
from jax.extend import backend as jax_backend

from emobed_jax.models import fast_lstm

# cuDNN orders a bidirectional layer's directions forward then backward; nothing else maps on.
_SUPPORTED_REVERSE = ((False,), (False, True))


def _platform() -> str | None:
    """'cuda' or 'rocm' when the default backend is a GPU with JAX's RNN kernel, else None."""
    if jax.default_backend() not in ("gpu", "cuda", "rocm"):
        return None
    # `rnn_fwd`'s abstract evaluation needs this, and jaxlib defines it only with a GPU plugin.
    if getattr(rnn.gpu_rnn, "compute_rnn_workspace_reserve_space_sizes", None) is None:
        return None
    version = jax_backend.get_backend().platform_version.lower()
    if "rocm" in version:
        return "rocm" if hasattr(rnn.gpu_rnn, "miopen_rnn_lowering") else None
    return "cuda"


def available() -> bool:
    """Returns True when the default backend can run the cuDNN (or MIOpen) LSTM kernel."""
    return _platform() is not None


def pack_weights(weights: Sequence[fast_lstm.Weights]) -> jax.Array:
    """Packs one layer's (w_input, w_hidden, bias) per direction into cuDNN's flat LSTM weights
    (`num_layers=1`).

    The layout (see `jax.experimental.rnn`): W_ih `[4H, D]`, W_hh `[4H, H]` of each direction,
    then b_ih `[4H]`, b_hh `[4H]` of each direction; gate blocks (i, f, g, o), as ours. There is
    one bias per gate, so it becomes b_hh and b_ih is zero.

    Args:
      weights: per direction (1 or 2, forward first), (w_input `[D, 4H]`, w_hidden `[H, 4H]`,
        bias `[4H]`).

    Returns:
      The flat weight vector `[num_params]`; differentiable with respect to `weights`.
    """
    matrices = [w.T.ravel() for w_i, w_h, _ in weights for w in (w_i, w_h)]
    biases = [v for _, _, b in weights for v in (jnp.zeros_like(b), b)]
    return jnp.concatenate(matrices + biases)


def lstm_layer(x: jax.Array, lengths: jax.Array, weights: Sequence[fast_lstm.Weights],
               reverse: Sequence[bool], *, use_reference: bool = False) -> list[jax.Array]:
    """One (bi)directional LSTM layer on cuDNN; `fast_lstm.lstm_layer`'s contract.

    Args:
      x: time-major float32 frames `[T, B, D]`.
      lengths: valid frame counts `[B]`.
      weights: per direction, (w_input `[D, 4H]`, w_hidden `[H, 4H]`, bias `[4H]`).
      reverse: per direction, whether it runs backwards in time: `(False,)` or `(False, True)`.
      use_reference: compute with `jax.experimental.rnn.lstm_ref` (any backend) instead of the
        cuDNN kernel.

    Returns:
      Per direction, time-major outputs `[T, B, H]` in the original time order (zero at padded
      frames). A backward direction starts from the zero state at each sequence's last frame.

    Raises:
      ValueError: for an unsupported `reverse` or `weights` of another length.
      RuntimeError: without `use_reference` on a backend with no cuDNN/MIOpen LSTM kernel.
    """
    reverse = tuple(reverse)
    if reverse not in _SUPPORTED_REVERSE:
        raise ValueError(f"reverse={reverse!r}: the cuDNN LSTM supports only "
                         f"{' or '.join(map(repr, _SUPPORTED_REVERSE))} (forward, then backward)")
    if len(weights) != len(reverse):
        raise ValueError(f"{len(weights)} weight sets for reverse={reverse!r}: expected one per "
                         "direction")
    num_frames, batch, input_size = x.shape
    hidden = weights[0][1].shape[0]
    bidirectional = len(reverse) == 2
    weights = pack_weights(weights)
    # Clamped to 1 because cuDNN may reject empty sequences; the mask below zeroes their frames,
    # so they still produce zeros and pass no gradient.
    seq_lengths = jnp.maximum(lengths, 1).astype(jnp.int32)
    x_bt = jnp.swapaxes(x, 0, 1)  # jax.experimental.rnn is batch-first
    zeros = jnp.zeros((len(reverse), batch, hidden), x.dtype)
    if use_reference:
        w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, input_size, hidden, 1,
                                                         bidirectional)
        # Full float32 matmuls, to match what the cuDNN path computes with TF32 disabled.
        with jax.default_matmul_precision("highest"):
            y, _, _ = rnn.lstm_ref(x_bt, zeros, zeros, w_ih, w_hh, b_ih, b_hh, seq_lengths,
                                   input_size, hidden, 1, 0.0, bidirectional)
    else:
        platform = _platform()
        if platform is None:
            raise RuntimeError(f"the cuDNN LSTM needs a CUDA or ROCm backend with JAX's GPU RNN "
                               f"kernel, not {jax.default_backend()!r}; use_reference=True runs "
                               "the same computation anywhere")
        if platform == "rocm":
            # MIOpen's gate order is (i, f, o, g); JAX's own ROCm test swaps the same way.
            weights = rnn.swap_lstm_gates(weights, input_size, hidden, 1, bidirectional)
        # HIGHEST turns TF32 off in cuDNN (`_lstm_cudnn_allow_tf32`); None would allow it.
        y, _, _ = rnn.lstm(x_bt, zeros, zeros, weights, seq_lengths, input_size, hidden, 1, 0.0,
                           bidirectional, precision=jax.lax.Precision.HIGHEST)
    valid = (jnp.arange(num_frames)[:, None] < lengths[None, :]).astype(y.dtype)[..., None]
    # Explicit zeros at padded frames, whatever the kernel leaves there.
    y = jnp.swapaxes(y, 0, 1) * valid
    return list(jnp.split(y, len(reverse), axis=-1))
