"""Reading new media for a trained recogniser: audio files and feature files of the target modality.

`read_input(path, recognizer)` turns one file into what `Recognizer.predict_features` takes, on
the model's time line:
  * audio (`.wav`, `.flac`, `.ogg`, `.aiff`): any rate and channel count; loaded with
    `features.audio.load_audio` at the run's log-mel rate (mono, resampled, as the datasets load
    their wavs) and turned into log-mel frames by the run's stored settings;
  * ARFF (`features.arff`): numeric attributes are the features; `frameTime`, when present,
    places each row in time;
  * CSV with a time column (`features.timeseries.read_timed_csv`: first column, or the second
    after a `name` column, named `frameTime`, `time`, `timestamp`, ... in seconds; `,` or `;`
    separated): the other columns are features, rows with a non-finite value are masked;
  * OpenFace 2.x CSV (`features.openface`, recognised by its `timestamp` and `success` columns):
    the run's OpenFace column groups; frames without a face are masked;
  * NumPy `.npy` `[n, D]` arrays, for runs trained on `.npy` features of a declared rate (row i
    at i / rate s).

Frame-level models predict one value per label frame. Where the run's features were brought onto
the label grid when the dataset was prepared (feature settings `align='label_grid'`, a corpus read
by `emotion_folder`), a timed file is brought onto it by the same rule (`features.align.
to_label_grid`: frames pooled per label period, gaps filled from the nearest frame within the
run's tolerance), so a 30 fps or 50 Hz file is read as in training. Otherwise timed features must
come at the label rate: rows are placed on the grid by nearest frame time (`align_to_grid`), and
a file at another rate is refused (the model never saw features at that rate). Utterance-level models take
the rows as they are. Every problem raises `MediaError` naming the file and what was expected.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from emobed_jax.features import align as align_lib
from emobed_jax.features import arff as arff_lib
from emobed_jax.features import audio as audio_lib
from emobed_jax.features import openface
from emobed_jax.features import timeseries

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")
FEATURE_EXTENSIONS = (".arff", ".csv", ".npy")
# Relative difference in frame period tolerated before a feature file counts as another rate.
RATE_TOLERANCE = 0.01


class MediaError(ValueError):
    """An input file the recogniser cannot use (the message names it and says why)."""


@dataclasses.dataclass
class Track:
    """One input's features on the model's time line.

    Attributes:
      features: `[T, D]` unnormalised target-modality features.
      valid: `[T]` bool, False where the modality is absent (no face).
      times: `[T]` seconds of each frame on the label time line (frame level), else None.
      kind: 'audio', 'arff', 'csv' or 'openface'.
    """

    features: np.ndarray
    valid: np.ndarray
    times: np.ndarray | None
    kind: str


def is_supported(path: str) -> bool:
    """Whether `path`'s extension is one `read_input` reads."""
    return os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS + FEATURE_EXTENSIONS


def read_input(path: str, recognizer) -> Track:
    """Reads one input file for `recognizer` (a `Recognizer`); see the module docstring.

    Raises:
      MediaError: missing, empty, corrupt, too short, of another width or rate than the model's.
    """
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise MediaError(f"{path}: no such file")
    try:
        if ext in AUDIO_EXTENSIONS:
            return _read_audio(path, recognizer)
        if ext == ".arff":
            data = arff_lib.read_arff(path)
            return _timed(path, data.values, data.frame_times, None, "arff", recognizer)
        if ext == ".csv":
            return _read_csv(path, recognizer)
        if ext == ".npy":
            return _read_npy(path, recognizer)
    except (audio_lib.AudioError, arff_lib.ArffError, openface.OpenFaceError,
            timeseries.TimeseriesError) as e:
        raise MediaError(str(e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise MediaError(f"{path}: cannot be read ({e})") from None
    raise MediaError(f"{path}: unsupported file type {ext or '(none)'!r}; expected audio "
                     f"({', '.join(AUDIO_EXTENSIONS)}) or a feature file (.arff, .csv, .npy)")


def min_audio_seconds(settings: dict) -> float:
    """The shortest recording accepted: one label frame (it also covers one STFT window)."""
    return max(settings["win_length"] / settings["sample_rate"], settings["frame_hop_s"])


def _read_audio(path: str, recognizer) -> Track:
    settings = recognizer.feature_settings
    if settings.get("kind") != "log_mel":
        raise MediaError(f"{path}: this run's {recognizer.target!r} features are "
                         f"{settings.get('kind', 'not declared')!r}, not log-mel of a waveform: "
                         f"pass a feature file (.arff or .csv) of {recognizer.input_dim} features")
    rate = int(settings["sample_rate"])
    wav = audio_lib.load_audio(path, target_sample_rate=rate)
    shortest = min_audio_seconds(settings)
    if len(wav) < round(shortest * rate):
        raise MediaError(f"{path}: {len(wav) / rate * 1000:.1f} ms of audio, shorter than one "
                         f"{shortest * 1000:.0f} ms label frame; expected a longer recording")
    features = recognizer.features_from_waveform(wav, rate)
    times = np.arange(len(features)) / recognizer.frame_rate_hz
    return Track(features, np.ones(len(features), bool), times, "audio")


def _read_csv(path: str, recognizer) -> Track:
    header = timeseries.csv_header(path)
    if timeseries.is_openface_header(header):
        groups = recognizer.feature_settings.get("groups") or openface.DEFAULT_GROUPS
        frames = openface.read_openface_csv(path, groups)
        return _timed(path, frames.features, frames.timestamps, frames.mask, "openface", recognizer)
    frames = timeseries.read_timed_csv(path)
    return _timed(path, frames.values, frames.times, frames.valid, "csv", recognizer)


def _read_npy(path: str, recognizer) -> Track:
    rate = recognizer.feature_settings.get("rate_hz")
    if recognizer.feature_settings.get("kind") != "npy" or not rate:
        raise MediaError(f"{path}: a .npy array has no times; this run's {recognizer.target!r} "
                         f"features were not .npy arrays of a declared rate; expected a .csv with "
                         f"a time column or an .arff")
    frames = timeseries.read_npy(path, float(rate))
    return _timed(path, frames.values, frames.times, frames.valid, "npy", recognizer)


def _timed(path, values, times, valid, kind, recognizer) -> Track:
    """Checks width and length, then places frame-level rows on the label grid."""
    values = np.asarray(values, np.float32)
    if values.ndim != 2 or values.shape[1] != recognizer.input_dim:
        width = values.shape[1] if values.ndim == 2 else values.shape
        raise MediaError(f"{path}: {width} feature columns, expected {recognizer.input_dim} "
                         f"(the {recognizer.target!r} features this model was trained on)")
    if len(values) == 0:
        raise MediaError(f"{path}: no feature rows, expected at least one frame")
    valid = np.ones(len(values), bool) if valid is None else np.asarray(valid, bool)
    if recognizer.level != "frame":
        return Track(values, valid, None, kind)
    if times is None:  # AVEC-style ARFF without frameTime: rows are consecutive label frames
        return Track(values, valid, np.arange(len(values)) / recognizer.frame_rate_hz, kind)
    settings = recognizer.feature_settings
    if settings.get("align") == "label_grid":
        return _pooled(path, values, np.asarray(times, np.float64), valid, kind,
                       recognizer.frame_rate_hz, float(settings["tolerance_s"]))
    index, grid = align_to_grid(np.asarray(times, np.float64), recognizer.frame_rate_hz, path)
    return Track(values[index], valid[index], grid, kind)


def _pooled(path, values, times, valid, kind, frame_rate_hz: float, tolerance_s: float) -> Track:
    """The training rule for a run whose dataset pooled its streams onto the label grid: the
    grid runs from 0 s (or from the file's first frame when it starts later than the tolerance)
    to the frame nearest the file's end."""
    hop = 1.0 / frame_rate_hz
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise MediaError(f"{path}: frame times must be finite and strictly increasing (seconds)")
    first = 0 if times[0] <= tolerance_s else int(round(times[0] / hop))
    grid = np.arange(first, max(int(round(times[-1] / hop)), first) + 1) * hop
    try:
        pooled, ok, _ = align_lib.to_label_grid(values, times, valid, grid, tolerance_s, path=path,
                                                labels_path="the label grid", period_s=hop)
    except align_lib.AlignError as e:
        raise MediaError(str(e)) from None
    return Track(pooled, ok, grid, kind)


def align_to_grid(times: np.ndarray, frame_rate_hz: float, path: str = "features"):
    """Places frames at `times` (seconds) on the label grid `k / frame_rate_hz`.

    The grid runs from the frame nearest the first time to the one nearest the last; each grid
    point takes the frame nearest in time (ties: the earlier), so a small offset or jitter is
    absorbed and a gap repeats its neighbours.

    Returns:
      (index [K] of the frame each grid point takes, grid times [K] in seconds).

    Raises:
      MediaError: non-finite or non-increasing times, or frames at another rate.
    """
    hop = 1.0 / frame_rate_hz
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise MediaError(f"{path}: frame times must be finite and strictly increasing (seconds)")
    if len(times) > 1:
        period = float(np.median(np.diff(times)))
        if abs(period - hop) > RATE_TOLERANCE * hop:
            raise MediaError(f"{path}: frames every {period * 1000:.2f} ms ({1 / period:.3g} Hz); "
                             f"this frame-level model predicts on a {hop * 1000:.0f} ms grid "
                             f"({frame_rate_hz:g} Hz) and was trained on features at that rate: "
                             f"resample the features to {frame_rate_hz:g} Hz first")
    first, last = int(round(times[0] / hop)), int(round(times[-1] / hop))
    grid = np.arange(first, last + 1) * hop
    pos = np.clip(np.searchsorted(times, grid), 1, max(len(times) - 1, 1))
    left = np.maximum(pos - 1, 0)
    right = np.minimum(pos, len(times) - 1)
    index = np.where(np.abs(times[right] - grid) < np.abs(grid - times[left]), right, left)
    return index, grid
