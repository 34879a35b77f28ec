"""Turns in-memory splits into fixed-shape batches: training windows via grain, eval sequences.

Batch layout (numpy, what the train and eval steps consume):
  features[m] [B, T_m, D_m] float32   frames (invalid and padded frames are 0)
  lengths[m]  [B] int32               frames per example (padding excluded)
  masks[m]    [B, T_m] float32        1 for frames that exist and carry information
  targets     [B, T, K] / [B, K] float32 (the K label dimensions) or [B] int32 (category)
  target_mask [B, T] / [B] float32    1 where the target is scored
  labelled    [B] float32             1 for examples with labels (`data.label_fraction`)
  index       [B] int32               example index in the split (-1 for padding rows)

The training stream is a pure function of (seed, step): batch `s` is element `s` of a grain
`MapDataset`, so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from emobed_jax.data import delay, loading


# config.data.missing_auxiliary: what `keep_examples` does with examples lacking an auxiliary.
MISSING_AUXILIARY = ("mask", "drop")


@dataclasses.dataclass
class Examples:
    """A split prepared for batching (targets already delay-shifted at frame level).

    `labelled[i]` is False for a training example whose labels a regime withheld
    (`data.regimes.unlabel`); its `target_valid` is then all False.
    """

    data: loading.SplitData
    targets: list  # [T, K] / [K] float32, or int
    target_valid: list  # [T] bool, or bool
    level: str
    modalities: tuple
    labelled: list = None

    def __post_init__(self):
        if self.labelled is None:
            self.labelled = [True] * len(self.data)


def prepare_examples(data: loading.SplitData, level: str, task: str, modalities,
                     delays: np.ndarray) -> Examples:
    """Builds targets and their validity for every example of a split."""
    targets, valid = [], []
    for i in range(len(data)):
        if task == "category":
            targets.append(int(data.categories[i]))
            valid.append(True)
        elif level == "frame":
            t, v = delay.shift_labels(data.regression[i], delays)
            targets.append(t)
            valid.append(v)
        else:
            targets.append(data.regression[i])
            valid.append(True)
    return Examples(data=data, targets=targets, target_valid=valid, level=level,
                    modalities=tuple(modalities))


def keep_examples(examples: Examples, target: str, missing_auxiliary: str):
    """Indices of examples usable for training: the target modality must have frames.

    With `missing_auxiliary='drop'`, examples lacking any auxiliary modality are dropped too;
    with 'mask' they stay and the missing modality is masked out of every loss term.
    """
    keep = []
    for i in range(len(examples.data)):
        lens = {m: len(examples.data.features[m][i]) for m in examples.modalities}
        if lens[target] == 0:
            continue
        if missing_auxiliary == "drop" and min(lens.values()) == 0:
            continue
        keep.append(i)
    return keep


def window_specs(examples: Examples, indices, window: int, hop: int) -> np.ndarray:
    """Training units `[N, 2]` of (example index, start frame).

    Frame level: windows of `window` frames every `hop` frames, the last one aligned to the end so
    every frame is seen; utterance level: one unit per example (start 0).
    """
    specs = []
    for i in indices:
        if examples.level != "frame":
            specs.append((i, 0))
            continue
        num = len(examples.targets[i])
        starts = list(range(0, max(num - window, 0) + 1, hop))
        if num > window and starts[-1] != num - window:
            starts.append(num - window)
        specs.extend((i, s) for s in starts)
    if not specs:
        raise ValueError("no usable training example: every example lacks the target modality")
    return np.asarray(specs, np.int64)


def _empty_batch(examples: Examples, size: int, lengths: dict, task: str) -> dict:
    d = examples.data
    frame_len = lengths[examples.modalities[0]]
    batch = {
        "features": {m: np.zeros((size, lengths[m], d.features[m][0].shape[-1]), np.float32)
                     for m in examples.modalities},
        "lengths": {m: np.zeros((size,), np.int32) for m in examples.modalities},
        "masks": {m: np.zeros((size, lengths[m]), np.float32) for m in examples.modalities},
        "index": np.full((size,), -1, np.int32),
        "labelled": np.zeros((size,), np.float32),
    }
    if task == "category":
        batch["targets"] = np.zeros((size,), np.int32)
        batch["target_mask"] = np.zeros((size,), np.float32)
    elif examples.level == "frame":
        num_labels = examples.targets[0].shape[-1]
        batch["targets"] = np.zeros((size, frame_len, num_labels), np.float32)
        batch["target_mask"] = np.zeros((size, frame_len), np.float32)
    else:
        batch["targets"] = np.zeros((size, examples.targets[0].shape[-1]), np.float32)
        batch["target_mask"] = np.zeros((size,), np.float32)
    return batch


def fill_row(batch: dict, row: int, examples: Examples, index: int, start: int, task: str) -> None:
    """Copies example `index` from frame `start` into row `row` of `batch` (cropping to fit)."""
    d = examples.data
    batch["index"][row] = index
    batch["labelled"][row] = float(examples.labelled[index])
    for m in examples.modalities:
        cap = batch["features"][m].shape[1]
        x = d.features[m][index]
        s = start if examples.level == "frame" else min(start, max(len(x) - cap, 0))
        seg = x[s:s + cap]
        n = len(seg)
        batch["features"][m][row, :n] = seg
        batch["lengths"][m][row] = n
        batch["masks"][m][row, :n] = d.valid[m][index][s:s + n]
    if examples.level == "frame" and task != "category":
        cap = batch["targets"].shape[1]
        t = examples.targets[index][start:start + cap]
        batch["targets"][row, :len(t)] = t
        batch["target_mask"][row, :len(t)] = examples.target_valid[index][start:start + cap]
    else:
        batch["targets"][row] = examples.targets[index]
        batch["target_mask"][row] = float(examples.target_valid[index])


def train_lengths(examples: Examples, window: int, max_frames: int) -> dict:
    """Static per-modality frame counts of training batches."""
    if examples.level == "frame":
        return {m: window for m in examples.modalities}
    out = {}
    for m in examples.modalities:
        longest = max((len(x) for x in examples.data.features[m]), default=1)
        out[m] = max(1, min(longest, max_frames) if max_frames > 0 else longest)
    return out


def train_dataset(examples: Examples, specs: np.ndarray, batch_size: int, seed: int, task: str,
                  lengths: dict, row_slice: slice = slice(None)) -> grain.MapDataset:
    """The infinite, seeded training stream: element `s` is the batch of step `s`.

    Args:
      examples: the prepared training split.
      specs: `[N, 2]` training units from `window_specs`.
      batch_size: the global batch size.
      seed: shuffling seed (each epoch is reshuffled deterministically).
      task: 'regression' or 'category'.
      lengths: static frame counts per modality.
      row_slice: the rows of each global batch this process materialises (multi-process).

    Returns:
      A grain `MapDataset` of batches (dicts of numpy arrays).
    """
    ds = grain.MapDataset.range(len(specs)).shuffle(seed=seed).repeat().batch(
        batch_size, drop_remainder=True)

    def materialise(step: int, unit_ids: np.ndarray) -> dict:
        rows = np.asarray(unit_ids)[row_slice]
        batch = _empty_batch(examples, len(rows), lengths, task)
        rng = np.random.default_rng((seed, step))
        for r, unit in enumerate(rows):
            index, start = (int(v) for v in specs[unit])
            if examples.level != "frame":
                # Random crop of long utterances, a pure function of (seed, step, row).
                longest = max(len(examples.data.features[m][index]) - lengths[m]
                              for m in examples.modalities)
                start = int(rng.integers(0, longest + 1)) if longest > 0 else 0
            fill_row(batch, r, examples, index, start, task)
        return batch

    return ds.map_with_index(materialise)


def eval_batches(examples: Examples, batch_size: int, task: str, modalities=None):
    """Yields batches of whole examples, padded to the split's longest, in split order.

    Args:
      examples: a prepared split.
      batch_size: examples per batch; the last batch is padded with rows of index -1.
      task: 'regression' or 'category'.
      modalities: the modalities to include (default: all of `examples`); evaluation passes the
        target modality only.

    Yields:
      Batch dicts.
    """
    sub = dataclasses.replace(examples, modalities=tuple(modalities or examples.modalities))
    lengths = {m: max(1, max((len(x) for x in sub.data.features[m]), default=1))
               for m in sub.modalities}
    if sub.level == "frame":
        longest = max(lengths.values())
        lengths = {m: longest for m in sub.modalities}
    indices = [i for i in range(len(sub.data)) if len(sub.data.features[sub.modalities[0]][i])] \
        if len(sub.modalities) == 1 else list(range(len(sub.data)))
    for begin in range(0, len(indices), batch_size):
        batch = _empty_batch(sub, batch_size, lengths, task)
        for r, index in enumerate(indices[begin:begin + batch_size]):
            fill_row(batch, r, sub, index, 0, task)
        yield batch
