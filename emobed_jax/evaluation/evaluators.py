"""Monomodal evaluation: run the target modality through its encoder and the shared head.

Predictions are collected per example (padding removed), mapped back onto the label time line
(label-delay compensation undone), optionally post-processed, and scored by the evaluator of the
task and level (`scorer`), with per-group scores where the dataset's `Conventions` declare a
group key. `evaluate_split` is the one evaluation path of training, checkpoint evaluation and
several seeds; `write_predictions` writes the generic prediction CSV.
"""
from __future__ import annotations

import csv

import jax
import numpy as np

from emobed_jax import atomic
from emobed_jax.data import batching, delay
from emobed_jax.evaluation import metrics

# config.task: what `scorer` evaluates ('regression': every label dimension the run uses).
TASKS = ("regression", "category")
# config.postprocess.bias_scale: (centre, scale) of the bias/scale correction, None for off.
BIAS_SCALE = {"none": None, "center_scale": (True, True), "center": (True, False),
              "scale": (False, True)}


def predict(predict_fn, params, examples: batching.Examples, batch_size: int, task: str,
            modality: str, put_batch, to_host):
    """Runs `predict_fn` over a split with only `modality` in the batches.

    Args:
      predict_fn: compiled `f(params, batch) -> (embeddings, outputs)`.
      params: model parameters.
      examples: the split.
      batch_size: eval batch size.
      task: 'regression' or 'category'.
      modality: the modality to feed (the target: inference is monomodal).
      put_batch, to_host: placement functions from `parallel.Parallel`.

    Returns:
      (outputs, embeddings): lists indexed like the split's examples; frame level `[T, K]` /
      `[T, E]`, utterance level `[K]` / `[E]`; None for examples without that modality.
    """
    outputs = [None] * len(examples.data)
    embeddings = [None] * len(examples.data)
    for batch in batching.eval_batches(examples, batch_size, task, modalities=(modality,)):
        emb, out = to_host(predict_fn(params, put_batch(batch)))
        for row, index in enumerate(batch["index"]):
            if index < 0:
                continue
            if examples.level == "frame":
                n = int(batch["lengths"][modality][row])
                outputs[index] = np.asarray(out[modality][row, :n], np.float64)
                embeddings[index] = np.asarray(emb[modality][row, :n])
            else:
                outputs[index] = np.asarray(out[modality][row], np.float64)
                embeddings[index] = np.asarray(emb[modality][row])
    return outputs, embeddings


def to_label_time(examples: batching.Examples, outputs: list, delays: np.ndarray) -> list:
    """Frame level: maps each recording's outputs onto the label time line (undoing the delay)."""
    if examples.level != "frame":
        return outputs
    return [None if o is None else delay.unshift_predictions(o, delays) for o in outputs]


def postprocess(predictions: list, train_predictions: list, train_gold: list, cfg) -> list:
    """AVEC-style post-processing of label-time frame predictions (`config.postprocess`).

    Median smoothing per recording, then the bias/scale correction fitted on the (equally
    smoothed) training predictions against the training gold standard.
    """
    from emobed_jax.evaluation import postprocess as pp

    def smooth(preds):
        if cfg.median_window_frames > 1:
            return [None if p is None else pp.median_smooth(p, cfg.median_window_frames) for p in preds]
        return preds

    predictions = smooth(predictions)
    if BIAS_SCALE[cfg.bias_scale] is None:
        return predictions
    train = [(p, g[: len(p)]) for p, g in zip(smooth(train_predictions), train_gold) if p is not None]
    params = pp.fit_bias_scale([p for p, _ in train], [g for _, g in train])
    center, scale = BIAS_SCALE[cfg.bias_scale]
    return [None if p is None else pp.apply_bias_scale(p, params, center=center, scale=scale)
            for p in predictions]


def _score_category(examples, have, outputs, class_names, group_key, label_names):
    labels = np.asarray([examples.data.categories[i] for i in have])
    logits = np.stack([outputs[i] for i in have])
    return metrics.classification_metrics(labels, logits, len(class_names))


def _score_frames(examples, have, outputs, class_names, group_key, label_names):
    # Concatenated recordings (the AVEC headline) plus the mean of per-recording CCCs.
    preds = [outputs[i] for i in have]
    gold = [examples.data.regression[i][: len(p)] for i, p in zip(have, preds)]
    groups = np.concatenate([np.full(len(p), k) for k, p in enumerate(preds)])
    return metrics.regression_metrics(np.concatenate(preds), np.concatenate(gold), label_names,
                                      groups=groups, group_suffix="per_recording")


def _score_utterances(examples, have, outputs, class_names, group_key, label_names):
    preds = np.stack([outputs[i] for i in have])
    gold = np.stack([examples.data.regression[i] for i in have])
    groups = None
    if group_key:
        if group_key not in examples.data.extra:
            raise ValueError(f"the dataset declares group_key={group_key!r}, a field its examples "
                             f"do not have (fields: {sorted(examples.data.extra)})")
        groups = np.asarray([examples.data.extra[group_key][i] for i in have])
    return metrics.regression_metrics(preds, gold, label_names, groups=groups,
                                      group_suffix=group_suffix(group_key))


def group_suffix(group_key: str | None) -> str:
    """The metric-name suffix of per-group scores: 'video_id' -> 'per_video'."""
    return "per_" + group_key.removesuffix("_id") if group_key else "per_group"


def scorer(task: str, level: str):
    """The evaluator of a task at a level:
    `f(examples, have, outputs, class_names, group_key, label_names)`.

    Category: accuracy, UAR, macro-F1. Frame-level regression: CCC etc. over the concatenated
    recordings plus per-recording means. Utterance-level regression: over all utterances, plus
    per-group CCC when the dataset declares a group key.
    """
    if task == "category":
        return _score_category
    return _score_frames if level == "frame" else _score_utterances


def metric_names(task: str, level: str | None, group_key: str | None = None,
                 dims=("*",)) -> set:
    """The validation metrics an evaluator reports (what `config.best_metric` may name).

    Args:
      task: 'regression' or 'category'.
      level: 'frame', 'utterance', or None when not known yet (then every level's names).
      group_key: the dataset's declared group key.
      dims: the label dimensions; the default `*` (a wildcard) before the dataset is read.
    """
    if task == "category":
        return {"accuracy", "uar", "macro_f1"}
    names = {"ccc_mean"} | {f"{m}_{d}" for m in ("ccc", "pearson", "rmse") for d in dims}
    suffixes = {"frame": ["per_recording"], "utterance": [group_suffix(group_key)] if group_key
                else [], None: ["per_recording", "per_*"]}[level]
    for suffix in suffixes:
        names |= {f"ccc_{d}_{suffix}" for d in dims} | {f"ccc_mean_{suffix}"}
    return names


def score(examples: batching.Examples, outputs: list, task: str, class_names=None,
          group_key: str | None = None, label_names=()) -> dict:
    """Metrics of a split's predictions (examples without a prediction are excluded, counted).

    `outputs` are label-time predictions (`to_label_time`), optionally post-processed.
    """
    have = [i for i, o in enumerate(outputs) if o is not None]
    result = {"num_examples": len(have), "num_missing_modality": len(outputs) - len(have)}
    if not have:
        raise ValueError("no example of this split has the target modality; nothing to evaluate")
    result.update(scorer(task, examples.level)(examples, have, outputs, class_names, group_key,
                                               tuple(label_names)))
    return result


def predict_split(exp, params, predict_fn, split: str, modality: str | None = None):
    """Label-time predictions and embeddings of one split, one modality alone.

    Args:
      exp: the experiment (config, splits, delays and the device placement `par`).
      params: model parameters.
      predict_fn: `exp.compile_predict(modality)`.
      split: the split name.
      modality: the modality to feed (default: the target).

    Returns:
      (label-time predictions, embeddings): per example, or None without that modality.
    """
    config = exp.config
    modality = modality or config.target_modality
    rows = exp.par.local_rows(config.eval_batch_size)

    def put(batch):  # each process feeds its own rows of the global eval batch
        return exp.par.put_batch(jax.tree_util.tree_map(lambda x: x[rows], batch), for_pmap=False)

    outputs, embeddings = predict(predict_fn, params, exp.splits[split], config.eval_batch_size,
                                  config.task, modality, put, exp.par.to_host)
    return to_label_time(exp.splits[split], outputs, exp.delays), embeddings


def evaluate_split(exp, params, predict_fn, split: str):
    """Scores `split` with the target modality only, by the task's evaluator.

    Post-processing (`config.postprocess`) applies to frame-level regression; the raw CCCs are
    then reported too, as `ccc_<dim>_raw`.

    Returns:
      (metrics, label-time predictions (post-processed when configured), embeddings).
    """
    config, info = exp.config, exp.info
    examples = exp.splits[split]
    preds, embeddings = predict_split(exp, params, predict_fn, split)
    group_key = info.conventions.group_key

    def score_(p):
        return score(examples, p, config.task, info.class_names, group_key, info.label_names)

    pp = config.postprocess
    if info.level != "frame" or config.task == "category" or (
            pp.median_window_frames <= 1 and BIAS_SCALE[pp.bias_scale] is None):
        return score_(preds), preds, embeddings
    raw = score_(preds)
    train_preds, _ = predict_split(exp, params, predict_fn, "train")
    preds = postprocess(preds, train_preds, exp.splits["train"].data.regression, pp)
    result = score_(preds)
    result.update({f"{k}_raw": v for k, v in raw.items() if k.startswith("ccc_")})
    return result, preds, embeddings


def write_predictions(path: str, examples: batching.Examples, outputs: list, task: str,
                      frame_rate_hz: float, class_names=None, label_names=()) -> None:
    """Writes `predictions_<split>.csv` atomically (a temp file renamed into place).

    Frame level: one row per frame `recording,frameTime,<dim>...,<dim>_gold...` (one column per
    label dimension, `label_names`). Utterance level: one row per example
    `name,<dim>...,<dim>_gold...`, or `name,category,category_gold,p_<class>...` for the category
    task.
    """
    data = examples.data
    names = list(label_names)

    def values(row):
        return [f"{v:.6f}" for v in row]

    with atomic.atomic_write(path, newline="") as f:
        w = csv.writer(f)
        if task == "category":
            w.writerow(["name", "category", "category_gold"] + [f"p_{c}" for c in class_names])
            for i, out in enumerate(outputs):
                if out is None:
                    continue
                p = np.exp(out - out.max())
                p /= p.sum()
                w.writerow([data.names[i], class_names[int(np.argmax(out))],
                            class_names[data.categories[i]]] + values(p))
        elif examples.level == "frame":
            w.writerow(["recording", "frameTime"] + names + [f"{n}_gold" for n in names])
            for i, out in enumerate(outputs):
                if out is None:
                    continue
                gold = data.regression[i]
                for t in range(len(out)):
                    w.writerow([data.names[i], f"{t / frame_rate_hz:.2f}"] + values(out[t])
                               + values(gold[t]))
        else:
            w.writerow(["name"] + names + [f"{n}_gold" for n in names])
            for i, out in enumerate(outputs):
                if out is None:
                    continue
                w.writerow([data.names[i]] + values(out) + values(data.regression[i]))
