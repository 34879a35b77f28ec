"""The input pipeline: delay compensation, windows, determinism, normalisation, monomodal eval."""
import types

import jax
import numpy as np
import pytest

from emobed_jax.data import batching, delay, loading

from emobed_jax.training import experiment, state as ts


def test_shift_labels_on_a_hand_made_shift():
    labels = np.stack([np.arange(10.0), 100 + np.arange(10.0)], axis=-1)
    targets, valid = delay.shift_labels(labels, np.array([2, 0]))
    np.testing.assert_array_equal(targets[:8, 0], np.arange(2.0, 10.0))
    np.testing.assert_array_equal(targets[:8, 1], 100 + np.arange(8.0))
    np.testing.assert_array_equal(valid, [True] * 8 + [False] * 2)
    # Predictions made at frame t for label t + d land back on label frame t + d.
    back = delay.unshift_predictions(targets, np.array([2, 0]))
    np.testing.assert_array_equal(back[2:10, 0], np.arange(2.0, 10.0))
    np.testing.assert_array_equal(back[:2, 0], [2.0, 2.0])  # edge-padded, still scored


def test_delay_frames_from_seconds(tiny_config):
    config = tiny_config()
    config.data.label_delay_s.arousal = 2.0
    config.data.label_delay_s.valence = 0.4
    np.testing.assert_array_equal(delay.delay_frames(config, ("arousal", "valence")), [50, 10])
    # Any label dimensions: a name not configured has no delay; the order is the run's.
    np.testing.assert_array_equal(delay.delay_frames(config, ("valence", "arousal", "dominance")),
                                  [10, 50, 0])
    with pytest.raises(ValueError, match=r"names \['arousal'\], which are not label dimensions"):
        delay.delay_frames(config, ("valence", "dominance"))
    config.data.label_delay_s.valence = -1.0
    with pytest.raises(ValueError, match="expected delays >= 0"):
        delay.delay_frames(config, ("arousal", "valence"))


def _examples(lengths):
    data = loading.SplitData(
        names=[f"r{i}" for i in range(len(lengths))],
        features={"audio": [np.zeros((n, 2), np.float32) for n in lengths]},
        valid={"audio": [np.ones(n, bool) for n in lengths]},
        regression=[np.zeros((n, 2), np.float32) for n in lengths], categories=None, extra={},
        nonfinite_frames={"audio": 0})
    return batching.prepare_examples(data, "frame", "regression", ("audio",), np.array([0, 0]))


def test_window_specs_cover_every_frame():
    ex = _examples([10, 4, 7])
    specs = batching.window_specs(ex, [0, 1, 2], window=4, hop=3)
    assert specs.tolist() == [[0, 0], [0, 3], [0, 6], [1, 0], [2, 0], [2, 3]]


def test_training_stream_is_a_pure_function_of_seed_and_step(tiny_config):
    exp = experiment.build(tiny_config(), devices=jax.devices()[:1])
    a, n = exp.train_stream(0)
    b, _ = exp.train_stream(0)
    batches = [next(a) for _ in range(5)]
    for x in batches:
        jax.tree_util.tree_map(np.testing.assert_array_equal, x, next(b))
    resumed, _ = exp.train_stream(3)
    jax.tree_util.tree_map(np.testing.assert_array_equal, batches[3], next(resumed))
    assert not np.array_equal(batches[0]["features"]["audio"], batches[1]["features"]["audio"])
    other = tiny_config()
    other.seed = 1
    c, _ = experiment.build(other, devices=jax.devices()[:1]).train_stream(0)
    assert not np.array_equal(batches[0]["features"]["audio"], next(c)["features"]["audio"])
    b0 = batches[0]
    assert b0["features"]["audio"].shape == (8, 50, 40) and b0["targets"].shape == (8, 50, 2)
    assert b0["masks"]["video"].shape == (8, 50) and b0["lengths"]["audio"].tolist() == [50] * 8


def test_features_are_normalised_with_training_statistics(tiny_config):
    exp = experiment.build(tiny_config(), devices=jax.devices()[:1])
    train = exp.splits["train"].data
    frames = np.concatenate([x[v] for x, v in zip(train.features["video"], train.valid["video"])])
    np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(frames.std(0), 1.0, atol=1e-3)
    invalid = np.concatenate([x[~v] for x, v in zip(train.features["video"], train.valid["video"])])
    assert np.all(invalid == 0.0)


def test_evaluation_batches_carry_only_the_target_modality(tiny_config):
    exp = experiment.build(tiny_config(method="emobed"), devices=jax.devices()[:1])
    batches = list(batching.eval_batches(exp.splits["validation"], 4, "regression",
                                         modalities=("audio",)))
    assert all(set(b["features"]) == {"audio"} for b in batches)
    assert batches[0]["index"].tolist() == [0, 1, 2, 3]
    init_rng, _ = experiment.init_rngs(0)
    state = ts.create_state(exp.model, exp.config, exp.example_batch(), init_rng)
    assert set(state.params) >= {"encoder_video", "projector_video"}  # trained with both ...
    emb, out = ts.predict_step(state.params, batches[0], apply_fn=state.apply_fn,
                               modalities=("audio",))  # ... evaluated with audio alone
    assert set(out) == {"audio"} and out["audio"].shape[:2] == batches[0]["features"]["audio"].shape[:2]


class _FakeSource:
    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


def _fake_builder(video):
    ex = {"name": b"r0", "audio": np.ones((3, 2), np.float32), "video": video,
          "arousal": np.zeros(3, np.float32), "valence": np.zeros(3, np.float32)}
    features = {"name": None, "audio": None, "video": None, "arousal": None, "valence": None}
    return types.SimpleNamespace(name="fake", info=types.SimpleNamespace(features=features),
                                 as_data_source=lambda split: _FakeSource([ex]))


def test_nonfinite_features_are_masked_and_counted_or_raise():
    video = np.array([[1.0, 2.0], [np.nan, 0.0], [np.inf, 1.0]], np.float32)
    data = loading.read_split(_fake_builder(video), "train", ("audio", "video"), "mask")
    assert data.nonfinite_frames == {"audio": 0, "video": 2}
    assert data.valid["video"][0].tolist() == [True, False, False]
    assert np.all(np.isfinite(data.features["video"][0]))
    with pytest.raises(ValueError, match=r"example 'r0': modality 'video' has non-finite values "
                                         r"\(first at frame 1\)"):
        loading.read_split(_fake_builder(video), "train", ("audio", "video"), "raise")


def _labelled_builder(label_shape):
    """A prepared-builder stand-in whose data declare three label dimensions in metadata."""
    shape = types.SimpleNamespace
    features = {"name": None, "audio": shape(shape=(None, 2)), "video": shape(shape=(None, 3)),
                **{k: shape(shape=label_shape) for k in ("dominance", "arousal", "valence")}}
    values = {k: np.full(label_shape and (4,), v, np.float32)
              for k, v in (("dominance", 3.0), ("arousal", 1.0), ("valence", 2.0))}
    ex = {"name": b"r0", "audio": np.ones((4, 2), np.float32), "video": np.ones((4, 3), np.float32),
          **values}
    metadata = {"label_names": ["dominance", "arousal", "valence"],
                "conventions": {"frame_rate_hz": 10.0, "group_key": None}}
    info = types.SimpleNamespace(features=features, metadata=metadata,
                                 splits={"train": None, "validation": None})
    return types.SimpleNamespace(name="corpus", info=info,
                                 as_data_source=lambda split: _FakeSource([ex]))


@pytest.mark.parametrize("label_shape, level", [((None,), "frame"), ((), "utterance")])
def test_label_dimensions_come_from_the_dataset(tiny_config, label_shape, level):
    """Any label names and count: the data's order, or config.data.label_names's subset."""
    config = tiny_config()
    builder = _labelled_builder(label_shape)
    info = loading.dataset_info(builder, config)
    assert info.label_names == ("dominance", "arousal", "valence") and info.level == level
    assert info.conventions.frame_rate_hz == 10.0
    assert experiment.num_outputs(config, info) == 3
    config.data.label_names = ("valence", "dominance")
    info = loading.dataset_info(builder, config)
    assert info.label_names == ("valence", "dominance")
    data = loading.read_split(builder, "train", ("audio",), "mask", info.label_names)
    expected = [2.0, 3.0] if level == "utterance" else [[2.0, 3.0]] * 4
    np.testing.assert_array_equal(data.regression[0], expected)
    config.data.label_names = ("liking",)
    with pytest.raises(ValueError, match=r"label_names names \['liking'\].*expected a subset of "
                                         r"\['dominance', 'arousal', 'valence'\]"):
        loading.dataset_info(builder, config)


def test_predictions_csv_has_a_column_per_label_dimension(tmp_path):
    from emobed_jax.evaluation import evaluators

    data = loading.SplitData(names=["r0"], features={}, valid={}, categories=None, extra={},
                             nonfinite_frames={}, regression=[np.array([[1.0, 2.0, 3.0]] * 2)])
    examples = batching.Examples(data=data, targets=[], target_valid=[], level="frame",
                                 modalities=())
    path = tmp_path / "p.csv"
    evaluators.write_predictions(str(path), examples, [np.array([[0.5, 0.25, 0.125]] * 2)],
                                 "regression", 10.0, label_names=("a", "v", "d"))
    assert path.read_text().splitlines() == [
        "recording,frameTime,a,v,d,a_gold,v_gold,d_gold",
        "r0,0.00,0.500000,0.250000,0.125000,1.000000,2.000000,3.000000",
        "r0,0.10,0.500000,0.250000,0.125000,1.000000,2.000000,3.000000"]
    assert evaluators.metric_names("regression", "frame", None, ("d",)) >= {
        "ccc_d", "ccc_d_per_recording", "ccc_mean"}
