"""A run directory stands alone: run.json and normalization.npz; eval uses the stored run (and
refuses a config that contradicts it); --output_dir for read-only workdirs."""
import json
import os

import jax
import numpy as np
import pytest

from cli_helpers import run_main
from emobed_jax import run_dir
from emobed_jax.data import pipeline
from emobed_jax.datasets import synthetic_emotion
from emobed_jax.training import train


@pytest.fixture(scope="module")
def video_run(synthetic_data_dir, tmp_path_factory):
    """A tiny trained run whose target is video (the base config's target is audio)."""
    from conftest import make_tiny_config

    config = make_tiny_config(synthetic_data_dir, method="emobed", target_modality="video",
                              **{"model.encoder": "conv", "num_train_steps": 6,
                                 "eval_every_steps": 3, "checkpoint_every_steps": 3})
    workdir = str(tmp_path_factory.mktemp("video_run"))
    results = train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    return config, workdir, results


def test_run_json_records_the_run(video_run, synthetic_data_dir):
    config, workdir, _ = video_run
    stored = run_dir.read(workdir)
    assert stored["config"].to_dict() == json.loads(json.dumps(config.to_dict()))
    dataset = stored["dataset"]
    assert dataset["modalities"] == ["audio", "video"] and dataset["level"] == "frame"
    assert dataset["feature_dims"] == {"audio": 40, "video": len(synthetic_emotion.VIDEO_FEATURE_NAMES)}
    assert dataset["label_names"] == ["arousal", "valence"] and dataset["frame_rate_hz"] == 25.0
    assert dataset["label_delay_frames"] == [0, 0]
    assert dataset["class_names"] == list(synthetic_emotion.CATEGORY_NAMES)
    audio = stored["feature_settings"]["audio"]
    assert (audio["kind"], audio["sample_rate"], audio["n_mels"], audio["frame_hop_s"]) == (
        "log_mel", 16000, 40, 0.04)
    assert stored["jax_version"] == jax.__version__
    # The stored normalisation statistics are the training split's.
    stats = pipeline.load(config).stats
    for m in ("audio", "video"):
        np.testing.assert_array_equal(stored["stats"][m][0], stats[m][0])
        np.testing.assert_array_equal(stored["stats"][m][1], stats[m][1])


def test_eval_without_config_scores_the_trained_target(video_run, tmp_path):
    _, workdir, results = video_run
    out = train.evaluate_checkpoint(None, workdir, splits=["validation"], plots=False,
                                    output_dir=str(tmp_path), devices=jax.devices()[:1])
    val = out["validation"]
    assert val["step"] == results["best_step"]
    for key in ("ccc_arousal", "ccc_valence", "ccc_mean"):
        assert val[key] == pytest.approx(results["metrics"]["validation"][key], abs=1e-9), key
    assert (tmp_path / "eval_validation.json").exists()
    assert (tmp_path / "predictions_validation.csv").exists()
    assert not os.path.exists(os.path.join(workdir, "eval_validation.json"))


def test_eval_into_an_unwritable_folder_stops_before_evaluating(video_run, tmp_path, monkeypatch):
    _, workdir, _ = video_run
    blocked = tmp_path / "file"
    blocked.write_text("")  # a folder below a regular file cannot be created, even by root
    monkeypatch.setattr(train.experiment, "build", lambda *a, **k: pytest.fail("evaluated"))
    with pytest.raises(PermissionError, match=r"--output_dir=.*file/out' is not writable .*pass "
                                              r"--output_dir=DIR"):
        train.evaluate_checkpoint(None, workdir, output_dir=str(blocked / "out"))


def test_a_contradicting_config_is_refused_naming_the_keys(video_run):
    config, workdir, _ = video_run
    other = config.copy_and_resolve_references()
    other.target_modality = "audio"
    other.model.embedding_dim = 24
    with pytest.raises(ValueError) as e:
        train.evaluate_checkpoint(other, workdir, plots=False, devices=jax.devices()[:1])
    message = str(e.value)
    assert "target_modality: run 'video' vs passed 'audio'" in message
    assert "model.embedding_dim: run 16 vs passed 24" in message
    # Evaluation-only settings may differ.
    allowed = config.copy_and_resolve_references()
    allowed.eval_batch_size = 2
    allowed.eval_splits = ("validation",)
    assert run_dir.check_overrides(run_dir.read(workdir)["config"], allowed).eval_batch_size == 2


def test_resuming_with_another_model_is_refused(video_run):
    config, workdir, _ = video_run
    other = config.copy_and_resolve_references()
    other.model.hidden = 32
    with pytest.raises(ValueError, match=r"model.hidden: run 16 vs passed 32"):
        train.train_and_evaluate(other, workdir, devices=jax.devices()[:1])


def test_workdir_without_run_json(tmp_path):
    with pytest.raises(run_dir.RunDirError, match=r"run.json does not exist: .* is not a training "
                                                    r"workdir of this version"):
        run_dir.read(str(tmp_path))


def test_cli_eval_needs_only_the_workdir(video_run, tmp_path):
    _, workdir, results = video_run
    proc = run_main([f"--workdir={workdir}", "--mode=eval", "--eval_splits=validation",
                     f"--output_dir={tmp_path}"])
    assert f"evaluated step {results['best_step']} of {workdir}" in proc.stdout
    assert str(tmp_path) in proc.stdout
    with open(tmp_path / "eval_validation.json") as f:
        assert json.load(f)["ccc_mean"] == pytest.approx(
            results["metrics"]["validation"]["ccc_mean"], abs=1e-9)
    proc = run_main([f"--workdir={tmp_path / 'empty'}", "--mode=eval"], expect_ok=False)
    assert proc.returncode == 1 and "run.json does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
