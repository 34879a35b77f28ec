"""`SharedHead`: the recognition network every modality's embedding goes through.

EmoBed's point is that one head serves all modalities: an embedding from any encoder must be
recognisable by the same network, which pulls the modalities into one space. `EmoBedModel`
creates exactly one `SharedHead` and calls it once per modality.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax


class SharedHead(nn.Module):
    """Hidden ReLU layers (with dropout) then a linear output layer.

    Attributes:
      hidden: widths of the hidden layers (may be empty).
      num_outputs: 2 for arousal/valence regression, the class count for classification.
      dropout: dropout rate after each hidden layer (training only).
    """

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
