"""Timed per-frame feature files: CSVs with a time column and ``.npy`` arrays at a declared rate.

A timed CSV has a header row, then one row per frame: an optional leading ``name`` /
``instance_name`` column (openSMILE's CSV output), a time column in seconds (named one of
``TIME_COLUMNS``, compared lower-case and whitespace-stripped), then numeric feature columns.
Fields are separated by ``,`` or, when the header holds more of them, ``;`` (openSMILE's default).

Both readers return ``TimedFrames``; a row holding a non-finite value (``nan``, ``inf``) is a frame
without data: its values are 0 and ``valid`` is False, as OpenFace frames without a face are. The
prediction CLI (``inference.media``) and the ``emotion_folder`` builder read their files here, so a
file is parsed the same way for training and for prediction. Every problem raises
``TimeseriesError`` naming the file and, for a row, its line.
"""
from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from emobed_jax.features import openface

__all__ = ["TIME_COLUMNS", "NAME_COLUMNS", "TimeseriesError", "TimedFrames", "NumericCsv", "csv_header",
           "is_openface_header", "read_numeric_csv", "check_times", "read_timed_csv", "read_npy"]

# Names a CSV time column may have (compared lower-case), seconds in every case.
TIME_COLUMNS = ("frametime", "time", "timestamp", "time_s", "seconds", "frame_time")
# A leading column of instance names (openSMILE writes 'name'), skipped by the reader.
NAME_COLUMNS = ("name", "instance_name")


class TimeseriesError(ValueError):
    """A timed feature file is malformed; the message names the file (and line) and the problem."""


@dataclasses.dataclass(frozen=True)
class TimedFrames:
    """Per-frame features of one file.

    Attributes:
        values: [n, D] float32; rows of invalid frames are 0.
        times: [n] float64 seconds of each frame, or None when the source has no times.
        valid: [n] bool, False where a frame holds a non-finite value.
        names: the D feature column names (``col<i>`` for a ``.npy`` array).
    """

    values: np.ndarray
    times: np.ndarray | None
    valid: np.ndarray
    names: tuple[str, ...]


def _lines(path: str) -> list[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [(i, line) for i, line in enumerate(f.read().splitlines(), start=1) if line.strip()]


def _delimiter(header_line: str) -> str:
    return ";" if header_line.count(";") > header_line.count(",") else ","


def csv_header(path: str | os.PathLike) -> list[str]:
    """The stripped column names of a CSV's first non-blank line (``,`` or ``;`` separated).

    Raises:
        FileNotFoundError: no such file.
        TimeseriesError: the file holds no non-blank line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: CSV file not found")
    with open(path, encoding="utf-8-sig", newline="") as f:
        for line in f:
            if line.strip():
                return [h.strip() for h in next(csv.reader([line], delimiter=_delimiter(line)))]
    raise TimeseriesError(f"{path}: empty file, expected a CSV header row and feature rows")


def is_openface_header(header: list[str]) -> bool:
    """Whether a CSV header is OpenFace 2.x ``FeatureExtraction`` output (``timestamp`` and
    ``success`` columns), which ``features.openface.read_openface_csv`` reads instead."""
    return "timestamp" in header and "success" in header


def _row_error(path: str, lineno: int, row: list[str], names: list[str], skip: int) -> TimeseriesError:
    """The error for a row ``float`` refused: short or long row, or the first non-number."""
    if len(row) != len(names):
        return TimeseriesError(f"{path}:{lineno}: {len(row)} fields, expected {len(names)} "
                               f"(one per header column)")
    for column, value in zip(names[skip:], row[skip:]):
        try:
            float(value)
        except ValueError:
            return TimeseriesError(f"{path}:{lineno}: {value!r} is not a number (column {column!r})")
    return TimeseriesError(f"{path}:{lineno}: malformed row")


@dataclasses.dataclass(frozen=True)
class NumericCsv:
    """A CSV of numbers with a header row.

    Attributes:
        names: the column names (a leading ``name`` / ``instance_name`` column left out).
        linenos: [1 + rows] the file line of the header and of each row (blank lines skipped).
        table: [rows, len(names)] float64.
    """

    names: tuple[str, ...]
    linenos: tuple[int, ...]
    table: np.ndarray


def read_numeric_csv(path: str | os.PathLike) -> NumericCsv:
    """Reads a CSV whose columns are all numbers (after an optional leading name column).

    Raises:
        FileNotFoundError: no such file.
        TimeseriesError: empty file, a short or long row, or a value ``float`` refuses (an empty
            field too); the message names the file, line and column.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: CSV file not found")
    lines = _lines(path)
    if not lines:
        raise TimeseriesError(f"{path}: empty file, expected a CSV header row and feature rows")
    linenos = [n for n, _ in lines]
    rows = list(csv.reader([text for _, text in lines], delimiter=_delimiter(lines[0][1])))
    names = [n.strip() for n in rows[0]]
    skip = 1 if len(names) > 1 and names[0].lower() in NAME_COLUMNS else 0
    try:
        # One conversion for the whole table; only a failure pays for the per-row search.
        table = np.array([[float(v) for v in row[skip:]] for row in rows[1:]], np.float64)
        if any(len(row) != len(names) for row in rows[1:]):
            raise ValueError("ragged")
    except ValueError:
        for lineno, row in zip(linenos[1:], rows[1:]):
            if len(row) != len(names) or not _parses(row[skip:]):
                raise _row_error(path, lineno, row, names, skip) from None
        raise
    return NumericCsv(tuple(names[skip:]), tuple(linenos),
                      table.reshape(len(rows) - 1, len(names) - skip))


def check_times(path: str, times: np.ndarray, linenos, column: str) -> None:
    """Raises ``TimeseriesError`` at the first non-finite or non-increasing time, naming its line
    (``linenos[1 + i]`` is row i's line, as in ``NumericCsv``) and the one before."""
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        raise TimeseriesError(f"{path}:{linenos[1 + bad[0]]}: time {times[bad[0]]} is not a finite "
                              f"number of seconds (column {column!r})")
    back = np.flatnonzero(np.diff(times) <= 0)
    if back.size:
        k = back[0] + 1
        raise TimeseriesError(f"{path}:{linenos[1 + k]}: time {times[k]:g} s does not increase (the row "
                              f"before, line {linenos[k]}, is at {times[k - 1]:g} s); expected strictly "
                              f"increasing times in column {column!r}")


def read_timed_csv(path: str | os.PathLike) -> TimedFrames:
    """Reads a per-frame CSV with a time column (see the module docstring).

    Args:
        path: the CSV file.

    Returns:
        ``TimedFrames`` with the times of the time column and the other columns as features.

    Raises:
        FileNotFoundError: no such file.
        TimeseriesError: empty file, no time column first (or second after a name column), no
            feature column, a short or long row, a non-numeric value, or non-finite or
            non-increasing times; the message names the file and line.
    """
    path = os.fspath(path)
    header = csv_header(path)
    time_column = header[1 if len(header) > 1 and header[0].lower() in NAME_COLUMNS else 0]
    if time_column.lower() not in TIME_COLUMNS:
        raise TimeseriesError(f"{path}: first column {time_column!r} is not a time column; expected a "
                              f"CSV whose first column is one of {list(TIME_COLUMNS)} (seconds), then "
                              f"the features, or an OpenFace 2.x CSV")
    data = read_numeric_csv(path)
    if len(data.names) < 2:
        raise TimeseriesError(f"{path}:{data.linenos[0]}: no feature column after the time column "
                              f"{time_column!r}; expected at least one")
    times = data.table[:, 0]
    check_times(path, times, data.linenos, time_column)
    values = data.table[:, 1:]
    valid = np.isfinite(values).all(axis=1)
    values = np.where(valid[:, None], values, 0.0).astype(np.float32)
    return TimedFrames(values, times, valid, data.names[1:])


def _parses(fields: list[str]) -> bool:
    try:
        [float(v) for v in fields]  # pylint: disable=expression-not-assigned
    except ValueError:
        return False
    return True


def read_npy(path: str | os.PathLike, rate_hz: float) -> TimedFrames:
    """Reads an ``[n, D]`` numeric ``.npy`` array whose row i is the frame at ``i / rate_hz`` s.

    Args:
        path: the ``.npy`` file (no pickles).
        rate_hz: frames per second, as declared for the array (it carries no times itself).

    Returns:
        ``TimedFrames``; rows with a non-finite value are invalid and zeroed.

    Raises:
        FileNotFoundError: no such file.
        TimeseriesError: unreadable, not a 2-D numeric array, or a non-positive rate.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: .npy file not found")
    if not (rate_hz and np.isfinite(rate_hz) and rate_hz > 0):
        raise TimeseriesError(f"{path}: rate_hz must be a positive number of frames per second, "
                              f"got {rate_hz!r}")
    try:  # the same checks as visual .npy arrays (2-D, numeric; non-finite rows masked)
        frames = openface.load_visual_npy(path)
    except openface.OpenFaceError as e:
        raise TimeseriesError(str(e)) from None
    n, dim = frames.features.shape
    times = np.arange(n, dtype=np.float64) / float(rate_hz)
    return TimedFrames(frames.features, times, frames.mask, tuple(f"col{i}" for i in range(dim)))
