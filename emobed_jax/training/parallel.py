"""Data parallelism: a `data` mesh for `jax.jit` (default) or `jax.pmap`, and batch placement.

Under 'jit' the state is replicated (`P()`) and every batch leaf is sharded on its leading axis
(`P('data')`), so the same code runs on one CPU, eight GPUs or a TPU slice, and on several
processes (each contributes its rows via `make_array_from_process_local_data`). Under 'pmap' the
state is broadcast (`in_axes=None`) and returned unmapped (`out_axes=None`): no replicate or
unreplicate calls.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"
# config.parallelism: how `Parallel` compiles the train step.
MODES = ("jit", "pmap")


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh named `data` over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (AXIS,))


def local_rows(global_batch_size: int) -> slice:
    """The rows of each global batch this process feeds (processes split batches evenly)."""
    count, index = jax.process_count(), jax.process_index()
    if global_batch_size % count:
        raise ValueError(f"batch size {global_batch_size} is not divisible by the {count} processes")
    per = global_batch_size // count
    return slice(index * per, (index + 1) * per)


def agree_max(values) -> np.ndarray:
    """The elementwise maximum of small integers over all processes (unchanged in one process).

    Decisions a process takes from its own clock or signals (stop now, checkpoint now) must be
    taken by every process at the same step, or the others wait forever in the next collective.
    """
    values = np.asarray(values, np.int32)
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.process_allgather(values)).max(axis=0)


def _put_replicated(x, sharding):
    # device_put refuses a typed rng key for a mesh spanning several processes; its raw data works.
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(jax.device_put(jax.random.key_data(x), sharding),
                                        impl=jax.random.key_impl(x))
    return jax.device_put(x, sharding)


class Parallel:
    """Compiles steps and places batches for one parallelism mode on one mesh.

    Args:
      mode: 'jit' or 'pmap'.
      mesh: the device mesh (`make_mesh()`).
    """

    def __init__(self, mode: str, mesh: Mesh):
        self.mode = mode
        self.mesh = mesh
        self.replicated = NamedSharding(mesh, P())
        self.sharded = NamedSharding(mesh, P(AXIS))
        self.num_devices = mesh.devices.size

    def compile_train_step(self, step_factory, donate: bool = True):
        """Compiles `step_factory(axis_name)` into `f(state, batch, rng) -> (state, metrics)`."""
        if self.mode == "pmap":
            if jax.process_count() > 1:
                raise ValueError("config.parallelism='pmap' supports a single process; use 'jit'")
            return jax.pmap(step_factory(AXIS), axis_name=AXIS, in_axes=(None, 0, None),
                            out_axes=None, devices=list(self.mesh.devices.flat),
                            donate_argnums=(0,) if donate else ())
        return jax.jit(step_factory(None), in_shardings=(self.replicated, self.sharded, self.replicated),
                       out_shardings=(self.replicated, self.replicated),
                       donate_argnums=(0,) if donate else ())

    def compile_predict(self, fn):
        """Compiles `fn(params, batch)` with the batch sharded and outputs sharded alike."""
        return jax.jit(fn, in_shardings=(self.replicated, self.sharded), out_shardings=self.sharded)

    def local_rows(self, global_batch_size: int) -> slice:
        """This process's rows of a global batch (`local_rows`)."""
        return local_rows(global_batch_size)

    def put_state(self, state):
        """Places the state (or an rng key) replicated on the mesh."""
        return jax.tree_util.tree_map(lambda x: _put_replicated(x, self.replicated), state)

    def put_batch(self, local_batch: dict, for_pmap: bool | None = None):
        """Turns this process's rows into the global batch the compiled step expects."""
        if for_pmap if for_pmap is not None else self.mode == "pmap":
            n = self.num_devices
            return jax.tree_util.tree_map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]),
                                          local_batch)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(self.sharded, x), local_batch)

    def to_host(self, tree):
        """Fetches a (possibly multi-process) sharded tree to numpy on every process."""
        if jax.process_count() > 1:
            return multihost_utils.process_allgather(tree, tiled=True)
        return jax.device_get(tree)
