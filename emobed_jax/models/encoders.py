"""Per-modality frame-sequence encoders and masked utterance pooling.

Every encoder maps frames `[B, T, D]` plus valid lengths `[B]` to per-frame representations
`[B, T, H]`. Frames past a sequence's length never influence valid frames: recurrent layers use
`seq_lengths` (the backward direction starts at the last valid frame), convolutions see zeros.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from emobed_jax.models import cudnn_lstm, fast_lstm

RNN_IMPLS = ("auto", "fused", "cudnn", "flax")


def resolve_rnn_impl(rnn_impl: str) -> str:
    """The LSTM implementation to run: 'auto' is 'cudnn' where cuDNN's kernel can run (a GPU),
    else 'fused'.

    Args:
      rnn_impl: one of `RNN_IMPLS`.

    Returns:
      'fused', 'cudnn' or 'flax'.
    """
    if rnn_impl not in RNN_IMPLS:
        raise ValueError(f"rnn_impl={rnn_impl!r}: expected one of {list(RNN_IMPLS)}")
    if rnn_impl == "auto":
        return "cudnn" if cudnn_lstm.available() else "fused"
    return rnn_impl


def length_mask(lengths: jax.Array, num_frames: int) -> jax.Array:
    """Returns a float mask `[B, T]` that is 1 for frames before each sequence's length."""
    return (jnp.arange(num_frames)[None, :] < lengths[:, None]).astype(jnp.float32)


class _DenseParams(nn.Module):
    """A kernel (and bias) named like `nn.Dense`'s, returned instead of applied."""

    features: int
    kernel_init: nn.initializers.Initializer
    use_bias: bool

    @nn.compact
    def __call__(self, input_dim: int) -> dict:
        params = {"kernel": self.param("kernel", self.kernel_init, (input_dim, self.features))}
        if self.use_bias:
            params["bias"] = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return params


class _CellParams(nn.Module):
    """The parameters of one flax `OptimizedLSTMCell` (same names, shapes and initialisers)."""

    features: int

    @nn.compact
    def __call__(self, input_dim: int) -> dict:
        params = {}
        for gate in fast_lstm.GATES:
            params[f"i{gate}"] = _DenseParams(self.features, nn.initializers.lecun_normal(), False,
                                              name=f"i{gate}")(input_dim)
            params[f"h{gate}"] = _DenseParams(self.features, nn.initializers.orthogonal(), True,
                                              name=f"h{gate}")(self.features)
        return params


class RecurrentEncoder(nn.Module):
    """Stacked (bidirectional) LSTM or GRU over the frames, with dropout between layers.

    Attributes:
      cell: 'lstm' or 'gru'.
      hidden: units per direction.
      num_layers: stacked layers.
      bidirectional: run a backward direction too and concatenate.
      dropout: dropout rate after each layer (training only).
      rnn_impl: 'fused' (LSTM only: `fast_lstm`, both directions in one loop with a hand-written
        VJP), 'cudnn' (LSTM only, GPU: `cudnn_lstm`, cuDNN's kernel), 'auto' ('cudnn' on a GPU,
        else 'fused') or 'flax' (`nn.RNN`). All have the same parameters and outputs; GRU always
        uses 'flax'.
    """

    cell: str = "lstm"
    hidden: int = 64
    num_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.0
    rnn_impl: str = "auto"

    def _make_rnn(self, name: str, reverse: bool = False) -> nn.RNN:
        cell_cls = nn.OptimizedLSTMCell if self.cell == "lstm" else nn.GRUCell
        return nn.RNN(cell_cls(self.hidden), reverse=reverse, keep_order=True, name=name)

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array, train: bool = False) -> jax.Array:
        """Encodes `x [B, T, D]` with valid `lengths [B]`; returns `[B, T, H]`."""
        impl = resolve_rnn_impl(self.rnn_impl)
        if self.cell == "lstm" and impl != "flax":
            stack = fused_lstm_stack(self.hidden, self.num_layers, self.bidirectional,
                                     self.dropout, x.shape, train)
            return run_fused_lstm_stacks([x], [lengths], [stack], self.bidirectional, impl)[0]
        mask = length_mask(lengths, x.shape[1])[..., None]
        for layer in range(self.num_layers):
            fwd = self._make_rnn(f"fwd_{layer}")(x, seq_lengths=lengths)
            if self.bidirectional:
                bwd = self._make_rnn(f"bwd_{layer}", reverse=True)(x, seq_lengths=lengths)
                x = jnp.concatenate([fwd, bwd], axis=-1)
            else:
                x = fwd
            x = nn.Dropout(self.dropout)(x, deterministic=not train) * mask
        return x

class FusedLSTMParams(nn.Module):
    """A fused LSTM encoder's parameters and dropout masks without running it (named like a
    `RecurrentEncoder`, so that `EmoBedModel` can run several encoders in shared loops).

    Attributes:
      hidden, num_layers, bidirectional, dropout: as in `RecurrentEncoder`.
    """

    hidden: int = 64
    num_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x_shape: tuple, train: bool = False) -> tuple[list, list]:
        """Returns `fused_lstm_stack`'s (cells, keeps) for an input of shape `x_shape`."""
        return fused_lstm_stack(self.hidden, self.num_layers, self.bidirectional, self.dropout,
                                tuple(x_shape), train)


def fused_lstm_stack(hidden: int, num_layers: int, bidirectional: bool, dropout: float,
                     x_shape: tuple, train: bool) -> tuple[list, list]:
    """Creates a fused LSTM stack's parameters and dropout keep masks in the calling module.

    Call it inside a compact method: the parameters are named as flax names `nn.RNN`'s cells in
    `RecurrentEncoder` (`OptimizedLSTMCell_<k>`, in creation order) and the dropout layers as its
    `Dropout_<layer>`, so parameters, checkpoints and dropout masks are the same whichever
    implementation, or fused group of encoders (`run_fused_lstm_stacks`), runs them.

    Args:
      hidden, num_layers, bidirectional, dropout: as in `RecurrentEncoder`.
      x_shape: the encoder's input shape `[B, T, D]`.
      train: draw dropout masks (else None).

    Returns:
      (cells, keeps): per layer, one `OptimizedLSTMCell` param dict per direction; per layer, a
      time-major keep mask `[T, B, H * directions]` scaled by 1 / (1 - dropout), or None.
    """
    batch, frames, input_dim = x_shape
    directions = 2 if bidirectional else 1
    cells, keeps, cell = [], [], 0
    for layer in range(num_layers):
        layer_cells = []
        for _ in range(directions):
            layer_cells.append(_CellParams(hidden, name=f"OptimizedLSTMCell_{cell}")(
                input_dim if layer == 0 else hidden * directions))
            cell += 1
        cells.append(layer_cells)
        keep = None
        if train and dropout > 0:
            # Drawn batch-major, as nn.Dropout draws it in the flax path.
            keep = jnp.swapaxes(nn.Dropout(dropout)(
                jnp.ones((batch, frames, hidden * directions)), deterministic=False), 0, 1)
        keeps.append(keep)
    return cells, keeps


def run_fused_lstm_stacks(xs: Sequence[jax.Array], lengths: Sequence[jax.Array],
                          stacks: Sequence[tuple[list, list]], bidirectional: bool,
                          rnn_impl: str = "fused") -> list[jax.Array]:
    """Runs one or more encoders' LSTM stacks (`fused_lstm_stack` parameters), layer by layer.

    With 'fused', encoders of the same frame count (audio and video of a frame-aligned corpus) run
    as streams of one loop per layer (`fast_lstm.lstm_layer`); others get loops of their own.
    With 'cudnn' every encoder's layer is one cuDNN call (`cudnn_lstm.lstm_layer`). Results equal
    running each encoder alone.

    Args:
      xs: per encoder, frames `[B, T_e, D_e]`.
      lengths: per encoder, valid frame counts `[B]`.
      stacks: per encoder, `fused_lstm_stack`'s (cells, keeps); all with the same layer count.
      bidirectional: whether every layer has a backward direction.
      rnn_impl: 'fused' or 'cudnn' ('auto' resolves by `resolve_rnn_impl`).

    Returns:
      Per encoder, `[B, T_e, H * directions]` (zero at padded frames).
    """
    impl = resolve_rnn_impl(rnn_impl)
    if impl not in ("fused", "cudnn"):
        raise ValueError(f"rnn_impl={rnn_impl!r}: expected 'fused', 'cudnn' or 'auto'")
    reverse = (False, True) if bidirectional else (False,)
    groups: dict[tuple, list[int]] = {}
    for e, x in enumerate(xs):
        groups.setdefault(x.shape[:2], []).append(e)
    outputs = [None] * len(xs)
    for members in groups.values():
        hs = [jnp.swapaxes(xs[e], 0, 1) for e in members]  # time-major [T, B, D]
        masks = [length_mask(lengths[e], xs[e].shape[1]).T[..., None] for e in members]
        for layer in range(len(stacks[members[0]][0])):
            layer_cells = [stacks[e][0][layer] for e in members]
            if impl == "cudnn":
                outs = [cudnn_lstm.lstm_layer(h, lengths[e], c, reverse)
                        for h, e, c in zip(hs, members, layer_cells)]
            else:
                outs = fast_lstm.lstm_layer(hs, [lengths[e] for e in members], layer_cells,
                                            reverse)
            hs = []
            for e, out, mask in zip(members, outs, masks):
                h = jnp.concatenate(out, axis=-1)
                keep = stacks[e][1][layer]
                hs.append((h if keep is None else h * keep) * mask)
        for e, h in zip(members, hs):
            outputs[e] = jnp.swapaxes(h, 0, 1)
    return outputs


class ConvEncoder(nn.Module):
    """A time-parallel stack of dilated 1-D convolutions (residual, layer-normalised).

    Attributes:
      hidden: channels.
      num_layers: layers; layer i uses dilation 2**i.
      kernel_size: temporal kernel width.
      dropout: dropout rate after each layer (training only).
    """

    hidden: int = 64
    num_layers: int = 2
    kernel_size: int = 5
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array, train: bool = False) -> jax.Array:
        """Encodes `x [B, T, D]` with valid `lengths [B]`; returns `[B, T, hidden]`."""
        mask = length_mask(lengths, x.shape[1])[..., None]
        x = nn.Dense(self.hidden, name="input")(x * mask) * mask
        for layer in range(self.num_layers):
            h = nn.Conv(self.hidden, (self.kernel_size,), kernel_dilation=(2 ** layer,),
                        padding="SAME", name=f"conv_{layer}")(x)
            h = nn.LayerNorm(name=f"norm_{layer}")(nn.relu(h))
            h = nn.Dropout(self.dropout)(h, deterministic=not train)
            x = (x + h) * mask  # zeroing padded frames keeps them out of the next receptive field
        return x


def masked_mean_pool(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `x [B, T, H]` over frames where `mask [B, T]` is nonzero; zeros for empty rows."""
    mask = mask.astype(x.dtype)[..., None]
    return jnp.sum(x * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


class AttentionPool(nn.Module):
    """Masked attention pooling: softmax over frames of a learned score, weighted sum."""

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """Pools `x [B, T, H]` over valid frames of `mask [B, T]`; returns `[B, H]`."""
        scores = nn.Dense(1, name="score")(jnp.tanh(nn.Dense(x.shape[-1], name="key")(x)))[..., 0]
        valid = mask > 0
        scores = jnp.where(valid, scores, -1e9)
        weights = jax.nn.softmax(scores, axis=-1) * valid  # all-invalid rows pool to zero
        return jnp.einsum("bt,bth->bh", weights, x)


def make_encoder(kind: str, hidden: int, num_layers: int, bidirectional: bool,
                 kernel_size: int, dropout: float, name: str, rnn_impl: str = "auto") -> nn.Module:
    """Builds the encoder named by `kind` ('lstm', 'gru' or 'conv'); `rnn_impl` as in
    `RecurrentEncoder`."""
    if kind in ("lstm", "gru"):
        return RecurrentEncoder(cell=kind, hidden=hidden, num_layers=num_layers,
                                bidirectional=bidirectional, dropout=dropout, name=name,
                                rnn_impl=rnn_impl)
    if kind == "conv":
        return ConvEncoder(hidden=hidden, num_layers=num_layers, kernel_size=kernel_size,
                           dropout=dropout, name=name)
    raise ValueError(f"model.encoder={kind!r}: expected one of ['lstm', 'gru', 'conv']")


class MLPHead(nn.Module):
    """The shared recognition network: hidden ReLU layers then a linear output layer."""

    hidden: Sequence[int] = (32,)
    num_outputs: int = 2
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps embeddings `[..., E]` to outputs `[..., num_outputs]`."""
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
            x = nn.Dropout(self.dropout)(x, deterministic=not train)
        return nn.Dense(self.num_outputs, name="output")(x)
