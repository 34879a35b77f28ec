"""Tests for emobed_jax.features.openface (OpenFace 2.x CSVs and .npy visual arrays)."""
from __future__ import annotations

import numpy as np
import pytest

from emobed_jax.features import openface
from omg_fixtures import openface_header, write_openface_csv

HEADER = openface_header()
DATA_COLUMNS = HEADER[5:]  # what write_openface_csv's values cover


def _write(path, n=12, sep=", ", failed=(0, 5), seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(DATA_COLUMNS)))
    success = np.ones(n, bool)
    success[list(failed)] = False
    written = write_openface_csv(path, values, success, fps=30.0, sep=sep)
    return written, success


def _columns(written, names):
    return written[:, [DATA_COLUMNS.index(c) for c in names]]


def test_default_groups_are_au_gaze_pose():
    names = openface.group_columns()
    assert openface.feature_dim() == len(names) == 17 + 18 + 8 + 6
    assert names[:2] == ("AU01_r", "AU02_r") and names[17] == "AU01_c" and "AU28_c" in names
    assert names[-1] == "pose_Rz"
    assert not any(n.startswith(("x_", "X_", "eye_lmk", "p_")) for n in names)


@pytest.mark.parametrize("sep", [", ", ","])
def test_reads_values_mask_and_timestamps(tmp_path, sep):
    path = tmp_path / "clip.csv"
    written, success = _write(path, sep=sep)
    frames = openface.read_openface_csv(path)
    assert frames.features.shape == (12, 49) and frames.features.dtype == np.float32
    expected = _columns(written, openface.group_columns())
    np.testing.assert_allclose(frames.features, expected, atol=1e-6)
    np.testing.assert_array_equal(frames.mask, success)
    assert frames.mask.sum() == 10 and not frames.mask[0] and not frames.mask[5]
    np.testing.assert_array_equal(frames.features[[0, 5]], 0.0)
    np.testing.assert_allclose(frames.timestamps[:3], [0.0, 0.033, 0.067])


def test_landmark_groups_only_when_configured(tmp_path):
    path = tmp_path / "clip.csv"
    written, _ = _write(path)
    frames = openface.read_openface_csv(path, groups=("landmarks_2d", "pose"))
    names = openface.group_columns(("landmarks_2d", "pose"))
    assert frames.features.shape == (12, 136 + 6) and names[0] == "x_0" and names[68] == "y_0"
    np.testing.assert_allclose(frames.features, _columns(written, names), atol=1e-6)


def test_non_finite_value_masks_a_successful_frame(tmp_path):
    path = tmp_path / "clip.csv"
    _write(path, n=4, failed=())
    lines = path.read_text().splitlines()
    fields = lines[3].split(", ")
    fields[HEADER.index("AU12_r")] = "-nan"
    lines[3] = ", ".join(fields)
    path.write_text("\n".join(lines) + "\n")
    frames = openface.read_openface_csv(path)
    np.testing.assert_array_equal(frames.mask, [True, True, False, True])
    assert np.isfinite(frames.features).all() and (frames.features[2] == 0).all()


def test_multi_face_rows_keep_the_most_confident_success(tmp_path):
    header = "frame, face_id, timestamp, confidence, success, " + ", ".join(
        openface.group_columns(("pose",)))
    rows = ["1, 0, 0.0, 0.9, 1, 1, 1, 1, 1, 1, 1",
            "1, 1, 0.0, 0.95, 1, 2, 2, 2, 2, 2, 2",
            "2, 0, 0.04, 0.99, 0, 0, 0, 0, 0, 0, 0",
            "2, 1, 0.04, 0.5, 1, 3, 3, 3, 3, 3, 3"]
    path = tmp_path / "multi.csv"
    path.write_text("\n".join([header] + rows) + "\n")
    frames = openface.read_openface_csv(path, groups=("pose",))
    np.testing.assert_array_equal(frames.features[:, 0], [2.0, 3.0])
    np.testing.assert_array_equal(frames.mask, [True, True])
    np.testing.assert_allclose(frames.timestamps, [0.0, 0.04])


def test_header_only_gives_zero_frames(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text(", ".join(HEADER) + "\n")
    frames = openface.read_openface_csv(path)
    assert frames.features.shape == (0, 49) and frames.mask.shape == (0,)


def test_missing_header_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "noheader.csv"
    _write(path)
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(openface.OpenFaceError, match=r"noheader\.csv: no header row"):
        openface.read_openface_csv(path)


def test_missing_columns_are_all_named(tmp_path):
    path = tmp_path / "partial.csv"
    keep = [c for c in HEADER if c not in ("AU45_c", "gaze_0_x", "success")]
    path.write_text(", ".join(keep) + "\n" + ", ".join(["0"] * len(keep)) + "\n")
    with pytest.raises(openface.OpenFaceError) as info:
        openface.read_openface_csv(path)
    message = str(info.value)
    assert "partial.csv" in message
    for name in ("'AU45_c'", "'gaze_0_x'", "'success'"):
        assert name in message
    assert "'AU01_r'" not in message


def test_bad_rows_and_files(tmp_path):
    path = tmp_path / "bad.csv"
    _write(path, n=3, failed=(0,))
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("0.98", "abc", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(openface.OpenFaceError, match=r"bad\.csv: malformed"):
        openface.read_openface_csv(path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(openface.OpenFaceError, match="empty file"):
        openface.read_openface_csv(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        openface.read_openface_csv(tmp_path / "nothere.csv")
    with pytest.raises(ValueError, match="unknown or empty column groups"):
        openface.group_columns(("au_intensity", "mouth"))


def test_npy_source(tmp_path):
    values = np.arange(15, dtype=np.float64).reshape(5, 3)
    values[2, 1] = np.inf
    np.save(tmp_path / "v.npy", values)
    frames = openface.load_visual_npy(tmp_path / "v.npy", expected_dim=3)
    assert frames.features.dtype == np.float32 and frames.timestamps is None
    np.testing.assert_array_equal(frames.mask, [True, True, False, True, True])
    np.testing.assert_array_equal(frames.features[3], [9, 10, 11])
    np.testing.assert_array_equal(frames.features[2], 0)
    with pytest.raises(openface.OpenFaceError, match=r"v\.npy: expected 4 feature columns, got 3"):
        openface.load_visual_npy(tmp_path / "v.npy", expected_dim=4)
    np.save(tmp_path / "flat.npy", np.zeros(4))
    with pytest.raises(openface.OpenFaceError, match=r"flat\.npy: expected a 2-D"):
        openface.load_visual_npy(tmp_path / "flat.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(openface.OpenFaceError, match=r"junk\.npy: not a readable"):
        openface.load_visual_npy(tmp_path / "junk.npy")
