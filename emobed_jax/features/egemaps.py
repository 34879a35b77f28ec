"""eGeMAPSv02 low-level descriptors through openSMILE (`opensmile` on PyPI), for the datasets
whose wavs are turned into eGeMAPS frames (RECOLA's and emotion_folder's `egemaps` configs).

openSMILE computes 25 descriptors every 10 ms; `lld_frames` returns them with each frame's
centre time, so a caller can pool them onto its label grid (`features.align`).
"""
from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000  # what eGeMAPS is defined at; waveforms are resampled to it


@functools.lru_cache(maxsize=1)
def extractor():
    """The openSMILE eGeMAPSv02 low-level-descriptor extractor (created once per process)."""
    try:
        import opensmile  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError("eGeMAPS features need opensmile: pip install opensmile==2.6.0") from e
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.LowLevelDescriptors)


def feature_dim() -> int:
    """Descriptors per frame (25)."""
    return len(extractor().feature_names)


def lld_frames(waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """eGeMAPS descriptors of a mono waveform at `SAMPLE_RATE`.

    Returns:
      (values [K, 25] float32, centre times [K] in seconds).
    """
    frames = extractor().process_signal(np.asarray(waveform, np.float32), SAMPLE_RATE)
    start, end = (frames.index.get_level_values(k).total_seconds().to_numpy()
                  for k in ("start", "end"))
    return frames.to_numpy().astype(np.float32), (start + end) / 2
