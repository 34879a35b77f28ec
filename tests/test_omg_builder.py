"""Tests for the omg_emotion tfds builder on a fixture manual_dir (real CSV rows, synthetic media)."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from emobed_jax.datasets import omg_emotion
from emobed_jax.features import audio as audio_lib
from omg_fixtures import write_omg_manual_dir


def _build(manual_dir, data_dir, config=None):
    kwargs = {"data_dir": str(data_dir)}
    if config is not None:
        kwargs["config"] = config
    builder = omg_emotion.OmgEmotion(**kwargs)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _examples(builder, split):
    source = builder.as_data_source()[split]
    return {ex["name"].decode(): ex for ex in (source[i] for i in range(len(source)))}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("omg")
    fixture = write_omg_manual_dir(root / "manual", with_test=True)
    return fixture, _build(fixture.manual_dir, root / "data")


def test_splits_and_counts(built):
    fixture, builder = built
    assert set(builder.info.splits) == {"train", "validation", "test"}
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
        "train": 10, "validation": 5, "test": 5}
    metadata = builder.info.metadata
    assert metadata["modalities"] == ["audio", "video"]
    assert metadata["rows"] == {"train": 13, "validation": 6, "test": 6}
    assert metadata["skipped"]["train"] == {"invalid_category": 1, "no_media": 2}
    assert metadata["missing"]["train"] == {"audio": 1, "video": 1}
    for split in ("train", "validation", "test"):
        assert metadata["skipped"][split] == fixture.expected_skipped(split)
        assert metadata["missing"][split] == fixture.expected_missing(split)
    train = [r for r in fixture.rows["train"] if r.category is not None]
    assert metadata["train_mean"]["arousal"] == pytest.approx(np.mean([r.arousal for r in train]))
    assert metadata["train_mean"]["valence"] == pytest.approx(np.mean([r.valence for r in train]))
    # Metadata survives a reload from disk.
    reloaded = omg_emotion.OmgEmotion(data_dir=builder.data_dir.rsplit("/omg_emotion", 1)[0])
    assert reloaded.info.metadata["skipped"] == metadata["skipped"]


def test_feature_spec(built):
    _, builder = built
    features = builder.info.features
    assert features["category"].names == ["Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad",
                                          "Surprise"]
    assert features["audio"].shape == (None, 40) and features["video"].shape == (None, 49)
    assert features["video_mask"].shape == (None,) and features["arousal"].shape == ()


@pytest.mark.parametrize("split", ["train", "validation"])
def test_examples_match_csv_rows_and_media(built, split):
    fixture, builder = built
    examples = _examples(builder, split)
    expected = fixture.kept(split)
    assert sorted(examples) == sorted(r.name for r in expected)
    for row in expected:
        ex = examples[row.name]
        assert ex["row_index"] == row.row_index and ex["category"] == row.category
        assert ex["video_id"].decode() == row.video and ex["utterance"].decode() == row.utterance
        assert ex["arousal"] == np.float32(row.arousal) and ex["valence"] == np.float32(row.valence)
        if row.audio_kind is None:
            assert ex["audio"].shape == (0, 40)
        else:
            assert ex["audio"].shape == (row.audio_frames, 40) and np.isfinite(ex["audio"]).all()
        if row.video_kind is None:
            assert ex["video"].shape == (0, 49) and ex["video_mask"].shape == (0,)
        else:
            np.testing.assert_allclose(ex["video"], row.video_features, atol=1e-6)
            np.testing.assert_array_equal(ex["video_mask"], row.video_mask)


def test_row_details(built):
    fixture, builder = built
    train = _examples(builder, "train")
    assert "5b44393ed/utterance_13" not in train   # empty EmotionMaxVote
    assert "5b44393ed/utterance_9" not in train    # no media at all
    surprise = train["68062fe15_1/utterance_4"]
    assert surprise["category"] == 6 and surprise["row_index"] == 11
    assert surprise["arousal"] == np.float32(0.576723839964)
    assert not surprise["video_mask"].any()        # every OpenFace frame failed
    # 44.1 kHz stereo is mixed down and resampled by the shared audio code.
    stereo = train["5b44393ed/utterance_6"]
    wav = fixture.manual_dir / "audio" / "5b44393ed" / "utterance_6.wav"
    np.testing.assert_allclose(stereo["audio"], audio_lib.log_mel_frames(
        audio_lib.load_audio(wav), 16000), atol=1e-5)
    # The fixture tone's pitch follows the category: Anger 300 Hz < Happy 750 Hz < Neutral 900 Hz.
    peaks = [np.argmax(train[name]["audio"].mean(axis=0)) for name in (
        "5b44393ed/utterance_10", "5b44393ed/utterance_6", "5b44393ed/utterance_4")]
    assert peaks[0] < peaks[1] < peaks[2]


def test_no_test_split_without_labelled_test_csv(tmp_path):
    fixture = write_omg_manual_dir(tmp_path / "manual")
    builder = _build(fixture.manual_dir, tmp_path / "data")
    assert set(builder.info.splits) == {"train", "validation"}


def test_npy_visual_source(tmp_path):
    fixture = write_omg_manual_dir(tmp_path / "manual", visual="npy", npy_dim=7)
    config = omg_emotion.OmgEmotionConfig(name="npy7", visual_source="npy", visual_dim=7)
    builder = _build(fixture.manual_dir, tmp_path / "data", config=config)
    assert builder.info.features["video"].shape == (None, 7)
    examples = _examples(builder, "validation")
    for row in fixture.kept("validation"):
        if row.video_kind is not None:
            np.testing.assert_allclose(examples[row.name]["video"], row.video_features)
            np.testing.assert_array_equal(examples[row.name]["video_mask"], row.video_mask)
    assert builder.info.metadata["missing"]["validation"] == {"audio": 1, "video": 1}


def _finished(data_dir):
    """Files of a finished (or half-written) build under data_dir."""
    if not data_dir.exists():
        return []
    return [p for p in data_dir.rglob("*") if p.name == "dataset_info.json" or "array_record" in p.name]


def test_split_without_media_is_an_error(tmp_path):
    fixture = write_omg_manual_dir(tmp_path / "manual")
    for row in fixture.rows["validation"]:
        for sub, ext in (("audio", "wav"), ("openface", "csv")):
            path = fixture.manual_dir / sub / row.video / f"{row.utterance[:-4]}.{ext}"
            path.unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"split 'validation' would be empty: .*"
                                         r"omg_ValidationVideos\.csv has 6 rows"):
        _build(fixture.manual_dir, tmp_path / "data")
    assert _finished(tmp_path / "data") == []


def test_corrupt_media_is_an_error_naming_the_file(tmp_path):
    fixture = write_omg_manual_dir(tmp_path / "manual")
    wav = fixture.manual_dir / "audio" / "4ae5ecb00_1" / "utterance_1.wav"
    wav.write_bytes(wav.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"4ae5ecb00_1/utterance_1\.wav"):
        _build(fixture.manual_dir, tmp_path / "data")
    assert _finished(tmp_path / "data") == []


def test_read_annotations(tmp_path):
    header = "link,start,end,video,utterance,arousal,valence,EmotionMaxVote\n"
    path = tmp_path / "a.csv"
    path.write_text(header + "l,0,1,v1,utterance_1.mp4,0.5,-0.25,3.0\n"
                    "l,1,2,v1,utterance_2.mp4,0.1,0.2,\n"
                    "l,2,3,v1,utterance_3.mp4,0.1,0.2,\n"
                    "l,3,4,v2,utterance_1.mp4,0,0.9,6\n")
    rows, invalid = omg_emotion.read_annotations(path)
    assert invalid == 2
    assert [(r.row_index, r.name, r.category) for r in rows] == [
        (0, "v1/utterance_1", 3), (3, "v2/utterance_1", 6)]
    assert rows[0].valence == -0.25
    path.write_text(header + "l,0,1,v1,utterance_1.mp4,high,0.2,3\n")
    with pytest.raises(ValueError, match=r"a\.csv, line 2, field 'arousal': expected a number"):
        omg_emotion.read_annotations(path)
    path.write_text(header + "l,0,1,v1,utterance_1.mp4,0.1,0.2,3\nl,0,1,v1,utterance_1.mp4,0,0,1\n")
    with pytest.raises(ValueError, match=r"line 3: utterance 'v1/utterance_1' already on line 2"):
        omg_emotion.read_annotations(path)
    path.write_text("link,start,end,video,utterance\nl,0,1,v1,utterance_1.mp4\n")
    with pytest.raises(ValueError, match=r"a\.csv: missing columns \['arousal', 'valence', "
                                         r"'EmotionMaxVote'\]"):
        omg_emotion.read_annotations(path)


def test_config_validation():
    with pytest.raises(ValueError, match="needs a positive visual_dim"):
        omg_emotion.OmgEmotionConfig(name="x", visual_source="npy")
    with pytest.raises(ValueError, match="must be 'openface' or 'npy'"):
        omg_emotion.OmgEmotionConfig(name="x", visual_source="hog")
    with pytest.raises(ValueError, match="unknown or empty column groups"):
        omg_emotion.OmgEmotionConfig(name="x", openface_groups=("au_intensity", "smile"))
    assert omg_emotion.OmgEmotionConfig(name="lm", openface_groups=("landmarks_2d",)).video_dim == 136
