"""Tests for features.timeseries: timed CSVs against pandas / np.loadtxt, errors naming file:line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emobed_jax.features import timeseries


def _write(path, header, rows, delimiter=","):
    path.write_text("\n".join([delimiter.join(header)] + [delimiter.join(str(v) for v in r) for r in rows])
                    + "\n")
    return str(path)


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_values_and_times_equal_pandas_and_loadtxt(tmp_path, delimiter):
    rng = np.random.default_rng(0)
    times = np.arange(50) / 30.0
    features = rng.normal(size=(50, 4))
    rows = [[repr(float(t))] + [repr(float(v)) for v in f] for t, f in zip(times, features)]
    path = _write(tmp_path / "x.csv", ["frameTime", "f0", "f1", "f2", "f3"], rows, delimiter)
    frames = timeseries.read_timed_csv(path)
    table = pd.read_csv(path, sep=delimiter)
    np.testing.assert_array_equal(frames.times, table["frameTime"].to_numpy())
    np.testing.assert_array_equal(frames.values, table[["f0", "f1", "f2", "f3"]].to_numpy(np.float32))
    loaded = np.loadtxt(path, delimiter=delimiter, skiprows=1)
    np.testing.assert_array_equal(frames.times, loaded[:, 0])
    np.testing.assert_array_equal(frames.values, loaded[:, 1:].astype(np.float32))
    assert frames.names == ("f0", "f1", "f2", "f3") and frames.valid.all()
    assert frames.values.dtype == np.float32 and frames.times.dtype == np.float64


def test_name_column_blank_lines_and_nan_rows(tmp_path):
    # openSMILE's CSV: name;frameTime;...; a NaN row is a frame without data.
    path = tmp_path / "s.csv"
    path.write_text("name;frameTime;a;b\n'x';0.00;1;2\n\n'x';0.01;nan;4\n'x';0.02;5;6\n")
    frames = timeseries.read_timed_csv(str(path))
    expected = pd.read_csv(path, sep=";", skip_blank_lines=True)
    np.testing.assert_array_equal(frames.times, expected["frameTime"].to_numpy())
    np.testing.assert_array_equal(frames.valid, [True, False, True])
    np.testing.assert_array_equal(frames.values, [[1, 2], [0, 0], [5, 6]])
    assert frames.names == ("a", "b")


@pytest.mark.parametrize("column", ["time", "TIMESTAMP", " time_s ", "seconds", "frame_time"])
def test_time_column_names(tmp_path, column):
    frames = timeseries.read_timed_csv(_write(tmp_path / "t.csv", [column, "v"], [[0, 1], [0.5, 2]]))
    np.testing.assert_array_equal(frames.times, [0, 0.5])


def test_errors_name_file_and_line(tmp_path):
    cases = {
        "notime.csv": (["a", "b"], [[1, 2]], "notime.csv: first column 'a' is not a time column"),
        "short.csv": (["time", "a", "b"], [[0, 1, 2], [1, 2]], "short.csv:3: 2 fields, expected 3"),
        "word.csv": (["time", "a"], [[0, 1], [1, "x"]], "word.csv:3: 'x' is not a number (column 'a')"),
        "back.csv": (["time", "a"], [[0, 1], [1, 1], [1, 2]], "back.csv:4: time 1 s does not increase "
                                                              "(the row before, line 3"),
        "nantime.csv": (["time", "a"], [[0, 1], ["nan", 1]], "nantime.csv:3: time nan is not a finite"),
        "nofeat.csv": (["time"], [[0], [1]], "nofeat.csv:1: no feature column"),
    }
    for name, (header, rows, message) in cases.items():
        with pytest.raises(timeseries.TimeseriesError) as e:
            timeseries.read_timed_csv(_write(tmp_path / name, header, rows))
        assert str(e.value).startswith(str(tmp_path / name)) and message in str(e.value), e.value
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(timeseries.TimeseriesError, match="empty.csv: empty file"):
        timeseries.read_timed_csv(str(tmp_path / "empty.csv"))
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        timeseries.read_timed_csv(str(tmp_path / "absent.csv"))


def test_header_helpers(tmp_path):
    path = _write(tmp_path / "of.csv", ["frame", " timestamp", " success", " AU01_r"], [[1, 0, 1, 0.5]])
    header = timeseries.csv_header(path)
    assert header == ["frame", "timestamp", "success", "AU01_r"]
    assert timeseries.is_openface_header(header)
    assert not timeseries.is_openface_header(["time", "success_rate"])


def test_read_npy(tmp_path):
    array = np.arange(12, dtype=np.float64).reshape(6, 2)
    array[2, 1] = np.nan
    np.save(tmp_path / "p.npy", array)
    frames = timeseries.read_npy(str(tmp_path / "p.npy"), 50.0)
    np.testing.assert_allclose(frames.times, np.arange(6) / 50.0)
    np.testing.assert_array_equal(frames.valid, [True, True, False, True, True, True])
    assert frames.values[2].tolist() == [0, 0] and frames.values[3].tolist() == [6, 7]
    np.save(tmp_path / "v.npy", np.zeros(3))
    with pytest.raises(timeseries.TimeseriesError, match=r"v.npy: expected a 2-D numeric array"):
        timeseries.read_npy(str(tmp_path / "v.npy"), 50.0)
    with pytest.raises(timeseries.TimeseriesError, match=r"p.npy: rate_hz must be a positive"):
        timeseries.read_npy(str(tmp_path / "p.npy"), 0)
