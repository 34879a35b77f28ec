"""What a run directory holds besides checkpoints, so that it stands alone.

`run.json` (written once, at the start of training, atomically) records everything needed to
evaluate, predict and export without the config file or the training corpus:
  * the resolved config;
  * the dataset description the model depends on: name, level, modalities, feature dimensions,
    label names, class names, label frame rate, label delays, the per-group key;
  * how each modality's features are made from raw media (`feature_settings`, declared by the
    dataset's builder: e.g. log-mel settings for audio);
  * the package and JAX versions that wrote it.
`normalization.npz` holds the training split's per-modality feature mean and standard deviation.

`check_overrides` decides which settings may differ when a stored run is evaluated: anything that
changes the model, the data or the target may not (`EVAL_ONLY` keys and data locations may).
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

import emobed_jax
from emobed_jax import atomic

RUN_FILE = "run.json"
STATS_FILE = "normalization.npz"
FORMAT = 1
# Keys a stored run may be evaluated with differently: they change neither the model, nor the
# data it sees, nor the target. Data locations (where the same dataset lives) may move too.
EVAL_ONLY = ("eval_splits", "eval_batch_size", "parallelism", "postprocess", "best_metric",
             "data.data_dir", "data.manual_dir", "data.prefetch_threads", "data.rebuild")
# Keys that do not describe the trained model (training schedule, logging): they are not compared.
NOT_COMPARED = ("num_train_steps", "eval_every_steps", "checkpoint_every_steps",
                "checkpoint_every_minutes", "log_every_steps", "skip_nonfinite_updates", "seed",
                "num_seeds", "batch_size", "optimizer")


class RunDirError(ValueError):
    """A workdir that holds no usable run description."""


def dataset_record(info, delays, config) -> dict:
    """The JSON-able description of the dataset a run was trained on."""
    return {
        "name": info.name, "level": info.level, "modalities": list(info.modalities),
        "feature_dims": dict(info.feature_dims), "label_names": list(info.label_names),
        "class_names": None if info.class_names is None else list(info.class_names),
        "frame_rate_hz": float(config.data.frame_rate_hz),
        "label_delay_frames": [int(d) for d in np.asarray(delays)],
        "label_delay_s": {k: float(v) for k, v in dict(config.data.label_delay_s).items()},
        "group_key": info.conventions.group_key,
    }


def write(workdir: str, config, data) -> None:
    """Writes `run.json` and `normalization.npz` for a run trained on `data` (`pipeline.Data`)."""
    record = {
        "format": FORMAT, "emobed_jax_version": emobed_jax.__version__,
        "jax_version": jax.__version__, "config": config.to_dict(),
        "dataset": dataset_record(data.info, data.delays, config),
        "feature_settings": data.info.feature_settings,
        "normalized": data.stats is not None,
    }
    atomic.write_json(os.path.join(workdir, RUN_FILE), record)
    if data.stats is not None:
        arrays = {f"{m}/{k}": v for m, (mean, std) in data.stats.items()
                  for k, v in (("mean", mean), ("std", std))}
        with atomic.atomic_write(os.path.join(workdir, STATS_FILE), "wb") as f:
            np.savez(f, **arrays)


def read(workdir: str) -> dict:
    """The stored run: `run.json`'s fields, `config` as a ConfigDict and `stats` (or None).

    Raises:
      RunDirError: naming the file and what is wrong (missing, unreadable, another format).
    """
    path = os.path.join(workdir, RUN_FILE)
    if not os.path.exists(path):
        raise RunDirError(f"{path} does not exist: {workdir!r} is not a training workdir of this "
                          f"version (train with experiments/main.py --mode=train; workdirs of "
                          f"emobed-jax 0.1 have no {RUN_FILE} and cannot be used)")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path} is not readable JSON ({e})") from e
    if record.get("format") != FORMAT:
        raise RunDirError(f"{path}: format {record.get('format')!r}, expected {FORMAT} "
                          f"(written by emobed-jax {record.get('emobed_jax_version')})")
    if record["config"].get("task") == "arousal_valence":  # the name of 'regression' until 0.2
        record["config"]["task"] = "regression"
    record["config"] = ml_collections.ConfigDict(record["config"])
    record["stats"] = None
    if record.get("normalized"):
        stats_path = os.path.join(workdir, STATS_FILE)
        try:
            with np.load(stats_path) as z:
                record["stats"] = {m: (z[f"{m}/mean"], z[f"{m}/std"])
                                   for m in record["dataset"]["modalities"]}
        except (OSError, KeyError, ValueError) as e:
            raise RunDirError(f"{stats_path}: the run's normalisation statistics are missing or "
                              f"damaged ({e})") from e
    return record


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "label_delay_s":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def check_overrides(stored, passed) -> ml_collections.ConfigDict:
    """The config to evaluate a stored run with: the stored one, with `passed`'s evaluation-only
    settings.

    Args:
      stored: the run's config (`read(workdir)["config"]`).
      passed: a config given on the command line, or None.

    Returns:
      The config to use.

    Raises:
      ValueError: naming every key where `passed` contradicts the stored run in something that
        changes the model, the data or the target.
    """
    if passed is None:
        return ml_collections.ConfigDict(stored.to_dict())
    from emobed_jax import config as config_lib

    # A key the stored run predates holds its default there (it was trained that way).
    a = {**_flatten(config_lib.get_base_config().to_dict()), **_flatten(stored.to_dict())}
    b = _flatten(passed.to_dict())
    lists = (list, tuple)
    differ = sorted(k for k in set(a) | set(b)
                    if not _under(k, EVAL_ONLY + NOT_COMPARED)
                    and (list(a.get(k)) if isinstance(a.get(k), lists) else a.get(k))
                    != (list(b.get(k)) if isinstance(b.get(k), lists) else b.get(k)))
    if differ:
        details = "; ".join(f"{k}: run {a.get(k)!r} vs passed {b.get(k)!r}" for k in differ[:10])
        raise ValueError(f"the passed config contradicts the stored run in {len(differ)} key(s) "
                         f"that change the model, the data or the target ({details}). Leave "
                         f"--config out to evaluate the run as trained; only "
                         f"{', '.join(EVAL_ONLY)} may differ")
    config = ml_collections.ConfigDict(stored.to_dict())
    for key, value in b.items():
        if _under(key, EVAL_ONLY):
            node = config
            *parents, last = key.split(".")
            for p in parents:
                node = node[p]
            node[last] = value
    return config
