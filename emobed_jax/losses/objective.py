"""The training objective: task losses per modality plus the crossmodal alignment term.

`method` decides which terms enter the total (README, "The methods"):
  monomodal   task(target)
  joint       task(target) + w_aux * sum_aux task(aux)          (shared head on every modality)
  crossmodal  task(target) + w_align * align(target, aux)
  emobed      task(target) + w_aux * sum_aux task(aux) + w_align * align(target, aux)
  distill     task(target) + w_distill * distill(student, frozen teacher)   (target-only model)

Each option name is spelled once, in a table beside its implementation (`METHOD_TERMS` here,
`task.REGRESSION_LOSS_FNS`, `crossmodal.ALIGN_LOSS_FNS`, `agreement.PAIR_RULES`, ...), and the
objective dispatches through those tables. `validate_config` checks the `loss` block before any
data is read, and the level-dependent choices once the dataset's level is known.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from emobed_jax.losses import agreement, crossmodal, distill, mining, task as task_losses

# `config.method`: name -> (uses the auxiliary task losses, uses the alignment term, uses the
# distillation term).
METHOD_TERMS = {"monomodal": (False, False, False), "joint": (True, False, False),
                "crossmodal": (False, True, False), "emobed": (True, True, False),
                "distill": (False, False, True)}
METHODS = tuple(METHOD_TERMS)
# Methods whose model has parameters for the target modality alone (the distillation student
# sees only the target; its teacher is a separate, frozen model).
TARGET_ONLY_METHODS = ("monomodal", "distill")
LEVELS = ("frame", "utterance")


@dataclasses.dataclass(frozen=True)
class Objective:
    """Static settings of the objective (hashable, so it can close over a jitted step).

    Attributes:
      method, target, modalities, task, level: from the config and dataset.
      regression: 'ccc', 'sequence_ccc' or 'mse'.
      class_weights: tuple of per-class weights, or None.
      label_smoothing, w_aux, w_align, align, margin, mining, direction, positives,
      pos_threshold, neg_threshold, temperature, align_frames: `config.loss` fields.
      bin_edges: tuple of per-dimension bin edges (positives='bins').
      w_distill, distill_target, distill_regression, distill_embedding, distill_temperature:
        the distillation term (`method='distill'`).
      modality_dropout: probability of dropping each auxiliary modality per training example.
    """

    method: str
    target: str
    modalities: tuple
    task: str
    level: str
    regression: str = "ccc"
    class_weights: tuple | None = None
    label_smoothing: float = 0.0
    w_aux: float = 1.0
    w_align: float = 0.5
    align: str = "triplet"
    margin: float = 0.2
    mining: str = "batch_hard"
    direction: str = "both"
    positives: str = "bins"
    pos_threshold: float = 0.1
    neg_threshold: float = 0.3
    temperature: float = 0.1
    align_frames: int = 256
    bin_edges: tuple | None = None
    w_distill: float = 1.0
    distill_target: str = "outputs"
    distill_regression: str = "mse"
    distill_embedding: str = "cosine"
    distill_temperature: float = 2.0
    modality_dropout: float = 0.0

    @property
    def uses_aux_task(self) -> bool:
        """Whether the auxiliary modalities' task losses enter the total."""
        return METHOD_TERMS[self.method][0]

    @property
    def uses_align(self) -> bool:
        """Whether the crossmodal alignment term enters the total."""
        return METHOD_TERMS[self.method][1]

    @property
    def uses_distill(self) -> bool:
        """Whether the distillation term enters the total (a frozen teacher runs in the step)."""
        return METHOD_TERMS[self.method][2]


def _expect(ok: bool, key: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"config.{key}={value!r} is not valid; expected {expected}")


def _expect_one_of(key: str, value, valid) -> None:
    _expect(value in valid, key, value, f"one of {list(valid)}")


def validate_config(config, level: str | None = None) -> None:
    """Checks the objective's config keys; raises ValueError naming key, value and valid range.

    Call it before any data is read (level=None: only the checks that need no dataset), and again
    once the dataset's level is known (`objective_from_config` does).

    Args:
      config: experiment config with `method`, `task` and the `loss` block.
      level: 'frame', 'utterance' or None.
    """
    loss = config.loss
    _expect_one_of("method", config.method, METHODS)
    _expect_one_of("loss.regression", loss.regression, task_losses.REGRESSION_LOSSES)
    _expect_one_of("loss.class_weights", loss.class_weights, task_losses.CLASS_WEIGHTS)
    _expect_one_of("loss.align", loss.align, crossmodal.ALIGN_LOSSES)
    _expect_one_of("loss.mining", loss.mining, mining.MINING)
    _expect_one_of("loss.direction", loss.direction, crossmodal.DIRECTIONS)
    _expect_one_of("loss.positives", loss.positives, agreement.POSITIVES)
    _expect_one_of("loss.distill_target", loss.distill_target, distill.DISTILL_TARGETS)
    _expect_one_of("loss.distill_regression", loss.distill_regression, distill.REGRESSION_MATCHES)
    _expect_one_of("loss.distill_embedding", loss.distill_embedding, distill.EMBEDDING_MATCHES)
    _expect(loss.distill_temperature > 0, "loss.distill_temperature", loss.distill_temperature,
            "> 0")
    # p = 1 would drop every auxiliary of every example: nothing left for the terms that use them.
    _expect(0.0 <= loss.modality_dropout < 1.0, "loss.modality_dropout", loss.modality_dropout,
            "a probability in [0, 1)")
    for key in ("w_aux", "w_align", "margin", "w_distill"):
        _expect(loss[key] >= 0, f"loss.{key}", loss[key], ">= 0")
    _expect(0.0 <= loss.label_smoothing <= 1.0, "loss.label_smoothing", loss.label_smoothing,
            "a value in [0, 1]")
    _expect(loss.temperature > 0, "loss.temperature", loss.temperature, "> 0")
    # One bin would make every pair positive and none negative: the alignment term would be 0.
    _expect(isinstance(loss.num_bins, (int, np.integer)) and loss.num_bins >= 2, "loss.num_bins",
            loss.num_bins, "an integer >= 2")
    # `agreement.positive_matrix_from_distance`: distance <= pos_threshold is positive and
    # >= neg_threshold negative, so pos_threshold <= neg_threshold keeps the two apart.
    _expect(0.0 <= loss.pos_threshold, "loss.pos_threshold", loss.pos_threshold, ">= 0")
    _expect(loss.pos_threshold <= loss.neg_threshold, "loss.neg_threshold", loss.neg_threshold,
            f">= config.loss.pos_threshold={loss.pos_threshold!r}")
    _expect(isinstance(loss.align_frames, (int, np.integer)) and loss.align_frames > 0,
            "loss.align_frames", loss.align_frames, "a positive integer")
    if level is None:
        return
    _expect_one_of("level", level, LEVELS)
    if config.task != "category":
        # A per-sequence CCC needs sequences; utterance-level outputs have none.
        _expect(not (loss.regression == "sequence_ccc" and level == "utterance"),
                "loss.regression", loss.regression,
                "'ccc' or 'mse' for an utterance-level dataset ('sequence_ccc' needs frame-level "
                "sequences)")


def objective_from_config(config, level: str, class_counts=None, train_targets=None) -> Objective:
    """Builds the `Objective` for a config.

    Args:
      config: experiment config.
      level: 'frame' or 'utterance'.
      class_counts: training class counts (for class weights; task='category').
      train_targets: `[N, K]` training label values (for quantile bins).

    Returns:
      The objective.
    """
    validate_config(config, level)
    loss = config.loss
    weights = None
    if config.task == "category" and class_counts is not None and loss.class_weights != "none":
        weights = tuple(float(w) for w in task_losses.class_weights_from_counts(
            np.asarray(class_counts), mode=loss.class_weights))
    edges = None
    if config.task != "category" and loss.positives == "bins" and train_targets is not None:
        edges = tuple(tuple(float(v) for v in e) for e in
                      np.atleast_2d(agreement.quantile_edges(np.asarray(train_targets), loss.num_bins)))
    modalities = ((config.target_modality,) if config.method in TARGET_ONLY_METHODS
                  else tuple(config.modalities))
    return Objective(
        method=config.method, target=config.target_modality, modalities=modalities,
        task=config.task, level=level, regression=loss.regression, class_weights=weights,
        label_smoothing=loss.label_smoothing, w_aux=loss.w_aux, w_align=loss.w_align,
        align=loss.align, margin=loss.margin, mining=loss.mining, direction=loss.direction,
        positives=loss.positives, pos_threshold=loss.pos_threshold,
        neg_threshold=loss.neg_threshold, temperature=loss.temperature,
        align_frames=loss.align_frames, bin_edges=edges, w_distill=loss.w_distill,
        distill_target=loss.distill_target, distill_regression=loss.distill_regression,
        distill_embedding=loss.distill_embedding, distill_temperature=loss.distill_temperature,
        modality_dropout=loss.modality_dropout)


def task_loss(obj: Objective, outputs: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """The task loss of one modality's head outputs."""
    if obj.task == "category":
        weights = None if obj.class_weights is None else jnp.asarray(obj.class_weights)
        return task_losses.cross_entropy_loss(outputs, targets, mask, class_weights=weights,
                                              label_smoothing=obj.label_smoothing)
    return task_losses.REGRESSION_LOSS_FNS[obj.regression](outputs, targets, mask)[0]


def _modality_mask(batch: dict, m: str, level: str) -> jax.Array:
    """Where modality m carries information: frames (frame level) or examples (utterance level)."""
    if level == "frame":
        return batch["masks"][m]
    return (batch["lengths"][m] > 0).astype(jnp.float32)


def _label_free(obj: Objective) -> bool:
    """Whether the alignment needs no label (instance positives): unlabelled rows take part."""
    return obj.positives == "instance"


def _pair_matrices(obj: Objective, labels: jax.Array):
    """(pos, neg) [N, N] of the batch by `obj.positives`; categories agree by class unless the
    pairs are instances."""
    rule = "class" if obj.task == "category" and not _label_free(obj) else obj.positives
    edges = None if obj.bin_edges is None else np.asarray(obj.bin_edges)
    return agreement.PAIR_RULES[rule](labels, edges=edges, pos_threshold=obj.pos_threshold,
                                      neg_threshold=obj.neg_threshold)


def alignment_loss(obj: Objective, embeddings: dict, batch: dict, rng: jax.Array):
    """The crossmodal term on (subsampled) frames or utterances with their labels.

    Returns:
      (loss, metrics).
    """
    target_mask = _modality_mask(batch, obj.target, obj.level)
    if not _label_free(obj):  # pairs by label agreement: labelled frames or utterances only
        target_mask = batch["target_mask"] * target_mask
    if obj.level == "frame":
        idx, picked = mining.subsample_frames(rng, target_mask > 0, obj.align_frames)
        emb = {m: mining.gather_frames(embeddings[m], idx) for m in obj.modalities}
        masks = {m: picked & (mining.gather_frames(batch["masks"][m], idx) > 0)
                 for m in obj.modalities}
        labels = mining.gather_frames(batch["targets"], idx)
    else:
        emb = {m: embeddings[m] for m in obj.modalities}
        masks = {m: (target_mask > 0) & (_modality_mask(batch, m, obj.level) > 0)
                 for m in obj.modalities}
        labels = batch["targets"]
    pos, neg = _pair_matrices(obj, labels)
    return crossmodal.ALIGN_LOSS_FNS[obj.align](
        emb, masks, obj.target, pos, neg, direction=obj.direction, margin=obj.margin,
        mining=obj.mining, temperature=obj.temperature)


def distillation_loss(obj: Objective, embeddings: dict, outputs: dict, batch: dict,
                      teacher: dict):
    """The student's (target modality's) match to the frozen teacher where the teacher's auxiliary
    modality is present: on the scored frames or utterances of labelled examples, and on every
    frame of the examples whose labels a regime withheld (`data.label_fraction`).

    Args:
      obj: the objective.
      embeddings, outputs: the student's per-modality embeddings and head outputs.
      batch: the batch.
      teacher: `{"embeddings", "outputs", "present"}` from the teacher (`training.teacher`):
        its fused embeddings and outputs shaped like the student's, and where an auxiliary
        teacher modality is present (frames `[B, T]` or utterances `[B]`).

    Returns:
      (loss, number of frames or utterances it covers).
    """
    # Labelled examples: their scored frames; unlabelled ones (`data.label_fraction`): every
    # frame the target has, since matching the teacher needs no label.
    labelled = batch.get("labelled")
    scored = batch["target_mask"]
    if labelled is not None:
        per_frame = labelled[:, None] if scored.ndim == 2 else labelled
        scored = scored * per_frame + (1.0 - per_frame)
    mask = (scored * _modality_mask(batch, obj.target, obj.level) * teacher["present"]) > 0
    if obj.distill_target == "embeddings":
        fn = distill.EMBEDDING_MATCH_FNS[obj.distill_embedding]
        value = fn(embeddings[obj.target], teacher["embeddings"], mask)
    elif obj.task == "category":
        value = distill.logits_kl(outputs[obj.target], teacher["outputs"], mask,
                                  temperature=obj.distill_temperature)
    else:
        fn = distill.REGRESSION_MATCH_FNS[obj.distill_regression]
        value = fn(outputs[obj.target], teacher["outputs"], mask)
    return value, jnp.sum(mask).astype(jnp.float32)


def total_loss(obj: Objective, embeddings: dict, outputs: dict, batch: dict, rng: jax.Array,
               teacher: dict | None = None):
    """Composes the terms `obj.method` asks for.

    Args:
      obj: the objective.
      embeddings, outputs: the model's per-modality embeddings and head outputs.
      batch: the (global) batch.
      rng: key for frame subsampling.
      teacher: the frozen teacher's fused embeddings, outputs and presence mask
        (`distillation_loss`); needed by `method='distill'` only.

    Returns:
      (loss, metrics) with `loss`, `task_<modality>`, `align` and `distill` entries.
    """
    metrics = {}
    total = task_loss(obj, outputs[obj.target], batch["targets"], batch["target_mask"])
    metrics[f"task_{obj.target}"] = total
    if obj.uses_aux_task:
        for m in obj.modalities:
            if m == obj.target:
                continue
            mask = batch["target_mask"] * _modality_mask(batch, m, obj.level)
            aux = task_loss(obj, outputs[m], batch["targets"], mask)
            metrics[f"task_{m}"] = aux
            total = total + obj.w_aux * aux
    if obj.uses_align:
        align, align_metrics = alignment_loss(obj, embeddings, batch, rng)
        metrics["align"] = align
        metrics["align_active_terms"] = align_metrics["num_active_terms"]
        total = total + obj.w_align * align
    if obj.uses_distill:
        if teacher is None:
            raise ValueError("method='distill' needs the teacher's outputs in the step (build the "
                             "train state with a teacher: training.teacher)")
        value, count = distillation_loss(obj, embeddings, outputs, batch, teacher)
        metrics["distill"] = value
        metrics["distill_frames"] = count
        total = total + obj.w_distill * value
    metrics["loss"] = total
    return total, metrics
