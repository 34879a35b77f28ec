"""Writes tiny corpora in the ``emotion_folder`` layout, returning what was written for comparison."""
from __future__ import annotations

import json
import os
import types

import numpy as np
import soundfile

LABEL_NAMES = ("arousal", "valence", "dominance")
FRAME_IDS = {"train": ("spk1/a", "spk1/b"), "validation": ("spk2/c",), "test": ("spk2/d",)}


def _csv(path, header, rows, delimiter=","):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(delimiter.join(header) + "\n")
        for row in rows:
            f.write(delimiter.join(repr(float(v)) if not isinstance(v, str) else v for v in row) + "\n")


def _wav(path, seconds, rng, rate=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, (0.1 * rng.normal(size=int(seconds * rate))).astype(np.float32), rate)


def write_frame_corpus(root, duration_s=2.0, physio_start_s=0.0, physio_extra_s=0.0, seed=0):
    """Frame level: labels every 40 ms (0 .. duration_s), ``audio`` wavs, ``face`` a 30 fps timed
    CSV (2 features), ``physio`` a 50 Hz timed CSV (1 feature, starting at ``physio_start_s`` and
    running ``physio_extra_s`` past the labels), splits with a group column."""
    rng = np.random.default_rng(seed)
    root = str(root)
    grid = np.round(np.arange(int(round(duration_s / 0.04)) + 1) * 0.04, 6)
    out = types.SimpleNamespace(root=root, grid=grid, labels={}, physio={}, face={})
    rows = []
    for split, ids in FRAME_IDS.items():
        for rid in ids:
            rows.append([rid, split, rid.split("/")[0]])
            labels = rng.uniform(-1, 1, size=(len(grid), 3)).round(4)
            out.labels[rid] = labels
            _csv(os.path.join(root, "labels", rid + ".csv"), ("time",) + LABEL_NAMES,
                 [[t, *v] for t, v in zip(grid, labels)])
            _wav(os.path.join(root, "audio", rid + ".wav"), duration_s + 0.04, rng)
            face_t = np.round(np.arange(int(duration_s * 30) + 2) / 30, 6)
            out.face[rid] = (face_t, rng.normal(size=(len(face_t), 2)).round(4))
            _csv(os.path.join(root, "face", rid + ".csv"), ("frameTime", "f0", "f1"),
                 [[t, *v] for t, v in zip(*out.face[rid])])
            physio_t = np.round(physio_start_s + np.arange(
                int(round((duration_s + physio_extra_s - physio_start_s) / 0.02)) + 1) * 0.02, 6)
            out.physio[rid] = (physio_t, rng.normal(size=len(physio_t)).round(4))
            _csv(os.path.join(root, "physio", rid + ".csv"), ("time", "p0"),
                 [[t, v] for t, v in zip(*out.physio[rid])], delimiter=";")
    _csv(os.path.join(root, "splits.csv"), ("id", "split", "group"), rows)
    return out


def write_utterance_corpus(root, seed=0, classes=None):
    """Utterance level: labels.csv with arousal, valence and a category; ``audio`` wavs of 0.5 s
    and ``physio`` .npy arrays at 10 Hz (declared in corpus.json)."""
    rng = np.random.default_rng(seed)
    root = str(root)
    ids = {"train": ("u1", "u2", "u3"), "validation": ("u4",)}
    out = types.SimpleNamespace(root=root, labels={}, category={}, physio={})
    split_rows, label_rows = [], []
    for split, names in ids.items():
        for i, rid in enumerate(names):
            split_rows.append([rid, split])
            out.labels[rid] = rng.uniform(-1, 1, size=2).round(4)
            out.category[rid] = ("happy", "sad", "neutral")[i % 3]
            label_rows.append([rid, *out.labels[rid], out.category[rid]])
            _wav(os.path.join(root, "audio", rid + ".wav"), 0.5, rng)
            out.physio[rid] = rng.normal(size=(5 + i, 3)).astype(np.float32)
            os.makedirs(os.path.join(root, "physio"), exist_ok=True)
            np.save(os.path.join(root, "physio", rid + ".npy"), out.physio[rid])
    _csv(os.path.join(root, "splits.csv"), ("id", "split"), split_rows)
    _csv(os.path.join(root, "labels.csv"), ("id", "arousal", "valence", "category"), label_rows)
    settings = {"rates_hz": {"physio": 10.0}}
    if classes:
        settings["classes"] = list(classes)
    with open(os.path.join(root, "corpus.json"), "w") as f:
        json.dump(settings, f)
    return out
