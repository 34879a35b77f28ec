"""Everything a run needs, built once from a config: data, model, objective, devices.

Used by training (`train.py`) and checkpoint evaluation alike, so both see the same
normalisation statistics, label delays and model definition.
"""
from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np

from emobed_jax.data import batching, loading

from emobed_jax import config as config_lib

from emobed_jax.losses import objective as objective_lib

from emobed_jax.training import parallel
from emobed_jax.models import emobed


@dataclasses.dataclass
class Experiment:
    """A configured experiment.

    Attributes:
      config: the validated config.
      info: dataset description.
      splits: split name -> `batching.Examples` (normalised with training statistics).
      model: the Flax model.
      objective: the static loss settings.
      par: the `parallel.Parallel` placement helper.
      delays: label delays in frames.
    """

    config: object
    info: loading.DatasetInfo
    splits: dict
    model: emobed.EmoBedModel
    objective: objective_lib.Objective
    par: parallel.Parallel
    delays: np.ndarray

    @property
    def eval_split_names(self):
        return [s for s in self.config.eval_splits if s in self.splits]

    @property
    def best_metric(self) -> str:
        if self.config.best_metric != "auto":
            return self.config.best_metric
        return "uar" if self.config.task == "category" else "ccc_mean"


def num_outputs(config, info: loading.DatasetInfo) -> int:
    """Head outputs: arousal and valence, or one logit per category."""
    return 2 if config.task != "category" else len(info.class_names)


def build(config, devices=None, need_train: bool = True) -> Experiment:
    """Validates the config, prepares the dataset and builds the model.

    Args:
      config: experiment config.
      devices: devices for the mesh (default: all).
      need_train: the training split must exist (evaluation needs it too, for statistics).

    Returns:
      An `Experiment`.
    """
    mesh = parallel.make_mesh(devices)
    config_lib.validate_config(config, num_devices=mesh.devices.size)
    builder = loading.get_builder(config)
    info = loading.dataset_info(builder, config)
    if "train" not in info.splits:
        raise ValueError(f"dataset {info.name!r} has no 'train' split (splits: {list(info.splits)})")
    delays = loading.delay_frames(config)
    raw = {s: loading.read_split(builder, s, info.modalities, config.data.nonfinite)
           for s in info.splits}
    for name, split in raw.items():
        if not len(split):
            raise ValueError(f"dataset {info.name!r} split {name!r} has no example")
    if config.data.normalize:
        stats = loading.feature_statistics(raw["train"])
        for split in raw.values():
            loading.normalize(split, stats)
    splits = {s: batching.prepare_examples(d, info.level, config.task, info.modalities, delays)
              for s, d in raw.items()}
    train = splits["train"]
    class_counts = None
    if config.task == "category":
        class_counts = np.bincount(np.asarray(train.data.categories), minlength=len(info.class_names))
    train_targets = None
    if config.task != "category":
        if info.level == "frame":
            train_targets = np.concatenate([t[v] for t, v in zip(train.targets, train.target_valid)])
        else:
            train_targets = np.stack(train.targets)
    level = info.level
    model = emobed.model_from_config(config, level, num_outputs(config, info))
    obj = objective_lib.objective_from_config(config, level, class_counts, train_targets)
    logging.info("dataset %s: level=%s modalities=%s dims=%s splits=%s", info.name, level,
                 info.modalities, info.feature_dims, {s: len(d.data) for s, d in splits.items()})
    return Experiment(config=config, info=info, splits=splits, model=model, objective=obj,
                      par=parallel.Parallel(config.parallelism, mesh), delays=delays)


def train_stream(exp: Experiment, start_step: int = 0, seed: int | None = None):
    """The training batches from `start_step` on (this process's rows), as a grain iterator.

    Args:
      exp: the experiment.
      start_step: the first step to produce (resuming).
      seed: the data-order seed (default `config.seed`; replicas of a multi-seed run pass theirs).

    Returns:
      (iterator of batch dicts, number of training units).
    """
    import grain

    config = exp.config
    train = exp.splits["train"]
    keep = batching.keep_examples(train, config.target_modality, config.data.missing_auxiliary)
    specs = batching.window_specs(train, keep, config.data.window_frames,
                                  config.data.window_hop_frames)
    lengths = batching.train_lengths(train, config.data.window_frames, config.data.max_frames)
    seed = config.seed if seed is None else seed
    ds = batching.train_dataset(train, specs, config.batch_size, seed, config.task,
                                lengths, parallel.local_rows(config.batch_size))
    ds = ds[start_step:]
    options = grain.ReadOptions(num_threads=config.data.prefetch_threads,
                                prefetch_buffer_size=2 * config.data.prefetch_threads)
    return iter(ds.to_iter_dataset(options)), len(specs)


def example_batch(exp: Experiment) -> dict:
    """One training-shaped batch (for parameter initialisation)."""
    it, _ = train_stream(exp, 0)
    return next(it)


def init_rngs(seed: int):
    """(parameter-init key, training key) from the config seed."""
    init_rng, train_rng = jax.random.split(jax.random.key(seed))
    return init_rng, train_rng
