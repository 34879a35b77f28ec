"""Writes a small RECOLA package in the exact AVEC 2016 layout, for tests.

``write_recola_package(root, ...)`` creates (for each recording ``<split>_<i>``)::

    recordings_audio/<rec>.wav                          sine-modulated noise, any rate, mono/stereo
    ratings_gold_standard/{arousal,valence}/<rec>.arff  frameTime 0.00 .. duration in 40 ms steps
    features_<M>/{arousal,valence}/<rec>.arff           one per entry of ``dims``

Feature files differ in how the instance name is written (video: 'single quotes', audio: "double
quotes", others unquoted), carry comments and blank lines, and video features are all zero over
stretches of frames (no face detected). Everything written is returned so tests can compare.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import soundfile

FRAME_HOP_S = 0.04
DEFAULT_DIMS = {"audio": 5, "video_geometric": 6, "video_appearance": 4, "ECG": 3}


@dataclasses.dataclass
class RecolaPackage:
    """What ``write_recola_package`` wrote.

    Attributes:
        root: the package root (the manual dir).
        num_frames: label frames per recording (T).
        recordings: split prefix ('train', 'dev', 'test') -> recording ids.
        labels: (dimension, recording) -> float32 [T] gold standard.
        features: (modality folder key, dimension, recording) -> float32 [rows, D] as written.
        zero_frames: frame indices where every video feature is 0 (same for all video files);
            in frames 20-24 only the first video feature is 0 (a face was found).
    """

    root: str
    num_frames: int
    recordings: dict[str, list[str]]
    labels: dict[tuple[str, str], np.ndarray]
    features: dict[tuple[str, str, str], np.ndarray]
    zero_frames: np.ndarray


def write_arff(path: str, relation: str, names: list[str], rows: list[str]) -> None:
    """Writes an AVEC-style ARFF: Instance_name string, frameTime, then ``names`` numeric."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    header = [f"@relation {relation}", "", "% written by tests/recola_fixtures.py",
              "@attribute Instance_name string", "@attribute frameTime numeric"]
    header += [f"@attribute {n} numeric" for n in names]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(header + ["", "@data", ""] + rows) + "\n")


def _rows(name: str, quote: str, values: np.ndarray) -> list[str]:
    return [f"{quote}{name}{quote},{t * FRAME_HOP_S:.2f}," + ",".join(f"{v:.6f}" for v in row)
            for t, row in enumerate(values)]


def write_recola_package(root: str | os.PathLike, train: int = 2, dev: int = 1, test: int = 0,
                         duration_s: float = 20.0, sample_rate: int = 16000, stereo: bool = False,
                         dims: dict[str, int] | None = None, test_labels: bool = True,
                         write_audio: bool = True,
                         length_delta: dict[tuple[str, str], int] | None = None,
                         seed: int = 0, signal: float = 0.0) -> RecolaPackage:
    """Writes a small AVEC 2016 RECOLA package under ``root``.

    Args:
        root: destination folder (created).
        train, dev, test: number of recordings per split prefix.
        duration_s: recording length; labels run 0.00 .. duration_s inclusive.
        sample_rate, stereo: format of the wavs.
        dims: feature folder key -> dimension; key 'audio' writes features_audio, any other key K
            writes features_K (e.g. 'video_geometric', 'ECG').
        test_labels: write gold standards for the test recordings (their features and wavs are
            always written), like a package with released test labels.
        write_audio: write recordings_audio/.
        length_delta: (folder key, recording) -> frames to add (>0) or drop (<0) in both
            dimensions' feature files of that recording.
        seed: numpy seed.
        signal: > 0 makes the data learnable: feature files get `signal` x a fixed random
            projection of (arousal, valence) added, and the wav's loudness follows arousal.

    Returns:
        A RecolaPackage describing what was written.
    """
    root = os.fspath(root)
    dims = DEFAULT_DIMS if dims is None else dims
    length_delta = length_delta or {}
    rng = np.random.default_rng(seed)
    num_frames = int(round(duration_s / FRAME_HOP_S)) + 1
    recordings = {p: [f"{p}_{i + 1}" for i in range(n)] for p, n in
                  (("train", train), ("dev", dev), ("test", test))}
    zero_frames = np.r_[5:15, num_frames - 3:num_frames]
    labels, features = {}, {}
    projections = {key: rng.normal(size=(2, dim)) for key, dim in dims.items()}
    for prefix, names in recordings.items():
        for rec in names:
            smooth = np.cumsum(rng.normal(0, 0.02, size=(num_frames, 2)), axis=0)
            latent = smooth - smooth.mean(axis=0)
            latent = latent / max(float(np.abs(latent).max()), 1e-6) * 0.5
            for k, dimension in enumerate(("arousal", "valence")):
                value = np.clip(smooth[:, k] - smooth[:, k].mean(), -1, 1).astype(np.float32)
                if prefix != "test" or test_labels:
                    labels[(dimension, rec)] = np.round(value, 6)
                    write_arff(os.path.join(root, "ratings_gold_standard", dimension, rec + ".arff"),
                               "GOLDSTANDARD", ["GoldStandard"], _rows(rec, "", value[:, None]))
            for key, dim in dims.items():
                quote = "'" if key.startswith("video") else '"' if key == "audio" else ""
                rows = num_frames + length_delta.get((key, rec), 0)
                for dimension in ("arousal", "valence"):
                    values = rng.normal(size=(rows, dim)).astype(np.float32)
                    if signal:
                        n = min(rows, num_frames)
                        values[:n] += signal * (latent[:n] @ projections[key]).astype(np.float32)
                    if key.startswith("video"):
                        values[zero_frames[zero_frames < rows]] = 0.0
                        values[np.r_[20:25][: max(rows - 20, 0)], 0] = 0.0  # face found, one value 0
                    values = np.round(values, 6)
                    features[(key, dimension, rec)] = values
                    write_arff(os.path.join(root, f"features_{key}", dimension, rec + ".arff"),
                               f"{key}_{dimension}", [f"{key}_{d}" for d in range(dim)],
                               _rows(rec, quote, values))
            if write_audio:
                n = int(round(duration_s * sample_rate))
                t = np.arange(n) / sample_rate
                envelope = 0.5 + 0.4 * np.sin(2 * np.pi * 0.25 * t)
                if signal:
                    frame_t = np.arange(num_frames) * FRAME_HOP_S
                    envelope = np.exp(2.0 * np.interp(t, frame_t, latent[:, 0]))
                wave = envelope * (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=n))
                data = np.stack([wave, 0.8 * wave], axis=1) if stereo else wave
                os.makedirs(os.path.join(root, "recordings_audio"), exist_ok=True)
                soundfile.write(os.path.join(root, "recordings_audio", rec + ".wav"),
                                data.astype(np.float32), sample_rate, subtype="PCM_16")
    return RecolaPackage(root=root, num_frames=num_frames, recordings=recordings, labels=labels,
                         features=features, zero_frames=zero_frames)
