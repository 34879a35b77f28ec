"""What `--mode=eval` writes besides metrics: the prediction CSV and the PNG plots.

Predictions go in the dataset's official format where its `Conventions` declare a writer (and it
can write), else in the generic CSV (`evaluators.write_predictions`). Plots: predictions vs gold
(or a scatter for utterances), the confusion matrix (category task) and a PCA map of the shared
embedding space for every modality the model has, coloured by label.
"""
from __future__ import annotations

import os

import numpy as np

from emobed_jax.evaluation import evaluators, plots


def export_predictions(exp, split: str, preds: list, path: str) -> None:
    """Writes `predictions_<split>.csv` for `preds` (label-time predictions per example).

    Args:
      exp: the experiment (config, dataset info and splits).
      split: the split name.
      preds: per example, label-time predictions, or None.
      path: the CSV to write.
    """
    config, examples = exp.config, exp.splits[split]
    writer = exp.info.conventions.write_predictions
    if writer is not None and writer(path, split, examples, preds, config, exp.info):
        return
    evaluators.write_predictions(path, examples, preds, config.task, config.data.frame_rate_hz,
                                 exp.info.class_names, exp.info.label_names)
def write_plots(exp, split: str, result: dict, preds: list, embeddings_by_modality: dict,
                workdir: str) -> list:
    """Writes the split's PNGs into `workdir`; returns their paths."""
    config, examples = exp.config, exp.splits[split]
    data = examples.data
    have = [i for i, p in enumerate(preds) if p is not None]
    paths = []
    if config.task == "category":
        paths.append(plots.plot_confusion_matrix(
            os.path.join(workdir, f"plot_confusion_{split}.png"),
            np.asarray(result["confusion_matrix"]), list(exp.info.class_names)))
    elif examples.level == "frame":
        recs = [(data.names[i], preds[i], data.regression[i][: len(preds[i])]) for i in have[:3]]
        paths.append(plots.plot_predictions(os.path.join(workdir, f"plot_predictions_{split}.png"),
                                            recs, exp.info.label_names,
                                            frame_rate_hz=config.data.frame_rate_hz))
    else:
        paths.append(plots.plot_utterance_scatter(
            os.path.join(workdir, f"plot_predictions_{split}.png"),
            np.stack([preds[i] for i in have]), np.stack([data.regression[i] for i in have]),
            exp.info.label_names))
    emb, labels = {}, {}
    for m, per_example in embeddings_by_modality.items():
        rows = [i for i, e in enumerate(per_example) if e is not None and len(e)]
        if not rows:
            continue
        if examples.level == "frame":
            # Embeddings live on the model's time line, like the delay-shifted targets.
            emb[m] = np.concatenate([per_example[i] for i in rows])
            labels[m] = np.concatenate([examples.targets[i][: len(per_example[i]), 0] for i in rows])
        else:
            emb[m] = np.stack([per_example[i] for i in rows])
            labels[m] = (np.asarray([data.categories[i] for i in rows]) if config.task == "category"
                         else np.asarray([data.regression[i][0] for i in rows], np.float64))
    if emb:
        category = config.task == "category"
        paths.append(plots.plot_embedding_map(
            os.path.join(workdir, f"plot_embeddings_{split}.png"), emb, labels,
            "category" if category else exp.info.label_names[0],
            class_names=list(exp.info.class_names) if category else None))
    return paths
