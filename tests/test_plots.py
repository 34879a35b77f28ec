"""Tests for emobed_jax.plots: valid PNGs, PCA against sklearn, subsampling, confusion values."""

import os

import numpy as np
import pytest
from PIL import Image

from emobed_jax.evaluation import metrics, plots

NAMES = ("arousal", "valence")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_width=200, min_height=150):
    """The file is a complete PNG of a plausible size and is the only file in its directory."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        image.load()  # decodes every chunk: fails on a truncated file
        width, height = image.size
    assert width >= min_width and height >= min_height
    # No temporary file was left next to it.
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def _recording(rng, t, noise):
    gold = np.stack([np.sin(np.arange(t) / 10.0), np.cos(np.arange(t) / 7.0)], axis=1)
    return gold + noise * rng.normal(size=gold.shape), gold


def test_plot_predictions_writes_png_and_limits_rows(tmp_path):
    rng = np.random.default_rng(0)
    recordings = [(f"dev_{i}", *_recording(rng, 100 + 10 * i, 0.2)) for i in range(5)]
    path = tmp_path / "plot_predictions_validation.png"
    assert plots.plot_predictions(path, recordings, NAMES, max_recordings=2) == str(path)
    assert_png(str(path))
    with Image.open(path) as two_rows:
        height_two = two_rows.size[1]
    path_one = tmp_path / "one" / "p.png"  # parent directory is created
    plots.plot_predictions(path_one, recordings, NAMES, max_recordings=1)
    with Image.open(path_one) as one_row:
        assert one_row.size[1] < height_two  # one row per recording, capped by max_recordings


def test_plot_predictions_overwrites_existing_file(tmp_path):
    path = tmp_path / "p.png"
    path.write_bytes(b"old content")
    gold = np.zeros((30, 2))
    plots.plot_predictions(path, [("r", gold + 0.1, gold)], NAMES)
    assert_png(str(path))


def test_plot_predictions_rejects_bad_shapes(tmp_path):
    gold = np.zeros((50, 2))
    with pytest.raises(ValueError, match=r"recording 'bad'.*\(49, 2\).*\(50, 2\)"):
        plots.plot_predictions(tmp_path / "p.png", [("bad", gold[:49], gold)], NAMES)
    with pytest.raises(ValueError, match=r"one column per name"):
        plots.plot_predictions(tmp_path / "p.png", [("r", gold[:, :1], gold[:, :1])], NAMES)
    with pytest.raises(ValueError, match="empty"):
        plots.plot_predictions(tmp_path / "p.png", [], NAMES)
    with pytest.raises(ValueError, match="frame_rate_hz"):
        plots.plot_predictions(tmp_path / "p.png", [("r", gold, gold)], NAMES, frame_rate_hz=0)
    assert not os.listdir(tmp_path)  # nothing written on error


def test_plot_utterance_scatter(tmp_path):
    rng = np.random.default_rng(1)
    gold = rng.uniform(-1, 1, size=(80, 2))
    path = tmp_path / "scatter.png"
    plots.plot_utterance_scatter(path, gold + 0.3 * rng.normal(size=gold.shape), gold, NAMES)
    assert_png(str(path))
    with pytest.raises(ValueError, match=r"\(80, 2\).*\(79, 2\)"):
        plots.plot_utterance_scatter(tmp_path / "x.png", gold, gold[:79], NAMES)


def test_normalize_confusion_values_and_uar():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    predictions = np.array([0, 0, 1, 2, 1, 0, 2, 2, 2, 2, 3])
    cm = metrics.confusion_matrix(labels, predictions, 4)  # class 3 never occurs as a label
    recall = plots.normalize_confusion(cm)
    np.testing.assert_allclose(recall[0], [0.5, 0.25, 0.25, 0.0])
    np.testing.assert_allclose(recall[1], [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(recall[2], [0.0, 0.0, 0.8, 0.2])
    np.testing.assert_array_equal(recall[3], np.zeros(4))  # no support: zeros, not NaN
    present = cm.sum(axis=1) > 0
    np.testing.assert_allclose(np.mean(np.diag(recall)[present]),
                               metrics.unweighted_average_recall(labels, predictions))


def test_plot_confusion_matrix(tmp_path):
    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 0]])
    for normalize in (True, False):
        path = tmp_path / str(normalize) / "plot_confusion_test.png"
        plots.plot_confusion_matrix(path, cm, ["Anger", "Happy", "Sad"], normalize=normalize)
        assert_png(str(path))
    with pytest.raises(ValueError, match=r"\(3, 3\) but 2 class names"):
        plots.plot_confusion_matrix(tmp_path / "c.png", cm, ["a", "b"])
    with pytest.raises(ValueError, match="square"):
        plots.plot_confusion_matrix(tmp_path / "c.png", cm[:2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="integer counts"):
        plots.plot_confusion_matrix(tmp_path / "c.png", cm / 2.0, ["a", "b", "c"])
    with pytest.raises(ValueError, match="non-negative"):
        plots.plot_confusion_matrix(tmp_path / "c.png", -cm, ["a", "b", "c"])


def test_embedding_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    # Anisotropic data, so the two leading components are well separated.
    scale = np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    embeddings = {"audio": rng.normal(size=(40, 6)) * scale + 1.0,
                  "video": rng.normal(size=(25, 6)) * scale - 0.5}
    coords, ratio = plots.embedding_pca(embeddings)
    assert coords["audio"].shape == (40, 2) and coords["video"].shape == (25, 2)

    stacked = np.concatenate([embeddings["audio"], embeddings["video"]])
    unit = stacked / np.linalg.norm(stacked, axis=1, keepdims=True)
    reference = PCA(n_components=2, svd_solver="full").fit(unit)
    expected = reference.transform(unit)
    ours = np.concatenate([coords["audio"], coords["video"]])
    for k in range(2):  # equal up to the sign of each component
        sign = np.sign(ours[:, k] @ expected[:, k])
        np.testing.assert_allclose(sign * ours[:, k], expected[:, k], atol=1e-10)
    np.testing.assert_allclose(ratio, reference.explained_variance_ratio_, rtol=1e-10)


def test_embedding_pca_is_scale_invariant_and_rejects_bad_input():
    rng = np.random.default_rng(3)
    e = {"audio": rng.normal(size=(20, 4)), "video": rng.normal(size=(20, 4))}
    scaled = {"audio": 7.0 * e["audio"], "video": 0.1 * e["video"]}  # L2 norm removes the scale
    for m in e:
        np.testing.assert_allclose(plots.embedding_pca(e)[0][m],
                                   plots.embedding_pca(scaled)[0][m], atol=1e-12)
    with pytest.raises(ValueError, match="one embedding size"):
        plots.embedding_pca({"audio": np.ones((3, 4)), "video": np.ones((3, 5))})
    with pytest.raises(ValueError, match=r"embeddings\['video'\] contains NaN"):
        plots.embedding_pca({"audio": np.ones((3, 4)), "video": np.full((3, 4), np.nan)})
    with pytest.raises(ValueError, match=r"embeddings\['audio'\] must be \[N, E\]"):
        plots.embedding_pca({"audio": np.ones(4)})
    with pytest.raises(ValueError, match="at least 2 rows"):
        plots.embedding_pca({"audio": np.ones((1, 4))})


def test_subsample_indices_deterministic():
    a = plots.subsample_indices(10_000, 500, seed=3)
    np.testing.assert_array_equal(a, plots.subsample_indices(10_000, 500, seed=3))
    assert len(a) == 500 and len(np.unique(a)) == 500
    assert np.all(np.diff(a) > 0) and a[0] >= 0 and a[-1] < 10_000
    assert not np.array_equal(a, plots.subsample_indices(10_000, 500, seed=4))
    np.testing.assert_array_equal(plots.subsample_indices(7, 500), np.arange(7))
    with pytest.raises(ValueError, match="max_points"):
        plots.subsample_indices(7, 0)


def test_plot_embedding_map_categorical_and_continuous(tmp_path):
    rng = np.random.default_rng(4)
    n = 300
    classes = rng.integers(0, 3, size=n)
    centres = rng.normal(size=(3, 8)) * 3
    embeddings = {m: centres[classes] + rng.normal(size=(n, 8)) for m in ("audio", "video")}
    path = tmp_path / "cat" / "plot_embeddings_test.png"
    plots.plot_embedding_map(path, embeddings, classes, "category",
                             class_names=["neutral", "happy", "angry"], max_points=100)
    assert_png(str(path))
    first = path.read_bytes()
    plots.plot_embedding_map(path, embeddings, classes, "category",
                             class_names=["neutral", "happy", "angry"], max_points=100)
    assert path.read_bytes() == first  # same seed, same picture

    arousal = {"audio": rng.uniform(-1, 1, n), "video": rng.uniform(-1, 1, n)}
    path = tmp_path / "cont" / "plot_embeddings_test.png"
    plots.plot_embedding_map(path, embeddings, arousal, "arousal", max_points=50)
    assert_png(str(path))


def test_plot_embedding_map_rejects_mismatched_labels(tmp_path):
    embeddings = {"audio": np.ones((10, 4)), "video": np.eye(10, 4)}
    with pytest.raises(ValueError, match=r"modality 'audio'.*\(9,\).*\(10,\)"):
        plots.plot_embedding_map(tmp_path / "e.png", embeddings, np.zeros(9, int), "category")
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        plots.plot_embedding_map(tmp_path / "e.png", embeddings, np.arange(10), "category",
                                 class_names=["a", "b"])
    with pytest.raises(ValueError, match="integer class ids"):
        plots.plot_embedding_map(tmp_path / "e.png", embeddings, np.zeros(10), "category",
                                 class_names=["a", "b"])
    with pytest.raises(ValueError, match="no entry for modality 'video'"):
        plots.plot_embedding_map(tmp_path / "e.png", embeddings, {"audio": np.zeros(10)}, "a")
    with pytest.raises(ValueError, match="arousal: labels contain NaN"):
        plots.plot_embedding_map(tmp_path / "e.png", embeddings, np.full(10, np.nan), "arousal")
    assert not os.listdir(tmp_path)
