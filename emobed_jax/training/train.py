"""`train_and_evaluate(config, workdir)` and `evaluate_checkpoint(...)`: the CLI's two modes.

Training: periodic validation, TensorBoard events, orbax checkpoints (`latest` for resuming,
every `checkpoint_every_steps` / `checkpoint_every_minutes` and on SIGTERM/SIGINT,
`best` by `config.best_metric` on validation), and `workdir/results.json` with the best
checkpoint's validation and test metrics. A rerun with the same workdir resumes exactly: data
order and randomness are functions of (seed, step). Only process 0 writes logs and results.
"""
from __future__ import annotations

import logging
import math
import os
import time

import jax
import tqdm

from emobed_jax import atomic, console, run_dir
from emobed_jax.evaluation import artifacts, evaluators
from emobed_jax.training import (checkpoints, experiment, loop, parallel, preemption,
                                  teacher as teacher_lib, workdir_lock)

log = logging.getLogger(__name__)


def _is_main() -> bool:
    return jax.process_index() == 0


def _writer(workdir: str):
    if not _is_main():
        return None
    from tensorboardX import SummaryWriter

    return SummaryWriter(os.path.join(workdir, "tensorboard"))


def _check_workdir(workdir: str, hint: str = "expected a directory this user can write to",
                   flag: str = "--workdir") -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"{flag}={workdir!r} is not writable ({e.strerror}); {hint}") from e


class _Checkpoint:
    """The loop hook that saves `latest`: every `checkpoint_every_steps`, after the last step,
    every `checkpoint_every_minutes`, and on SIGTERM/SIGINT, after which it stops the run by
    raising `preemption.Preempted`. Every process takes the same decision at the same step."""

    def __init__(self, config, checkpointer, stop, meta_fn):
        self.config, self.checkpointer, self.stop, self.meta_fn = config, checkpointer, stop, meta_fn
        self.last_save = time.monotonic()
        self.signum = 0

    def due(self, step: int, last: bool) -> bool:
        minutes = self.config.checkpoint_every_minutes
        late = minutes > 0 and time.monotonic() - self.last_save >= 60 * minutes
        # Several processes stop and checkpoint together (a no-op with one process).
        self.signum, late = (int(v) for v in parallel.agree_max([self.stop.signum or 0, late]))
        self.last = last
        return bool(last or step % self.config.checkpoint_every_steps == 0 or self.signum or late)

    def __call__(self, step: int, state, metrics: dict) -> None:
        self.checkpointer.save(state, self.meta_fn())
        self.last_save = time.monotonic()
        if self.signum and not self.last:
            raise preemption.Preempted(self.signum, step, self.checkpointer.directory)


@workdir_lock.holds_workdir  # one training run per workdir; a second one stops at once
def train_and_evaluate(config, workdir: str, devices=None) -> dict:
    """Trains, evaluates and checkpoints; resumes from `workdir` when it holds a checkpoint.

    Args:
      config: experiment config.
      workdir: output directory.
      devices: devices to use (default: all).

    Returns:
      The results dict also written to `workdir/results.json`.
    """
    _check_workdir(workdir)
    if os.path.exists(os.path.join(workdir, run_dir.RUN_FILE)):
        # Resuming: the run must go on as it started (same model, data and target).
        run_dir.check_overrides(run_dir.read(workdir)["config"], config)
    exp = experiment.build(config, devices)
    if _is_main():
        run_dir.write(workdir, config, exp.data)
    # A distillation student's frozen teacher: loaded, or trained first in workdir/teacher.
    teacher = (teacher_lib.prepare(config, workdir, exp.data, devices)
               if exp.objective.uses_distill else None)
    state, train_rng = exp.init_state(teacher=teacher)
    # Two `latest` steps, so that a damaged newest one leaves an intact one to fall back to.
    latest = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "latest"), max_to_keep=2,
                                      cleanup=True)
    best = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "best"), max_to_keep=1,
                                    cleanup=True)
    track = {"best_value": -math.inf, "best_step": None}
    # The newest intact checkpoint of either kind (a `best` one carries the same meta), so a
    # deleted or damaged `latest` neither restarts the run nor collides with `best` steps.
    resumed = checkpoints.restore_newest_intact(state, {"latest": latest, "best": best})
    if resumed is not None:
        state, meta, kind, _ = resumed
        track = {"best_value": meta.get("best_value", -math.inf), "best_step": meta.get("best_step")}
        log.info("resumed from step %d in %s", int(state.step), os.path.join(workdir, "checkpoints",
                                                                              kind))
        if kind != "best":
            track = _check_older_best(best, int(state.step), track)
    start = int(jax.device_get(state.step))
    predict_fn = exp.compile_predict()
    stream, _ = exp.train_stream(start)
    writer = _writer(workdir)
    config_dict = config.to_dict()

    def checkpoint_meta(extra=None):
        return dict(config=config_dict, **track, **(extra or {}))

    bar = tqdm.tqdm(total=config.num_train_steps, initial=start, disable=not _is_main(),
                    desc=f"{config.method}/{config.target_modality}", dynamic_ncols=True)

    def log_train(step, state, metrics):
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        if writer:
            for k, v in metrics.items():
                writer.add_scalar(f"train/{k}", v, step)

    def validate(step, state, metrics):
        val, _, _ = evaluators.evaluate_split(exp, state.params, predict_fn, "validation")
        if writer:
            for k, v in val.items():
                if isinstance(v, float):
                    writer.add_scalar(f"validation/{k}", v, step)
        value = val[exp.best_metric]
        log.info("step %d validation: %s", step, " ".join(
            f"{k}={v:.4f}" for k, v in val.items() if isinstance(v, float)))
        if value > track["best_value"] or track["best_step"] is None:
            track.update(best_value=float(value), best_step=step)
            best.save(state, checkpoint_meta({"validation": val}))

    with preemption.StopOnSignal() as stop, console.beside_progress_bar():
        hooks = [loop.Every(config.log_every_steps, log_train),
                 loop.Every(config.eval_every_steps, validate),
                 _Checkpoint(config, latest, stop, checkpoint_meta)]
        try:
            state = loop.run(state, exp.compile_train_step(), map(exp.par.put_batch, stream),
                             train_rng, start_step=start, num_steps=config.num_train_steps,
                             hooks=hooks, raise_nonfinite=not config.skip_nonfinite_updates,
                             progress=bar)
        except BaseException:
            latest.close()
            best.close()
            raise
        finally:
            bar.close()
    results = _final_results(exp, best, state, config_dict, config.num_train_steps,
                             track["best_step"], workdir)
    if writer:
        writer.close()
    latest.close()
    best.close()
    return results


def _check_older_best(best, step: int, track: dict) -> dict:
    """The `best` checkpoint of a run resumed from `latest` (at or before the resumed step: a
    newer one would have been resumed from) is checked now, not when training ends: a damaged
    one is set aside and the best is chosen again from the validations to come."""
    best_step = best.latest_step()
    if best_step is None or best_step > step:
        return track
    try:
        best.verify(best_step)
    except checkpoints.DamagedCheckpointError as e:
        where = best.set_aside(best_step)
        log.warning("%s; moved to %s. The best checkpoint is chosen again from the validations "
                    "still to come (the final state if none comes)", e, where)
        return {"best_value": -math.inf, "best_step": None}
    return track


def _final_results(exp, best, state, config_dict, step, best_step, workdir):
    if best.latest_step() is not None:
        state, _ = best.restore(state)
    else:  # the best checkpoint was damaged and no validation followed: the final state
        best_step = step
    predict_fn = exp.compile_predict()
    metrics = {}
    for split in exp.eval_split_names:
        metrics[split], _, _ = evaluators.evaluate_split(exp, state.params, predict_fn, split)
    results = {"config": config_dict, "step": step, "best_step": best_step,
               "dataset": {"name": exp.info.name, "splits": {s: len(e.data) for s, e in exp.splits.items()},
                           "metadata": {k: v for k, v in exp.info.metadata.items()}},
               "metrics": metrics}
    if _is_main():
        atomic.write_json(os.path.join(workdir, "results.json"), results)
    return results


def _damaged_advice(workdir: str, name: str, step: int) -> str:
    """What to do about a damaged checkpoint (`name` 'best' or 'latest') that evaluation needs:
    the `latest` steps to evaluate instead."""
    latest = os.path.join(workdir, "checkpoints", "latest")
    steps = sorted(int(n) for n in os.listdir(latest) if n.isdigit()) if os.path.isdir(latest) else []
    others = [s for s in steps if name == "best" or s != step]
    if others:
        return (f"Evaluate another checkpoint with --checkpoint_step=N (steps kept in {latest}: "
                f"{others}), or train again in a new --workdir")
    return "No other checkpoint is kept: train again in a new --workdir"


def evaluate_checkpoint(config, workdir: str, splits=None, checkpoint_step=None, devices=None,
                        plots: bool = True, output_dir: str | None = None) -> dict:
    """Restores the best checkpoint (or `checkpoint_step` of `latest`) and evaluates monomodally,
    exactly as the run was trained: the config, the dataset description and the normalisation
    statistics come from the workdir (`run_dir`).

    Writes `eval_<split>.json`, `predictions_<split>.csv` and (with `plots`)
    `plot_predictions_<split>.png` / `plot_confusion_<split>.png` and `plot_embeddings_<split>.png`
    into `output_dir` (default: the workdir).

    Args:
      config: None to evaluate the run as trained, or a config whose evaluation-only settings
        (`run_dir.EVAL_ONLY`) override the stored ones; any other difference is refused.
      workdir: the training workdir.
      splits: splits to evaluate (default: `config.eval_splits` that exist).
      checkpoint_step: a step kept in `checkpoints/latest`, or None for the best checkpoint.
      devices: devices to use.
      plots: write the PNGs.
      output_dir: where to write (e.g. for a read-only workdir).

    Returns:
      split -> metrics (with `step`, the restored step).
    """
    stored = run_dir.read(workdir)
    config = run_dir.check_overrides(stored["config"], config)
    if _is_main():  # before the work, not when the first result is written
        _check_workdir(output_dir or workdir, flag="--output_dir" if output_dir else "--workdir",
                       hint="evaluation writes its metrics, predictions and plots there; pass "
                            "--output_dir=DIR (a writable folder) to evaluate a read-only workdir")
    name = "best" if checkpoint_step is None else "latest"
    directory = os.path.join(workdir, "checkpoints", name)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoint in {directory}; train first with --mode=train")
    exp = experiment.build(config, devices, stats=stored["stats"])
    described = run_dir.dataset_record(exp.info, exp.delays, config)
    changed = sorted(k for k, v in stored["dataset"].items() if described.get(k) != v)
    if changed:
        raise ValueError(f"the dataset read now differs from the one {workdir} was trained on in "
                         f"{changed} (now {[described[k] for k in changed]}, trained "
                         f"{[stored['dataset'][k] for k in changed]}); check config.data")
    state, _ = exp.init_state()
    ckpt = checkpoints.Checkpointer(directory)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; train first with --mode=train")
    try:
        state, _ = ckpt.restore(state, checkpoint_step)
    except checkpoints.DamagedCheckpointError as e:
        raise checkpoints.DamagedCheckpointError(e.directory, e.step, e.problem,
                                                 _damaged_advice(workdir, name, e.step)) from e
    finally:
        ckpt.close()
    step = int(jax.device_get(state.step))
    out_dir = output_dir or workdir
    if _is_main():
        os.makedirs(out_dir, exist_ok=True)
        log.info("evaluating the %s checkpoint of %s (step %d); writing to %s", name, workdir,
                 step, out_dir)
    predict_fn = exp.compile_predict()
    out = {}
    for split in splits or exp.eval_split_names:
        if split not in exp.splits:
            raise ValueError(f"split {split!r} does not exist; expected one of {sorted(exp.splits)}")
        result, preds, target_emb = evaluators.evaluate_split(exp, state.params, predict_fn, split)
        result["step"] = step
        out[split] = result
        if not _is_main():
            continue
        atomic.write_json(os.path.join(out_dir, f"eval_{split}.json"), result)
        artifacts.export_predictions(exp, split, preds,
                                     os.path.join(out_dir, f"predictions_{split}.csv"))
        if plots:
            # The embedding map shows every modality the model has, each encoded on its own.
            embeddings = {config.target_modality: target_emb}
            for m in exp.model.modalities:
                if m != config.target_modality:
                    embeddings[m] = evaluators.predict_split(
                        exp, state.params, exp.compile_predict(m), split, m)[1]
            artifacts.write_plots(exp, split, result, preds, embeddings, out_dir)
    return out
