"""Writes a small OMG-Emotion ``manual_dir`` in the real on-disk format, for tests.

The annotation rows are verbatim copies of rows of the official ``omg_TrainVideos.csv`` (lines 2-9
and 263-267) and ``omg_ValidationVideos.csv`` (lines 259-261 and 435-437); the only edit is an
emptied ``EmotionMaxVote`` on one train row (as some releases have). Media are synthetic: wavs at
16 kHz mono and 44.1 kHz stereo (a tone whose pitch follows the category and loudness the arousal,
so a model can learn something), OpenFace 2.x CSVs with the full 714-column header in both the
", " and "," separators with failed (``success`` = 0) frames, or ``.npy`` arrays; some utterances
have no audio, no video, or nothing at all. ``write_omg_manual_dir`` returns what a correct
builder must produce, computed here independently of the code under test.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

import sys

import numpy as np
import soundfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments"))
from make_omg_corpus import openface_header, write_openface_csv  # noqa: E402

__all__ = ["FixtureRow", "OmgFixture", "write_omg_manual_dir", "write_openface_csv",
           "openface_header", "TRAIN_LINES", "VALIDATION_LINES"]

HEADER = "link,start,end,video,utterance,arousal,valence,EmotionMaxVote"
TRAIN_LINES = [
    "https://www.youtube.com/watch?v=CROcsl0lIec,15.4126838087585,19.6828646042587,5b44393ed,utterance_4.mp4,0.170091267403,-0.0236966881471,4",
    "https://www.youtube.com/watch?v=CROcsl0lIec,21.2508216151065,36.7969485737244,5b44393ed,utterance_6.mp4,0.417668314388,0.292946929716,3",
    "https://www.youtube.com/watch?v=CROcsl0lIec,37.1305564483728,45.3373101647248,5b44393ed,utterance_7.mp4,0.398645656332,0.325004309635,4",
    "https://www.youtube.com/watch?v=CROcsl0lIec,45.3039493772599,68.9901084773001,5b44393ed,utterance_8.mp4,0.702572620318,0.0135435708553,0",
    "https://www.youtube.com/watch?v=CROcsl0lIec,69.5906026516673,75.4287404580153,5b44393ed,utterance_9.mp4,0.343357301512,-0.333560765435,5",
    "https://www.youtube.com/watch?v=CROcsl0lIec,75.6622659702692,89.3735496183206,5b44393ed,utterance_10.mp4,0.603970497823,-0.0853779007609,0",
    "https://www.youtube.com/watch?v=CROcsl0lIec,95.7454600241061,98.9480956207312,5b44393ed,utterance_12.mp4,0.483601016833,0.347528659204,3",
    # EmotionMaxVote emptied (real value: 4).
    "https://www.youtube.com/watch?v=CROcsl0lIec,99.4818682201687,109.223218159904,5b44393ed,utterance_13.mp4,0.436187637377,-0.0248203105739,",
    "https://www.youtube.com/watch?v=-0SfjYsrUjE,0.23330890052356,10.3989109947644,68062fe15_1,utterance_1.mp4,0.399490695724,-0.723014326684,1",
    "https://www.youtube.com/watch?v=-0SfjYsrUjE,10.2655916230367,12.4320314136126,68062fe15_1,utterance_2.mp4,0.0531984899019,-0.747327450602,0",
    "https://www.youtube.com/watch?v=-0SfjYsrUjE,12.5986806282723,14.6984607329843,68062fe15_1,utterance_3.mp4,0,-0.726196054563,3",
    "https://www.youtube.com/watch?v=-0SfjYsrUjE,15.1650785340314,24.930722513089,68062fe15_1,utterance_4.mp4,0.576723839964,-0.720282885882,6",
    "https://www.youtube.com/watch?v=-0SfjYsrUjE,27.7637591623037,31.5633612565445,68062fe15_1,utterance_6.mp4,0.0799877294597,0.0360649031008,4",
]
VALIDATION_LINES = [
    "https://www.youtube.com/watch?v=AULvQ0ruc04,0.0,10.329851752021563,4ae5ecb00_1,utterance_1.mp4,0.612503362976,0.046992647537000005,6",
    "https://www.youtube.com/watch?v=AULvQ0ruc04,9.796698113207547,14.994946091644206,4ae5ecb00_1,utterance_2.mp4,0.627564334969,0.294307792058,3",
    "https://www.youtube.com/watch?v=AULvQ0ruc04,15.394811320754716,19.7266846361186,4ae5ecb00_1,utterance_3.mp4,0.587324229866,0.363587580129,3",
    "https://www.youtube.com/watch?v=f7W-4HEGtHk,4679.18807266,4689.65680138,664ea0ccc_34,utterance_742.mp4,0.507683497463,-0.102355877368,1",
    "https://www.youtube.com/watch?v=f7W-4HEGtHk,4689.1145963,4692.03416208,664ea0ccc_34,utterance_743.mp4,0.391239822104,-0.0101585121309,4",
    "https://www.youtube.com/watch?v=f7W-4HEGtHk,4692.03416208,4702.75313929,664ea0ccc_34,utterance_744.mp4,0.543266835864,-0.251896451488,4",
]

# Media per row: audio kind ('mono16k', 'stereo44k' or None) and video kind: 'comma_space'
# (OpenFace's ", " separator), 'comma' (plain ","), 'all_failed' (", ", every frame success = 0)
# or None.
TRAIN_MEDIA = [
    ("mono16k", "comma_space"), ("stereo44k", "comma_space"), ("mono16k", None),
    (None, "comma_space"), (None, None), ("stereo44k", "comma"), ("mono16k", "comma_space"),
    ("mono16k", "comma_space"), ("mono16k", "comma_space"), (None, None),
    ("mono16k", "comma_space"), ("stereo44k", "all_failed"), ("mono16k", "comma_space"),
]
VALIDATION_MEDIA = [
    ("mono16k", "comma_space"), ("stereo44k", "comma"), (None, "comma_space"), ("mono16k", None),
    (None, None), ("mono16k", "comma_space"),
]
SPLIT_FILES = {"train": "omg_TrainVideos.csv", "validation": "omg_ValidationVideos.csv",
               "test": "omg_TestVideos_WithLabels.csv"}

# The OpenFace writers are shared with experiments/make_omg_corpus.py (the synthetic corpus).
_AU_R = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25",
         "26", "45")
_AU_C = _AU_R[:16] + ("28", "45")


@dataclasses.dataclass
class FixtureRow:
    """One CSV row of the fixture and what the builder must make of it."""

    row_index: int
    video: str
    utterance: str
    category: int | None
    arousal: float
    valence: float
    audio_kind: str | None
    video_kind: str | None
    audio_frames: int | None = None      # expected log-mel frames at 25 Hz
    video_features: np.ndarray | None = None  # expected [T, D] visual features (default groups)
    video_mask: np.ndarray | None = None

    @property
    def name(self) -> str:
        return f"{self.video}/{os.path.splitext(self.utterance)[0]}"

    @property
    def kept(self) -> bool:
        """Whether the builder keeps the row (valid category and at least one modality)."""
        return self.category is not None and (self.audio_kind is not None
                                              or self.video_kind is not None)


@dataclasses.dataclass
class OmgFixture:
    """A written manual_dir and the expected builder output per split."""

    manual_dir: pathlib.Path
    rows: dict[str, list[FixtureRow]]

    def kept(self, split: str) -> list[FixtureRow]:
        return [r for r in self.rows[split] if r.kept]

    def expected_skipped(self, split: str) -> dict[str, int]:
        rows = self.rows[split]
        return {"invalid_category": sum(r.category is None for r in rows),
                "no_media": sum(r.category is not None and not r.kept for r in rows)}

    def expected_missing(self, split: str) -> dict[str, int]:
        kept = self.kept(split)
        return {"audio": sum(r.audio_kind is None for r in kept),
                "video": sum(r.video_kind is None for r in kept)}


# Feature columns after 'success': the last 35 are AU intensities (17) then presences (18).
_AU_R_SLICE = slice(709 - 35, 709 - 18)
_AU_C_SLICE = slice(709 - 18, 709)


def _write_media(root: pathlib.Path, row: FixtureRow, i: int, visual: str, npy_dim: int,
                 rng: np.random.Generator) -> None:
    stem = os.path.splitext(row.utterance)[0]
    category = row.category if row.category is not None else 4
    if row.audio_kind is not None:
        frames = 8 + 3 * (i % 7)
        seconds = frames * 0.04 + 0.02  # mid-frame, so rounding cannot change the count
        rate = 16000 if row.audio_kind == "mono16k" else 44100
        t = np.arange(int(round(seconds * rate))) / rate
        tone = (0.1 + 0.6 * row.arousal) * np.sin(2 * np.pi * (300 + 150 * category) * t)
        data = tone if row.audio_kind == "mono16k" else np.stack([tone, 0.5 * tone], axis=1)
        path = root / "audio" / row.video / f"{stem}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, data, rate, subtype="PCM_16")
        row.audio_frames = frames + 1
    if row.video_kind is None:
        return
    n = 10 + 2 * (i % 5)
    if visual == "npy":
        values = rng.normal(row.valence, 0.1, size=(n, npy_dim)).astype(np.float32)
        values[1] = np.nan  # a frame without a face
        path = root / "visual" / row.video / f"{stem}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, values)
        row.video_mask = np.arange(n) != 1
        row.video_features = np.where(row.video_mask[:, None], values, 0).astype(np.float32)
        return
    values = rng.normal(0.0, 1.0, size=(n, 709))
    values[:, _AU_R_SLICE] = 2.5 * (row.valence + 1) + 0.3 * category + rng.normal(0, .1, (n, 17))
    values[:, _AU_C_SLICE] = rng.integers(0, 2, size=(n, 18))
    success = np.ones(n, bool)
    if row.video_kind == "all_failed":
        success[:] = False
    else:
        success[[0, n // 2]] = False
    path = root / "openface" / row.video / f"{stem}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    written = write_openface_csv(path, values, success, fps=25.0 if i % 2 else 30.0,
                                 sep="," if row.video_kind == "comma" else ", ")
    header = openface_header()[5:]
    groups = ([f"AU{n}_r" for n in _AU_R] + [f"AU{n}_c" for n in _AU_C] + header[:8]
              + ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"])
    # Reorder into the reader's default group order: AU_r, AU_c, gaze, pose.
    order = [header.index(c) for c in groups]
    row.video_features = written[:, order].astype(np.float32)
    row.video_mask = success


def write_omg_manual_dir(root, *, visual: str = "openface", with_test: bool = False,
                         copies: int = 1, npy_dim: int = 7, seed: int = 0) -> OmgFixture:
    """Writes the fixture manual_dir under ``root``.

    Args:
        root: directory to create (or fill).
        visual: 'openface' (CSV per utterance) or 'npy' (``visual/<video>/<stem>.npy``).
        with_test: also write ``omg_TestVideos_WithLabels.csv`` (the validation rows with video
            ids prefixed ``test_``; fabricated, the real labelled test file is not public here).
        copies: repeat every split's rows this many times, copy k > 0 with video ``<video>_c<k>``
            (more examples for training tests; the labels stay the real ones).
        npy_dim: feature width for ``visual='npy'``.
        seed: seeds the synthetic media.

    Returns:
        ``OmgFixture`` with the expected rows per split.
    """
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = {"train": (TRAIN_LINES, TRAIN_MEDIA), "validation": (VALIDATION_LINES, VALIDATION_MEDIA)}
    if with_test:
        sources["test"] = ([line.replace(",4ae5", ",test_4ae5").replace(",664e", ",test_664e")
                            for line in VALIDATION_LINES], VALIDATION_MEDIA)
    rows = {}
    for split, (lines, media) in sources.items():
        out_lines, split_rows = [HEADER], []
        for k in range(copies):
            for line, (audio_kind, video_kind) in zip(lines, media):
                fields = line.split(",")
                if k:
                    fields[3] = f"{fields[3]}_c{k}"
                out_lines.append(",".join(fields))
                vote = fields[7].strip()
                split_rows.append(FixtureRow(
                    row_index=len(split_rows), video=fields[3], utterance=fields[4],
                    category=int(vote) if vote else None, arousal=float(fields[5]),
                    valence=float(fields[6]), audio_kind=audio_kind, video_kind=video_kind))
        (root / SPLIT_FILES[split]).write_text("\n".join(out_lines) + "\n")
        for i, row in enumerate(split_rows):
            _write_media(root, row, i, visual, npy_dim, rng)
        rows[split] = split_rows
    return OmgFixture(manual_dir=root, rows=rows)
