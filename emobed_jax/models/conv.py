"""`ConvEncoder`: a time-parallel encoder of dilated 1-D convolutions over frames.

Frames past a sequence's length are zeroed before and after every layer, so they never enter a
valid frame's receptive field: outputs at valid frames do not depend on the padding.

By default each convolution is centred (`padding='SAME'`): frame t sees (k-1)/2 * dilation future
frames per layer, so the encoder cannot run on a live stream. With `causal=True` every layer pads
(k-1) * dilation zero frames on the left only, so frame t depends on frames <= t alone; `step`
then computes one frame at a time from a window of each layer's last inputs (the streaming state,
`initial_state`), with the very same parameters.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from emobed_jax.models.pooling import length_mask


class ConvEncoder(nn.Module):
    """A stack of dilated 1-D convolutions (residual, layer-normalised).

    Attributes:
      hidden: channels.
      num_layers: layers; layer i uses dilation 2**i.
      kernel_size: temporal kernel width.
      dropout: dropout rate after each layer (training only).
      causal: left padding only (frame t sees no future frame), see the module docstring.
    """

    hidden: int = 64
    num_layers: int = 2
    kernel_size: int = 5
    dropout: float = 0.0
    causal: bool = False

    def span(self, layer: int) -> int:
        """Frames layer `layer`'s convolution reads: (kernel_size - 1) * dilation + 1."""
        return (self.kernel_size - 1) * 2 ** layer + 1

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array, train: bool = False) -> jax.Array:
        """Encodes `x [B, T, D]` with valid `lengths [B]`; returns `[B, T, hidden]`, zero at
        padded frames."""
        mask = length_mask(lengths, x.shape[1])[..., None].astype(x.dtype)
        x = nn.Dense(self.hidden, name="input")(x * mask) * mask
        for layer in range(self.num_layers):
            padding = [(self.span(layer) - 1, 0)] if self.causal else "SAME"
            h = _conv(self, layer, padding, name=f"conv_{layer}")(x)
            h = nn.LayerNorm(name=f"norm_{layer}")(nn.relu(h))
            h = nn.Dropout(self.dropout)(h, deterministic=not train)
            x = (x + h) * mask  # zeroing padded frames keeps them out of the next receptive field
        return x


def _conv(encoder: ConvEncoder, layer: int, padding, name: str | None = None) -> nn.Conv:
    """Layer `layer`'s convolution: one definition for the parallel and the step path, so both
    read the same kernel the same way (a function, not a method, so `step` can build it unbound)."""
    return nn.Conv(encoder.hidden, (encoder.kernel_size,), kernel_dilation=(2 ** layer,),
                   padding=padding, name=name)


def initial_state(encoder: ConvEncoder, batch: int = 1, dtype=jnp.float32) -> list[jax.Array]:
    """The streaming state before the first frame: per layer `[batch, span - 1, hidden]` zeros,
    the layer's last inputs (zeros are what the causal padding puts before frame 0)."""
    return [jnp.zeros((batch, encoder.span(layer) - 1, encoder.hidden), dtype)
            for layer in range(encoder.num_layers)]


def step(encoder: ConvEncoder, params: dict, state: list[jax.Array], x: jax.Array):
    """One frame of a causal `ConvEncoder` (inference: no dropout).

    Args:
      encoder: the (causal) module whose parameters `params` are.
      params: its parameters (`{'input', 'conv_<l>', 'norm_<l>'}`).
      state: `initial_state`'s layout: each layer's last `span - 1` inputs, oldest first.
      x: `[B, D]` the next frame.

    Returns:
      (new state, `[B, hidden]`): the encoder's output at this frame, as `__call__` computes it
      for a sequence that ends here.

    Raises:
      ValueError: the encoder is not causal (its frames depend on future frames).
    """
    if not encoder.causal:
        raise ValueError("ConvEncoder.step needs a causal encoder (model.causal=True): a centred "
                         "('SAME') convolution reads future frames")
    x = nn.Dense(encoder.hidden).apply({"params": params["input"]}, x)
    new_state = []
    for layer, past in enumerate(state):
        window = jnp.concatenate([past, x[:, None]], axis=1)  # [B, span, H], oldest first
        # A 'VALID' convolution over exactly `span` frames is the causal layer's last output.
        h = _conv(encoder, layer, "VALID").apply({"params": params[f"conv_{layer}"]}, window)[:, 0]
        h = nn.LayerNorm().apply({"params": params[f"norm_{layer}"]}, nn.relu(h))
        x = x + h
        new_state.append(window[:, 1:])  # the ring of the receptive field moves one frame on
    return new_state, x
