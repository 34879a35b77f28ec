"""`Projector`: maps one modality's encoding into the shared embedding space.

`ACTIVATIONS` lists the activations a projector may end in (`model.projector_activation`); the
functions sit beside the names, so the table and the implementation cannot drift apart.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_FUNCTIONS = {"tanh": jnp.tanh, "relu": nn.relu, "linear": lambda x: x}
ACTIVATIONS = tuple(_FUNCTIONS)


class Projector(nn.Module):
    """Dense layer to the embedding size, then an activation from `ACTIVATIONS`.

    Attributes:
      embedding_dim: size of the shared embedding.
      activation: 'tanh', 'relu' or 'linear'.
    """

    embedding_dim: int = 64
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Projects `[..., H]` to `[..., embedding_dim]`."""
        if self.activation not in _FUNCTIONS:
            raise ValueError(f"model.projector_activation={self.activation!r}: expected one of "
                             f"{list(ACTIVATIONS)}")
        return _FUNCTIONS[self.activation](nn.Dense(self.embedding_dim, name="dense")(x))
