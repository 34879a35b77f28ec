"""`ConvEncoder`: a time-parallel encoder of dilated 1-D convolutions over frames.

Frames past a sequence's length are zeroed before and after every layer, so they never enter a
valid frame's receptive field: outputs at valid frames do not depend on the padding.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from emobed_jax.models.pooling import length_mask


class ConvEncoder(nn.Module):
    """A stack of dilated 1-D convolutions (residual, layer-normalised).

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
        """Encodes `x [B, T, D]` with valid `lengths [B]`; returns `[B, T, hidden]`, zero at
        padded frames."""
        mask = length_mask(lengths, x.shape[1])[..., None].astype(x.dtype)
        x = nn.Dense(self.hidden, name="input")(x * mask) * mask
        for layer in range(self.num_layers):
            h = nn.Conv(self.hidden, (self.kernel_size,), kernel_dilation=(2 ** layer,),
                        padding="SAME", name=f"conv_{layer}")(x)
            h = nn.LayerNorm(name=f"norm_{layer}")(nn.relu(h))
            h = nn.Dropout(self.dropout)(h, deterministic=not train)
            x = (x + h) * mask  # zeroing padded frames keeps them out of the next receptive field
        return x
