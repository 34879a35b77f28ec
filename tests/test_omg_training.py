"""OMG-Emotion end to end on a fixture of real CSV rows: training beats chance, eval exports
predictions in the official row order, and the monomodal evaluation needs no video."""
import csv
import os

import jax
import numpy as np
import pytest

from configs import omg_emotion
from conftest import small_run
from emobed_jax.training import train
from omg_fixtures import write_omg_manual_dir


def _config(manual_dir, data_dir, arg):
    config = omg_emotion.get_config(arg)
    config.data.manual_dir = str(manual_dir)
    config.data.data_dir = str(data_dir)
    return small_run(config, steps=60, eval_every=30, **{
        "data.max_frames": 200, "model.num_layers": 2, "eval_batch_size": 8})


@pytest.fixture(scope="module")
def omg_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("omg")
    fixture = write_omg_manual_dir(root / "manual", copies=3)
    return fixture, root / "manual", tmp_path_factory.mktemp("tfds")


def test_category_training_beats_chance_and_exports_official_order(omg_dirs, tmp_path):
    fixture, manual, data_dir = omg_dirs
    config = _config(manual, data_dir, "emobed,audio,category")
    results = train.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
    val = results["metrics"]["validation"]
    present = len({r.category for r in fixture.kept("validation") if r.audio_kind})
    assert val["num_examples"] == sum(1 for r in fixture.kept("validation") if r.audio_kind)
    assert val["num_missing_modality"] == sum(1 for r in fixture.kept("validation") if not r.audio_kind)
    assert val["uar"] > 1.0 / present + 0.15, (val, present)
    assert results["dataset"]["metadata"]["skipped"]["train"]["invalid_category"] == 3

    out = train.evaluate_checkpoint(config, str(tmp_path), splits=["validation"],
                                    devices=jax.devices()[:1])
    assert out["validation"]["uar"] == pytest.approx(val["uar"])
    with open(os.path.join(tmp_path, "predictions_validation.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(manual, "omg_ValidationVideos.csv")) as f:
        official = list(csv.DictReader(f))
    assert [(r["video"], r["utterance"]) for r in rows] == [(r["video"], r["utterance"]) for r in official]
    assert list(rows[0]) == ["video", "utterance", "arousal", "valence", "category", "has_media"]
    with_audio = {f"{r.video}/{os.path.splitext(r.utterance)[0]}" for r in fixture.kept("validation")
                  if r.audio_kind}
    for r in rows:
        name = f"{r['video']}/{os.path.splitext(r['utterance'])[0]}"
        assert r["has_media"] == ("1" if name in with_audio else "0")
    assert os.path.exists(os.path.join(tmp_path, "plot_confusion_validation.png"))
    assert os.path.exists(os.path.join(tmp_path, "plot_embeddings_validation.png"))


def test_regression_task_reports_official_and_per_video_ccc(omg_dirs, tmp_path):
    _, manual, data_dir = omg_dirs
    config = _config(manual, data_dir, "joint,video,regression")
    config.num_train_steps = 10
    results = train.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
    val = results["metrics"]["validation"]
    # Recompute the official and the per-video CCC from the exported CSV (official order, the
    # video branch alone) and the official gold labels, in float64 by the formula.
    train.evaluate_checkpoint(None, str(tmp_path), splits=["validation"], plots=False,
                              devices=jax.devices()[:1])
    with open(os.path.join(tmp_path, "predictions_validation.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["has_media"] == "1"]
    with open(os.path.join(manual, "omg_ValidationVideos.csv")) as f:
        gold = {(r["video"], r["utterance"]): r for r in csv.DictReader(f)}
    assert len(rows) == val["num_examples"] > 3

    def ccc(x, y):
        cov = np.mean((x - x.mean()) * (y - y.mean()))
        return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)

    videos = np.asarray([r["video"] for r in rows])
    for dim in ("arousal", "valence"):
        pred = np.asarray([float(r[dim]) for r in rows])
        true = np.asarray([float(gold[(r["video"], r["utterance"])][dim]) for r in rows])
        assert val[f"ccc_{dim}"] == pytest.approx(ccc(pred, true), abs=1e-5)
        per_video = [ccc(pred[videos == v], true[videos == v]) for v in np.unique(videos)]
        assert val[f"ccc_{dim}_per_video"] == pytest.approx(np.mean(per_video), abs=1e-5)
