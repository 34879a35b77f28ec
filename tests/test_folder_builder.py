"""Tests for the emotion_folder tfds builder on tiny corpora written by folder_fixtures."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from emobed_jax.datasets import emotion_folder  # noqa: F401 - registers the builder
from emobed_jax.datasets.folder_layout import FolderError
from folder_fixtures import LABEL_NAMES, write_frame_corpus, write_utterance_corpus


def _build(root, data_dir, config="logmel"):
    builder = tfds.builder(f"emotion_folder/{config}", data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(root)), file_format="array_record")
    return builder


def _name(value):
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    corpus = write_frame_corpus(tmp_path_factory.mktemp("frame") / "corpus", physio_start_s=0.1,
                                physio_extra_s=0.1)
    os.remove(os.path.join(corpus.root, "face", "spk1", "b.csv"))
    return corpus, _build(corpus.root, tmp_path_factory.mktemp("data"))


def test_frame_level_values_and_metadata(frame):
    corpus, builder = frame
    sources = builder.as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 2, "validation": 1, "test": 1}
    T = len(corpus.grid)
    for split in sources:
        for ex in sources[split]:
            rid = _name(ex["name"])
            for k, dim in enumerate(LABEL_NAMES):
                np.testing.assert_allclose(ex[dim], corpus.labels[rid][:, k], atol=1e-6)
            assert ex["audio"].shape == (T, 40) and ex["audio_mask"].all()
            assert _name(ex["group"]) == rid.split("/")[0]
            # physio at 50 Hz from 0.1 s: label frame k >= 3 = mean of frames at 0.04k - 0.02 and
            # 0.04k; frames 0..2 (0.00 .. 0.08 s) are padded by the first frame (0.10 s).
            t, v = corpus.physio[rid]
            expected = [v[0]] * 3 + [v[(t >= 0.04 * k - 0.0201) & (t < 0.04 * k + 0.0199)].mean()
                                     for k in range(3, T)]
            np.testing.assert_allclose(ex["physio"][:, 0], expected, atol=1e-5)
            assert ex["physio_mask"].all() and ex["face"].shape == (T, 2)
    missing = next(ex for ex in sources["train"] if _name(ex["name"]) == "spk1/b")
    assert not missing["face_mask"].any() and not missing["face"].any()
    metadata = builder.info.metadata
    assert metadata["level"] == "frame" and metadata["label_names"] == list(LABEL_NAMES)
    assert metadata["modalities"] == ["audio", "face", "physio"]
    assert metadata["feature_dims"] == {"audio": 40, "face": 2, "physio": 1}
    assert metadata["sources"]["audio"] == "audio/ (wav, logmel)"
    assert metadata["conventions"] == {"frame_rate_hz": pytest.approx(25.0), "group_key": "group"}
    assert metadata["missing"]["train"] == {"audio": 0, "face": 1, "physio": 0}
    # physio: 3 padded label frames and 5 trimmed stream frames (2.02 .. 2.10 s) per recording;
    # face (30 fps to 2.033 s): its last frame is trimmed.
    assert metadata["alignment"]["train"]["physio"] == {"padded": 6, "trimmed": 10}
    assert metadata["alignment"]["train"]["face"] == {"padded": 0, "trimmed": 1}
    assert metadata["recordings"]["validation"] == ["spk2/c"]
    settings = builder.feature_settings()
    assert settings["audio"]["kind"] == "log_mel" and settings["audio"]["frame_hop_s"] == pytest.approx(0.04)
    assert settings["physio"] == {"kind": "csv", "align": "label_grid", "tolerance_s": 0.5}
    json.dumps(settings)


def test_utterance_level(tmp_path):
    corpus = write_utterance_corpus(tmp_path / "corpus")
    os.remove(os.path.join(corpus.root, "physio", "u2.npy"))
    builder = _build(corpus.root, tmp_path / "data")
    classes = builder.info.features["category"].names
    assert classes == ["happy", "neutral", "sad"]
    for ex in builder.as_data_source("train"):
        rid = _name(ex["name"])
        assert np.shape(ex["arousal"]) == () and ex["arousal"] == pytest.approx(corpus.labels[rid][0])
        assert classes[ex["category"]] == corpus.category[rid]
        assert ex["audio"].shape == (13, 40)  # 0.5 s of log-mel at 25 Hz: 0.00 .. 0.48 s
        if rid == "u2":
            assert ex["physio"].shape == (0, 3)
        else:
            np.testing.assert_array_equal(ex["physio"], corpus.physio[rid])
    metadata = builder.info.metadata
    assert metadata["level"] == "utterance" and metadata["label_names"] == ["arousal", "valence"]
    assert metadata["missing"]["train"]["physio"] == 1 and "group" not in builder.info.features
    assert builder.feature_settings()["physio"] == {"kind": "npy", "rate_hz": 10.0}


def _edit(path, old, new):
    with open(path) as f:
        text = f.read()
    assert old in text, (path, old)
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))


def _frame(tmp_path, **kwargs):
    return write_frame_corpus(tmp_path / "corpus", duration_s=0.4, **kwargs).root


def _utterance(tmp_path, **kwargs):
    return write_utterance_corpus(tmp_path / "corpus", **kwargs).root


def _csvs(root, rid="spk1/a"):
    return os.path.join(root, "labels", rid + ".csv")


def _bad_splits(root):
    _edit(os.path.join(root, "splits.csv"), "spk2/c,validation", "spk2/c,dev")
    return "splits.csv:4: split 'dev'"


def _duplicate(root):
    _edit(os.path.join(root, "splits.csv"), "spk2/c,validation", "spk1/a,validation")
    return "splits.csv:4: id 'spk1/a' already listed on line 2"


def _no_label(root):
    os.remove(_csvs(root, "spk1/b"))
    return "splits.csv:3: recording 'spk1/b' has no label"


def _no_media(root):
    for m in ("audio/spk1/b.wav", "face/spk1/b.csv", "physio/spk1/b.csv"):
        os.remove(os.path.join(root, m))
    return "splits.csv:3: recording 'spk1/b' has no media file"


def _stray_media(root):
    shutil.copy(os.path.join(root, "face", "spk1", "a.csv"), os.path.join(root, "face", "spk1", "z.csv"))
    return "face/spk1/z.csv: recording id 'spk1/z' is not in"


def _stray_label(root):
    shutil.copy(_csvs(root), _csvs(root, "spk1/z"))
    return "labels/spk1/z.csv: no recording 'spk1/z'"


def _no_time(root):
    _edit(_csvs(root), "time,", "t,")
    return "labels/spk1/a.csv:1: no time column"


def _back_in_time(root):
    _edit(_csvs(root), "\n0.08,", "\n0.02,")
    return "labels/spk1/a.csv:4: time 0.02 s does not increase"


def _nan_label(root):
    path = _csvs(root)
    lines = open(path).read().split("\n")
    lines[3] = ",".join(lines[3].split(",")[:2] + ["nan"] + lines[3].split(",")[3:])
    open(path, "w").write("\n".join(lines))
    return "labels/spk1/a.csv:4: column 'valence' is nan"


def _empty_label(root):
    path = _csvs(root)
    lines = open(path).read().split("\n")
    lines[2] = ",".join(lines[2].split(",")[:3] + [""])
    open(path, "w").write("\n".join(lines))
    return "labels/spk1/a.csv:3: '' is not a number (column 'dominance')"


def _wide(root):
    _edit(os.path.join(root, "face", "spk2", "c.csv"), "frameTime,f0,f1", "frameTime,f0,f1,f2")
    return "face/spk2/c.csv has 3 features but"


def _both_labels(root):
    open(os.path.join(root, "labels.csv"), "w").write("id,arousal\n")
    return "expected either labels/ (frame level) or labels.csv (utterance level), found both"


def _coverage(root):
    path = os.path.join(root, "physio", "spk1", "a.csv")
    lines = open(path).read().split("\n")
    open(path, "w").write("\n".join(lines[:4]) + "\n")  # 0.00 .. 0.04 s of 0.4 s of labels
    with open(os.path.join(root, "corpus.json"), "w") as f:
        json.dump({"tolerance_s": 0.1}, f)
    return "physio/spk1/a.csv: frames span 0.000 to 0.040 s but the labels"


def _corpus_json_list(root):
    with open(os.path.join(root, "corpus.json"), "w") as f:
        json.dump([{"tolerance_s": 0.1}], f)
    return "corpus.json: a JSON list; expected an object with any of rates_hz, classes"


def _npy_rate(root):
    os.makedirs(os.path.join(root, "extra"))
    for rid in ("spk1/a",):
        os.makedirs(os.path.join(root, "extra", "spk1"), exist_ok=True)
        np.save(os.path.join(root, "extra", rid + ".npy"), np.zeros((3, 2)))
    return "extra: .npy arrays carry no times; declare the rate"


def _mixed(root):
    shutil.copy(os.path.join(root, "audio", "spk1", "a.wav"), os.path.join(root, "face", "spk1", "a.wav"))
    return "face: mixes .csv and .wav files"


def _no_splits(root):
    os.remove(os.path.join(root, "splits.csv"))
    return "splits.csv: not found"


def _collision(root):
    for rid in ("spk1/a", "spk1/b", "spk2/c", "spk2/d"):
        _edit(_csvs(root, rid), "time,arousal", "time,face")
    return "label column 'face' collides"


FRAME_CASES = [_corpus_json_list, _no_splits, _bad_splits, _duplicate, _no_label, _no_media, _stray_media, _stray_label,
               _no_time, _back_in_time, _nan_label, _empty_label, _wide, _both_labels, _coverage,
               _npy_rate, _mixed, _collision]


def _category(root):
    return "labels.csv:2: category 'happy'; expected one of the classes declared in corpus.json"


def _no_row(root):
    _edit(os.path.join(root, "labels.csv"), "u4,", "u9,")
    return "labels.csv:5: id 'u9' is not in splits.csv"


def _neither(root):
    os.remove(os.path.join(root, "labels.csv"))
    return "found neither"


def _no_label_column(root):
    path = os.path.join(root, "labels.csv")
    rows = [line.split(",")[0] for line in open(path).read().splitlines()]
    open(path, "w").write("\n".join(rows) + "\n")
    return "labels.csv:1: header ['id'] has no label column"


@pytest.mark.parametrize("case", FRAME_CASES + [_category, _no_row, _neither, _no_label_column],
                         ids=lambda c: c.__name__.strip("_"))
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, case):
    if case in FRAME_CASES:
        root = _frame(tmp_path)
    else:
        root = _utterance(tmp_path, classes=("neutral", "sad") if case is _category else None)
    message = case(root)
    with pytest.raises(FolderError) as e:
        _build(root, tmp_path / "data")
    assert message in str(e.value) and root in str(e.value), e.value
    written = [f for _, _, files in os.walk(tmp_path / "data") for f in files]
    assert "dataset_info.json" not in written, written


def test_egemaps_config(tmp_path):
    pytest.importorskip("opensmile", reason="opensmile (pip install opensmile==2.6.0) not installed")
    corpus = write_frame_corpus(tmp_path / "corpus", duration_s=0.8)
    builder = _build(corpus.root, tmp_path / "data", "egemaps")
    assert builder.info.metadata["feature_dims"]["audio"] == 25
    assert builder.info.metadata["sources"]["audio"] == "audio/ (wav, egemaps)"
    ex = builder.as_data_source("validation")[0]
    assert ex["audio"].shape == (len(corpus.grid), 25) and np.isfinite(ex["audio"]).all()
    assert builder.feature_settings()["audio"] == {"kind": "egemaps", "frame_hop_s": pytest.approx(0.04)}
