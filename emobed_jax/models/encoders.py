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

from emobed_jax.models import fast_lstm

RNN_IMPLS = ("fused", "flax")


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
      rnn_impl: 'fused' (LSTM only: `fast_lstm`, both directions in one scan with a hand-written
        VJP) or 'flax' (`nn.RNN`). Both have the same parameters and outputs; GRU always uses
        'flax'.
    """

    cell: str = "lstm"
    hidden: int = 64
    num_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.0
    rnn_impl: str = "fused"

    def _make_rnn(self, name: str, reverse: bool = False) -> nn.RNN:
        cell_cls = nn.OptimizedLSTMCell if self.cell == "lstm" else nn.GRUCell
        return nn.RNN(cell_cls(self.hidden), reverse=reverse, keep_order=True, name=name)

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array, train: bool = False) -> jax.Array:
        """Encodes `x [B, T, D]` with valid `lengths [B]`; returns `[B, T, H]`."""
        if self.rnn_impl not in RNN_IMPLS:
            raise ValueError(f"rnn_impl={self.rnn_impl!r}: expected one of {list(RNN_IMPLS)}")
        if self.cell == "lstm" and self.rnn_impl == "fused":
            return self._fused(x, lengths, train)
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

    def _fused(self, x: jax.Array, lengths: jax.Array, train: bool) -> jax.Array:
        # Parameter names follow the flax path (the cells of `nn.RNN` are auto-named
        # OptimizedLSTMCell_<k> in creation order), so checkpoints work with either impl.
        reverse = (False, True) if self.bidirectional else (False,)
        mask = length_mask(lengths, x.shape[1]).T[..., None]  # time-major [T, B, 1]
        h = jnp.swapaxes(x, 0, 1)
        cell = 0
        for _ in range(self.num_layers):
            cells = []
            for _ in reverse:
                params = _CellParams(self.hidden, name=f"OptimizedLSTMCell_{cell}")(h.shape[-1])
                cells.append(params)
                cell += 1
            outs = fast_lstm.lstm_layer(h, lengths, cells, reverse)
            h = jnp.concatenate(outs, axis=-1)
            if train and self.dropout > 0:
                # The keep mask is drawn batch-major, as nn.Dropout draws it in the flax path.
                keep = nn.Dropout(self.dropout)(jnp.ones(h.shape[1:2] + h.shape[:1] + h.shape[2:],
                                                        h.dtype), deterministic=False)
                h = h * jnp.swapaxes(keep, 0, 1)
            h = h * mask
        return jnp.swapaxes(h, 0, 1)


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
                 kernel_size: int, dropout: float, name: str, rnn_impl: str = "fused") -> nn.Module:
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
