"""Writes a synthetic corpus in the real OMG-Emotion on-disk format, for small-corpus experiments.

The folder is a `config.data.manual_dir` that the `omg_emotion` builder reads unchanged:

    omg_TrainVideos.csv, omg_ValidationVideos.csv[, omg_TestVideos_WithLabels.csv]
        the official header `link,start,end,video,utterance,arousal,valence,EmotionMaxVote`,
        one row per utterance, several consecutive utterances per video
    audio/<video>/<utterance stem>.wav     16 kHz mono speech-like audio
    openface/<video>/<utterance stem>.csv  OpenFace 2.x FeatureExtraction output as written with
        `-gaze -pose -aus` (frame, face_id, timestamp, confidence, success, gaze, pose, AU
        intensities, AU presences; ", " separated), 25 fps, every fourth video 30 fps

How the data are made (deterministic for a seed):

  * One speaker per video (videos never share a speaker, so validation and test speakers are
    unseen). Each speaker has resting levels of every action-unit intensity, gaze direction and
    head pose, an expressivity (how strongly emotions show on the face), a voice pitch, speaking
    rate and loudness.
  * Categories: 7 classes (OMG's EmotionMaxVote codes) with OMG's imbalance softened (training
    counts of OMG to the power 0.6: Neutral and Happy common, Fear and Surprise rare); within a
    video a category repeats the previous one with probability 0.35 (emotions change gradually).
    Arousal in [0, 1] and valence in [-1, 1] are drawn around a mean per class, plus a per-video
    offset of arousal. Annotations are noisy: a fifth of the faces show another category than
    the max vote, and the face follows arousal and valence plus rating noise.
  * Face: per frame, AU intensity = resting level + expressivity x activation(t) x the class's
    AU prototype (prototypes overlap, e.g. fear and surprise share brow raisers) + frame noise;
    activation(t) comes in bursts, grows with arousal and varies by
    utterance; valence pushes smile (AU12, AU06) and
    brow lowering (AU04) within a class. AU presence is intensity above a noisy threshold. Head
    movement grows with arousal. 0-35 % of an utterance's frames are failed (success = 0,
    all-zero values, as OpenFace writes them), in runs.
  * Audio: syllables of a harmonic voice in noise; loudness, pitch and speaking rate rise with
    arousal (audio carries little about the category beyond arousal).

Usage::

    python experiments/make_omg_corpus.py --out=/tmp/omg_corpus [--seed=0] \\
        [--train=315] [--validation=130] [--test=0] [--no_audio] [--overwrite]

From Python: `write_corpus(out, train=315, validation=130, test=0, seed=0, audio=True)` returns
a summary dict. `SMALL` holds the sizes of the small variant the tests use.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
from typing import Sequence

import numpy as np
import scipy.ndimage
import soundfile

__all__ = ["CATEGORY_NAMES", "SPLIT_FILES", "HEADER", "SMALL", "openface_header",
           "openface_feature_columns", "write_openface_csv", "write_corpus", "main"]

CATEGORY_NAMES = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
SPLIT_FILES = {"train": "omg_TrainVideos.csv", "validation": "omg_ValidationVideos.csv",
               "test": "omg_TestVideos_WithLabels.csv"}
HEADER = "link,start,end,video,utterance,arousal,valence,EmotionMaxVote"
SAMPLE_RATE = 16000
# The small variant for tests: sizes per split and shorter utterances (seconds).
SMALL = {"train": 160, "validation": 80, "test": 0, "duration_s": (1.5, 3.5)}

_AU_R = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25",
         "26", "45")
_AU_C = _AU_R[:16] + ("28", "45")
_GAZE = ("gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z",
         "gaze_angle_x", "gaze_angle_y")
_POSE = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")
_LEAD = ("frame", "face_id", "timestamp", "confidence", "success")

# OMG-Emotion's training counts (Anger .. Surprise), softened by a power so that a few hundred
# utterances still hold every class several times.
_OMG_COUNTS = np.array([293, 113, 60, 713, 891, 346, 26], float)
_CLASS_P = _OMG_COUNTS ** 0.6 / np.sum(_OMG_COUNTS ** 0.6)
_REPEAT_P = 0.35
_MISMATCH_P = 0.2  # the face shows another category than the annotators' max vote
# Per class: mean arousal, mean valence.
_CLASS_AV = np.array([[0.72, -0.55], [0.52, -0.50], [0.68, -0.45], [0.60, 0.55], [0.30, 0.05],
                      [0.28, -0.45], [0.78, 0.25]])
# Per class: AU intensity prototype (0-3) over _AU_R, written sparsely. Overlaps are deliberate.
_PROTOTYPES = {
    0: {"04": 2.2, "05": 1.0, "07": 1.8, "23": 1.6, "17": 0.8},          # anger
    1: {"09": 2.2, "10": 1.8, "04": 1.0, "15": 0.8, "17": 0.6},          # disgust
    2: {"01": 1.8, "02": 1.2, "04": 1.2, "05": 1.6, "20": 1.6, "26": 0.8},  # fear
    3: {"06": 2.0, "12": 2.4, "25": 1.0, "26": 0.4},                     # happy
    4: {},                                                               # neutral
    5: {"01": 1.6, "04": 1.4, "15": 1.8, "17": 1.0},                     # sad
    6: {"01": 2.0, "02": 2.0, "05": 1.8, "26": 2.0, "25": 1.2},          # surprise
}


def openface_feature_columns() -> tuple[str, ...]:
    """The columns OpenFace 2.x writes after `success` with `-gaze -pose -aus`, in file order."""
    return (_GAZE + _POSE + tuple(f"AU{n}_r" for n in _AU_R) + tuple(f"AU{n}_c" for n in _AU_C))


def openface_header() -> list[str]:
    """The 714 column names of OpenFace 2.2 ``FeatureExtraction`` output (all outputs), in file
    order."""
    def idx(prefixes, n):
        return [f"{p}{i}" for p in prefixes for i in range(n)]
    return (list(_LEAD) + list(_GAZE)
            + idx(["eye_lmk_x_", "eye_lmk_y_", "eye_lmk_X_", "eye_lmk_Y_", "eye_lmk_Z_"], 56)
            + list(_POSE)
            + idx(["x_", "y_", "X_", "Y_", "Z_"], 68)
            + ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + idx(["p_"], 34)
            + [f"AU{n}_r" for n in _AU_R] + [f"AU{n}_c" for n in _AU_C])


def write_openface_csv(path, values: np.ndarray, success: np.ndarray, fps: float = 25.0,
                       sep: str = ", ", columns: Sequence[str] | None = None) -> np.ndarray:
    """Writes an OpenFace-style CSV; failed frames get 0 everywhere, as OpenFace writes them.

    Args:
        path: output file (its folder must exist).
        values: [T, C] numbers for the columns after ``success``.
        success: [T] bool.
        fps: frame rate for the ``timestamp`` column.
        sep: field separator (OpenFace writes ", ").
        columns: the C column names after ``success`` (default: the full 714-column header's).

    Returns:
        [T, C] float64, the values as a reader parses them back (3 decimals, zeroed if failed).
    """
    columns = list(openface_header()[5:] if columns is None else columns)
    if values.shape[1] != len(columns):
        raise ValueError(f"values have {values.shape[1]} columns, expected {len(columns)}")
    written = np.where(success[:, None], values, 0.0)
    text = np.char.mod("%.3f", written)
    lines = [sep.join(list(_LEAD) + columns)]
    for t in range(len(values)):
        lead = [str(t + 1), "0", f"{t / fps:.3f}", "0.98" if success[t] else "0",
                "1" if success[t] else "0"]
        lines.append(sep.join(lead + text[t].tolist()))
    pathlib.Path(path).write_text("\n".join(lines) + "\n")
    return text.astype(np.float64)


def _smooth(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Unit-variance Gaussian-smoothed white noise [n]."""
    pad = int(4 * sigma) + 1
    x = scipy.ndimage.gaussian_filter1d(rng.standard_normal(n + 2 * pad), sigma)[pad:pad + n]
    return x / max(float(x.std()), 1e-6)


def _speaker(rng: np.random.Generator) -> dict:
    """A person's resting face, expressivity and voice."""
    return {
        # Resting AU intensities: some people frown or smile at rest; as large as expressions.
        "au_rest": np.clip(rng.normal(0.6, 0.6, len(_AU_R)), 0.0, None),
        "expressivity": rng.uniform(0.5, 1.4),
        "gaze": rng.normal(0.0, 0.15, 2),
        "pose": np.array([rng.normal(0, 40), rng.normal(0, 30), rng.uniform(400, 900),
                          rng.normal(0, 0.15), rng.normal(0, 0.2), rng.normal(0, 0.1)]),
        "f0": rng.uniform(90.0, 230.0), "rate": rng.uniform(3.3, 4.7),
        "gain_db": rng.normal(0.0, 3.0),
    }


def _face(rng: np.random.Generator, spk: dict, category: int, arousal: float, valence: float,
          n: int) -> tuple[np.ndarray, np.ndarray]:
    """([n, 49] values in `openface_feature_columns` order, [n] success) for one utterance."""
    proto = np.zeros(len(_AU_R))
    for au, v in _PROTOTYPES[category].items():
        proto[_AU_R.index(au)] = v
    # Expression comes in bursts; their strength grows with arousal but varies a lot between
    # utterances for other reasons (an utterance-level factor unrelated to the labels).
    strength = rng.uniform(0.4, 1.0)
    activation = np.clip(strength * (0.3 + 0.6 * (arousal - 0.3)) + 0.35 * _smooth(rng, n, 6.0),
                         0.0, 1.5)
    mean_v = _CLASS_AV[category, 1]
    au = (spk["au_rest"][None] + spk["expressivity"] * activation[:, None] * proto[None]
          + rng.normal(0.0, 0.5, (n, len(_AU_R))))
    # Valence within the class: a little more smile, a little less brow lowering.
    dv = valence - mean_v
    for name, gain in (("12", 1.0), ("06", 0.5), ("04", -0.8)):
        au[:, _AU_R.index(name)] += gain * dv * activation
    au = np.clip(au, 0.0, 5.0)
    presence_r = au[:, [_AU_R.index(a) for a in _AU_C[:16]] + [-1]]
    presence = np.concatenate([presence_r[:, :16], rng.random((n, 1)) < 0.05, presence_r[:, 16:]],
                              axis=1)
    presence[:, :16] = presence[:, :16] + rng.normal(0.0, 0.3, (n, 16)) > 1.0
    presence[:, 17] = presence[:, 17] + rng.normal(0.0, 0.3, n) > 1.0
    # Gaze: two unit-ish eye vectors from a direction angle; head movement grows with arousal.
    angle = spk["gaze"][None] + 0.08 * np.stack([_smooth(rng, n, 5.0), _smooth(rng, n, 5.0)], 1)
    eye = np.stack([np.sin(angle[:, 0]), np.sin(angle[:, 1]), -np.cos(angle[:, 0])], 1)
    gaze = np.concatenate([eye + rng.normal(0, 0.02, (n, 3)), eye + rng.normal(0, 0.02, (n, 3)),
                           angle], axis=1)
    motion = rng.uniform(0.3, 1.2) * (0.5 + arousal)
    pose = spk["pose"][None] + motion * np.stack(
        [8 * _smooth(rng, n, 8.0), 6 * _smooth(rng, n, 8.0), 15 * _smooth(rng, n, 10.0),
         0.05 * _smooth(rng, n, 6.0), 0.08 * _smooth(rng, n, 6.0), 0.04 * _smooth(rng, n, 6.0)], 1)
    values = np.concatenate([gaze, pose, au, presence.astype(float)], axis=1)
    # Failed frames in runs: a failure rate up to 35 %, runs of 3-15 frames.
    success = np.ones(n, bool)
    target = rng.uniform(0.0, 0.35) * n
    while (~success).sum() < target:
        start, length = rng.integers(0, n), rng.integers(3, 16)
        success[start:start + length] = False
    if not success.any():
        success[rng.integers(0, n)] = True
    return values, success


def _voice(rng: np.random.Generator, spk: dict, arousal: float, seconds: float) -> np.ndarray:
    """Speech-like 16 kHz waveform: syllables of a 10-harmonic voice in noise; loudness, pitch
    and rate follow arousal."""
    n = int(round(seconds * SAMPLE_RATE))
    a = arousal - 0.5
    phase = np.full(n, spk["rate"] * 2.0 ** (0.6 * a) / SAMPLE_RATE).cumsum() + rng.uniform()
    syl = phase.astype(np.int64)
    frac, duty = phase - syl, 0.65
    voiced = rng.random(syl[-1] + 1) < 0.85
    env = np.where(frac < duty, np.sin(np.pi * np.minimum(frac / duty, 1.0)) ** 2, 0.0) * voiced[syl]
    semitones = 6.0 * a + rng.normal(0.0, 1.2, syl[-1] + 1)[syl]
    f0 = spk["f0"] * 2.0 ** (semitones / 12.0)
    theta = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * theta) / k for k in range(1, 11))
    loud_db = spk["gain_db"] + 14.0 * a + rng.normal(0.0, 1.5, syl[-1] + 1)[syl]
    speech = 0.05 * 10.0 ** (loud_db / 20.0) * env * voice / np.sqrt(np.mean(voice ** 2))
    return np.clip(speech + 0.003 * rng.standard_normal(n), -1.0, 1.0).astype(np.float32)


def _video_ids(rng: np.random.Generator, count: int, taken: set) -> list[str]:
    """OMG-style video ids (9 hex digits, some with a `_<k>` suffix), unique across splits."""
    ids = []
    while len(ids) < count:
        vid = "".join(rng.choice(list("0123456789abcdef"), 9))
        if rng.random() < 0.5:
            vid += f"_{rng.integers(1, 40)}"
        if vid not in taken:
            taken.add(vid)
            ids.append(vid)
    return ids


def _split(out: pathlib.Path, split: str, size: int, rng: np.random.Generator, taken: set,
           duration_s: tuple, audio: bool, summary: dict) -> None:
    """Writes one split's CSV and media."""
    per_video = rng.integers(3, 8, size=size)  # utterances per video, trimmed to `size` below
    counts, total = [], 0
    for k in per_video:
        if total >= size:
            break
        counts.append(int(min(k, size - total)))
        total += counts[-1]
    videos = _video_ids(rng, len(counts), taken)
    lines, classes = [HEADER], []
    for vid, count in zip(videos, counts):
        spk = _speaker(rng)
        link = "https://www.youtube.com/watch?v=" + "".join(
            rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 11))
        fps = 30.0 if len(summary["videos"]) % 4 == 3 else 25.0
        summary["videos"].append(vid)
        arousal_offset = rng.normal(0.0, 0.08)
        start, number, category = rng.uniform(0, 60), int(rng.integers(1, 5)), None
        for _ in range(count):
            if category is None or rng.random() >= _REPEAT_P:
                category = int(rng.choice(len(CATEGORY_NAMES), p=_CLASS_P))
            arousal = float(np.clip(_CLASS_AV[category, 0] + arousal_offset
                                    + rng.normal(0, 0.12), 0.0, 1.0))
            valence = float(np.clip(_CLASS_AV[category, 1] + rng.normal(0, 0.15), -1.0, 1.0))
            seconds = float(rng.uniform(*duration_s))
            n = int(seconds * fps)
            stem = f"utterance_{number}"
            # Annotations are noisy: a fifth of the faces show another category than the
            # max vote, and the rated arousal/valence scatter around what the face shows.
            shown = (category if rng.random() >= _MISMATCH_P
                     else int(rng.choice(len(CATEGORY_NAMES), p=_CLASS_P)))
            values, success = _face(rng, spk, shown, float(np.clip(arousal + rng.normal(0, 0.1),
                                                                   0, 1)),
                                    float(np.clip(valence + rng.normal(0, 0.15), -1, 1)), n)
            folder = out / "openface" / vid
            folder.mkdir(parents=True, exist_ok=True)
            write_openface_csv(folder / f"{stem}.csv", values, success, fps,
                               columns=openface_feature_columns())
            if audio:
                folder = out / "audio" / vid
                folder.mkdir(parents=True, exist_ok=True)
                soundfile.write(str(folder / f"{stem}.wav"), _voice(rng, spk, arousal, seconds),
                                SAMPLE_RATE, subtype="PCM_16", format="WAV")
            end = start + seconds
            lines.append(f"{link},{start:.6f},{end:.6f},{vid},{stem}.mp4,{arousal:.6f},"
                         f"{valence:.6f},{category}")
            classes.append(category)
            start, number = end + rng.uniform(0.1, 2.0), number + int(rng.integers(1, 3))
    (out / SPLIT_FILES[split]).write_text("\n".join(lines) + "\n")
    summary["splits"][split] = {"utterances": len(classes), "videos": len(counts),
                                "class_counts": np.bincount(classes, minlength=7).tolist()}


def write_corpus(out: str | os.PathLike, train: int = 315, validation: int = 130, test: int = 0,
                 seed: int = 0, audio: bool = True, duration_s: tuple = (2.0, 6.0),
                 overwrite: bool = False) -> dict:
    """Writes the corpus into `out` (see the module docstring).

    Args:
      out: the folder to write (a `manual_dir` for `omg_emotion`); must be empty or absent
        unless `overwrite`.
      train, validation, test: utterances per split (test 0: no test CSV).
      seed: everything is a function of it.
      audio: write the wavs (False: the video-only variant; the builder then counts every
        utterance's audio as missing).
      duration_s: (shortest, longest) utterance in seconds.
      overwrite: replace the corpus files in a non-empty `out`.

    Returns:
      A summary: per split the utterance, video and class counts, and every video id.
    """
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: folder is not empty; pass overwrite=True (--overwrite)")
        if not (out / SPLIT_FILES["train"]).exists():
            raise FileExistsError(f"{out}: not empty and has no {SPLIT_FILES['train']}; refusing "
                                  f"to overwrite a folder that is not a corpus")
        for name in ("audio", "openface", *SPLIT_FILES.values()):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    summary = {"seed": seed, "splits": {}, "videos": [], "class_names": list(CATEGORY_NAMES)}
    taken: set = set()
    for index, (split, size) in enumerate((("train", train), ("validation", validation),
                                           ("test", test))):
        if size > 0:
            _split(out, split, size, np.random.default_rng((seed, index)), taken,
                   tuple(duration_s), audio, summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: writes the corpus and prints its summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=315)
    p.add_argument("--validation", type=int, default=130)
    p.add_argument("--test", type=int, default=0)
    p.add_argument("--small", action="store_true", help="the small variant the tests use")
    p.add_argument("--no_audio", action="store_true", help="write no wavs (video-only corpus)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    sizes = ({k: SMALL[k] for k in ("train", "validation", "test")} if args.small else
             {"train": args.train, "validation": args.validation, "test": args.test})
    duration = SMALL["duration_s"] if args.small else (2.0, 6.0)
    summary = write_corpus(args.out, seed=args.seed, audio=not args.no_audio, duration_s=duration,
                           overwrite=args.overwrite, **sizes)
    for split, s in summary["splits"].items():
        print(f"{split}: {s['utterances']} utterances in {s['videos']} videos, classes "
              f"{dict(zip(CATEGORY_NAMES, s['class_counts']))}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
