"""From a config to batches: the dataset read, normalised and prepared once, and its streams.

`load(config)` reads every split of the configured dataset into memory, standardises features
with the training split's statistics (after centring each group, e.g. video, on its own mean
with `data.normalize='group'`), delay-shifts frame-level labels and returns a `Data`. The
training stream (`train_stream`) is a pure function of (seed, step); evaluation batches come
from `batching.eval_batches`. Nothing here knows about models or devices.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from emobed_jax.data import batching, delay, loading, regimes

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Data:
    """A dataset prepared for one experiment.

    Attributes:
      info: the dataset description (modalities, dimensions, classes, conventions).
      splits: split name -> `batching.Examples` (normalised with training statistics).
      delays: label delays in frames per regression dimension.
      stats: modality -> (mean, std) of the training features (None without normalisation).
    """

    info: loading.DatasetInfo
    splits: dict
    delays: np.ndarray
    stats: dict | None

    def class_counts(self) -> np.ndarray | None:
        """Training class counts (category datasets; labelled examples), for class-weighted
        losses."""
        train = self.splits["train"]
        if train.data.categories is None or self.info.class_names is None:
            return None
        labelled = [c for c, ok in zip(train.data.categories, train.labelled) if ok]
        return np.bincount(np.asarray(labelled, int), minlength=len(self.info.class_names))

    def train_targets(self) -> np.ndarray:
        """`[N, K]` valid training label values (frames or utterances), for bins."""
        train = self.splits["train"]
        if train.level == "frame":
            return np.concatenate([t[v] for t, v in zip(train.targets, train.target_valid)])
        return np.stack(train.data.regression)


def load(config, stats: dict | None = None) -> Data:
    """Prepares (if needed) and reads the dataset `config.data` names.

    Args:
      config: a validated experiment config.
      stats: normalisation statistics to use instead of the training split's (a stored run's,
        so that it is evaluated exactly as trained).

    Returns:
      The `Data`.
    """
    builder = loading.get_builder(config)
    info = loading.dataset_info(builder, config)
    if "train" not in info.splits:
        raise ValueError(f"dataset {info.name!r} has no 'train' split (splits: {list(info.splits)})")
    delays = delay.delay_frames(config, info.label_names)
    raw = {s: loading.read_split(builder, s, info.modalities, config.data.nonfinite,
                                 info.label_names)
           for s in info.splits}
    for name, split in raw.items():
        if not len(split):
            raise ValueError(f"dataset {info.name!r} split {name!r} has no example")
    # Before the normalisation statistics: they must see only the frames training sees.
    regimes.drop_auxiliary(raw["train"], config.target_modality, config.data.aux_fraction,
                           config.data.subset_seed, info.level)
    mode = loading.normalize_mode(config.data.normalize)
    if mode == "group":
        key = info.conventions.group_key
        if not key:
            raise ValueError(f"config.data.normalize='group': dataset {info.name!r} declares no "
                             f"group key (speaker, video); expected True (global statistics)")
        # Every split centres each of its groups on the group's own mean (an unseen speaker on
        # their resting level); the statistics below are then those of the centred features.
        for split in raw.values():
            loading.center_groups(split, key)
    if mode:
        stats = stats or loading.feature_statistics(raw["train"])
        for split in raw.values():
            loading.normalize(split, stats)
    else:
        stats = None
    splits = {s: batching.prepare_examples(d, info.level, config.task, info.modalities, delays)
              for s, d in raw.items()}
    regimes.unlabel(splits["train"], config.data.label_fraction, config.data.subset_seed)
    log.info("dataset %s: level=%s modalities=%s dims=%s splits=%s", info.name, info.level,
             info.modalities, info.feature_dims, {s: len(d.data) for s, d in splits.items()})
    return Data(info=info, splits=splits, delays=delays, stats=stats)


def train_stream(data: Data, config, start_step: int = 0, seed: int | None = None,
                 row_slice: slice = slice(None)):
    """The training batches from `start_step` on, as a grain iterator.

    Args:
      data: the prepared dataset.
      config: the experiment config (batch size, windows, prefetching, target).
      start_step: the first step to produce (resuming).
      seed: the data-order seed (default `config.seed`; replicas of a multi-seed run pass theirs).
      row_slice: the rows of each global batch this process materialises (several processes).

    Returns:
      (iterator of batch dicts, number of training units).
    """
    import grain

    train = data.splits["train"]
    keep = batching.keep_examples(train, config.target_modality, config.data.missing_auxiliary)
    specs = batching.window_specs(train, keep, config.data.window_frames,
                                  config.data.window_hop_frames)
    lengths = batching.train_lengths(train, config.data.window_frames, config.data.max_frames)
    seed = config.seed if seed is None else seed
    ds = batching.train_dataset(train, specs, config.batch_size, seed, config.task, lengths,
                                row_slice)
    ds = ds[start_step:]
    options = grain.ReadOptions(num_threads=config.data.prefetch_threads,
                                prefetch_buffer_size=2 * config.data.prefetch_threads)
    return iter(ds.to_iter_dataset(options)), len(specs)
