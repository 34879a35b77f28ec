"""Reads a tfds split into memory as per-example arrays, ready for batching.

The TF-free path: `builder.download_and_prepare()` (array_record) then `builder.as_data_source()`.
This module also applies the train-split feature normalisation, the label-delay compensation
and the non-finite-feature policy, so every split gets identical treatment.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import time

import numpy as np
import tensorflow_datasets as tfds

from emobed_jax.data import sources
from emobed_jax.datasets import conventions as conventions_lib

log = logging.getLogger(__name__)
# config.data.nonfinite: what `read_split` does with NaN/Inf feature frames.
NONFINITE = ("mask", "raise")
# config.data.normalize: 'global' (z-normalise with the training split's statistics), 'group'
# (first subtract each group's mean, the group being the dataset's group key, e.g. OMG-Emotion's
# video; then z-normalise with the training split's statistics of the centred features), 'none'
# (raw features). True and False are what runs stored before these names hold.
NORMALIZE = ("global", "group", "none", True, False)


def normalize_mode(value) -> str | None:
    """`config.data.normalize` as 'global', 'group' or None (no normalisation)."""
    if value is True or value == "global":
        return "global"
    if value == "group":
        return "group"
    if value is False or value == "none":
        return None
    raise ValueError(f"config.data.normalize={value!r} is not valid; expected one of "
                     f"{list(NORMALIZE)}")


@dataclasses.dataclass
class SplitData:
    """One split, in memory.

    Attributes:
      names: example ids.
      features: modality -> list of `[T_m, D_m]` float32 arrays (normalised when loaded so).
      valid: modality -> list of `[T_m]` bool arrays (False: frame carries no information).
      regression: list of `[T, K]` (frame level) or `[K]` (utterance level) values of the K
        label dimensions read (`DatasetInfo.label_names`; K may be 0 for a category-only corpus).
      categories: list of int category ids, or None when the dataset has none.
      extra: other scalar fields (`video_id`, `utterance`, `row_index`, `speaker`, `group`),
        name -> list.
      nonfinite_frames: modality -> number of frames masked for NaN/Inf features.
    """

    names: list
    features: dict
    valid: dict
    regression: list
    categories: list | None
    extra: dict
    nonfinite_frames: dict

    def __len__(self) -> int:
        return len(self.names)


@dataclasses.dataclass
class DatasetInfo:
    """What the pipeline and the model need to know about a dataset.

    `label_names` are the regression dimensions used (the dataset's, or the subset named by
    `config.data.label_names`), in the order of the model's outputs.
    """

    name: str
    level: str  # 'frame' or 'utterance'
    modalities: tuple
    feature_dims: dict
    class_names: tuple | None
    splits: tuple
    metadata: dict
    conventions: conventions_lib.Conventions = conventions_lib.Conventions()
    feature_settings: dict = dataclasses.field(default_factory=dict)
    label_names: tuple = ()


def _decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def get_builder(config):
    """Returns the prepared tfds builder named by `config.data` (building it if needed).

    A prepared dataset is reused only while its sources are unchanged (`sources.check`; set
    `data.rebuild` to prepare it again).

    Args:
      config: experiment config; reads `data.name`, `data.config`, `data.data_dir`,
        `data.manual_dir`, `data.rebuild`.

    Returns:
      A `tfds.core.DatasetBuilder` whose files exist.
    """
    import jax
    from jax.experimental import multihost_utils

    name = config.data.name
    from emobed_jax import datasets  # importing it registers the builders

    ours = datasets.BUILDER_NAMES
    if name not in ours:
        # tfds.list_builders() would query the community index over the network: use ours.
        raise ValueError(f"config.data.name={name!r} is not a known dataset; expected one of {sorted(ours)}")
    full_name = f"{name}/{config.data.config}" if config.data.config else name
    # Several processes: process 0 prepares first and the others open the builder afterwards (on
    # a shared data_dir they reuse its files; two writers would race on the final rename).
    first = jax.process_index() == 0
    if not first:
        multihost_utils.sync_global_devices(f"prepare {full_name}")
    try:
        try:
            builder = tfds.builder(full_name, data_dir=config.data.data_dir)
        except (ValueError, tfds.core.registered.DatasetNotFoundError) as e:
            raise ValueError(f"config.data.config={config.data.config!r} for dataset {name!r}: {e}") from e
        manual_dir = config.data.manual_dir
        if manual_dir is not None and not os.path.isdir(manual_dir):
            raise FileNotFoundError(
                f"config.data.manual_dir={manual_dir!r} does not exist; expected the folder holding "
                f"the {name} files (see README)")
        if first and sources.check(builder, manual_dir, bool(config.data.rebuild)):
            builder = tfds.builder(full_name, data_dir=config.data.data_dir)  # deleted: anew
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        _prepare(builder, download_config)
        if first:
            sources.record(builder, manual_dir)
    finally:
        if first and jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"prepare {full_name}")
    _check_left_out(builder, config)
    return builder


def _prepare(builder, download_config) -> None:
    """`download_and_prepare`, saying in one log line what it does instead of tfds's lines about
    downloads (nothing is downloaded: datasets are generated or read from `manual_dir`) and its
    progress bars."""
    if os.path.exists(os.path.join(builder.data_dir, "dataset_info.json")):
        return
    log.info("preparing dataset %s into %s (once; later runs reuse it)",
             builder.info.full_name, builder.data_dir)
    start = time.monotonic()
    tfds.display_progress_bar(False)  # tfds's per-split and shuffling bars: noise here
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(download_config=download_config, file_format="array_record")
    log.info("prepared %s in %.1f s", builder.info.full_name, time.monotonic() - start)


def _check_left_out(builder, config) -> None:
    """Names the files behind a modality the builder left out (RECOLA: an incomplete folder)."""
    left_out = dict((builder.info.metadata or {}).get("left_out") or {})
    missing = [m for m in config.modalities if m not in builder.info.features]
    if missing and left_out:
        reasons = "; ".join(f"{path}: {why}" for path, why in sorted(left_out.items()))
        raise FileNotFoundError(
            f"config.modalities names {missing}, which dataset {builder.name!r} in "
            f"{builder.data_dir} was built without, because its files were incomplete ({reasons}). "
            f"Complete config.data.manual_dir, delete {builder.data_dir} (a prepared dataset is "
            f"reused as is) and run again")


def dataset_info(builder, config) -> DatasetInfo:
    """Describes the dataset from its tfds features and metadata."""
    feats = builder.info.features
    metadata = dict(builder.info.metadata or {})
    modalities = tuple(metadata.get("modalities") or ())
    missing = [m for m in config.modalities if m not in feats]
    if missing:
        raise ValueError(
            f"config.modalities names {missing}, which dataset {builder.name!r} does not have; "
            f"expected a subset of {list(modalities) or sorted(feats.keys())}")
    dims = {m: int(feats[m].shape[-1]) for m in config.modalities}
    class_names = tuple(feats["category"].names) if "category" in feats else None
    conventions = conventions_lib.of_builder(builder)
    label_names = select_labels(conventions.label_names, config, builder.name)
    if config.task == "category":
        if class_names is None:
            raise ValueError(f"config.task='category' but dataset {builder.name!r} has no 'category'")
    elif not label_names:
        raise ValueError(f"config.task={config.task!r} but dataset {builder.name!r} has no label "
                         f"dimension (only categories); expected config.task='category'")
    # Categories are one per example; dimensions are per frame when stored as sequences.
    available = conventions.label_names
    level = ("frame" if config.task != "category" and len(feats[available[0]].shape) == 1
             else "utterance")
    return DatasetInfo(name=builder.name, level=level, modalities=tuple(config.modalities),
                       feature_dims=dims, class_names=class_names,
                       splits=tuple(builder.info.splits.keys()), metadata=metadata,
                       conventions=conventions,
                       feature_settings={m: s for m, s in
                                         conventions_lib.feature_settings(builder).items()
                                         if m in config.modalities},
                       label_names=label_names)


def select_labels(available, config, dataset: str) -> tuple:
    """The label dimensions a run uses: `config.data.label_names` (a subset, in that order), or
    every dimension of the dataset when it is empty."""
    wanted = tuple(config.data.get("label_names") or ())
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ValueError(f"config.data.label_names names {unknown}, which dataset {dataset!r} "
                         f"does not have; expected a subset of {list(available)}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"config.data.label_names={list(wanted)}: expected distinct names")
    return wanted or tuple(available)


def read_split(builder, split: str, modalities, nonfinite: str = "mask",
               label_names=()) -> SplitData:
    """Reads every example of `split` into memory.

    Args:
      builder: a prepared builder.
      split: split name.
      modalities: modalities to read.
      nonfinite: 'mask' (NaN/Inf frames become invalid and zero, counted) or 'raise'.
      label_names: the label dimensions to stack into `regression` (`DatasetInfo.label_names`).

    Returns:
      The split's `SplitData`.
    """
    source = builder.as_data_source(split=split)
    feats = builder.info.features
    has_category = "category" in feats
    extra_keys = [k for k in ("video_id", "utterance", "row_index", "speaker", "group")
                  if k in feats]
    data = SplitData(names=[], features={m: [] for m in modalities}, valid={m: [] for m in modalities},
                     regression=[], categories=[] if has_category else None,
                     extra={k: [] for k in extra_keys}, nonfinite_frames={m: 0 for m in modalities})
    for i in range(len(source)):
        ex = source[i]
        name = _decode(ex["name"])
        data.names.append(name)
        for m in modalities:
            x = np.asarray(ex[m], np.float32)
            valid = np.asarray(ex[m + "_mask"], bool) if (m + "_mask") in ex else np.ones(len(x), bool)
            finite = np.all(np.isfinite(x), axis=-1)
            if not finite.all():
                if nonfinite == "raise":
                    bad = int(np.argmin(finite))
                    raise ValueError(
                        f"dataset {builder.name!r} split {split!r} example {name!r}: modality "
                        f"{m!r} has non-finite values (first at frame {bad}); expected finite "
                        f"features (set config.data.nonfinite='mask' to mask such frames)")
                data.nonfinite_frames[m] += int((~finite).sum())
                x = np.where(finite[:, None], x, 0.0).astype(np.float32)
                valid = valid & finite
            data.features[m].append(x)
            data.valid[m].append(valid)
        values = [np.asarray(ex[k], np.float32) for k in label_names]
        data.regression.append(np.stack(values, -1) if values else np.zeros((0,), np.float32))
        if has_category:
            data.categories.append(int(ex["category"]))
        for k in extra_keys:
            data.extra[k].append(_decode(ex[k]))
    for m, count in data.nonfinite_frames.items():
        if count:
            log.warning("%s/%s: masked %d frames of %r with NaN/Inf features",
                            builder.name, split, count, m)
    return data


def feature_statistics(data: SplitData) -> dict:
    """Per-modality mean and standard deviation over valid frames (float64 accumulation)."""
    stats = {}
    for m, seqs in data.features.items():
        frames = [x[v] for x, v in zip(seqs, data.valid[m]) if len(x)]
        if not frames or not sum(len(f) for f in frames):
            raise ValueError(
                f"modality {m!r} has no valid frame in the training split (every example lacks "
                f"it, or all its frames are masked); expected training data for every modality in "
                f"config.modalities: check the dataset's files for {m!r} or leave it out of "
                f"config.modalities")
        allf = np.concatenate(frames).astype(np.float64)
        std = allf.std(axis=0)
        stats[m] = (allf.mean(axis=0).astype(np.float32),
                    np.where(std > 1e-8, std, 1.0).astype(np.float32))
    return stats


def center_groups(data: SplitData, group_key: str) -> dict:
    """Subtracts, in place, each group's mean over its valid frames from every valid frame of
    the group's examples (per modality); invalid frames stay as they are.

    Each split is centred with its own groups' means, so an unseen speaker (video) is centred on
    their own resting level; a group without a valid frame of a modality is left unchanged.

    Args:
      data: a split read by `read_split`.
      group_key: the example field naming the group (`Conventions.group_key`, e.g. 'video_id').

    Returns:
      modality -> {group: `[D]` mean} (float64 accumulation, stored as float32).

    Raises:
      ValueError: the examples have no field `group_key`.
    """
    if group_key not in data.extra:
        raise ValueError(f"config.data.normalize='group' needs the group field {group_key!r}, "
                         f"which this dataset's examples do not have (fields: "
                         f"{sorted(data.extra)})")
    groups = data.extra[group_key]
    means = {}
    for m, seqs in data.features.items():
        sums, counts = {}, {}
        for g, x, v in zip(groups, seqs, data.valid[m]):
            if len(x) and v.any():
                sums[g] = sums.get(g, 0.0) + x[v].astype(np.float64).sum(axis=0)
                counts[g] = counts.get(g, 0) + int(v.sum())
        means[m] = {g: (sums[g] / counts[g]).astype(np.float32) for g in sums}
        for i, (g, x) in enumerate(zip(groups, seqs)):
            if g in means[m] and len(x):
                seqs[i] = np.where(data.valid[m][i][:, None], x - means[m][g], x).astype(np.float32)
    return means


def normalize(data: SplitData, stats: dict) -> None:
    """Standardises features in place with train statistics; invalid frames become 0."""
    for m, seqs in data.features.items():
        mean, std = stats[m]
        for i, x in enumerate(seqs):
            seqs[i] = np.where(data.valid[m][i][:, None], (x - mean) / std, 0.0).astype(np.float32)
