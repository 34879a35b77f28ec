"""Training regimes where auxiliary modalities should matter: few labels, few paired recordings.

* `config.data.label_fraction`: only this fraction of the training recordings (utterances at
  utterance level) keep their labels. The others keep their media: their frames feed the terms
  that need no label (crossmodal alignment with `loss.positives='instance'`, distillation), and
  every task loss skips them.
* `config.data.aux_fraction`: only this fraction of the training recordings keep their auxiliary
  modalities; the others lose them (frame level: every frame masked; utterance level: no frame),
  exactly as a recording whose sensor was not worn.

Which recordings are chosen depends on `config.data.subset_seed` only (not on the training seed
or the method), so methods and seeds compared in one study see the same regime. Validation and
test splits are never changed. At least one training recording keeps its labels.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# Separate streams for the two choices, so changing one fraction leaves the other's subset alone.
_LABELS, _AUXILIARY = 1, 2


def chosen(num: int, fraction: float, seed: int, stream: int) -> np.ndarray:
    """bool [num]: which of `num` recordings are kept (`round(fraction * num)` of them, >= 1)."""
    keep = np.zeros(num, bool)
    count = max(1, int(round(fraction * num))) if num else 0
    keep[np.random.default_rng((seed, stream)).permutation(num)[:count]] = True
    return keep


def drop_auxiliary(data, target: str, fraction: float, seed: int, level: str) -> int:
    """Removes the auxiliary modalities of the recordings not chosen, in place.

    Args:
      data: the training `loading.SplitData` (before normalisation statistics are computed, so
        they see only the frames training sees).
      target: the target modality (never removed).
      fraction: the fraction of recordings that keep their auxiliaries.
      seed: `config.data.subset_seed`.
      level: 'frame' (frames kept, all masked) or 'utterance' (no frame left).

    Returns:
      The number of recordings that lost their auxiliary modalities.
    """
    if fraction >= 1.0:
        return 0
    keep = chosen(len(data), fraction, seed, _AUXILIARY)
    for i in np.flatnonzero(~keep):
        for m in data.features:
            if m == target:
                continue
            x = data.features[m][i]
            if level == "frame":
                data.features[m][i] = np.zeros_like(x)
                data.valid[m][i] = np.zeros(len(x), bool)
            else:
                data.features[m][i] = x[:0]
                data.valid[m][i] = data.valid[m][i][:0]
    log.info("data.aux_fraction=%g: %d of %d training recordings keep their auxiliary "
             "modalities", fraction, int(keep.sum()), len(data))
    return int((~keep).sum())


def unlabel(examples, fraction: float, seed: int) -> int:
    """Marks the training examples not chosen as unlabelled, in place: their targets are invalid
    (every task loss skips them) and `examples.labelled` is False for them.

    Returns:
      The number of examples left without labels.
    """
    if fraction >= 1.0:
        return 0
    keep = chosen(len(examples.data), fraction, seed, _LABELS)
    examples.labelled = [bool(k) for k in keep]
    for i in np.flatnonzero(~keep):
        valid = examples.target_valid[i]
        examples.target_valid[i] = np.zeros_like(valid) if np.ndim(valid) else False
    log.info("data.label_fraction=%g: %d of %d training recordings keep their labels",
             fraction, int(keep.sum()), len(examples.data))
    return int((~keep).sum())
