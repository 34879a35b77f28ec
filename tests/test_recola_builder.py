"""Tests for the RECOLA (AVEC 2016) tfds builder on small packages written in the AVEC layout."""
from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from emobed_jax.datasets import recola
from emobed_jax.features import audio as audio_lib
from recola_fixtures import write_recola_package


def _build(pkg_root, data_dir, config):
    builder = recola.Recola(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(pkg_root)))
    return builder


def _config(name):
    return next(c for c in recola.Recola.BUILDER_CONFIGS if c.name == name)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return write_recola_package(tmp_path_factory.mktemp("recola") / "pkg", train=2, dev=1, test=1,
                                duration_s=20.0, sample_rate=44100, stereo=True)


@pytest.fixture(scope="module")
def logmel(package, tmp_path_factory):
    return _build(package.root, tmp_path_factory.mktemp("data"), "logmel")


def test_logmel_splits_shapes_and_alignment(package, logmel):
    sources = logmel.as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 2, "validation": 1, "test": 1}
    metadata = logmel.info.metadata
    assert metadata["modalities"] == ["audio", "ecg", "video_appearance", "video_geometric"]
    assert metadata["feature_dims"] == {"audio": 40, "ecg": 3, "video_appearance": 4, "video_geometric": 6}
    assert "features_audio" in metadata["left_out"]
    T = package.num_frames  # 501: 0.00 .. 20.00 s inclusive
    for split, prefix in (("train", "train"), ("validation", "dev"), ("test", "test")):
        for i, ex in enumerate(sources[split]):
            name = ex["name"].decode() if isinstance(ex["name"], bytes) else ex["name"]
            assert name == f"{prefix}_{i + 1}"
            for key in ("arousal", "valence"):
                assert ex[key].shape == (T,) and ex[key].dtype == np.float32
                np.testing.assert_allclose(ex[key], package.labels[(key, name)], atol=1e-6)
            assert ex["audio"].shape == (T, 40) and np.isfinite(ex["audio"]).all()
            for key, folder in (("video_geometric", "video_geometric"), ("ecg", "ECG")):
                np.testing.assert_allclose(ex[key], package.features[(folder, "arousal", name)], atol=1e-6)
            mask = ex["video_geometric_mask"]
            assert mask.dtype == np.bool_ and mask.shape == (T,)
            np.testing.assert_array_equal(np.flatnonzero(~mask), package.zero_frames)
            assert "ecg_mask" not in ex


def test_logmel_audio_is_the_shared_feature_code(package, logmel):
    ex = logmel.as_data_source()["validation"][0]
    wav = audio_lib.load_audio(os.path.join(package.root, "recordings_audio", "dev_1.wav"), 16000)
    expected = audio_lib.log_mel_frames(wav, 16000, num_frames=package.num_frames)
    np.testing.assert_allclose(ex["audio"], expected, rtol=1e-5, atol=1e-5)
    # The fixture's amplitude envelope (0.25 Hz sine) must show in frame energy at the right frames.
    t = np.arange(package.num_frames) * 0.04
    energy = np.log(np.exp(ex["audio"]).sum(axis=1))
    assert np.corrcoef(energy, np.sin(2 * np.pi * 0.25 * t))[0, 1] > 0.8


def test_prepared_dataset_reads_back_without_manual_dir(package, logmel):
    builder = recola.Recola(config="logmel", data_dir=logmel.data_dir_root)
    assert builder.info.features["video_appearance"].shape == (None, 4)
    assert builder.info.metadata["modalities"] == logmel.info.metadata["modalities"]
    assert len(builder.as_data_source()["train"]) == 2


def test_functionals_both_keeps_both_dimensions(package, tmp_path):
    builder = _build(package.root, tmp_path, "functionals_both")
    assert builder.info.metadata["modalities"] == [
        "audio_arousal", "audio_valence", "ecg_arousal", "ecg_valence", "video_appearance_arousal",
        "video_appearance_valence", "video_geometric_arousal", "video_geometric_valence"]
    ex = builder.as_data_source()["train"][1]
    for dimension in ("arousal", "valence"):
        np.testing.assert_allclose(ex[f"audio_{dimension}"], package.features[("audio", dimension, "train_2")],
                                   atol=1e-6)
        assert ex[f"video_appearance_{dimension}_mask"].sum() == package.num_frames - len(package.zero_frames)


def test_valence_config_reads_valence_files(package, tmp_path):
    layout = recola.scan_package(package.root, _config("functionals_valence"))
    assert [s.folder for s in layout.streams][0].endswith(os.path.join("features_audio", "valence"))
    ex = recola.load_example(layout, "dev_1", _config("functionals_valence"))
    np.testing.assert_allclose(ex["audio"], package.features[("audio", "valence", "dev_1")], atol=1e-6)


def test_small_length_differences_are_trimmed_or_padded(tmp_path, caplog):
    pkg = write_recola_package(tmp_path / "pkg", train=1, dev=1, duration_s=4.0, write_audio=False,
                               length_delta={("video_geometric", "train_1"): 2, ("ECG", "dev_1"): -2})
    config = _config("functionals")
    layout = recola.scan_package(pkg.root, config)
    with caplog.at_level(logging.WARNING):
        long_ex = recola.load_example(layout, "train_1", config)
        short_ex = recola.load_example(layout, "dev_1", config)
    T = pkg.num_frames
    assert long_ex["video_geometric"].shape == (T, 6) and short_ex["ecg"].shape == (T, 3)
    np.testing.assert_allclose(long_ex["video_geometric"],
                               pkg.features[("video_geometric", "arousal", "train_1")][:T], atol=1e-6)
    written = pkg.features[("ECG", "arousal", "dev_1")]
    np.testing.assert_allclose(short_ex["ecg"][: T - 2], written, atol=1e-6)
    np.testing.assert_allclose(short_ex["ecg"][T - 2:], np.repeat(written[-1:], 2, 0), atol=1e-6)
    assert "trimmed" in caplog.text and "edge-padded" in caplog.text


def test_larger_length_mismatch_is_an_error_and_leaves_no_dataset(tmp_path):
    pkg = write_recola_package(tmp_path / "pkg", train=2, dev=1, duration_s=4.0, write_audio=False,
                               length_delta={("video_appearance", "train_2"): 3})
    with pytest.raises(recola.RecolaError) as err:
        _build(pkg.root, tmp_path / "data", "functionals")
    message = str(err.value)
    assert os.path.join("features_video_appearance", "arousal", "train_2.arff") in message
    assert os.path.join("ratings_gold_standard", "arousal", "train_2.arff") in message
    assert f"{pkg.num_frames + 3} frames" in message and f"has {pkg.num_frames}" in message
    assert not os.path.exists(tmp_path / "data" / "recola" / "functionals" / "1.0.0")


def test_audio_duration_mismatch_is_an_error(tmp_path):
    pkg = write_recola_package(tmp_path / "pkg", train=1, dev=1, duration_s=4.0, dims={})
    write_recola_package(tmp_path / "short", train=1, dev=1, duration_s=3.0, dims={})
    shutil.copy(tmp_path / "short" / "recordings_audio" / "dev_1.wav", tmp_path / "pkg" / "recordings_audio")
    layout = recola.scan_package(pkg.root, _config("logmel"))
    assert len(recola.load_example(layout, "train_1", _config("logmel"))["audio"]) == pkg.num_frames
    with pytest.raises(recola.RecolaError, match=r"dev_1\.wav has 76 frames .* has 101"):
        recola.load_example(layout, "dev_1", _config("logmel"))


def test_missing_folders(tmp_path, caplog):
    pkg = write_recola_package(tmp_path / "pkg", train=1, dev=1, duration_s=2.0)
    shutil.rmtree(tmp_path / "pkg" / "features_video_appearance" / "arousal")
    with caplog.at_level(logging.WARNING):
        layout = recola.scan_package(pkg.root, _config("logmel"))
    assert [s.key for s in layout.streams] == ["audio", "ecg", "video_geometric"]
    assert "features_video_appearance" in caplog.text
    shutil.rmtree(tmp_path / "pkg" / "recordings_audio")
    assert [s.key for s in recola.scan_package(pkg.root, _config("logmel")).streams] == [
        "ecg", "video_geometric"]
    os.remove(tmp_path / "pkg" / "features_ECG" / "arousal" / "dev_1.arff")  # an incomplete folder
    layout = recola.scan_package(pkg.root, _config("logmel"))
    assert [s.key for s in layout.streams] == ["video_geometric"]
    assert "features_ECG/arousal/dev_1.arff" in layout.left_out[os.path.join(pkg.root, "features_ECG", "arousal")]
    for folder in ("features_ECG", "features_video_geometric"):
        shutil.rmtree(tmp_path / "pkg" / folder)
    with pytest.raises(FileNotFoundError, match="no usable modality"):
        recola.scan_package(pkg.root, _config("egemaps"))
    shutil.rmtree(tmp_path / "pkg" / "ratings_gold_standard" / "valence")
    with pytest.raises(FileNotFoundError, match=r"ratings_gold_standard/valence: gold-standard folder"):
        recola.scan_package(pkg.root, _config("functionals"))


def test_gold_standard_errors(tmp_path):
    pkg = write_recola_package(tmp_path / "pkg", train=1, dev=1, duration_s=2.0, dims={"ECG": 2},
                               write_audio=False)
    os.remove(tmp_path / "pkg" / "ratings_gold_standard" / "arousal" / "dev_1.arff")
    with pytest.raises(FileNotFoundError, match=r"arousal/dev_1\.arff: not found, but valence"):
        recola.scan_package(pkg.root, _config("functionals"))
    os.remove(tmp_path / "pkg" / "ratings_gold_standard" / "valence" / "dev_1.arff")
    with pytest.raises(FileNotFoundError, match=r"arousal/dev_\*\.arff: no gold standard .* validation"):
        recola.scan_package(pkg.root, _config("functionals"))
    gold = tmp_path / "pkg" / "ratings_gold_standard" / "valence" / "train_1.arff"
    gold.write_text(gold.read_text().rsplit("\n", 2)[0] + "\n")  # drop the last frame
    write_recola_package(tmp_path / "pkg", train=0, dev=1, duration_s=2.0, dims={}, write_audio=False)
    layout = recola.scan_package(pkg.root, _config("functionals"))
    with pytest.raises(recola.RecolaError, match="arousal/train_1.arff has 51 frames but .*valence"):
        recola.load_example(layout, "train_1", _config("functionals"))


def test_feature_dimension_or_missing_values_differing_from_the_header_is_an_error(tmp_path):
    pkg = write_recola_package(tmp_path / "pkg", train=1, dev=1, duration_s=1.0, dims={"ECG": 3},
                               write_audio=False)
    write_recola_package(tmp_path / "other", train=0, dev=1, duration_s=1.0, dims={"ECG": 4},
                         write_audio=False)
    shutil.copy(tmp_path / "other" / "features_ECG" / "arousal" / "dev_1.arff",
                tmp_path / "pkg" / "features_ECG" / "arousal")
    layout = recola.scan_package(pkg.root, _config("functionals"))
    assert layout.streams[0].dim == 3  # from the first recording's header
    with pytest.raises(recola.RecolaError, match=r"ECG/arousal/dev_1\.arff: 4 feature attributes, expected 3"):
        recola.load_example(layout, "dev_1", _config("functionals"))
    path = tmp_path / "pkg" / "features_ECG" / "arousal" / "train_1.arff"
    text = path.read_text().splitlines()
    row = next(i for i, line in enumerate(text) if line.startswith("train_1,0.08,"))
    text[row] = "train_1,0.08,?," + text[row].split(",", 3)[3]  # ARFF's missing value
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(recola.RecolaError, match=r"train_1\.arff: missing"):
        recola.load_example(layout, "train_1", _config("functionals"))


def test_test_split_only_with_test_gold_standards(tmp_path, caplog):
    pkg = write_recola_package(tmp_path / "pkg", train=1, dev=1, test=2, test_labels=False,
                               duration_s=2.0, dims={"video_geometric": 3}, write_audio=False)
    with caplog.at_level(logging.INFO):
        layout = recola.scan_package(pkg.root, _config("functionals"))
    assert layout.recordings == {"train": ("train_1",), "validation": ("dev_1",)}
    assert "no test split" in caplog.text
    write_recola_package(tmp_path / "pkg", train=1, dev=1, test=2, duration_s=2.0,
                         dims={"video_geometric": 3}, write_audio=False)
    assert recola.scan_package(pkg.root, _config("functionals")).recordings["test"] == ("test_1", "test_2")


def test_recordings_in_natural_order(tmp_path):
    pkg = write_recola_package(tmp_path / "pkg", train=11, dev=1, duration_s=0.2, dims={"ECG": 1},
                               write_audio=False)
    names = recola.scan_package(pkg.root, _config("functionals")).recordings["train"]
    assert names[:3] == ("train_1", "train_2", "train_3") and names[-2:] == ("train_10", "train_11")


def test_pool_to_label_frames_known_values():
    # 10 ms frames centred at 0.01, 0.02, ...: label frame t pools centres in [0.04t-0.02, 0.04t+0.02)
    centres = 0.01 * np.arange(1, 10)
    values = np.arange(1, 10, dtype=np.float64)[:, None] * [1.0, -1.0]
    out = recola.pool_to_label_frames(values, centres, num_frames=5)
    np.testing.assert_allclose(out[:, 0], [1.0, 3.5, 7.5, 7.5, 7.5])  # frames 3-4 copy frame 2
    np.testing.assert_allclose(out[:, 1], -out[:, 0])
    # Empty label frames copy the nearest filled one (a tie goes to the later frame).
    out = recola.pool_to_label_frames(np.array([[1.0], [2.0]]), np.array([0.0, 0.17]), num_frames=6)
    np.testing.assert_allclose(out[:, 0], [1, 1, 2, 2, 2, 2])


def test_egemaps_config(tmp_path):
    pytest.importorskip("opensmile", reason="opensmile (pip install opensmile==2.6.0) not installed")
    pkg = write_recola_package(tmp_path / "pkg", train=1, dev=1, duration_s=8.0, sample_rate=22050,
                               dims={"video_geometric": 3})
    builder = _build(pkg.root, tmp_path / "data", "egemaps")
    assert builder.info.metadata["feature_dims"]["audio"] == 25
    ex = builder.as_data_source()["train"][0]
    assert ex["audio"].shape == (pkg.num_frames, 25) and np.isfinite(ex["audio"]).all()
    t = np.arange(pkg.num_frames) * 0.04
    loudness = ex["audio"][:, 0]  # Loudness_sma3 follows the fixture's 0.25 Hz envelope
    assert np.corrcoef(loudness[5:-5], np.sin(2 * np.pi * 0.25 * t)[5:-5])[0, 1] > 0.8
