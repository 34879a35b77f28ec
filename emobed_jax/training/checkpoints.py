"""Orbax checkpoints: `DIR/checkpoints/latest` (resume) and `DIR/checkpoints/best` (evaluation).

Each checkpoint holds the train state (`StandardSave`) and JSON metadata (`JsonSave`): the
config, the parameter shapes and the metrics at that step. Restoring uses an abstract target
built from a freshly initialised state, so optimiser states come back as their own types, and a
checkpoint written by an incompatible model is refused with the differing parameter paths named.

Damage: after orbax has committed a step, the size and SHA-256 of every file in it are written to
`<step>/emobed_files.json`. Restoring checks the files against that list first, so a truncated,
altered or deleted file is named (`DamagedCheckpointError`) before orbax reads anything (orbax's
own errors for these cases are long tracebacks that do not name the file). A step without the
list (killed between orbax's commit and the list, or written by an older version) is verified
by reading it. `restore_newest_intact` resumes from the newest intact checkpoint of `latest` and
`best` and sets damaged newer ones aside, so their step numbers can be written again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Mapping

import jax
import orbax.checkpoint as ocp

from emobed_jax import atomic

log = logging.getLogger(__name__)

FILE_LIST = "emobed_files.json"
DAMAGED_DIR = "damaged"


class IncompatibleCheckpointError(ValueError):
    """A checkpoint's parameters do not match the model the config describes."""


class DamagedCheckpointError(ValueError):
    """A checkpoint's files are missing, truncated, altered or unreadable.

    A ValueError, so the CLI prints it as one line. `step` and `directory` name the checkpoint,
    `problem` the file and what is wrong with it.
    """

    def __init__(self, directory: str, step: int, problem: str, advice: str = ""):
        self.directory, self.step, self.problem = directory, step, problem
        super().__init__(f"checkpoint {os.path.join(directory, str(step))} is damaged: {problem}"
                         + (f". {advice}" if advice else ""))


class NoIntactCheckpointError(ValueError):
    """Checkpoints exist but every one of them is damaged; the message says what to delete."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(step_dir: str) -> list[str]:
    found = []
    for root, _, names in os.walk(step_dir):
        found += [os.path.relpath(os.path.join(root, n), step_dir) for n in names]
    return sorted(f for f in found if f != FILE_LIST)


def _first_line(error: BaseException, limit: int = 240) -> str:
    # orbax/tensorstore messages run to kilobytes of JSON specs; the first line says what failed.
    text = (str(error).strip().splitlines() or [""])[0]
    for tail in (" See full TensorStore details", " [tensorstore_spec"):
        text = text.split(tail)[0]
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(error).__name__}: {text}"


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

    def __init__(self, directory: str, max_to_keep: int = 1, cleanup: bool = False):
        self.directory = os.path.abspath(directory)
        # `cleanup` removes the temporary folders of writes a crash interrupted; only a training
        # run (the directory's one writer) may, an evaluation could delete a running write.
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               cleanup_tmp_directories=cleanup)
        # Explicit handlers (not just item names) so item_metadata() can describe a checkpoint
        # before anything is restored (restore_arrays needs the saved shapes).
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    def latest_step(self):
        """The newest saved step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """The saved steps, oldest first."""
        return sorted(self.manager.all_steps())

    def step_dir(self, step: int) -> str:
        """The folder of `step` (orbax names it by the bare step number)."""
        return os.path.join(self.directory, str(step))

    def save(self, state, meta: dict) -> None:
        """Saves `state` at its step with JSON `meta` (config, metrics); waits until written.

        A step that already exists is replaced: it was written by a trajectory that a resume from
        an earlier step abandoned (orbax would refuse with `StepAlreadyExistsError`).
        """
        meta = dict(meta, param_shapes=param_shapes(state.params))
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            log.warning("replacing step %d in %s (written before the run resumed from an "
                        "earlier step)", step, self.directory)
            self.manager.delete(step)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_state_tree(state)), meta=ocp.args.JsonSave(meta)),
            force=True)
        self.manager.wait_until_finished()
        if jax.process_index() == 0:
            # After orbax's commit (every process's files are complete then), so the list
            # describes the checkpoint as committed; a crash before it leaves a step without
            # a list, which restoring verifies by reading.
            step_dir = self.step_dir(step)
            atomic.write_json(os.path.join(step_dir, FILE_LIST), {
                f: {"bytes": os.path.getsize(os.path.join(step_dir, f)),
                    "sha256": _sha256(os.path.join(step_dir, f))} for f in _files(step_dir)})

    def verify(self, step: int) -> bool:
        """Checks `step`'s files against the list written with it.

        Returns:
          True when every listed file is present, complete and unchanged; False when the step
          has no list (then only reading it can tell).

        Raises:
          DamagedCheckpointError: naming the first bad file (and how many others are bad).
        """
        step_dir = self.step_dir(step)
        if not os.path.isdir(step_dir):
            raise DamagedCheckpointError(self.directory, step, "its folder is missing")
        try:
            with open(os.path.join(step_dir, FILE_LIST)) as f:
                listed = json.load(f)
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as e:
            raise DamagedCheckpointError(self.directory, step,
                                         f"its file list {FILE_LIST} is unreadable ({e})") from e
        problems = []
        for name, want in sorted(listed.items()):
            path = os.path.join(step_dir, name)
            if not os.path.isfile(path):
                problems.append(f"{name} is missing")
            elif os.path.getsize(path) != want["bytes"]:
                problems.append(f"{name} has {os.path.getsize(path)} bytes, "
                                f"{want['bytes']} were written")
            elif _sha256(path) != want["sha256"]:
                problems.append(f"{name} changed after it was written (SHA-256 differs)")
        if problems:
            more = f" (and {len(problems) - 1} more files)" if len(problems) > 1 else ""
            raise DamagedCheckpointError(self.directory, step, problems[0] + more)
        return True

    def _read(self, step: int, args):
        """`manager.restore`, with a failure to read reported as damage of `step`.

        orbax raises bare `Exception`s (a truncated chunk), `ValueError`s (a lost tree
        structure) or `FileNotFoundError`s for damaged files; all of them mean this step cannot
        be restored, which is what the caller has to act on.
        """
        try:
            return self.manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001 (see the docstring)
            raise DamagedCheckpointError(self.directory, step,
                                         f"reading it failed ({_first_line(e)})") from e

    def read_meta(self, step=None) -> dict:
        """The JSON metadata of `step` (default: latest)."""
        step = self.latest_step() if step is None else step
        return self._read(step, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_arrays(self, step=None) -> dict:
        """The raw saved tree `{step, params, opt_state, skipped}` as numpy (no target needed).

        For inspection and comparison; optimiser states come back as plain containers. Works in
        any topology: the arrays are read onto this process's first device, whatever devices or
        processes wrote them (orbax would otherwise insist on the saving topology).
        """
        step = self.latest_step() if step is None else step
        self.verify(step)
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        try:
            saved = self.manager.item_metadata(step)["state"]
        except Exception as e:  # noqa: BLE001 (as in _read: unreadable metadata is damage)
            raise DamagedCheckpointError(self.directory, step,
                                         f"reading it failed ({_first_line(e)})") from e
        abstract = jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local), saved)
        return jax.device_get(self._read(step, ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))["state"])

    def restore(self, state, step=None):
        """Restores into the structure (and shardings) of `state`.

        Args:
          state: a freshly initialised TrainState (the abstract target).
          step: the step to restore (default: latest).

        Returns:
          (restored state, meta dict).

        Raises:
          FileNotFoundError: no such step.
          DamagedCheckpointError: the step's files are damaged (checked before reading).
          IncompatibleCheckpointError: the checkpoint was written by a different model.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step not in self.manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; "
                f"expected one of {sorted(self.manager.all_steps())}")
        self.verify(step)
        meta = self.read_meta(step)
        _compare_shapes(meta.get("param_shapes", {}), param_shapes(state.params), self.directory)
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            _state_tree(state))
        restored = self._read(step, ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))["state"]
        return state.replace(**restored), meta

    def set_aside(self, step: int) -> str:
        """Moves `step` out of this directory into `checkpoints/damaged/` and returns where to.

        Kept rather than deleted, for inspection; out of the directory so that orbax no longer
        lists the step and the step number can be written again.
        """
        target = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR,
                              f"{os.path.basename(self.directory)}_{step}")
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            base, n = target, 1
            while os.path.exists(target):
                n += 1
                target = f"{base}_{n}"
            os.replace(self.step_dir(step), target)
        _sync("set_aside")
        self.manager.reload()
        return target

    def close(self) -> None:
        """Waits for pending writes and releases orbax's resources."""
        self.manager.close()


def _sync(name: str) -> None:
    # Several processes: only process 0 moves files; the others wait before listing again.
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"emobed_checkpoints_{name}")


def restore_newest_intact(state, checkpointers: Mapping[str, Checkpointer]):
    """Restores the newest intact checkpoint among several directories (`latest` and `best`).

    Tries every step from the newest down (at equal steps in the order of `checkpointers`); a
    damaged one is logged with its step and file and the next one is tried. Once one restores,
    the damaged steps are moved to `checkpoints/damaged/` (saying so): the resumed run writes
    those step numbers again. Training data and randomness are functions of the step, so
    resuming from any intact step reproduces the uninterrupted run.

    Args:
      state: a freshly initialised TrainState (the abstract target).
      checkpointers: name -> Checkpointer, e.g. `{"latest": ..., "best": ...}`.

    Returns:
      (state, meta, name, step) of the restored checkpoint, or None when there is none.

    Raises:
      NoIntactCheckpointError: checkpoints exist but all are damaged; says what to delete.
      IncompatibleCheckpointError: a checkpoint was written by a different model.
    """
    order = list(checkpointers)
    candidates = sorted(((step, name) for name, c in checkpointers.items() for step in c.all_steps()),
                        key=lambda sn: (-sn[0], order.index(sn[1])))
    damaged = []
    for step, name in candidates:
        ckpt = checkpointers[name]
        try:
            restored, meta = ckpt.restore(state, step)
        except DamagedCheckpointError as e:
            log.warning("%s; trying the next older checkpoint", e)
            damaged.append((name, step, e))
            continue
        for bad_name, bad_step, _ in damaged:
            moved = checkpointers[bad_name].set_aside(bad_step)
            log.warning("moved the damaged checkpoint %s/%d to %s (delete it when no longer "
                        "needed)", bad_name, bad_step, moved)
        if damaged:
            log.warning("resuming from the newest intact checkpoint: %s step %d", name, step)
        return restored, meta, name, step
    if not damaged:
        return None
    root = os.path.dirname(next(iter(checkpointers.values())).directory)
    listed = "; ".join(f"{name}/{step}: {e.problem}" for name, step, e in damaged)
    raise NoIntactCheckpointError(
        f"no intact checkpoint to resume from in {root} ({listed}). To start over from step 0, "
        f"delete {root} (or train into a new --workdir)")
