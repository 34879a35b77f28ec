"""Tests for the embedded synthetic_emotion tfds builder (tiny config, built into tmp dirs)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from emobed_jax.datasets import synthetic_emotion as se
from emobed_jax.datasets.synthetic_emotion import SyntheticEmotion, SyntheticEmotionConfig

SPLIT_SIZES = {"train": 8, "validation": 4, "test": 4}
T_TINY = 8 * 25 + 1


def _build(data_dir):
    builder = SyntheticEmotion(config="tiny", data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder


def _load(builder) -> dict[str, list[dict]]:
    """All examples per split, sorted by name (tfds stores them in hashed-key order)."""
    sources = builder.as_data_source()
    out = {}
    for split, source in sources.items():
        examples = [source[i] for i in range(len(source))]
        out[split] = sorted(examples, key=lambda e: e["name"])
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    builder = _build(tmp_path_factory.mktemp("synthetic_a"))
    return builder, _load(builder)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_split_sizes_shapes_and_ranges(built):
    builder, data = built
    assert {s: len(v) for s, v in data.items()} == SPLIT_SIZES
    assert builder.info.metadata["modalities"] == ["audio", "video"]
    for split, examples in data.items():
        assert sorted(_text(e["name"]) for e in examples) == sorted(
            f"{split}_{i + 1}" for i in range(SPLIT_SIZES[split]))
        for ex in examples:
            assert ex["audio"].shape == (T_TINY, 40) and ex["audio"].dtype == np.float32
            assert ex["video"].shape == (T_TINY, 20) and ex["video"].dtype == np.float32
            assert ex["video_mask"].shape == (T_TINY,) and ex["video_mask"].dtype == np.bool_
            for key in ("arousal", "valence"):
                assert ex[key].shape == (T_TINY,) and ex[key].dtype == np.float32
                assert np.all(np.abs(ex[key]) <= 1.0)
                assert ex[key].std() > 0.01  # a trajectory, not a constant
            assert 0 <= int(ex["category"]) < len(se.CATEGORY_NAMES)
            assert np.all(np.isfinite(ex["audio"])) and np.all(np.isfinite(ex["video"]))
            # No face => all-zero features (the RECOLA convention).
            assert np.all(ex["video"][~ex["video_mask"]] == 0.0)
            assert ex["video_mask"].mean() > 0.8


def test_recordings_differ_in_mean_emotion(built):
    _, data = built
    means = np.array([[e["arousal"].mean(), e["valence"].mean()] for e in data["train"]])
    assert means.std(axis=0).min() > 0.1


def test_speakers_disjoint_across_splits(built):
    builder, data = built
    speakers = {s: {_text(e["speaker"]) for e in v} for s, v in data.items()}
    assert speakers["train"].isdisjoint(speakers["validation"] | speakers["test"])
    assert speakers["validation"].isdisjoint(speakers["test"])
    assert len(speakers["train"]) == 4
    assert builder.info.metadata["speakers"]["test"] == ["spk05"]


def test_category_matches_documented_rule(built):
    _, data = built
    # Labels are the latent plus small noise, so their mean decides the category except near a
    # boundary; require agreement wherever the label mean is clearly inside a region.
    checked = 0
    for ex in data["train"] + data["validation"] + data["test"]:
        a, v = ex["arousal"].mean(), ex["valence"].mean()
        radius = np.hypot(a, v)
        if abs(radius - se.NEUTRAL_RADIUS) > 0.03 and min(abs(a), abs(v)) > 0.03:
            assert int(ex["category"]) == se.latent_category(a, v), _text(ex["name"])
            checked += 1
    assert checked >= 8


def test_latent_category_rule():
    names = se.CATEGORY_NAMES
    assert names[se.latent_category(0.1, -0.1)] == "neutral"
    assert names[se.latent_category(0.5, 0.4)] == "happy"
    assert names[se.latent_category(0.5, -0.4)] == "angry"
    assert names[se.latent_category(-0.5, -0.4)] == "sad"
    assert names[se.latent_category(-0.5, 0.4)] == "calm"


def test_deterministic_and_order_independent(built, tmp_path):
    _, data = built
    again = _load(_build(tmp_path / "synthetic_b"))
    for split in data:
        for ex_a, ex_b in zip(data[split], again[split]):
            assert _text(ex_a["name"]) == _text(ex_b["name"])
            for key in ("audio", "video", "video_mask", "arousal", "valence", "category"):
                np.testing.assert_array_equal(ex_a[key], ex_b[key])
    # One example generated on its own equals the built one (no dependence on generation order).
    config = SyntheticEmotion.builder_configs["tiny"]
    alone = se.generate_recording(config, "validation", 2)
    stored = next(e for e in data["validation"] if _text(e["name"]) == "validation_3")
    np.testing.assert_array_equal(alone["audio"], stored["audio"])
    np.testing.assert_array_equal(alone["valence"], stored["valence"])
    # A different seed gives different data.
    other = se.generate_recording(dataclasses.replace(config, seed=1), "validation", 2)
    assert not np.allclose(other["arousal"], stored["arousal"])


def _smooth(x: np.ndarray, width: int = 25) -> np.ndarray:
    return np.convolve(x, np.ones(width) / width, mode="valid")


def test_audio_energy_tracks_arousal(built):
    _, data = built
    examples = data["train"] + data["validation"] + data["test"]
    # Log of the total mel energy, averaged over 1 s: syllable gaps make single frames noisy.
    energy = np.concatenate([_smooth(np.log(np.exp(e["audio"]).sum(axis=1))) for e in examples])
    arousal = np.concatenate([_smooth(e["arousal"]) for e in examples])
    valence = np.concatenate([_smooth(e["valence"]) for e in examples])
    assert np.corrcoef(energy, arousal)[0, 1] > 0.5
    assert abs(np.corrcoef(energy, valence)[0, 1]) < 0.3  # audio carries valence only weakly


def test_video_smile_tracks_valence(built):
    _, data = built
    examples = data["train"] + data["validation"] + data["test"]
    mask = np.concatenate([e["video_mask"] for e in examples])
    smile = np.concatenate([e["video"][:, se.VIDEO_FEATURE_NAMES.index("AU12_lip_corner_puller")]
                            for e in examples])[mask]
    valence = np.concatenate([e["valence"] for e in examples])[mask]
    arousal = np.concatenate([e["arousal"] for e in examples])[mask]
    assert np.corrcoef(smile, valence)[0, 1] > 0.5
    assert np.corrcoef(smile, valence)[0, 1] > abs(np.corrcoef(smile, arousal)[0, 1]) + 0.3


def test_rater_delay_shifts_labels():
    config = dataclasses.replace(SyntheticEmotion.builder_configs["tiny"], label_noise_std=0.0)
    base = se.generate_recording(config, "train", 0)
    delayed = se.generate_recording(dataclasses.replace(config, rater_delay_s=0.4), "train", 0)
    np.testing.assert_allclose(delayed["arousal"][10:], base["arousal"][:-10], atol=1e-6)
    np.testing.assert_allclose(delayed["valence"][:10], base["valence"][0], atol=1e-6)
    np.testing.assert_array_equal(delayed["audio"], base["audio"])  # only the labels move


@pytest.mark.parametrize("kwargs, field", [({"num_test": 0}, "num_test"),
                                           ({"num_speakers": 2}, "num_speakers"),
                                           ({"duration_s": 1.0}, "duration_s"),
                                           ({"rater_delay_s": -1.0}, "rater_delay_s")])
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SyntheticEmotionConfig(name="bad", **kwargs)
