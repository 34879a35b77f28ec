"""Orbax checkpoints: `DIR/checkpoints/latest` (resume) and `DIR/checkpoints/best` (evaluation).

Each checkpoint holds the train state (`StandardSave`) and JSON metadata (`JsonSave`): the
config, the parameter shapes and the metrics at that step. Restoring uses an abstract target
built from a freshly initialised state, so optimiser states come back as their own types, and a
checkpoint written by an incompatible model is refused with the differing parameter paths named.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class IncompatibleCheckpointError(ValueError):
    """A checkpoint's parameters do not match the model the config describes."""


def _state_tree(state) -> dict:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
            "skipped": state.skipped}


def param_shapes(params) -> dict:
    """`{'encoder_audio/fwd_0/...': [shape]}` for every parameter (a JSON-able model signature)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): list(leaf.shape)
            for path, leaf in flat}


def _compare_shapes(saved: dict, current: dict, directory: str) -> None:
    differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differing:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)} vs config {current.get(k)}"
                            for k in differing[:8])
        raise IncompatibleCheckpointError(
            f"checkpoint in {directory} was written by a different model ({len(differing)} "
            f"parameters differ: {details}). Use a new --workdir, or the config that wrote it "
            f"(its config is in that checkpoint's meta).")


class Checkpointer:
    """Saves and restores train states under one directory.

    Args:
      directory: e.g. `DIR/checkpoints/latest`.
      max_to_keep: checkpoints kept.
    """

    def __init__(self, directory: str, max_to_keep: int = 1):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        # Explicit handlers (not just item names) so item_metadata() can describe a checkpoint
        # before anything is restored (restore_arrays needs the saved shapes).
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    def latest_step(self):
        """The newest saved step, or None."""
        return self.manager.latest_step()

    def save(self, state, meta: dict) -> None:
        """Saves `state` at its step with JSON `meta` (config, metrics); waits until written."""
        meta = dict(meta, param_shapes=param_shapes(state.params))
        step = int(jax.device_get(state.step))
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_state_tree(state)), meta=ocp.args.JsonSave(meta)),
            force=True)
        self.manager.wait_until_finished()

    def read_meta(self, step=None) -> dict:
        """The JSON metadata of `step` (default: latest)."""
        step = self.latest_step() if step is None else step
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_arrays(self, step=None) -> dict:
        """The raw saved tree `{step, params, opt_state, skipped}` as numpy (no target needed).

        For inspection and comparison; optimiser states come back as plain containers. Works in
        any topology: the arrays are read onto this process's first device, whatever devices or
        processes wrote them (orbax would otherwise insist on the saving topology).
        """
        step = self.latest_step() if step is None else step
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local),
            self.manager.item_metadata(step)["state"])
        return jax.device_get(self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))["state"])

    def restore(self, state, step=None):
        """Restores into the structure (and shardings) of `state`.

        Args:
          state: a freshly initialised TrainState (the abstract target).
          step: the step to restore (default: latest).

        Returns:
          (restored state, meta dict).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step not in self.manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; "
                f"expected one of {sorted(self.manager.all_steps())}")
        meta = self.read_meta(step)
        _compare_shapes(meta.get("param_shapes", {}), param_shapes(state.params), self.directory)
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            _state_tree(state))
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))["state"]
        return state.replace(**restored), meta

    def close(self) -> None:
        self.manager.close()
