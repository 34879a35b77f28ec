"""Monomodal evaluation: run the target modality through its encoder and the shared head.

Predictions are collected per example (padding removed), mapped back onto the label time line
(label-delay compensation undone), scored with `emobed_jax.metrics`, and exported as CSV.
"""
from __future__ import annotations

import csv
import os

import numpy as np

from emobed_jax.data import batching, loading

from emobed_jax.evaluation import metrics


def predict(predict_fn, params, examples: batching.Examples, batch_size: int, task: str,
            modality: str, put_batch, to_host):
    """Runs `predict_fn` over a split with only `modality` in the batches.

    Args:
      predict_fn: compiled `f(params, batch) -> (embeddings, outputs)`.
      params: model parameters.
      examples: the split.
      batch_size: eval batch size.
      task: 'arousal_valence' or 'category'.
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
    return [None if o is None else loading.unshift_predictions(o, delays) for o in outputs]


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
    if cfg.bias_scale == "none":
        return predictions
    train = [(p, g[: len(p)]) for p, g in zip(smooth(train_predictions), train_gold) if p is not None]
    params = pp.fit_bias_scale([p for p, _ in train], [g for _, g in train])
    center = cfg.bias_scale in ("center_scale", "center")
    scale = cfg.bias_scale in ("center_scale", "scale")
    return [None if p is None else pp.apply_bias_scale(p, params, center=center, scale=scale)
            for p in predictions]


def score(examples: batching.Examples, outputs: list, task: str, class_names=None,
          group_key: str | None = None) -> dict:
    """Metrics of a split's predictions (examples without a prediction are excluded, counted).

    `outputs` are label-time predictions (`to_label_time`), optionally post-processed.

    Frame level: CCC etc. over the concatenated recordings (the AVEC headline) plus the mean of
    per-recording CCCs (`ccc_<dim>_per_recording`). Utterance level: over all utterances, plus
    per-group CCC when `group_key` (e.g. 'video_id' -> `ccc_<dim>_per_video`) is given. Category: accuracy, UAR, macro-F1.
    """
    have = [i for i, o in enumerate(outputs) if o is not None]
    result = {"num_examples": len(have), "num_missing_modality": len(outputs) - len(have)}
    if not have:
        raise ValueError("no example of this split has the target modality; nothing to evaluate")
    data = examples.data
    if task == "category":
        labels = np.asarray([data.categories[i] for i in have])
        logits = np.stack([outputs[i] for i in have])
        result.update(metrics.classification_metrics(labels, logits, len(class_names)))
        return result
    if examples.level == "frame":
        preds = [outputs[i] for i in have]
        gold = [data.regression[i][: len(p)] for i, p in zip(have, preds)]
        groups = np.concatenate([np.full(len(p), k) for k, p in enumerate(preds)])
        result.update(metrics.regression_metrics(
            np.concatenate(preds), np.concatenate(gold), groups=groups,
            group_suffix="per_recording"))
        return result
    preds = np.stack([outputs[i] for i in have])
    gold = np.stack([data.regression[i] for i in have])
    groups = None
    if group_key and group_key in data.extra:
        groups = np.asarray([data.extra[group_key][i] for i in have])
    suffix = "per_" + group_key.replace("_id", "") if group_key else "per_group"
    result.update(metrics.regression_metrics(preds, gold, groups=groups, group_suffix=suffix))
    return result


def write_predictions(path: str, examples: batching.Examples, outputs: list, task: str,
                      frame_rate_hz: float, class_names=None) -> None:
    """Writes `predictions_<split>.csv` atomically (a temp file renamed into place).

    Frame level: one row per frame `recording,frameTime,arousal,valence,arousal_gold,valence_gold`.
    Utterance level: one row per example `name,arousal,valence,arousal_gold,valence_gold`, or
    `name,category,category_gold,p_<class>...` for the category task.
    """
    data = examples.data
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        if task == "category":
            w.writerow(["name", "category", "category_gold"] + [f"p_{c}" for c in class_names])
            for i, out in enumerate(outputs):
                if out is None:
                    continue
                p = np.exp(out - out.max())
                p /= p.sum()
                w.writerow([data.names[i], class_names[int(np.argmax(out))],
                            class_names[data.categories[i]]] + [f"{v:.6f}" for v in p])
        elif examples.level == "frame":
            w.writerow(["recording", "frameTime", "arousal", "valence", "arousal_gold", "valence_gold"])
            for i, out in enumerate(outputs):
                if out is None:
                    continue
                pred = out
                gold = data.regression[i]
                for t in range(len(pred)):
                    w.writerow([data.names[i], f"{t / frame_rate_hz:.2f}", f"{pred[t, 0]:.6f}",
                                f"{pred[t, 1]:.6f}", f"{gold[t, 0]:.6f}", f"{gold[t, 1]:.6f}"])
        else:
            w.writerow(["name", "arousal", "valence", "arousal_gold", "valence_gold"])
            for i, out in enumerate(outputs):
                if out is None:
                    continue
                gold = data.regression[i]
                w.writerow([data.names[i], f"{out[0]:.6f}", f"{out[1]:.6f}",
                            f"{gold[0]:.6f}", f"{gold[1]:.6f}"])
    os.replace(tmp, path)
