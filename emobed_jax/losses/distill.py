"""Cross-modal knowledge-distillation terms: a target-modality student matches a frozen teacher.

The teacher (trained on the auxiliary modalities, or on all of them) is run without gradient
inside the training step; the student, which sees only the target modality, is trained on its
task loss plus one of these terms (`method='distill'`, docs/methods.md):

  outputs, regression   'mse' (mean squared difference of the head outputs) or 'ccc'
                        (1 - CCC between student and teacher outputs, per dimension over the batch)
  outputs, category     temperature-scaled KL(teacher || student) on the class logits, times T^2
  embeddings            'mse' (mean squared difference per embedding coordinate) or 'cosine'
                        (1 - cosine similarity)

Every term is a pure function of arrays with a boolean mask (True = the frame or utterance takes
part: labelled target frames where the teacher's auxiliary modality is present). Masked elements
never influence the value, even when they hold NaN. The teacher's values are wrapped in
`stop_gradient`, so no gradient reaches the teacher whatever the caller does. A term with no valid
element is 0.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from emobed_jax.losses import crossmodal, task as task_losses

# `config.loss.distill_target`: what the student matches.
DISTILL_TARGETS = ("outputs", "embeddings")


def _inputs(student, teacher, mask):
    """Float student, gradient-free teacher (both with masked rows zeroed) and a bool mask."""
    student, teacher = task_losses._as_float(student), task_losses._as_float(teacher)
    if student.shape != teacher.shape:
        raise ValueError(f"student shape {student.shape} and teacher shape {teacher.shape} differ; "
                         f"expected identical [..., K] shapes")
    mask = (jnp.ones(student.shape[:-1], bool) if mask is None
            else jnp.asarray(mask).astype(bool))
    if mask.shape != student.shape[:-1]:
        raise ValueError(f"mask shape {mask.shape}: expected {student.shape[:-1]}")
    teacher = jax.lax.stop_gradient(teacher)
    # Zeroing masked rows first keeps NaN padding out of values and gradients.
    student = jnp.where(mask[..., None], student, 0.0)
    teacher = jnp.where(mask[..., None], teacher, 0.0)
    return student, teacher, mask


def _masked_mean(values, mask):
    """Mean of `values [...]` over `mask`; 0 when nothing is valid."""
    count = jnp.sum(mask).astype(values.dtype)
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1.0)


def output_mse(student, teacher, mask=None):
    """Mean squared difference of regression outputs, per dimension over valid elements, averaged
    over dimensions.

    Args:
      student: [..., K] student outputs (frames [B, T, K] or utterances [B, K]).
      teacher: [..., K] teacher outputs (no gradient flows into them).
      mask: bool [...]; True = valid.

    Returns:
      Scalar loss.
    """
    student, teacher, mask = _inputs(student, teacher, mask)
    return task_losses.mse_loss(student, teacher, mask)[0]


def output_ccc(student, teacher, mask=None):
    """1 - CCC between student and teacher outputs (population moments over the valid elements of
    the batch, per dimension), averaged over dimensions: the task's own CCC loss with the teacher's
    predictions as labels.

    Args:
      student, teacher: [..., K].
      mask: bool [...].

    Returns:
      Scalar loss.
    """
    student, teacher, mask = _inputs(student, teacher, mask)
    return task_losses.ccc_loss(student, teacher, mask)[0]


def logits_kl(student, teacher, mask=None, temperature: float = 1.0):
    """Hinton et al.'s soft-target term: T^2 * KL(softmax(teacher/T) || softmax(student/T)),
    averaged over valid elements. The T^2 factor keeps its gradient's scale independent of T.

    Args:
      student, teacher: [..., C] class logits.
      mask: bool [...].
      temperature: T > 0.

    Returns:
      Scalar loss.
    """
    student, teacher, mask = _inputs(student, teacher, mask)
    log_p_s = jax.nn.log_softmax(student / temperature, axis=-1)
    log_p_t = jax.nn.log_softmax(teacher / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return temperature ** 2 * _masked_mean(kl, mask)


def embedding_mse(student, teacher, mask=None):
    """Mean over valid elements and embedding coordinates of the squared difference.

    Args:
      student, teacher: [..., E] embeddings.
      mask: bool [...].

    Returns:
      Scalar loss.
    """
    student, teacher, mask = _inputs(student, teacher, mask)
    return _masked_mean(jnp.mean((student - teacher) ** 2, axis=-1), mask)


def embedding_cosine(student, teacher, mask=None):
    """Mean over valid elements of 1 - cos(student, teacher).

    Args:
      student, teacher: [..., E] embeddings.
      mask: bool [...].

    Returns:
      Scalar loss.
    """
    student, teacher, mask = _inputs(student, teacher, mask)
    cos = jnp.sum(crossmodal.l2_normalize(student) * crossmodal.l2_normalize(teacher), axis=-1)
    return _masked_mean(1.0 - cos, mask)


# `config.loss.distill_regression`: how regression outputs are matched.
REGRESSION_MATCH_FNS = {"mse": output_mse, "ccc": output_ccc}
REGRESSION_MATCHES = tuple(REGRESSION_MATCH_FNS)
# `config.loss.distill_embedding`: how embeddings are matched.
EMBEDDING_MATCH_FNS = {"mse": embedding_mse, "cosine": embedding_cosine}
EMBEDDING_MATCHES = tuple(EMBEDDING_MATCH_FNS)
