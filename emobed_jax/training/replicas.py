"""K independent replicas (seeds) of one experiment, trained in one program with `jax.vmap`.

`config.num_seeds = K` stacks K train states (parameters, optimiser states and rng keys of
seeds `config.seed + k`) and vmaps the ordinary train step over them; each replica reads its own
data order. Replica k is the same computation as a separate run with `config.seed = seed + k`
(`tests/test_multiseed.py`). Each replica keeps its best parameters by validation
`best_metric`; at the end every replica's best parameters are scored on the eval splits and
written to `workdir/best_params/seed_<seed>.msgpack` (`load_best_params`), which is how the
teachers of a multi-seed distillation run reach their students (`training.teacher`).

Placement: the replica axis is split over a `replica` mesh (`replica_devices`: as many devices as
divide K), so on several accelerators each runs its share of the seeds with no communication,
and on the CPU `claim_cpu_devices(K)` (called by `experiments/main.py` and
`experiments/ablation.py` before JAX starts) makes one host device per replica: XLA runs each
device's program on its own thread, so the replicas fill the cores that one seed's recurrence
leaves idle (docs/benchmark.md "Seeds as replicas"). Data, evaluation and prediction use the
first device only.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from flax import serialization
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from emobed_jax import atomic, run_dir
from emobed_jax.evaluation import evaluators
from emobed_jax.training import experiment, loop, state as ts, teacher as teacher_lib
from emobed_jax.training import workdir_lock

log = logging.getLogger(__name__)
PARAMS_DIR = "best_params"
REPLICA_AXIS = "replica"


def claim_cpu_devices(num_replicas: int) -> bool:
    """Splits the CPU into `num_replicas` XLA host devices, one per replica; True if it did.

    Must run before JAX initialises its backends (it does nothing afterwards, nor when
    XLA_FLAGS already sets `--xla_force_host_platform_device_count`: the user's choice). On a
    GPU or TPU machine it is harmless: the CPU devices are not the default backend.
    """
    from jax._src import xla_bridge  # backends_are_initialized has no public alias

    if num_replicas <= 1 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return False
    if xla_bridge.backends_are_initialized():
        log.warning("JAX already started: the %d replicas share the devices it has", num_replicas)
        return False
    jax.config.update("jax_num_cpu_devices", num_replicas)
    return True


def replica_devices(num_replicas: int, devices) -> list:
    """The devices the replica axis is split over: the first d of `devices`, d the largest
    divisor of `num_replicas` that is at most their number (every device holds K/d replicas)."""
    devices = list(devices)
    count = max(d for d in range(1, min(num_replicas, len(devices)) + 1) if num_replicas % d == 0)
    return devices[:count]


def params_path(workdir: str, seed: int) -> str:
    """Where a replica run keeps the best parameters of `seed`."""
    return os.path.join(workdir, PARAMS_DIR, f"seed_{seed}.msgpack")


def load_best_params(workdir: str, seed: int) -> dict:
    """The best parameters of replica `seed` of the run in `workdir` (nested dicts of numpy)."""
    path = params_path(workdir, seed)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: the replica run in {workdir} has not "
                                f"finished seed {seed}")
    with open(path, "rb") as f:
        return serialization.msgpack_restore(f.read())


def _stack(trees):
    """Stacks trees of arrays leaf by leaf on the host (numpy): a jnp.stack per leaf would be an
    XLA dispatch per leaf, and per training step for the batches."""
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _replica(tree, k: int):
    return jax.tree_util.tree_map(lambda x: x[k], tree)


def init_replicas(exp: experiment.Experiment, seeds, teachers=None):
    """Stacked train states and training keys for `seeds` (replica k = a run with seeds[k]);
    `teachers`: one frozen teacher per seed (distillation), sharing one `apply`."""
    example = exp.example_batch()
    tx = ts.make_optimizer(exp.config)  # one optimiser object: replicas share the tree metadata
    init = ts.params_initializer(exp.model, example)

    @jax.jit  # compiled once for every seed (the optimiser's init op by op took ~1 s per seed)
    def create(init_rng, teacher_tree):
        teacher = None if teachers is None else dataclasses.replace(teachers[0], tree=teacher_tree)
        return ts.create_state(exp.model, exp.config, example, init_rng, tx=tx, init=init,
                               teacher=teacher)

    states, keys = [], []
    for k, seed in enumerate(seeds):
        init_rng, train_rng = experiment.init_rngs(seed)
        states.append(create(init_rng, None if teachers is None else teachers[k].tree))
        keys.append(train_rng)
    return _stack(states), jnp.stack(keys)


def compile_replica_step(objective, devices, skip_nonfinite: bool = False):
    """`f(states, batches [K, B, ...], keys [K]) -> (states, metrics [K])`: the train step of
    `objective` vmapped over replicas and jitted with the replica axis of every argument and
    result split over `devices` (`replica_devices`); returns it and that sharding (for placing
    states, keys and batches)."""
    step = jax.vmap(ts.bind_train_step(objective, skip_nonfinite=skip_nonfinite), in_axes=(0, 0, 0))
    mesh = Mesh(np.asarray(devices), (REPLICA_AXIS,))
    spec = P(REPLICA_AXIS)
    # shard_map, not jit's automatic partitioning: each device steps its own replicas with no
    # communication. Partitioned automatically, ops XLA cannot split (top_k in the triplet
    # mining) gather every replica's rows on every device, and on the CPU that all-gather waits
    # for all device threads at once: with more devices than cores it can stall past XLA's 40 s
    # rendezvous timeout and abort the program.
    # (check_vma off: the step has no collectives to check, and the check would want every scan
    # carry that starts from a constant marked as varying per device.)
    local = jax.shard_map(step, mesh=mesh, in_specs=(spec, spec, spec), out_specs=(spec, spec),
                          check_vma=False)
    return jax.jit(local, donate_argnums=(0,)), NamedSharding(mesh, spec)


@workdir_lock.holds_workdir  # one training run per workdir; a second one stops at once
def train_replicas(config, workdir: str, devices=None) -> dict:
    """Trains `config.num_seeds` replicas and writes `workdir/results.json`.

    Args:
      config: experiment config (`num_seeds` >= 1).
      workdir: output directory.
      devices: devices to split the replicas over (default: all; a single process); data,
        evaluation and prediction use the first.

    Returns:
      `{"config", "seeds", "step", "best_steps", "metrics": {split: [metrics per seed]}}`.
    """
    if jax.process_count() > 1:
        raise ValueError("config.num_seeds > 1 runs in a single process; use one process per seed")
    os.makedirs(workdir, exist_ok=True)
    devices = list(jax.devices() if devices is None else devices)
    exp = experiment.build(config, devices[:1])
    run_dir.write(workdir, config, exp.data)
    seeds = [config.seed + k for k in range(config.num_seeds)]
    teachers = (teacher_lib.prepare_replicas(config, workdir, exp.data, seeds, devices)
                if exp.objective.uses_distill else None)
    states, keys = init_replicas(exp, seeds, teachers)
    step_fn, split = compile_replica_step(exp.objective, replica_devices(len(seeds), devices),
                                          skip_nonfinite=bool(config.skip_nonfinite_updates))
    states, keys = jax.device_put(states, split), jax.device_put(keys, split)
    streams = [exp.train_stream(0, seed)[0] for seed in seeds]
    batches = (jax.device_put(_stack([next(s) for s in streams]), split)
               for _ in itertools.count())
    predict_fn = exp.compile_predict()
    best_value = [-math.inf] * len(seeds)
    best_params = [None] * len(seeds)
    best_steps = [None] * len(seeds)

    def validate(step, states, metrics):
        for k in range(len(seeds)):
            # To the host: replica k lives on its own device, evaluation runs on the first.
            params = jax.device_get(_replica(states.params, k))
            val, _, _ = evaluators.evaluate_split(exp, params, predict_fn, "validation")
            value = val[exp.best_metric]
            if value > best_value[k] or best_params[k] is None:
                best_value[k], best_steps[k] = float(value), step
                best_params[k] = jax.device_get(params)

    bar = tqdm.tqdm(total=config.num_train_steps, desc=f"{config.method} x{len(seeds)} seeds",
                    dynamic_ncols=True)
    with bar:
        loop.run(states, step_fn, batches, keys, start_step=0, num_steps=config.num_train_steps,
                 hooks=[loop.Every(config.eval_every_steps, validate)],
                 raise_nonfinite=not config.skip_nonfinite_updates, progress=bar)
    metrics = {split: [evaluators.evaluate_split(exp, p, predict_fn, split)[0] for p in best_params]
               for split in exp.eval_split_names}
    os.makedirs(os.path.join(workdir, PARAMS_DIR), exist_ok=True)
    for seed, params in zip(seeds, best_params):
        with atomic.atomic_write(params_path(workdir, seed), "wb") as f:
            f.write(serialization.msgpack_serialize(params))
    results = {"config": config.to_dict(), "seeds": seeds, "step": config.num_train_steps,
               "best_steps": best_steps, "metrics": metrics}
    atomic.write_json(os.path.join(workdir, "results.json"), results)
    return results
