"""emobed-jax: crossmodal emotion embeddings (EmoBed) in JAX/Flax.

EmoBed (Han, Zhang, Ren and Schuller, IEEE Transactions on Affective Computing 12(3), 2021)
trains an emotion recogniser that sees one modality at inference but learns from every modality
during training, through a shared recognition network (joint training) and a crossmodal
embedding-alignment loss (crossmodal training).
"""

__version__ = "0.2.0"
