"""Linear baselines on pooled statistics of the prepared features, scored like training.

    python experiments/baselines.py --config=configs/omg_emotion.py:monomodal,video \
        --config.data.manual_dir=DIR [--config.KEY=VALUE ...] [--output=FILE.json]

Reads the splits exactly as training does (`data.pipeline.load`: the same dataset, the same
normalisation, `data.normalize` included), pools every utterance's target-modality frames to
their mean and standard deviation over valid frames, fits on the training split (a standard
scaler, then scikit-learn's `LogisticRegression(class_weight='balanced')` for
`task='category'`, `Ridge` per label dimension otherwise) and scores every other split with the
project's evaluator (`evaluation.evaluators.score`), so the metric names are the ones training
reports (`accuracy`, `uar`, `macro_f1`; `ccc_<dim>`, `ccc_mean`, per-group CCCs). Utterances
without the target modality are left out of fitting and scoring, as in training. Utterance-level
datasets only (pooling a frame-level recording predicts one value for all its frames).

From Python: `pooled_statistics(examples, modality)` and `run_baselines(config)`.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

BASELINES = {"category": "logistic_regression", "regression": "ridge"}


def pooled_statistics(examples, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each utterance's valid frames of `modality`.

    Args:
      examples: a `batching.Examples` split (normalised features, validity per frame).
      modality: the modality to pool.

    Returns:
      (`[N, 2 D]` statistics: means then standard deviations, zeros for an utterance without a
      valid frame; `[N]` bool, True where the utterance has frames of `modality` at all).
    """
    data = examples.data
    rows, has = [], []
    for x, valid in zip(data.features[modality], data.valid[modality]):
        has.append(len(x) > 0)
        frames = np.asarray(x, np.float64)[np.asarray(valid, bool)]
        if len(frames):
            rows.append(np.concatenate([frames.mean(0), frames.std(0)]))
        else:
            rows.append(np.zeros(2 * np.shape(x)[-1]))
    return np.asarray(rows), np.asarray(has, bool)


def _fit(task: str, x: np.ndarray, examples, seed: int, c: float, alpha: float):
    """The fitted model: a scaler then logistic regression (categories) or ridge (dimensions)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "category":
        y = np.asarray(examples.data.categories)
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed)
    else:
        y = np.stack(examples.data.regression)
        model = Ridge(alpha=alpha)
    return make_pipeline(StandardScaler(), model).fit(x, y)


def run_baselines(config, c: float = 1.0, alpha: float = 1.0, splits=None) -> dict:
    """Fits the linear baseline of `config.task` on the training split and scores the others.

    Args:
      config: an experiment config (its data, target modality and task are used; the model and
        method are not).
      c: the logistic regression's inverse regularisation strength.
      alpha: ridge's regularisation strength.
      splits: splits to score (default: every split except train).

    Returns:
      {"baseline": name, "metrics": {split: {metric: value}}}.
    """
    from emobed_jax import config as config_lib
    from emobed_jax.data import pipeline
    from emobed_jax.evaluation import evaluators

    config_lib.validate_config(config)
    data = pipeline.load(config)
    config_lib.validate_against_dataset(config, data.info)
    if data.info.level != "utterance":
        raise ValueError(f"dataset {data.info.name!r} is labelled per frame; the pooled-statistics "
                         f"baselines need utterance-level labels (task='category' or an "
                         f"utterance-level regression dataset)")
    m, task = config.target_modality, config.task
    x, has = pooled_statistics(data.splits["train"], m)
    train = data.splits["train"]
    keep = np.flatnonzero(has)
    sub = _Subset(train, keep)
    model = _fit(task, x[keep], sub, config.seed, c, alpha)
    out = {}
    for split in splits or [s for s in data.splits if s != "train"]:
        examples = data.splits[split]
        xs, present = pooled_statistics(examples, m)
        if task == "category":
            # Log-probabilities over every class: the evaluator takes the argmax of its input.
            proba = np.full((len(xs), len(data.info.class_names)), -np.inf)
            proba[:, model.classes_] = np.log(np.maximum(model.predict_proba(xs), 1e-12))
            preds = list(proba)
        else:
            preds = list(np.asarray(model.predict(xs)).reshape(len(xs), -1))
        outputs = [p if ok else None for p, ok in zip(preds, present)]
        result = evaluators.score(examples, outputs, task, data.info.class_names,
                                  data.info.conventions.group_key, data.info.label_names)
        out[split] = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                      for k, v in result.items()}
    return {"baseline": BASELINES["category" if task == "category" else "regression"],
            "metrics": out}


class _Subset:
    """The training examples at `indices` (those with the target modality), for fitting."""

    def __init__(self, examples, indices):
        d = examples.data
        self.data = type("SubsetData", (), {
            "categories": None if d.categories is None else [d.categories[i] for i in indices],
            "regression": [d.regression[i] for i in indices]})()


def main(argv):
    """Command line: prints (and optionally writes) the baseline's metrics per split."""
    from emobed_jax import console

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    console.setup()
    result = run_baselines(_CONFIG.value, c=_C.value, alpha=_ALPHA.value)
    for split, metrics in result["metrics"].items():
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        print(f"{result['baseline']} {split}: {shown}")
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
    _C = flags.DEFINE_float("C", 1.0, "Logistic regression: inverse regularisation strength.")
    _ALPHA = flags.DEFINE_float("alpha", 1.0, "Ridge: regularisation strength.")
    _OUTPUT = flags.DEFINE_string("output", None, "Also write the metrics to this JSON file.")
    flags.mark_flags_as_required(["config"])
    app.run(main)
