"""`train_and_evaluate(config, workdir)` and `evaluate_checkpoint(...)`: the CLI's two modes.

Training: periodic validation, TensorBoard events, orbax checkpoints (`latest` for resuming,
every `checkpoint_every_steps` / `checkpoint_every_minutes` and on SIGTERM/SIGINT,
`best` by `config.best_metric` on validation), and `workdir/results.json` with the best
checkpoint's validation and test metrics. A rerun with the same workdir resumes exactly: data
order and randomness are functions of (seed, step). Only process 0 writes logs and results.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import time

import jax
import numpy as np
import tqdm

from emobed_jax.training import checkpoints, experiment, parallel, preemption

from emobed_jax.evaluation import artifacts, evaluators
from emobed_jax.training import state as ts

log = logging.getLogger(__name__)


def _is_main() -> bool:
    return jax.process_index() == 0


def _writer(workdir: str):
    if not _is_main():
        return None
    from tensorboardX import SummaryWriter

    return SummaryWriter(os.path.join(workdir, "tensorboard"))


def _check_workdir(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"--workdir={workdir!r} is not writable ({e.strerror}); "
                              f"expected a directory this user can write to") from e


def _json_dump(path: str, obj) -> None:
    """Writes JSON atomically (no half-written results on a crash)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=float)
    os.replace(tmp, path)


def _init_state(exp: experiment.Experiment):
    init_rng, train_rng = experiment.init_rngs(exp.config.seed)
    state = ts.create_state(exp.model, exp.config, experiment.example_batch(exp), init_rng)
    return exp.par.put_state(state), exp.par.put_state(train_rng)


def _predict_fn(exp: experiment.Experiment, state, modality=None):
    fn = functools.partial(ts.predict_step, apply_fn=state.apply_fn,
                           modalities=(modality or exp.config.target_modality,))
    return exp.par.compile_predict(fn)


def _predict(exp: experiment.Experiment, params, predict_fn, split: str, modality=None):
    rows = parallel.local_rows(exp.config.eval_batch_size)

    def put(batch):  # each process feeds its own rows of the global eval batch
        return exp.par.put_batch(jax.tree_util.tree_map(lambda x: x[rows], batch), for_pmap=False)

    outputs, embeddings = evaluators.predict(predict_fn, params, exp.splits[split],
                                             exp.config.eval_batch_size, exp.config.task,
                                             modality or exp.config.target_modality, put,
                                             exp.par.to_host)
    return evaluators.to_label_time(exp.splits[split], outputs, exp.delays), embeddings


def evaluate_split(exp: experiment.Experiment, params, predict_fn, split: str):
    """Scores `split` with the target modality only.

    Returns:
      (metrics, label-time predictions (post-processed when configured), embeddings).
    """
    examples = exp.splits[split]
    preds, embeddings = _predict(exp, params, predict_fn, split)
    group_key = "video_id" if "video_id" in examples.data.extra else None
    score = functools.partial(evaluators.score, examples, task=exp.config.task,
                              class_names=exp.info.class_names, group_key=group_key)
    pp = exp.config.postprocess
    if exp.info.level != "frame" or exp.config.task == "category" or (
            pp.median_window_frames <= 1 and pp.bias_scale == "none"):
        return score(preds), preds, embeddings
    raw = score(preds)
    train_preds, _ = _predict(exp, params, predict_fn, "train")
    preds = evaluators.postprocess(preds, train_preds, exp.splits["train"].data.regression, pp)
    result = score(preds)
    result.update({f"{k}_raw": v for k, v in raw.items() if k.startswith("ccc_")})
    return result, preds, embeddings


def _check_finite(recent: list, skip: bool) -> dict:
    """Fetches the metrics of the steps since the last check; raises at the first non-finite one.

    Returns:
      The newest step's metrics as floats.
    """
    fetched = jax.device_get(recent)
    for step, metrics in fetched:
        metrics = {k: float(v) for k, v in metrics.items()}
        if not skip and (not math.isfinite(metrics["loss"]) or metrics["nonfinite"] > 0):
            _raise_nonfinite(step, metrics)
    return {k: float(v) for k, v in fetched[-1][1].items()}


def _raise_nonfinite(step: int, metrics: dict) -> None:
    terms = {k: float(v) for k, v in metrics.items() if k == "loss" or k.startswith(("task_", "align"))}
    bad = [k for k, v in terms.items() if not math.isfinite(v) and k != "loss"] or (
        ["loss"] if not math.isfinite(terms["loss"]) else ["gradient"])
    raise FloatingPointError(
        f"non-finite loss at step {step}: terms {bad} (values {terms}); the last good checkpoint "
        f"is kept. Lower config.optimizer.learning_rate, check the inputs, or set "
        f"config.skip_nonfinite_updates=True to skip such updates")


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
    exp = experiment.build(config, devices)
    state, train_rng = _init_state(exp)
    latest = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "latest"), max_to_keep=1)
    best = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "best"), max_to_keep=1)
    best_value, best_step = -math.inf, None
    if latest.latest_step() is not None:
        state, meta = latest.restore(state)
        best_value = meta.get("best_value", -math.inf)
        best_step = meta.get("best_step")
        log.info("resumed from step %d in %s", int(state.step), latest.directory)
    start = int(jax.device_get(state.step))
    skip = bool(config.skip_nonfinite_updates)
    step_fn = exp.par.compile_train_step(
        lambda axis: ts.bind_train_step(exp.objective, axis_name=axis, skip_nonfinite=skip))
    predict_fn = _predict_fn(exp, state)
    stream, num_units = experiment.train_stream(exp, start)
    writer = _writer(workdir)
    config_dict = config.to_dict()

    def checkpoint_meta(extra=None):
        return dict(config=config_dict, best_value=best_value, best_step=best_step, **(extra or {}))

    bar = tqdm.tqdm(total=config.num_train_steps, initial=start, disable=not _is_main(),
                    desc=f"{config.method}/{config.target_modality}", dynamic_ncols=True)
    step = start
    recent = []  # (step, metrics) since the last host sync; fetched together, no per-step sync
    last_save = time.monotonic()
    with preemption.StopOnSignal() as stop:
        while step < config.num_train_steps:
            batch = exp.par.put_batch(next(stream))
            state, metrics = step_fn(state, batch, train_rng)
            step += 1
            bar.update(1)
            recent.append((step, metrics))
            last = step == config.num_train_steps
            log_now = step % config.log_every_steps == 0 or last
            eval_now = step % config.eval_every_steps == 0 or last
            minutes = config.checkpoint_every_minutes
            due = minutes > 0 and time.monotonic() - last_save >= 60 * minutes
            # Several processes stop and checkpoint together (a no-op with one process).
            signum, due = (int(v) for v in parallel.agree_max([stop.signum or 0, due]))
            save_now = step % config.checkpoint_every_steps == 0 or last or signum or due
            if log_now or eval_now or save_now:
                # Never evaluate or checkpoint a state that went through a non-finite update.
                fetched = _check_finite(recent, skip)
                recent = []
                if log_now:
                    bar.set_postfix(loss=f"{fetched['loss']:.4f}")
                    if writer:
                        for k, v in fetched.items():
                            writer.add_scalar(f"train/{k}", v, step)
            if eval_now:
                val, _, _ = evaluate_split(exp, state.params, predict_fn, "validation")
                if writer:
                    for k, v in val.items():
                        if isinstance(v, float):
                            writer.add_scalar(f"validation/{k}", v, step)
                value = val.get(exp.best_metric)
                if value is None:
                    raise ValueError(f"config.best_metric={exp.best_metric!r} is not a validation "
                                     f"metric; expected one of {sorted(val)}")
                log.info("step %d validation %s", step,
                         {k: round(v, 4) for k, v in val.items() if isinstance(v, float)})
                if value > best_value or best_step is None:
                    best_value, best_step = float(value), step
                    best.save(state, checkpoint_meta({"validation": val}))
            if save_now:
                latest.save(state, checkpoint_meta())
                last_save = time.monotonic()
            if signum and not last:
                bar.close()
                latest.close()
                best.close()
                raise preemption.Preempted(signum, step, latest.directory)
    bar.close()
    results = _final_results(exp, best, state, config_dict, step, best_step, workdir)
    if writer:
        writer.close()
    latest.close()
    best.close()
    return results


def _final_results(exp, best, state, config_dict, step, best_step, workdir):
    state, _ = best.restore(state)
    predict_fn = _predict_fn(exp, state)
    metrics = {}
    for split in exp.eval_split_names:
        metrics[split], _, _ = evaluate_split(exp, state.params, predict_fn, split)
    results = {"config": config_dict, "step": step, "best_step": best_step,
               "dataset": {"name": exp.info.name, "splits": {s: len(e.data) for s, e in exp.splits.items()},
                           "metadata": {k: v for k, v in exp.info.metadata.items()}},
               "metrics": metrics}
    if _is_main():
        _json_dump(os.path.join(workdir, "results.json"), results)
    return results


def evaluate_checkpoint(config, workdir: str, splits=None, checkpoint_step=None, devices=None,
                        plots: bool = True) -> dict:
    """Restores the best checkpoint (or `checkpoint_step` of `latest`) and evaluates monomodally.

    Writes `workdir/eval_<split>.json`, `workdir/predictions_<split>.csv` and (with `plots`)
    `plot_predictions_<split>.png` / `plot_confusion_<split>.png` and `plot_embeddings_<split>.png`.

    Args:
      config: the config the run was trained with.
      workdir: the training workdir.
      splits: splits to evaluate (default: `config.eval_splits` that exist).
      checkpoint_step: a step kept in `checkpoints/latest`, or None for the best checkpoint.
      devices: devices to use.
      plots: write the PNGs.

    Returns:
      split -> metrics.
    """
    exp = experiment.build(config, devices)
    state, _ = _init_state(exp)
    name = "best" if checkpoint_step is None else "latest"
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", name))
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; train first with --mode=train")
    state, _ = ckpt.restore(state, checkpoint_step)
    predict_fn = _predict_fn(exp, state)
    out = {}
    for split in splits or exp.eval_split_names:
        if split not in exp.splits:
            raise ValueError(f"split {split!r} does not exist; expected one of {sorted(exp.splits)}")
        result, preds, target_emb = evaluate_split(exp, state.params, predict_fn, split)
        result["step"] = int(jax.device_get(state.step))
        out[split] = result
        if not _is_main():
            continue
        _json_dump(os.path.join(workdir, f"eval_{split}.json"), result)
        artifacts.export_predictions(exp, split, preds,
                                          os.path.join(workdir, f"predictions_{split}.csv"))
        if plots:
            # The embedding map shows every modality the model has, each encoded on its own.
            embeddings = {config.target_modality: target_emb}
            for m in exp.model.modalities:
                if m != config.target_modality:
                    embeddings[m] = _predict(exp, state.params, _predict_fn(exp, state, m), split, m)[1]
            artifacts.write_plots(exp, split, result, preds, embeddings, workdir)
    ckpt.close()
    return out
