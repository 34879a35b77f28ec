"""The bad-input matrix (issue 5): each case fails through its real entry point with a message that
names the file (or config key) and what was expected, and leaves nothing half-written behind.

Entry points: a builder's `download_and_prepare` on a fixture manual dir in the real on-disk
format, `train.train_and_evaluate`, and `experiments/main.py` in a subprocess. "Nothing
half-written": no `incomplete.*` tfds directory, no prepared version directory, no array_record
file under data_dir, and no `checkpoints/` under the workdir. Run with `-s` to see the messages
(they are the ones in docs/bad_input.md).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import jax
import pytest
import tensorflow_datasets as tfds

from conftest import make_tiny_config
from emobed_jax import config as config_lib
from emobed_jax.training import train
from emobed_jax.datasets import omg_emotion, recola
from emobed_jax.features.arff import ArffError
from emobed_jax.features.audio import AudioError
from emobed_jax.features.openface import OpenFaceError
from omg_fixtures import write_omg_manual_dir
from recola_fixtures import write_recola_package

REPO = pathlib.Path(__file__).resolve().parents[1]
FIRST_OMG_TRAIN = ("5b44393ed", "utterance_4")  # first row of the fixture's train CSV


def _prepare(builder_cls, manual_dir, data_dir, config=None) -> None:
    kwargs = {"config": config} if config else {}
    builder = builder_cls(data_dir=str(data_dir), **kwargs)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))


def _leftovers(data_dir) -> list:
    """Whatever a finished or interrupted tfds preparation would have left under data_dir."""
    root = pathlib.Path(data_dir)
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.startswith("incomplete") or p.name == "1.0.0"
                  or "array_record" in p.name or p.name == "dataset_info.json")


def _check(message: str, *fragments: str) -> str:
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message:\n{message}"
    print(f"\n[message] {message}")
    return message


def _build_fails(builder_cls, manual_dir, data_dir, error, *fragments, config=None) -> str:
    with pytest.raises(error) as info:
        _prepare(builder_cls, manual_dir, data_dir, config)
    assert _leftovers(data_dir) == []
    return _check(str(info.value), *fragments)


def _train_fails(config, workdir, error, *fragments) -> str:
    with pytest.raises(error) as info:
        train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    return _check(str(info.value), *fragments)


def _recola(tmp_path, **kwargs):
    kwargs.setdefault("duration_s", 2.0)
    return write_recola_package(tmp_path / "pkg", train=1, dev=1, **kwargs)


def _dataset_config(tmp_path, name: str, builder_config: str, manual_dir, modalities, **overrides):
    config = config_lib.get_base_config()
    config.data.name, config.data.config = name, builder_config
    config.data.manual_dir, config.data.data_dir = str(manual_dir), str(tmp_path / "data")
    config.modalities, config.target_modality = tuple(modalities), modalities[0]
    config.model.encoder = "conv"
    config.update_from_flattened_dict(overrides)
    return config


def _data_rows(path: pathlib.Path) -> tuple[list[str], list[int]]:
    """The ARFF's lines and the indices of its data rows."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data")
    return lines, [i for i in range(start + 1, len(lines)) if lines[i].strip()
                   and not lines[i].startswith("%")]


# ----------------------------------------------------------------------------- manual dir


@pytest.mark.parametrize("builder_cls, expected", [(recola.Recola, "ratings_gold_standard"),
                                                   (omg_emotion.OmgEmotion, "omg_TrainVideos.csv")])
def test_missing_manual_dir(tmp_path, builder_cls, expected):
    nowhere = tmp_path / "nowhere"
    _build_fails(builder_cls, nowhere, tmp_path / "data", FileNotFoundError, str(nowhere),
                 "does not exist or is empty", expected)


def test_missing_manual_dir_in_the_config(tmp_path):
    nowhere = tmp_path / "nowhere"
    config = _dataset_config(tmp_path, "recola", "functionals", nowhere, ("audio", "ecg"))
    _train_fails(config, tmp_path / "work", FileNotFoundError,
                 f"config.data.manual_dir='{nowhere}' does not exist", "expected the folder")
    assert _leftovers(tmp_path / "data") == []


# ----------------------------------------------------------------------------- missing files


def test_missing_gold_standard_file(tmp_path):
    pkg = _recola(tmp_path, write_audio=False)
    gold = pathlib.Path(pkg.root, "ratings_gold_standard", "valence", "dev_1.arff")
    gold.unlink()
    _build_fails(recola.Recola, pkg.root, tmp_path / "data", FileNotFoundError,
                 f"{gold}: not found", "arousal has a gold standard for dev_1", config="functionals")


def test_missing_annotation_csv(tmp_path):
    fixture = write_omg_manual_dir(tmp_path / "omg")
    csv_path = fixture.manual_dir / "omg_ValidationVideos.csv"
    csv_path.unlink()
    _build_fails(omg_emotion.OmgEmotion, fixture.manual_dir, tmp_path / "data", FileNotFoundError,
                 f"{csv_path}: OMG-Emotion annotation CSV not found")


def test_missing_wav_is_named_when_its_modality_is_used(tmp_path):
    """RECOLA leaves an incomplete source folder out (logged); a run that needs it names the file."""
    pkg = _recola(tmp_path, dims={"ECG": 3})
    wav = pathlib.Path(pkg.root, "recordings_audio", "dev_1.wav")
    wav.unlink()
    config = _dataset_config(tmp_path, "recola", "logmel", pkg.root, ("audio", "ecg"))
    _train_fails(config, tmp_path / "work", FileNotFoundError,
                 "config.modalities names ['audio']", f"1 recording file(s) missing, e.g. {wav}",
                 "delete", "run again")


# ----------------------------------------------------------------------------- audio


def _empty(path: pathlib.Path) -> None:
    path.write_bytes(b"")


def _truncate(path: pathlib.Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_audio(path: pathlib.Path) -> None:
    path.write_text("frameTime,arousal\n0.00,0.1\n")


@pytest.mark.parametrize("damage, fragment", [
    (_empty, "empty file (0 bytes), expected an audio recording"),
    (_truncate, "truncated WAV file: data chunk declares 64000 bytes but only"),
    (_not_audio, "not a readable audio file"),
])
def test_bad_wav(tmp_path, damage, fragment):
    pkg = _recola(tmp_path, dims={})
    wav = pathlib.Path(pkg.root, "recordings_audio", "train_1.wav")
    damage(wav)
    _build_fails(recola.Recola, pkg.root, tmp_path / "data", AudioError, f"{wav}: {fragment}",
                 config="logmel")


# ----------------------------------------------------------------------------- ARFF


def _drop_last_value(lines, rows):
    lines[rows[3]] = lines[rows[3]].rsplit(",", 1)[0]
    return rows[3] + 1, "row has 4 columns, expected 5 (one per @attribute)"


def _non_numeric(lines, rows):
    parts = lines[rows[3]].split(",")
    parts[3] = "abc"
    lines[rows[3]] = ",".join(parts)
    return rows[3] + 1, "column 4 ('ECG_1') holds 'abc', expected a number"


def _no_data_line(lines, rows):
    data_line = rows[0] - 1
    while lines[data_line].strip().lower() != "@data":
        data_line -= 1
    del lines[data_line]
    return rows[0], "looks like a data row, but no '@data' line comes before it"


@pytest.mark.parametrize("damage", [_drop_last_value, _non_numeric, _no_data_line])
@pytest.mark.parametrize("recording", ["train_1", "dev_1"])
def test_bad_arff(tmp_path, damage, recording):
    """train_1 is also read for the header when the streams are scanned; dev_1 only when built."""
    pkg = _recola(tmp_path, write_audio=False, dims={"audio": 2, "ECG": 3})
    path = pathlib.Path(pkg.root, "features_ECG", "arousal", f"{recording}.arff")
    lines, rows = _data_rows(path)
    line, fragment = damage(lines, rows)
    path.write_text("\n".join(lines) + "\n")
    _build_fails(recola.Recola, pkg.root, tmp_path / "data", ArffError, f"{path}:{line}: ", fragment,
                 config="functionals")


# ----------------------------------------------------------------------------- OpenFace, lengths


def test_openface_csv_without_header(tmp_path):
    fixture = write_omg_manual_dir(tmp_path / "omg")
    video, stem = FIRST_OMG_TRAIN
    path = fixture.manual_dir / "openface" / video / f"{stem}.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))
    _build_fails(omg_emotion.OmgEmotion, fixture.manual_dir, tmp_path / "data", OpenFaceError,
                 f"{path}: no header row", "expected OpenFace column names")


def test_feature_length_mismatch_beyond_tolerance(tmp_path):
    pkg = _recola(tmp_path, write_audio=False, dims={"ECG": 3},
                  length_delta={("ECG", "train_1"): 5})
    feature = pathlib.Path(pkg.root, "features_ECG", "arousal", "train_1.arff")
    gold = pathlib.Path(pkg.root, "ratings_gold_standard", "arousal", "train_1.arff")
    _build_fails(recola.Recola, pkg.root, tmp_path / "data", recola.RecolaError,
                 f"{feature} has {pkg.num_frames + 5} frames but the gold standard {gold} has "
                 f"{pkg.num_frames}", "expected equal lengths (up to 2 frames are trimmed/padded)",
                 config="functionals")


# ----------------------------------------------------------------------------- empty splits


def test_split_without_any_media(tmp_path):
    fixture = write_omg_manual_dir(tmp_path / "omg")
    for folder in ("audio", "openface"):
        for row in fixture.rows["train"]:
            shutil.rmtree(fixture.manual_dir / folder / row.video, ignore_errors=True)
    _build_fails(omg_emotion.OmgEmotion, fixture.manual_dir, tmp_path / "data", ValueError,
                 "split 'train' would be empty", str(fixture.manual_dir / "omg_TrainVideos.csv"),
                 "none of them has media", str(fixture.manual_dir / "audio" / "<video>" / "<stem>.wav"))


def test_split_without_gold_standards(tmp_path):
    pkg = _recola(tmp_path, write_audio=False, dims={"ECG": 3})
    for dimension in ("arousal", "valence"):
        os.remove(os.path.join(pkg.root, "ratings_gold_standard", dimension, "dev_1.arff"))
    _build_fails(recola.Recola, pkg.root, tmp_path / "data", FileNotFoundError,
                 os.path.join(pkg.root, "ratings_gold_standard", "arousal", "dev_*.arff"),
                 "no gold standard found for the validation split", config="functionals")


def test_no_training_example_with_the_target_modality(tmp_path):
    fixture = write_omg_manual_dir(tmp_path / "omg")
    shutil.rmtree(fixture.manual_dir / "audio")  # video-only utterances are kept by the builder
    config = _dataset_config(tmp_path, "omg_emotion", "openface", fixture.manual_dir,
                             ("audio", "video"), task="category", **{"loss.positives": "class"})
    _train_fails(config, tmp_path / "work", ValueError, "'audio'", "train")


# ----------------------------------------------------------------------------- CSV values


@pytest.mark.parametrize("value", ["Happy", "7"])
def test_unknown_category_value(tmp_path, value):
    fixture = write_omg_manual_dir(tmp_path / "omg")
    csv_path = fixture.manual_dir / "omg_ValidationVideos.csv"
    lines = csv_path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + "," + value  # line 3 of the file
    csv_path.write_text("\n".join(lines) + "\n")
    _build_fails(omg_emotion.OmgEmotion, fixture.manual_dir, tmp_path / "data", ValueError,
                 f"{csv_path}, line 3, field 'EmotionMaxVote': expected a category code 0..6 "
                 f"(0 Anger, 1 Disgust", f"got {value!r}")


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("override, fragments", [
    ("--config.nonexistent=1", ["--config.nonexistent: config has no key 'nonexistent'",
                                "unknown keys are rejected", "expected one of [", "'batch_size'"]),
    ("--config.model.hiden=8", ["--config.model.hiden: config.model has no key 'hiden'",
                                "did you mean 'hidden'?", "'num_layers'"]),
])
def test_unknown_config_key(tmp_path, override, fragments):
    workdir = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "experiments/main.py", "--config=configs/synthetic.py",
         f"--workdir={workdir}", override], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    _check(proc.stderr.strip().splitlines()[0], "FATAL Flags parsing error: ", *fragments)
    assert not workdir.exists()


@pytest.mark.parametrize("overrides, fragments", [
    ({"method": "foo"}, ["config.method='foo' is not valid; expected one of ['monomodal', 'joint', "
                         "'crossmodal', 'emobed', 'distill']"]),
    ({"target_modality": "ecg"}, ["config.target_modality='ecg' is not valid; expected one of "
                                  "config.modalities=['audio', 'video']"]),
    ({"batch_size": 3}, ["config.batch_size=3 is not divisible by the 2 devices; expected a "
                         "multiple of 2"]),
])
def test_invalid_config_value(tmp_path, overrides, fragments):
    config = make_tiny_config(str(tmp_path / "data"), **overrides)
    with pytest.raises(ValueError) as info:
        train.train_and_evaluate(config, str(tmp_path / "work"))  # all (2) devices
    _check(str(info.value), *fragments)
    assert not (tmp_path / "work" / "checkpoints").exists()
    assert _leftovers(tmp_path / "data") == []


def test_unwritable_workdir(tmp_path):
    # A path below a regular file cannot be created, even by root (chmod would not stop root).
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory\n")
    workdir = blocker / "sub"
    config = make_tiny_config(str(tmp_path / "data"))
    with pytest.raises(PermissionError) as info:
        train.train_and_evaluate(config, str(workdir))
    _check(str(info.value), f"--workdir='{workdir}' is not writable",
           "expected a directory this user can write to")
    assert blocker.read_text() == "not a directory\n"
    assert _leftovers(tmp_path / "data") == []
