"""The frozen teacher of cross-modal distillation (`method='distill'`, docs/methods.md).

A teacher is a trained run of this package: either a run directory named by
`config.distill.teacher_workdir` (its model, best-checkpoint parameters and normalisation are read
from the directory, as `inference.recognizer` reads a run), or, when that is empty, a run trained
first by the same program in `WORKDIR/teacher` on the teacher modalities (`teacher_config`), with
the student's schedule unless `distill.teacher_num_train_steps` is set. Several seeds
(`replicas`) train one teacher per seed and student replica k distils from teacher replica k.

`Teacher.apply(tree, batch)` is a pure function run inside the student's jitted step: it maps the
student's normalised features onto the teacher's normalisation, runs the teacher's encoders,
projectors and shared head (no dropout), and averages its per-modality embeddings and head outputs
over the teacher modalities present at each frame or utterance (one modality: that modality's).
Its `present` mask marks where an auxiliary (non-target) teacher modality is present: the
distillation term covers those frames or utterances only.

The teacher never enters the student's checkpoints (`state.TrainState.teacher`), so the student's
run directory stands alone: evaluation, prediction and export need only the student.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from emobed_jax import run_dir

log = logging.getLogger(__name__)

# `config.distill.teacher_modalities`: 'auxiliary': every modality but the target; 'all': every
# modality of `config.modalities` (a loaded teacher: its own modalities, with or without the target).
TEACHER_MODALITIES = ("auxiliary", "all")
# `config.distill.teacher_method`: how a teacher trained in the same program is trained ('auto':
# monomodal for one teacher modality, joint for several).
TEACHER_METHODS = ("auto", "monomodal", "joint", "crossmodal", "emobed")
TEACHER_DIR = "teacher"


class TeacherError(ValueError):
    """A teacher run that cannot teach this student (the message says why)."""


@dataclasses.dataclass
class Teacher:
    """A frozen teacher ready for the student's step.

    Attributes:
      tree: `{"params", "scale", "shift"}`: the teacher's parameters and, per teacher modality,
        the affine map from the student's feature normalisation to the teacher's.
      apply: `f(tree, batch) -> {"embeddings", "outputs", "present"}` (pure).
      modalities: the teacher modalities it fuses.
      workdir: the run directory it comes from.
    """

    tree: dict
    apply: Callable
    modalities: tuple
    workdir: str


def teacher_modalities(config) -> tuple:
    """The modalities a teacher trained in the same program learns from (config order)."""
    if config.distill.teacher_modalities == "all":
        return tuple(config.modalities)
    return tuple(m for m in config.modalities if m != config.target_modality)


def teacher_config(config) -> ml_collections.ConfigDict:
    """The config of the teacher a distillation run trains first (same data, model and schedule).

    Its target is the student's when the teacher sees it too, else the first auxiliary; 'auto'
    trains one modality monomodally and several jointly (each through the one shared head).
    """
    t = ml_collections.ConfigDict(config.to_dict())
    mods = teacher_modalities(config)
    t.modalities = mods
    t.target_modality = config.target_modality if config.target_modality in mods else mods[0]
    method = config.distill.teacher_method
    t.method = ("monomodal" if len(mods) == 1 else "joint") if method == "auto" else method
    if config.distill.teacher_num_train_steps:
        t.num_train_steps = config.distill.teacher_num_train_steps
    t.distill.teacher_workdir = ""
    return t


def validate_config(config) -> None:
    """The distillation checks that need no dataset: a teacher trained in the same program must
    see a modality other than the student's target (else there is nothing cross-modal to learn)."""
    if config.method != "distill" or config.distill.teacher_workdir:
        return
    t = teacher_config(config)
    model_mods = (t.target_modality,) if t.method == "monomodal" else tuple(t.modalities)
    if not any(m != config.target_modality for m in model_mods):
        raise ValueError(
            f"config.distill.teacher_method={config.distill.teacher_method!r} with "
            f"config.distill.teacher_modalities={config.distill.teacher_modalities!r} gives a "
            f"teacher on the target {config.target_modality!r} alone; expected a teacher that sees "
            f"an auxiliary modality (teacher_modalities='auxiliary', or a multimodal method)")


def make_apply(model, modalities: tuple, target: str, level: str) -> Callable:
    """The teacher's pure forward pass on a student batch (see the module docstring).

    Args:
      model: the teacher's `EmoBedModel`.
      modalities: the teacher modalities to run and fuse.
      target: the student's target modality (the presence mask counts the other modalities).
      level: 'frame' or 'utterance'.

    Returns:
      `f(tree, batch) -> {"embeddings", "outputs", "present"}`.
    """
    aux = tuple(m for m in modalities if m != target)

    def apply(tree, batch):
        feats, lengths, masks, present = {}, {}, {}, {}
        for m in modalities:
            mask = batch["masks"][m]
            x = batch["features"][m] * tree["scale"][m] + tree["shift"][m]
            # Invalid and padded frames are 0 in the teacher's own normalisation too.
            feats[m] = jnp.where(mask[..., None] > 0, x, 0.0)
            lengths[m], masks[m] = batch["lengths"][m], mask
            present[m] = mask if level == "frame" else (lengths[m] > 0).astype(jnp.float32)
        emb, out = model.apply({"params": tree["params"]}, feats, lengths, masks, train=False)
        weight = sum(present[m] for m in modalities)[..., None]

        def fuse(values):
            total = sum(values[m] * present[m][..., None] for m in modalities)
            return total / jnp.maximum(weight, 1.0)

        return {"embeddings": fuse(emb), "outputs": fuse(out),
                "present": jnp.max(jnp.stack([present[m] for m in aux]), axis=0)}

    return apply


def _affine(student_stats, teacher_stats, modalities) -> tuple[dict, dict]:
    """Per modality (scale, shift) with teacher_x = student_x * scale + shift: undo the student's
    normalisation, apply the teacher's (None: not normalised, i.e. mean 0 and std 1)."""
    scale, shift = {}, {}
    for m in modalities:
        mean_s, std_s = student_stats[m] if student_stats else (0.0, 1.0)
        mean_t, std_t = teacher_stats[m] if teacher_stats else (0.0, 1.0)
        mean_s, std_s, mean_t, std_t = (np.asarray(v, np.float64)
                                        for v in (mean_s, std_s, mean_t, std_t))
        scale[m] = np.broadcast_to(std_s / std_t, np.shape(mean_t) or np.shape(mean_s)).astype(
            np.float32)
        shift[m] = np.broadcast_to((mean_s - mean_t) / std_t, scale[m].shape).astype(np.float32)
    return scale, shift


def _check_compatible(record: dict, workdir: str, config, data, model_mods: tuple) -> None:
    """Refuses a teacher whose data, labels or shapes differ from the student's."""
    from emobed_jax.training import experiment

    d, info = record["dataset"], data.info
    checks = [
        ("dataset", d["name"], info.name), ("level", d["level"], info.level),
        ("task", record["config"].task, config.task),
        ("label_names", list(d["label_names"]), list(info.label_names)),
        ("class_names", d["class_names"],
         None if info.class_names is None else list(info.class_names)),
        ("label_delay_frames", list(d["label_delay_frames"]),
         [int(v) for v in np.asarray(data.delays)]),
    ]
    # Group centring is not an affine map of the features, so it must be used by both or neither.
    checks.append(("data.normalize='group'", record["config"].data.get("normalize") == "group",
                   config.data.normalize == "group"))
    for m in model_mods:
        checks.append((f"feature_dims[{m}]", d["feature_dims"].get(m), info.feature_dims.get(m)))
    if config.loss.distill_target == "embeddings":
        checks.append(("model.embedding_dim", record["config"].model.embedding_dim,
                       config.model.embedding_dim))
    else:
        checks.append(("outputs", experiment.num_outputs(record["config"], info),
                       experiment.num_outputs(config, info)))
    bad = [(k, a, b) for k, a, b in checks if a != b]
    if bad:
        raise TeacherError(f"config.distill.teacher_workdir={workdir!r} cannot teach this run: "
                           + "; ".join(f"{k}: teacher {a!r} vs student {b!r}" for k, a, b in bad))
    missing = [m for m in model_mods if m not in config.modalities]
    if missing:
        raise TeacherError(f"the teacher in {workdir!r} reads {missing}, which are not in "
                           f"config.modalities={list(config.modalities)}; add them so the "
                           f"student's batches carry them")


def from_run(workdir: str, config, data, params=None) -> Teacher:
    """A teacher from a run directory (its best checkpoint, or `params`).

    Args:
      workdir: the teacher's run directory (`run.json`, `normalization.npz`, `checkpoints/best`).
      config: the student's config (`distill.teacher_modalities`, `loss.distill_target`).
      data: the student's `pipeline.Data` (its normalisation, delays and dimensions).
      params: the teacher's parameters, when not read from the best checkpoint (replicas).

    Raises:
      TeacherError: naming what is missing or incompatible.
    """
    from emobed_jax.inference import recognizer
    from emobed_jax.training import checkpoints, experiment

    try:
        record = run_dir.read(workdir)
    except run_dir.RunDirError as e:
        raise TeacherError(f"config.distill.teacher_workdir: {e}") from None
    tinfo = recognizer.dataset_info(record)
    model, _ = experiment.model_and_objective(record["config"], tinfo)
    mods = tuple(model.modalities)
    if config.distill.teacher_modalities == "auxiliary":
        mods = tuple(m for m in mods if m != config.target_modality)
    if not any(m != config.target_modality for m in mods):
        raise TeacherError(f"the teacher in {workdir!r} has only the target modality "
                           f"{config.target_modality!r}; expected a teacher with an auxiliary one")
    _check_compatible(record, workdir, config, data, mods)
    if params is None:
        directory = os.path.join(workdir, "checkpoints", "best")
        if not os.path.isdir(directory):
            raise TeacherError(f"{directory} does not exist: the teacher run has no best "
                               f"checkpoint (train it to its end first)")
        ckpt = checkpoints.Checkpointer(directory)
        try:
            if ckpt.latest_step() is None:
                raise TeacherError(f"{directory} holds no checkpoint")
            params = ckpt.restore_arrays()["params"]
        finally:
            ckpt.close()
    scale, shift = _affine(data.stats, record["stats"], mods)
    # Only the fused modalities' parameters (and the shared head) travel with the student state.
    used = {"shared_head"} | {f"{part}_{m}" for part in ("encoder", "pool", "projector")
                              for m in mods}
    params = {k: v for k, v in params.items() if k in used}
    tree = {"params": params, "scale": scale, "shift": shift}
    log.info("distillation teacher: %s (modalities %s)", workdir, list(mods))
    return Teacher(tree=tree, apply=make_apply(model, mods, config.target_modality, data.info.level),
                   modalities=mods, workdir=workdir)


def _finished(workdir: str, steps: int, seeds=None) -> bool:
    """Whether the teacher run in `workdir` has finished `steps` (with these seeds)."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        results = json.load(f)
    return results.get("step") == steps and (seeds is None or results.get("seeds") == list(seeds))


def prepare(config, workdir: str, data, devices=None) -> Teacher:
    """The teacher of a single run: loaded from `distill.teacher_workdir`, or trained first in
    `workdir/teacher` (a finished one there is reused; an unfinished one resumes).

    Args:
      config: the student's config.
      workdir: the student's workdir.
      data: the student's `pipeline.Data`.
      devices: devices to train on.
    """
    if config.distill.teacher_workdir:
        return from_run(config.distill.teacher_workdir, config, data)
    from emobed_jax.training import train

    tdir = os.path.join(workdir, TEACHER_DIR)
    tcfg = teacher_config(config)
    if not _finished(tdir, tcfg.num_train_steps):
        log.info("training the distillation teacher (%s on %s) in %s", tcfg.method,
                 list(tcfg.modalities), tdir)
        train.train_and_evaluate(tcfg, tdir, devices)
    return from_run(tdir, config, data)


def prepare_replicas(config, workdir: str, data, seeds, devices=None) -> list:
    """One teacher per seed for vmapped replicas (`training.replicas`): loaded from
    `distill.teacher_workdir` (the same teacher for every seed), or trained first as replicas of
    the same seeds in `workdir/teacher`, so student replica k learns from teacher replica k.

    Returns:
      A list of `Teacher`s, one per seed, sharing one `apply`.
    """
    if config.distill.teacher_workdir:
        one = from_run(config.distill.teacher_workdir, config, data)
        return [one] * len(seeds)
    from emobed_jax.training import replicas

    tdir = os.path.join(workdir, TEACHER_DIR)
    tcfg = teacher_config(config)
    tcfg.num_seeds = len(seeds)
    if not _finished(tdir, tcfg.num_train_steps, seeds):
        log.info("training the distillation teachers (%s on %s, seeds %s) in %s", tcfg.method,
                 list(tcfg.modalities), list(seeds), tdir)
        replicas.train_replicas(tcfg, tdir, devices)
    first = None
    out = []
    for seed in seeds:
        t = from_run(tdir, config, data, params=replicas.load_best_params(tdir, seed))
        first = first or t
        out.append(dataclasses.replace(t, apply=first.apply))
    return out
