"""The pure training and evaluation steps.

`train_step(state, batch, rng) -> (state, metrics)` is one update on a global batch. Under
`jax.jit` over a mesh the batch is one sharded array and XLA inserts the collectives; under
`jax.pmap` each device sees its shard, the per-example outputs are all-gathered before the loss
(CCC and in-batch triplet mining need the whole batch), and gradients are averaged, which gives
the same gradient as the global loss (see tests/test_parallel.py).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from emobed_jax.losses import objective as objective_lib
from emobed_jax.training import modality_dropout

# Folded into the step's key for modality dropout, so that the dropout and alignment keys of
# runs without it stay what they were.
_MODALITY_DROPOUT_SALT = 0x6D6F6464


class TrainState(train_state.TrainState):
    """Flax TrainState plus the count of skipped non-finite updates and, for distillation, the
    frozen teacher.

    Attributes:
      skipped: the number of skipped non-finite updates.
      teacher: the teacher's arrays (`training.teacher.Teacher.tree`), or None. Never updated
        and never checkpointed (`checkpoints` saves step, params, opt_state and skipped), so the
        student's run directory stands alone.
      teacher_fn: `f(teacher, batch) -> {"embeddings", "outputs", "present"}`, static.
    """

    skipped: jax.Array = None
    teacher: Any = None
    teacher_fn: Callable = struct.field(pytree_node=False, default=None)


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW with linear warm-up, cosine decay to 10% and global-norm clipping (`config.optimizer`)."""
    o = config.optimizer
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=o.learning_rate, warmup_steps=max(o.warmup_steps, 1),
        decay_steps=max(config.num_train_steps, o.warmup_steps + 1), end_value=0.1 * o.learning_rate)
    parts = []
    if o.grad_clip_norm > 0:
        parts.append(clip_by_global_norm(o.grad_clip_norm))
    parts.append(optax.adamw(schedule, weight_decay=o.weight_decay))
    return optax.chain(*parts)


def _flatten(tree) -> jax.Array:
    """All leaves of `tree` as one vector: checks and norms over it are one kernel each, where
    per-leaf ones are a few per parameter (~400 for crossmodal), each compiled and launched."""
    return jnp.concatenate([jnp.ravel(g) for g in jax.tree_util.tree_leaves(tree)])


def _norm(flat: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(flat * flat))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """`optax.clip_by_global_norm` (same formula, same empty state, so checkpoints carry over),
    with the norm taken over one concatenated vector instead of per parameter, which is a few
    hundred fewer kernels to compile and launch for the EmoBed models.

    Args:
      max_norm: the largest global norm let through unscaled.

    Returns:
      The gradient transformation.
    """
    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        norm = _norm(_flatten(updates))
        trigger = norm < max_norm
        return jax.tree_util.tree_map(
            lambda t: jax.lax.select(trigger, t, (t / norm.astype(t.dtype)) * max_norm),
            updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def params_initializer(model, example_batch: dict):
    """`init(rng) -> params`, jitted once: several seeds (replicas) reuse one compilation,
    which takes seconds for a recurrent model (first row of the example batch suffices)."""
    feats = {m: jnp.asarray(example_batch["features"][m][:1]) for m in model.modalities}
    lengths = {m: jnp.asarray(example_batch["lengths"][m][:1]) for m in model.modalities}
    masks = {m: jnp.asarray(example_batch["masks"][m][:1]) for m in model.modalities}
    return jax.jit(lambda r: model.init(r, feats, lengths, masks)["params"])


def init_params(model, example_batch: dict, rng: jax.Array):
    """Initialises the model's parameters from an example batch (first row suffices)."""
    return params_initializer(model, example_batch)(rng)


def create_state(model, config, example_batch: dict, rng: jax.Array, tx=None,
                 teacher=None, init=None) -> TrainState:
    """Initialises parameters and wraps them with the optimiser (`tx`, default from `config`).

    Args:
      model, config, example_batch, rng: what the parameters are made from.
      tx: the optimiser (default `make_optimizer(config)`).
      teacher: a `training.teacher.Teacher` (distillation), or None.
      init: a `params_initializer(model, example_batch)` to reuse (default: a new one).
    """
    init = init if init is not None else params_initializer(model, example_batch)
    return TrainState.create(apply_fn=model.apply, params=init(rng),
                             tx=tx if tx is not None else make_optimizer(config),
                             skipped=jnp.zeros((), jnp.int32),
                             teacher=None if teacher is None else teacher.tree,
                             teacher_fn=None if teacher is None else teacher.apply)


def _loss_fn(params, state, obj, batch, rng, axis_name):
    if obj.modality_dropout > 0:
        batch = modality_dropout.drop(
            batch, jax.random.fold_in(rng, _MODALITY_DROPOUT_SALT), obj.target,
            obj.modality_dropout, axis_name)
    dropout_rng, align_rng = jax.random.split(rng)
    if axis_name is not None:
        # Different dropout masks per device; the alignment rng stays shared because the loss
        # is computed on the gathered global batch on every device.
        dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
    feats = {m: batch["features"][m] for m in obj.modalities}
    embeddings, outputs = state.apply_fn(
        {"params": params}, feats, batch["lengths"], batch["masks"], train=True,
        rngs={"dropout": dropout_rng})
    parts = {"embeddings": embeddings, "outputs": outputs,
             "batch": {k: batch[k] for k in ("lengths", "masks", "targets", "target_mask")}}
    if obj.uses_distill and state.teacher_fn is not None:
        # The frozen teacher reads the batch's teacher modalities; the gradient is taken with
        # respect to `params` only, and stop_gradient makes that explicit.
        parts["teacher"] = state.teacher_fn(jax.lax.stop_gradient(state.teacher), batch)
    if axis_name is not None:
        parts = jax.lax.all_gather(parts, axis_name, tiled=True)
    return objective_lib.total_loss(obj, parts["embeddings"], parts["outputs"], parts["batch"],
                                    align_rng, teacher=parts.get("teacher"))


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, obj, axis_name=None,
               skip_nonfinite: bool = False):
    """One optimiser update.

    Args:
      state: the train state.
      batch: the batch (global under jit; this device's shard under pmap).
      rng: the run's base key; the step's key is `fold_in(rng, state.step)`, so a resumed run
        draws the same randomness.
      obj: the static `Objective`.
      axis_name: the pmap axis name, or None under jit.
      skip_nonfinite: keep the old parameters when the loss or a gradient is not finite.

    Returns:
      (new state, metrics dict of scalars).
    """
    step_rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(_loss_fn, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, state, obj, batch, step_rng, axis_name)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
    flat = _flatten(grads)
    finite = jnp.isfinite(metrics["loss"]) & jnp.all(jnp.isfinite(flat))
    new_state = state.apply_gradients(grads=grads)
    if skip_nonfinite:
        new_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(finite, new, old), new_state, state)
        new_state = new_state.replace(step=state.step + 1,
                                      skipped=state.skipped + (~finite).astype(jnp.int32))
    metrics["grad_norm"] = _norm(flat)
    metrics["nonfinite"] = (~finite).astype(jnp.float32)
    metrics["skipped_updates"] = new_state.skipped.astype(jnp.float32)
    return new_state, metrics


def predict_step(params, batch: dict, *, apply_fn, modalities):
    """Monomodal (or chosen-modality) inference: embeddings and head outputs.

    Args:
      params: model parameters.
      batch: a batch carrying at least `modalities`.
      apply_fn: the model's apply function.
      modalities: the modalities to run (evaluation passes the target alone).

    Returns:
      (embeddings, outputs) dicts.
    """
    feats = {m: batch["features"][m] for m in modalities}
    lengths = {m: batch["lengths"][m] for m in modalities}
    masks = {m: batch["masks"][m] for m in modalities}
    return apply_fn({"params": params}, feats, lengths, masks, train=False)


def bind_train_step(obj, axis_name=None, skip_nonfinite=False):
    """`train_step` with its static arguments bound."""
    return functools.partial(train_step, obj=obj, axis_name=axis_name,
                             skip_nonfinite=skip_nonfinite)
