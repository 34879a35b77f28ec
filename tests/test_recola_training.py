"""RECOLA end to end on an AVEC-layout fixture: training improves CCC over the untrained model."""
import functools

import jax
import pytest

from configs import recola
from conftest import small_run
from emobed_jax.evaluation import evaluators
from emobed_jax.training import experiment, state as ts, train
from recola_fixtures import write_recola_package


@pytest.fixture(scope="module")
def recola_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("avec2016")
    write_recola_package(root, train=3, dev=1, duration_s=20.0, signal=1.5,
                         dims={"video_geometric": 6, "video_appearance": 4})
    config = recola.get_config("emobed,audio")
    config.data.manual_dir = str(root)
    config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    config.modalities = ("audio", "video_geometric")
    config.data.label_delay_s.arousal = 0.4
    config.data.label_delay_s.valence = 0.4
    small_run(config, steps=60, eval_every=30, **{
        "data.window_frames": 100, "data.window_hop_frames": 50, "eval_batch_size": 2,
        "postprocess.median_window_frames": 5, "postprocess.bias_scale": "center_scale"})
    return config


def test_training_improves_ccc_over_untrained(recola_config, tmp_path):
    exp = experiment.build(recola_config, devices=jax.devices()[:1])
    assert set(exp.splits) == {"train", "validation"}  # no test gold standard -> no test split
    assert exp.info.feature_dims == {"audio": 40, "video_geometric": 6}
    init_rng, _ = experiment.init_rngs(recola_config.seed)
    state = ts.create_state(exp.model, recola_config, exp.example_batch(), init_rng)
    predict = exp.par.compile_predict(functools.partial(
        ts.predict_step, apply_fn=state.apply_fn, modalities=("audio",)))
    untrained, _, _ = evaluators.evaluate_split(exp, state.params, predict, "validation")

    results = train.train_and_evaluate(recola_config, str(tmp_path), devices=jax.devices()[:1])
    val = results["metrics"]["validation"]
    assert set(results["metrics"]) == {"validation"}
    assert {"ccc_arousal", "ccc_valence", "ccc_arousal_per_recording", "ccc_arousal_raw"} <= set(val)
    # The fixture's audio carries arousal (loudness); compare before post-processing, which
    # (fitted on training predictions) already helps an untrained network.
    assert val["ccc_arousal_raw"] > untrained["ccc_arousal_raw"] + 0.2, (untrained, val)
    assert val["ccc_arousal"] > 0.5
