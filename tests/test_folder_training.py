"""A corpus of one's own end to end: the example corpus (experiments/make_example_corpus.py) read
by `emotion_folder`, trained, evaluated from the workdir alone, predicted from its source files,
exported, and run through the ablation, with three label dimensions carried everywhere."""
import csv
import json
import os
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import make_example_corpus  # noqa: E402

from configs import folder  # noqa: E402
from emobed_jax import ablation  # noqa: E402
from emobed_jax.data import pipeline  # noqa: E402
from emobed_jax.inference import export, media, recognizer as recognizer_lib  # noqa: E402
from emobed_jax.training import train  # noqa: E402

NAMES = ["arousal", "valence", "dominance"]


def _config(corpus, data_dir, arg, **overrides):
    config = folder.get_config(arg)
    config.data.manual_dir, config.data.data_dir = str(corpus), str(data_dir)
    # Small and fast: a convolutional encoder (outputs at a frame depend on a few neighbours
    # only, which the prediction test relies on), short windows, few steps.
    config.model.encoder = "conv"
    config.model.hidden = config.model.embedding_dim = 16
    config.data.window_frames, config.data.window_hop_frames = 50, 25
    config.batch_size = config.eval_batch_size = 8
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 12
    config.log_every_steps = 6
    config.eval_splits = ("validation",)
    for key, value in overrides.items():
        node = config
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return config


@pytest.fixture(scope="module")
def frame_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    corpus = root / "corpus"
    make_example_corpus.write_corpus(corpus, train=3, validation=2, test=1, duration_s=12.0)
    return corpus, root / "data"


@pytest.fixture(scope="module")
def video_run(frame_corpus, tmp_path_factory):
    """EmoBed with the 30 fps video CSV as the target, three label dimensions; trained, then
    evaluated from the workdir alone (which writes the prediction CSV)."""
    corpus, data_dir = frame_corpus
    workdir = str(tmp_path_factory.mktemp("video_run"))
    results = train.train_and_evaluate(_config(corpus, data_dir, "emobed,video"), workdir,
                                       devices=jax.devices()[:1])
    evaluated = train.evaluate_checkpoint(None, workdir, plots=False, devices=jax.devices()[:1])
    return workdir, results, evaluated


def test_every_label_dimension_is_learned_scored_and_written(video_run):
    workdir, results, _ = video_run
    validation = results["metrics"]["validation"]
    assert {f"ccc_{n}" for n in NAMES} | {"ccc_mean"} <= set(validation)
    assert validation["ccc_mean"] == pytest.approx(np.mean([validation[f"ccc_{n}"] for n in NAMES]))
    with open(os.path.join(workdir, "run.json")) as f:
        dataset = json.load(f)["dataset"]
    assert dataset["label_names"] == NAMES and dataset["level"] == "frame"
    with open(os.path.join(workdir, "predictions_validation.csv")) as f:
        header = next(csv.reader(f))
    assert header == ["recording", "frameTime"] + NAMES + [f"{n}_gold" for n in NAMES]


def test_eval_from_the_workdir_alone_reproduces_training(video_run):
    workdir, _, evaluated = video_run
    with open(os.path.join(workdir, "results.json")) as f:
        stored = json.load(f)
    for key in [f"ccc_{n}" for n in NAMES]:
        assert evaluated["validation"][key] == pytest.approx(
            stored["metrics"]["validation"][key], abs=1e-5)


def _eval_predictions(workdir, recording):
    with open(os.path.join(workdir, "predictions_validation.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["recording"] == recording]
    return np.asarray([[float(r[n]) for n in NAMES] for r in rows])


def test_predicting_the_source_csv_matches_evaluation(video_run, frame_corpus):
    """The raw 30 fps CSV, read by predict's media reader and pooled by the training rule, gives
    the evaluation's predictions for that recording (conv encoder: equal away from the end,
    where the file's last frame sets the grid's length)."""
    workdir, _, _ = video_run
    corpus, _ = frame_corpus
    rec = recognizer_lib.Recognizer.from_workdir(workdir)
    for recording in ("validation_01", "validation_02"):  # _01 starts 0.2 s late: padded
        track = media.read_input(str(corpus / "video" / f"{recording}.csv"), rec)
        assert track.times[0] == 0.0 and track.times[1] == pytest.approx(0.04)
        ours = rec.predict_features(track.features, track.valid).outputs
        evaluated = _eval_predictions(workdir, recording)
        n = min(len(ours), len(evaluated)) - 8
        assert n > 250
        np.testing.assert_allclose(ours[:n], evaluated[:n], atol=2e-4)


def test_label_subset_and_delays_by_name(frame_corpus):
    corpus, data_dir = frame_corpus
    config = _config(corpus, data_dir, "emobed,video", **{
        "data.label_names": ("dominance", "arousal"),
        "data.label_delay_s": {"dominance": 0.4}})
    data = pipeline.load(config)
    assert data.info.label_names == ("dominance", "arousal")
    np.testing.assert_array_equal(data.delays, [10, 0])
    train_split = data.splits["train"]
    assert train_split.targets[0].shape[1] == 2
    # dominance is shifted by 10 frames, arousal is not.
    np.testing.assert_array_equal(train_split.targets[0][:20, 0],
                                  train_split.data.regression[0][10:30, 0])
    np.testing.assert_array_equal(train_split.targets[0][:, 1], train_split.data.regression[0][:, 1])


def test_export_describes_three_dimensions(video_run, tmp_path):
    workdir, _, _ = video_run
    out = str(tmp_path / "export")
    export.export_run(workdir, out, platforms=("cpu",))
    loaded = export.load(out)
    assert loaded.sidecar["label_names"] == NAMES
    rec = recognizer_lib.Recognizer.from_workdir(workdir)
    x = np.random.default_rng(0).normal(size=(64, rec.input_dim)).astype(np.float32)
    expected = rec.predict_features(x).outputs
    got = loaded.functions["predict_features"].call(x[None], np.asarray([64], np.int32))
    got = got["outputs"] if isinstance(got, dict) else got
    np.testing.assert_allclose(np.asarray(got)[0], expected, atol=1e-4)


def test_ablation_on_an_utterance_level_corpus_with_categories_from_the_data(tmp_path):
    """The ablation on the utterance-level example corpus: EmoBed (whose objective holds the
    joint and the crossmodal terms; every method's terms are checked exactly in test_objective,
    the paired tests against monomodal in test_ablation), two seeds, classes from its
    labels.csv, the table from the category metrics."""
    corpus = tmp_path / "corpus"
    make_example_corpus.write_corpus(corpus, level="utterance", train=2, validation=1, test=0,
                                     duration_s=20.0)
    config = _config(corpus, tmp_path / "data", "monomodal,video,category", **{
        "num_train_steps": 4, "eval_every_steps": 4, "checkpoint_every_steps": 4})
    methods = ("emobed",)
    runs = ablation.run_ablation(config, str(tmp_path / "ablation"), 2, methods, ("video",),
                                 devices=jax.devices()[:1])
    table = ablation.write_reports(str(tmp_path / "ablation"), runs, methods, ("video",),
                                   "category", 2)
    cells = table["all"]["validation"]["video"]
    assert set(cells) == set(methods)
    assert list(cells["emobed"]) == ["accuracy", "uar", "macro_f1"]
    assert len(cells["emobed"]["uar"]["values"]) == 2
    with open(tmp_path / "ablation" / "all" / "emobed_video" / "run.json") as f:
        dataset = json.load(f)["dataset"]
    assert dataset["level"] == "utterance"
    assert dataset["class_names"] == ["neutral", "happy", "angry", "sad"]
