"""Writes a small example corpus in the `emotion_folder` layout (docs/folder.md).

The corpus is synthetic and deterministic for a seed: each recording has smooth latent arousal,
valence and dominance trajectories in [-1, 1], and three modalities at three rates are generated
from them:

  audio/<id>.wav    16 kHz mono speech-like audio (syllables of a harmonic voice); loudness and
                    pitch rise with arousal, dominance lowers the pitch a little.
  video/<id>.csv    30 fps, `time` + 10 face-like features (action-unit intensities, head pose)
                    driven by valence and dominance, plus per-speaker offsets, frame noise and a
                    slow drift. About 1 % of the rows are NaN (tracking failures); every second
                    recording lacks a 1-2 s stretch of rows (dropped frames); the first recording
                    of each split starts 0.2 s late (within the alignment tolerance).
  physio/<id>.csv   50 Hz, `time` + heart rate, skin conductance and respiration rate, following
                    arousal with lags of 1-2.5 s; the sensors run 0.5 s past the labels' end.

Frame level (default): `labels/<id>.csv` with `time,arousal,valence,dominance` at 25 Hz, ids
`<split>_<nn>`; the last training recording (with 4 or more) has no physio file (a sensor not
worn), so the dataset counts one missing physio recording. Utterance level: every recording is a
session cut into utterances of 2-5 s, ids `<session>/utt_<nn>` with media cut likewise (times
restart at 0), `labels.csv` with `id,arousal,valence,dominance,category` (the means of the label
tracks over the utterance; category neutral/happy/angry/sad from mean arousal and valence) and
`corpus.json` declaring the classes; the second utterance of each split's first session has no
video file (no face). `splits.csv` has `id,split,group`, group = speaker; train, validation and
test speakers are disjoint.

Usage::

    python experiments/make_example_corpus.py --out=/tmp/corpus [--level=frame|utterance] \\
        [--recordings_per_split=6,3,3] [--duration_s=30] [--seed=0] [--overwrite]

From Python: `write_corpus(out, level="frame", train=6, validation=3, test=3, duration_s=30.0,
seed=0)` returns a summary dict (ids per split, rates, label names, classes, files, bytes).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
from typing import Sequence

import numpy as np
import scipy.ndimage
import soundfile

SPLITS = ("train", "validation", "test")
LEVELS = ("frame", "utterance")
LABEL_NAMES = ("arousal", "valence", "dominance")
CLASSES = ("neutral", "happy", "angry", "sad")
LABEL_RATE = 25.0
VIDEO_RATE = 30.0
PHYSIO_RATE = 50.0
SAMPLE_RATE = 16000
VIDEO_FEATURES = ("AU01_inner_brow_raiser", "AU04_brow_lowerer", "AU06_cheek_raiser",
                  "AU12_lip_corner_puller", "AU15_lip_corner_depressor", "AU17_chin_raiser",
                  "AU25_lips_part", "head_pitch", "head_roll", "gaze_down")
PHYSIO_FEATURES = ("heart_rate_bpm", "skin_conductance_us", "respiration_rate_bpm")
MODALITIES = {"audio": ("wav", float(SAMPLE_RATE)), "video": ("csv", VIDEO_RATE),
              "physio": ("csv", PHYSIO_RATE)}
# Speakers per split (disjoint), so validation and test measure generalisation to new speakers.
SPEAKERS_PER_SPLIT = {"train": 3, "validation": 2, "test": 2}
NEUTRAL_RADIUS = 0.3  # |mean (arousal, valence)| below this is 'neutral'
# Loadings of the video features on (arousal, valence, dominance): valence and dominance carry
# the face, arousal enters weakly, so video predicts valence/dominance and physio/audio arousal.
_VIDEO_LOADINGS = np.array([
    [0.3, 0.4, -0.6], [0.2, -1.2, 0.8], [0.1, 1.4, 0.0], [0.2, 1.6, 0.2], [0.0, -1.3, -0.4],
    [0.0, -0.6, 0.9], [0.6, 0.3, 0.0], [0.0, 0.2, 0.9], [0.2, 0.0, 0.0], [-0.2, -0.4, -0.9]])
# Session centres (arousal, valence) cycled over recordings, so every split spans all four
# categories and recordings differ in their mean emotion.
_CENTRES = ((0.0, 0.0), (0.55, 0.5), (0.55, -0.5), (-0.5, -0.5), (-0.45, 0.45))
_DOMINANCE_CENTRES = (0.5, -0.5, 0.0, -0.3, 0.4)  # cycled with another period than _CENTRES
_SPEAKER_STREAM = 99  # rng stream of speakers (splits use 0, 1, 2)
_CORPUS_ENTRIES = ("splits.csv", "corpus.json", "labels", "labels.csv", "audio", "video", "physio")


class CorpusExistsError(FileExistsError):
    """The output folder is not empty and --overwrite was not given (or it is not a corpus)."""


def _smooth(rng: np.random.Generator, n: int, sigma_frames: float, channels: int = 1) -> np.ndarray:
    """Unit-variance Gaussian-smoothed white noise [n, channels]."""
    pad = int(4 * sigma_frames) + 1  # margins so the ends are as smooth as the middle
    x = scipy.ndimage.gaussian_filter1d(rng.standard_normal((n + 2 * pad, channels)),
                                        sigma_frames, axis=0, mode="wrap")[pad:pad + n]
    return x / x.std(axis=0, keepdims=True)


def _speaker(seed: int, number: int) -> dict:
    """A speaker's nuisance: voice pitch, tempo, loudness, facial offsets and physio baselines."""
    rng = np.random.default_rng((seed, _SPEAKER_STREAM, number))
    return {"name": f"spk{number:02d}", "f0": rng.uniform(100.0, 220.0),
            "rate": rng.uniform(3.5, 4.5), "gain_db": rng.normal(0.0, 2.0),
            "video_offset": rng.normal(0.0, 0.35, len(VIDEO_FEATURES)),
            "expressivity": rng.uniform(0.8, 1.2), "heart_rate": rng.uniform(62.0, 80.0),
            "scl": rng.uniform(2.0, 8.0), "resp": rng.uniform(12.0, 17.0)}


def _speaker_numbers(split: str) -> tuple[int, ...]:
    """Speaker numbers (from 1) of a split: train first, then validation, then test."""
    start = 1 + sum(SPEAKERS_PER_SPLIT[s] for s in SPLITS[:SPLITS.index(split)])
    return tuple(range(start, start + SPEAKERS_PER_SPLIT[split]))


def _latent(rng: np.random.Generator, n: int, index: int, split: str) -> np.ndarray:
    """Latent [n, 3] (arousal, valence, dominance) at the label rate, in (-1, 1)."""
    centre_av = np.array(_CENTRES[(index + SPLITS.index(split)) % len(_CENTRES)])
    centre_d = _DOMINANCE_CENTRES[(index + 2 * SPLITS.index(split)) % len(_DOMINANCE_CENTRES)]
    centre = np.concatenate([centre_av, [centre_d]]) + rng.normal(0.0, 0.1, 3)
    return np.tanh(centre + 0.45 * _smooth(rng, n, 1.5 * LABEL_RATE, 3))


def _at(track: np.ndarray, times: np.ndarray, lag_s: float = 0.0) -> np.ndarray:
    """A label-rate track [n, C] read at `times - lag_s` (linear interpolation, ends held)."""
    grid = np.arange(len(track)) / LABEL_RATE
    return np.stack([np.interp(times - lag_s, grid, track[:, c]) for c in range(track.shape[1])],
                    axis=1)


def _audio(rng: np.random.Generator, latent: np.ndarray, spk: dict, duration_s: float) -> np.ndarray:
    """Speech-like 16 kHz waveform [N] float32: syllables of a 10-harmonic voice in noise."""
    n = int(round(duration_s * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    a, _, d = _at(latent, t).T
    # Syllables: a phase advancing at the speaking rate, faster when aroused; ~15 % are pauses.
    phase = np.cumsum(spk["rate"] * 2.0 ** (0.5 * a)) / SAMPLE_RATE + rng.uniform()
    syl = phase.astype(np.int64)
    frac, duty = phase - syl, 0.65
    voiced = rng.random(syl[-1] + 1) < 0.85
    env = np.where(frac < duty, np.sin(np.pi * np.minimum(frac / duty, 1.0)) ** 2, 0.0) * voiced[syl]
    semitones = 4.0 * a - 1.5 * d + rng.normal(0.0, 1.0, syl[-1] + 1)[syl]
    f0 = spk["f0"] * 2.0 ** (semitones / 12.0)
    theta = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * theta) / k for k in range(1, 11))
    loud_db = spk["gain_db"] + 9.0 * a + 2.0 * d + rng.normal(0.0, 1.5, syl[-1] + 1)[syl]
    speech = 0.05 * 10.0 ** (loud_db / 20.0) * env * voice / np.sqrt(np.mean(voice ** 2))
    noise = 0.003 * rng.standard_normal(n)  # about 20 dB below active speech at neutral arousal
    return np.clip(speech + noise, -1.0, 1.0).astype(np.float32)


def _video(rng: np.random.Generator, latent: np.ndarray, spk: dict, duration_s: float,
           index: int) -> tuple[np.ndarray, np.ndarray]:
    """(times [M], features [M, 10]) at 30 fps with NaN rows, a dropped stretch and a late start."""
    times = np.arange(int(np.floor(duration_s * VIDEO_RATE + 1e-9)) + 1) / VIDEO_RATE
    lat = _at(latent, times)
    drive = spk["expressivity"] * lat @ _VIDEO_LOADINGS.T
    au = 5.0 / (1.0 + np.exp(-(drive[:, :7] - 0.5)))  # OpenFace-like intensities in [0, 5]
    pose = 0.3 * drive[:, 7:]  # radians-like head pose and gaze
    features = np.concatenate([au, pose], axis=1) + spk["video_offset"]
    noise_scale = np.array([0.6] * 7 + [0.07] * 3)
    features += noise_scale * (rng.standard_normal(features.shape)
                               + 0.8 * _smooth(rng, len(times), 1.0 * VIDEO_RATE, features.shape[1]))
    features[rng.random(len(times)) < 0.01] = np.nan  # tracking failures: whole rows NaN
    keep = np.ones(len(times), bool)
    if index % 2 == 1:  # dropped frames: rows absent, the time column jumps
        length = int(rng.uniform(1.0, 2.0) * VIDEO_RATE)
        start = int(rng.uniform(0.2, 0.7) * (len(times) - length))
        keep[start:start + length] = False
    if index == 0:  # the camera started 0.2 s late (inside the 0.5 s alignment tolerance)
        keep[: int(round(0.2 * VIDEO_RATE))] = False
    return times[keep], features[keep].astype(np.float32)


def _physio(rng: np.random.Generator, latent: np.ndarray, spk: dict,
            duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(times [M], features [M, 3]) at 50 Hz: heart rate, skin conductance, respiration rate.

    The sensors run 0.5 s past the end of the labels, so alignment trims frames."""
    times = np.arange(int(np.floor((duration_s + 0.5) * PHYSIO_RATE + 1e-9)) + 1) / PHYSIO_RATE
    n = len(times)
    # The body answers arousal late: heart rate after ~1 s, respiration ~1.5 s, skin ~2.5 s.
    hr = (spk["heart_rate"] + 12.0 * _at(latent, times, 1.0)[:, 0]
          + 2.0 * _smooth(rng, n, 0.3 * PHYSIO_RATE)[:, 0] + 1.0 * rng.standard_normal(n))
    scl = (spk["scl"] + 1.2 * _at(latent, times, 2.5)[:, 0]
           + 0.4 * _smooth(rng, n, 5.0 * PHYSIO_RATE)[:, 0] + 0.05 * rng.standard_normal(n))
    resp = (spk["resp"] + 3.0 * _at(latent, times, 1.5)[:, 0]
            + 1.5 * _smooth(rng, n, 1.0 * PHYSIO_RATE)[:, 0] + 1.0 * rng.standard_normal(n))
    return times, np.stack([hr, scl, resp], axis=1).astype(np.float32)


def _recording(seed: int, split: str, index: int, duration_s: float) -> dict:
    """Everything of one recording, from its own random stream (independent of the others)."""
    rng = np.random.default_rng((seed, SPLITS.index(split), index))
    speakers = _speaker_numbers(split)
    spk = _speaker(seed, speakers[index % len(speakers)])
    n = int(round(duration_s * LABEL_RATE)) + 1
    latent = _latent(rng, n, index, split)
    label_times = np.arange(n) / LABEL_RATE
    # Labels: the latent plus a little smooth annotation noise, clipped to the scale.
    labels = np.clip(latent + 0.04 * _smooth(rng, n, 0.2 * LABEL_RATE, 3), -1.0, 1.0)
    return {"speaker": spk["name"], "label_times": label_times, "labels": labels,
            "audio": _audio(rng, latent, spk, duration_s),
            "video": _video(rng, latent, spk, duration_s, index),
            "physio": _physio(rng, latent, spk, duration_s),
            "cuts": _cuts(rng, duration_s)}


def _cuts(rng: np.random.Generator, duration_s: float) -> list[tuple[float, float]]:
    """Utterance boundaries (start, end) in seconds: 2-5 s each, on the 40 ms label grid."""
    cuts, start = [], 0.0
    while True:
        length = round(rng.uniform(2.0, 5.0) * LABEL_RATE) / LABEL_RATE
        if start + length > duration_s + 1e-9:
            return cuts
        cuts.append((start, start + length))
        start += length


def category(arousal: float, valence: float) -> str:
    """Category of an utterance from its mean arousal and valence.

    Returns:
        'neutral' within NEUTRAL_RADIUS of the origin, else 'happy' (valence >= 0), 'angry'
        (valence < 0, arousal >= 0) or 'sad' (valence < 0, arousal < 0).
    """
    if np.hypot(arousal, valence) < NEUTRAL_RADIUS:
        return "neutral"
    if valence >= 0:
        return "happy"
    return "angry" if arousal >= 0 else "sad"


def _write_table(path: pathlib.Path, header: Sequence[str], times: np.ndarray,
                 values: np.ndarray) -> None:
    """A CSV of `time` (6 decimals) and values (4 decimals; NaN written as `nan`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    for t, row in zip(times, values):
        lines.append(",".join([f"{t:.6f}"] + ["nan" if np.isnan(v) else f"{v:.4f}" for v in row]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_wav(path: pathlib.Path, wave: np.ndarray) -> None:
    """16-bit PCM mono wav (a fixed header, so identical samples give identical bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def _prepare_out(out: pathlib.Path, overwrite: bool) -> None:
    """Makes `out` empty of corpus entries, refusing to touch a folder that is not a corpus."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CorpusExistsError(f"{out}: folder is not empty; pass overwrite=True "
                                    f"(--overwrite) to replace the corpus in it")
        if not (out / "splits.csv").exists():
            raise CorpusExistsError(f"{out}: not empty and has no splits.csv, so it is not a "
                                    f"corpus; refusing to overwrite it, choose another --out")
        # Only the corpus's own entries go: a stale recording left behind would be an id that
        # splits.csv does not list, which the builder refuses.
        for name in _CORPUS_ENTRIES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_corpus(out: str | os.PathLike, level: str = "frame", train: int = 6,
                 validation: int = 3, test: int = 3, duration_s: float = 30.0, seed: int = 0,
                 overwrite: bool = False) -> dict:
    """Writes the example corpus (layout in the module docstring and docs/folder.md).

    Args:
        out: corpus root (created; must be empty unless `overwrite`).
        level: 'frame' (labels/<id>.csv at 25 Hz) or 'utterance' (labels.csv, one row per
            utterance of 2-5 s cut from each recording).
        train, validation, test: recordings (sessions at utterance level) per split; train and
            validation >= 1, test >= 0.
        duration_s: length of every recording in seconds (>= 5).
        seed: the same seed always gives byte-identical files.
        overwrite: replace the corpus entries of a folder that already holds a corpus.

    Returns:
        Summary: out, level, seed, label_names, classes (utterance level), modalities
        ({name: {"ext", "rate_hz", "features"}}), recordings ({split: [ids]}), groups ({split:
        [speakers]}), missing ({split: {modality: [ids without that file]}}, only where some
        are), label_rate_hz (frame level),
        files, bytes.

    Raises:
        ValueError: a bad argument.
        CorpusExistsError: `out` is not empty and not to be overwritten.
    """
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: expected one of {list(LEVELS)}")
    counts = {"train": train, "validation": validation, "test": test}
    for split, count in counts.items():
        if not isinstance(count, (int, np.integer)) or count < (0 if split == "test" else 1):
            raise ValueError(f"{split}={count!r}: expected an integer >= "
                             f"{0 if split == 'test' else 1}")
    if not duration_s >= 5.0:
        raise ValueError(f"duration_s={duration_s!r}: expected >= 5 (utterances are 2-5 s)")
    out = pathlib.Path(out)
    _prepare_out(out, overwrite)
    recordings = {s: [] for s in SPLITS if counts[s]}
    groups = {s: [] for s in recordings}
    missing = {s: {m: [] for m in MODALITIES} for s in recordings}
    split_rows, label_rows = [], []
    for split in recordings:
        for index in range(counts[split]):
            rec = _recording(seed, split, index, duration_s)
            session = f"{split}_{index + 1:02d}"
            if level == "frame":
                ids = [session]
                _write_table(out / "labels" / f"{session}.csv", ("time",) + LABEL_NAMES,
                             rec["label_times"], rec["labels"])
                media = {session: {m: rec[m] for m in MODALITIES}}
                if split == "train" and counts["train"] >= 4 and index == counts["train"] - 1:
                    del media[session]["physio"]  # a sensor not worn: no physio file
            else:
                ids, media = [], {}
                for u, (start, end) in enumerate(rec["cuts"]):
                    uid = f"{session}/utt_{u + 1:02d}"
                    ids.append(uid)
                    media[uid] = _cut(rec, start, end)
                    inside = (rec["label_times"] >= start - 1e-9) & (rec["label_times"] < end - 1e-9)
                    mean = rec["labels"][inside].mean(axis=0)
                    label_rows.append([uid] + [f"{v:.4f}" for v in mean]
                                      + [category(mean[0], mean[1])])
                if index == 0 and len(ids) > 1:
                    del media[ids[1]]["video"]  # no face found in this utterance: no video file
            for rid in ids:
                split_rows.append(f"{rid},{split},{rec['speaker']}")
                recordings[split].append(rid)
                for m in MODALITIES:
                    if m not in media[rid]:
                        missing[split][m].append(rid)
                    elif m == "audio":
                        _write_wav(out / "audio" / f"{rid}.wav", media[rid]["audio"])
                    else:
                        names = VIDEO_FEATURES if m == "video" else PHYSIO_FEATURES
                        _write_table(out / m / f"{rid}.csv", ("time",) + names, *media[rid][m])
            if rec["speaker"] not in groups[split]:
                groups[split].append(rec["speaker"])
    (out / "splits.csv").write_text("id,split,group\n" + "\n".join(split_rows) + "\n",
                                    encoding="utf-8")
    if level == "frame":
        settings = {"tolerance_s": 0.5}
    else:
        settings = {"classes": list(CLASSES)}
        (out / "labels.csv").write_text(
            "\n".join(",".join(r) for r in [["id", *LABEL_NAMES, "category"]] + label_rows) + "\n",
            encoding="utf-8")
    (out / "corpus.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    files = [p for p in out.rglob("*") if p.is_file()]
    summary = {
        "out": str(out), "level": level, "seed": seed, "label_names": list(LABEL_NAMES),
        "modalities": {m: {"ext": ext, "rate_hz": rate,
                           "features": {"audio": 1, "video": len(VIDEO_FEATURES),
                                        "physio": len(PHYSIO_FEATURES)}[m]}
                       for m, (ext, rate) in MODALITIES.items()},
        "recordings": recordings, "groups": groups,
        "missing": {s: {m: ids for m, ids in v.items() if ids}
                    for s, v in missing.items() if any(v.values())},
        "files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    if level == "frame":
        summary["label_rate_hz"] = LABEL_RATE
    else:
        summary["classes"] = list(CLASSES)
    return summary


def _cut(rec: dict, start: float, end: float) -> dict:
    """One utterance's media from its session: samples and rows in [start, end), times from 0."""
    out = {"audio": rec["audio"][int(round(start * SAMPLE_RATE)):int(round(end * SAMPLE_RATE))]}
    for m in ("video", "physio"):
        times, values = rec[m]
        inside = (times >= start - 1e-9) & (times < end - 1e-9)
        out[m] = (times[inside] - start, values[inside])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: writes the corpus and prints its summary as JSON; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="corpus root (config.data.manual_dir)")
    parser.add_argument("--level", choices=LEVELS, default="frame")
    parser.add_argument("--recordings_per_split", default="6,3,3",
                        help="TRAIN,VALIDATION,TEST recordings (sessions at utterance level)")
    parser.add_argument("--duration_s", type=float, default=30.0, help="seconds per recording")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing corpus")
    args = parser.parse_args(argv)
    try:
        counts = [int(c) for c in args.recordings_per_split.split(",")]
        if len(counts) != 3:
            raise ValueError
    except ValueError:
        parser.error(f"--recordings_per_split={args.recordings_per_split!r}: expected "
                     f"TRAIN,VALIDATION,TEST, e.g. 6,3,3")
    try:
        summary = write_corpus(args.out, args.level, *counts, duration_s=args.duration_s,
                               seed=args.seed, overwrite=args.overwrite)
    except (ValueError, CorpusExistsError) as e:
        print(f"make_example_corpus: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
