"""What `--mode=eval` writes besides metrics: the prediction CSV and the PNG plots.

OMG-Emotion predictions follow the official CSV's row order (so the organisers' scorer pairs
rows correctly); every other dataset uses `evaluators.write_predictions`. Plots: predictions vs
gold (or a scatter for utterances), the confusion matrix (category task) and a PCA map of the
shared embedding space for every modality the model has, coloured by label.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from emobed_jax.evaluation import evaluators, plots

log = logging.getLogger(__name__)


def _omg_official_csv(config, split: str):
    from emobed_jax.datasets import omg_emotion

    manual_dir = config.data.manual_dir
    name = omg_emotion.SPLIT_FILES.get(split)
    if not manual_dir or not name or not os.path.exists(os.path.join(manual_dir, name)):
        return None
    return os.path.join(manual_dir, name)


def export_predictions(exp, split: str, preds: list, path: str) -> None:
    """Writes `predictions_<split>.csv` for `preds` (label-time predictions per example).

    OMG-Emotion: columns `video,utterance,arousal,valence,category,has_media` in the official
    order; utterances without the target modality (or without media) get the training mean
    and `has_media=0`. Needs `config.data.manual_dir` to locate the official CSV; without it the
    generic per-example CSV is written and a warning says so.
    """
    config, examples = exp.config, exp.splits[split]
    official = _omg_official_csv(config, split) if exp.info.name == "omg_emotion" else None
    if exp.info.name == "omg_emotion" and official is None:
        log.warning("official OMG CSV for split %r not found (set config.data.manual_dir); "
                    "writing the generic prediction CSV instead", split)
    if official is None:
        evaluators.write_predictions(path, examples, preds, config.task, config.data.frame_rate_hz,
                                     exp.info.class_names)
        return
    from emobed_jax.datasets import omg_export

    mean = exp.info.metadata.get("train_mean") or {}
    train_mean = (float(mean.get("arousal", 0.0)), float(mean.get("valence", 0.0)))
    out = {}
    for name, p in zip(examples.data.names, preds):
        if p is None:
            continue
        if config.task == "category":
            out[name] = (*train_mean, int(np.argmax(p)))
        else:
            out[name] = (float(p[0]), float(p[1]), None)
    counts = omg_export.write_predictions_csv(path, official, out, train_mean)
    log.info("%s: %s", path, counts)


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
                                            recs, frame_rate_hz=config.data.frame_rate_hz))
    else:
        paths.append(plots.plot_utterance_scatter(
            os.path.join(workdir, f"plot_predictions_{split}.png"),
            np.stack([preds[i] for i in have]), np.stack([data.regression[i] for i in have])))
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
            "category" if category else "arousal",
            class_names=list(exp.info.class_names) if category else None))
    return paths
