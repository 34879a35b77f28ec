"""Scanning and checking a user's corpus folder for the ``emotion_folder`` builder.

The layout (``docs``: issue 14's design)::

    corpus/
      splits.csv          id,split[,group]      split: train / validation (required), test
      corpus.json         optional: {"rates_hz": {m: r}, "classes": [...], "tolerance_s": 0.5}
      labels/<id>.csv     frame level: a time column + one column per label dimension
      labels.csv          utterance level (instead of labels/): id,<dims...>[,category]
      <modality>/<id>.<ext>   one folder per modality; ext: .wav, .csv, .arff or .npy

``scan_corpus`` reads every label and every media header before anything is written, so a bad
corpus fails fast; each problem raises ``FolderError`` naming the file (and line and column where
there is one) and what was expected.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np

from emobed_jax.features import align as align_lib
from emobed_jax.features import arff as arff_lib
from emobed_jax.features import openface
from emobed_jax.features import timeseries

__all__ = ["FolderError", "FolderNotFoundError", "Modality", "Corpus", "read_splits", "scan_corpus",
           "SPLIT_NAMES", "EXTENSIONS"]

SPLITS_FILE, CORPUS_FILE, LABELS_DIR, LABELS_FILE = "splits.csv", "corpus.json", "labels", "labels.csv"
SPLIT_NAMES = ("train", "validation", "test")
EXTENSIONS = (".wav", ".csv", ".arff", ".npy")
RESERVED = ("name", "category", "group")


class FolderError(ValueError):
    """The corpus folder does not follow the layout; the message names the file (line, column)."""


class FolderNotFoundError(FolderError, FileNotFoundError):
    """A file the layout requires is absent."""


@dataclasses.dataclass(frozen=True)
class Modality:
    """One modality folder.

    Attributes:
        name: the folder name (the example key).
        folder: its path.
        kind: 'wav', 'openface' (OpenFace 2.x CSV), 'csv' (timed CSV), 'arff' or 'npy'.
        dim: feature width D.
        files: recording id -> file path (recordings without a file are absent).
    """

    name: str
    folder: str
    kind: str
    dim: int
    files: dict


@dataclasses.dataclass(frozen=True)
class Corpus:
    """What ``scan_corpus`` found (see the module docstring).

    Attributes:
        root: the corpus folder; level: 'frame' or 'utterance'.
        splits: split -> recording ids in splits.csv order; groups: id -> group (None: no column).
        label_names: label dimensions in column order.
        labels: id -> frame level (label file, times [T], values [T, K]); utterance level values [K].
        categories: id -> class name (utterance level with a category column), else None.
        classes: the category classes; modalities: sorted by name.
        rates_hz, tolerance_s: from corpus.json; period_s: the label period (frame level).
    """

    root: str
    level: str
    splits: dict
    groups: dict | None
    label_names: tuple
    labels: dict
    categories: dict | None
    classes: tuple
    modalities: tuple
    rates_hz: dict
    tolerance_s: float
    period_s: float | None


def _csv_rows(path: str):
    """(line, stripped fields) of the non-blank rows of a comma-separated file."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [(n, [v.strip() for v in row]) for n, row in enumerate(csv.reader(f), start=1)
                if any(v.strip() for v in row)]


def read_splits(root: str) -> tuple[dict, dict | None, dict]:
    """Reads splits.csv: (split -> ids, id -> group or None, id -> line).

    Raises:
        FolderError: missing file or columns, unknown split, duplicate id, missing train/validation.
    """
    path = os.path.join(root, SPLITS_FILE)
    if not os.path.isfile(path):
        raise FolderNotFoundError(f"{path}: not found; expected a CSV with header id,split[,group] "
                                  f"listing every recording")
    rows = _csv_rows(path)
    header = rows[0][1] if rows else []
    if header[:2] != ["id", "split"] or len(header) > 3 or header[2:] not in ([], ["group"]):
        raise FolderError(f"{path}:1: header {header}; expected id,split or id,split,group")
    splits, groups, lines = {}, ({} if len(header) == 3 else None), {}
    for line, fields in rows[1:]:
        if len(fields) != len(header) or not fields[0]:
            raise FolderError(f"{path}:{line}: {len(fields)} fields, expected {len(header)} ({','.join(header)})")
        rid, split = fields[0].replace("\\", "/"), fields[1]
        if split not in SPLIT_NAMES:
            raise FolderError(f"{path}:{line}: split {split!r} for {rid!r}; expected one of {list(SPLIT_NAMES)}")
        if rid in lines:
            raise FolderError(f"{path}:{line}: id {rid!r} already listed on line {lines[rid]}")
        lines[rid] = line
        splits.setdefault(split, []).append(rid)
        if groups is not None:
            groups[rid] = fields[2]
    for split in ("train", "validation"):
        if not splits.get(split):
            raise FolderError(f"{path}: no recording in split {split!r}; train and validation are required")
    return {s: tuple(splits[s]) for s in SPLIT_NAMES if s in splits}, groups, lines


def _read_settings(root: str) -> dict:
    path = os.path.join(root, CORPUS_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f)
    except json.JSONDecodeError as e:
        raise FolderError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(settings, dict):
        raise FolderError(f"{path}: a JSON {type(settings).__name__}; expected an object with "
                          f"any of rates_hz, classes, tolerance_s")
    unknown = sorted(set(settings) - {"rates_hz", "classes", "tolerance_s"})
    if unknown:
        raise FolderError(f"{path}: unknown keys {unknown}; expected rates_hz, classes, tolerance_s "
                          f"(label names come from the label CSV headers)")
    return settings


def _frame_labels(path: str) -> tuple[tuple, np.ndarray, np.ndarray, float]:
    """(label names, times [T], values [T, K], period) of one labels/<id>.csv."""
    try:
        data = timeseries.read_numeric_csv(path)
    except timeseries.TimeseriesError as e:
        raise FolderError(str(e)) from None
    lowered = [n.lower() for n in data.names]
    time_col = next((i for i, n in enumerate(lowered) if n in timeseries.TIME_COLUMNS), None)
    if time_col is None:
        raise FolderError(f"{path}:{data.linenos[0]}: no time column in {list(data.names)}; expected "
                          f"one named one of {list(timeseries.TIME_COLUMNS)} (seconds)")
    times = data.table[:, time_col]
    values = np.delete(data.table, time_col, axis=1)
    names = tuple(n for i, n in enumerate(data.names) if i != time_col)
    try:
        timeseries.check_times(path, times, data.linenos, data.names[time_col])
        period = align_lib.label_period(times, path)
    except (timeseries.TimeseriesError, align_lib.AlignError) as e:
        raise FolderError(str(e)) from None
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        row, col = bad[0]
        raise FolderError(f"{path}:{data.linenos[1 + row]}: column {names[col]!r} is {values[row, col]}; "
                          f"expected a finite label value")
    return names, times, values, period


def _utterance_labels(path: str, ids: set, classes: tuple | None):
    """(label names, id -> values [K], id -> category or None, classes) of labels.csv."""
    rows = _csv_rows(path)
    header = rows[0][1] if rows else []
    if not header or header[0] != "id":
        raise FolderError(f"{path}:1: header {header}; expected id,<label dims...>[,category]")
    has_category = header[-1] == "category"
    names = tuple(header[1:len(header) - has_category])
    if not names and not has_category:
        raise FolderError(f"{path}:1: header {header} has no label column; expected "
                          f"id,<label dims...>[,category] with at least one of them")
    values, categories, seen = {}, ({} if has_category else None), {}
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            raise FolderError(f"{path}:{line}: {len(fields)} fields, expected {len(header)} (one per header column)")
        rid = fields[0]
        if rid not in ids:
            raise FolderError(f"{path}:{line}: id {rid!r} is not in {SPLITS_FILE}")
        if rid in seen:
            raise FolderError(f"{path}:{line}: id {rid!r} already labelled on line {seen[rid]}")
        seen[rid] = line
        row = []
        for name, text in zip(names, fields[1:]):
            try:
                row.append(float(text))
            except ValueError:
                row.append(float("nan"))
            if not np.isfinite(row[-1]):
                raise FolderError(f"{path}:{line}: column {name!r} is {text!r}; expected a finite number")
        values[rid] = np.asarray(row, np.float32)
        if has_category:
            if classes is not None and fields[-1] not in classes:
                raise FolderError(f"{path}:{line}: category {fields[-1]!r}; expected one of the classes "
                                  f"declared in {CORPUS_FILE}: {list(classes)}")
            categories[rid] = fields[-1]
    if has_category and classes is None:
        classes = tuple(sorted(set(categories.values())))
    return names, values, categories, tuple(classes or ())


def _media_dim(path: str, kind: str, wav_dim: int) -> int:
    """Feature width of one media file, from its header (no data read)."""
    if kind == "wav":
        return wav_dim
    if kind == "openface":
        return openface.feature_dim()
    if kind == "csv":
        header = timeseries.csv_header(path)
        return len(header) - 1 - (header[0].lower() in timeseries.NAME_COLUMNS)
    if kind == "arff":
        return len(arff_lib.numeric_feature_names(arff_lib.read_arff_header(path)[1]))
    shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    if len(shape) != 2:
        raise FolderError(f"{path}: array of shape {shape}; expected [frames, features]")
    return shape[1]


def _scan_modality(root: str, name: str, ids: set, wav_dim: int, rates_hz: dict) -> Modality:
    folder = os.path.join(root, name)
    files, ext_of = {}, {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for file_name in sorted(f for f in filenames if not f.startswith(".")):
            path = os.path.join(dirpath, file_name)
            stem, ext = os.path.splitext(os.path.relpath(path, folder))
            ext = ext.lower()
            if ext not in EXTENSIONS:
                raise FolderError(f"{path}: unsupported extension {ext or '(none)'!r}; expected one of {list(EXTENSIONS)}")
            ext_of.setdefault(ext, path)
            if len(ext_of) > 1:
                raise FolderError(f"{folder}: mixes {' and '.join(ext_of)} files (e.g. {' and '.join(ext_of.values())}); "
                                  f"expected one extension per modality folder")
            rid = stem.replace(os.sep, "/")
            if rid not in ids:
                raise FolderError(f"{path}: recording id {rid!r} is not in {os.path.join(root, SPLITS_FILE)}")
            files[rid] = path
    if not files:
        raise FolderError(f"{folder}: no media file; expected <id>{'|'.join(EXTENSIONS)} files")
    ext = next(iter(ext_of))
    if ext == ".npy" and name not in rates_hz:
        raise FolderError(f"{folder}: .npy arrays carry no times; declare the rate in "
                          f"{os.path.join(root, CORPUS_FILE)} as \"rates_hz\": {{\"{name}\": <Hz>}}")
    kinds, dims = {}, {}
    for rid, path in files.items():
        kind = ext[1:]
        if ext == ".csv":
            kind = "openface" if timeseries.is_openface_header(timeseries.csv_header(path)) else "csv"
        kinds.setdefault(kind, path)
        dims.setdefault(_media_dim(path, kind, wav_dim), path)
        if len(kinds) > 1 or len(dims) > 1:
            (a, pa), (b, pb) = (kinds if len(kinds) > 1 else dims).items()
            raise FolderError(f"{pb} has {b} features but {pa} has {a}; expected one feature kind and "
                              f"width per modality folder ({folder})")
    return Modality(name, folder, next(iter(kinds)), int(next(iter(dims))), files)


def scan_corpus(root: str | os.PathLike, wav_dim: int) -> Corpus:
    """Reads and checks the whole layout (labels, splits, media headers).

    Args:
        root: the corpus folder (``manual_dir``).
        wav_dim: feature width the builder config extracts from a wav.

    Raises:
        FolderError: any problem of the module docstring's list, naming the file.
    """
    root = os.fspath(root)
    splits, groups, lines = read_splits(root)
    settings = _read_settings(root)
    ids = set(lines)
    labels_dir, labels_file = os.path.join(root, LABELS_DIR), os.path.join(root, LABELS_FILE)
    if os.path.isdir(labels_dir) == os.path.isfile(labels_file):
        raise FolderError(f"{root}: expected either {LABELS_DIR}/ (frame level) or {LABELS_FILE} "
                          f"(utterance level), found {'both' if os.path.isdir(labels_dir) else 'neither'}")
    classes = tuple(settings["classes"]) if "classes" in settings else None
    labels, categories, period = {}, None, None
    if os.path.isfile(labels_file):
        level = "utterance"
        names, labels, categories, classes = _utterance_labels(labels_file, ids, classes)
        unlabelled = [r for r in lines if r not in labels]
        source = labels_file
    else:
        level, names, first = "frame", None, None
        for dirpath, _, filenames in os.walk(labels_dir):
            for file_name in sorted(filenames):
                path = os.path.join(dirpath, file_name)
                rid = os.path.splitext(os.path.relpath(path, labels_dir))[0].replace(os.sep, "/")
                if rid not in ids or not file_name.endswith(".csv"):
                    raise FolderError(f"{path}: no recording {rid!r} in {os.path.join(root, SPLITS_FILE)}; "
                                      f"expected labels/<id>.csv for the ids listed there")
                file_names, times, values, h = _frame_labels(path)
                if names is None:
                    names, period, first = file_names, h, path
                if file_names != names or abs(h - period) > align_lib.PERIOD_TOLERANCE * period:
                    raise FolderError(f"{path}: labels {list(file_names)} every {h:g} s but {first} has "
                                      f"{list(names)} every {period:g} s; expected the same columns and period")
                labels[rid] = (path, times, values)
        if not names:
            raise FolderError(f"{labels_dir}: no label dimension; expected a time column and at least one label column")
        unlabelled = [r for r in lines if r not in labels]
        source = os.path.join(labels_dir, f"{unlabelled[0] if unlabelled else ''}.csv")
    if unlabelled:
        raise FolderError(f"{os.path.join(root, SPLITS_FILE)}:{lines[unlabelled[0]]}: recording "
                          f"{unlabelled[0]!r} has no label ({source}); expected a label for every listed id")
    reserved = set(RESERVED) | set(os.listdir(root))
    for name in names:
        if name in reserved or name.endswith("_mask"):
            raise FolderError(f"{source if level == 'utterance' else first}: label column {name!r} collides "
                              f"with a modality or example field; rename it")
    modalities = tuple(_scan_modality(root, m, ids, wav_dim, settings.get("rates_hz", {}))
                       for m in sorted(os.listdir(root))
                       if os.path.isdir(os.path.join(root, m)) and m != LABELS_DIR and not m.startswith("."))
    if not modalities:
        raise FolderError(f"{root}: no modality folder; expected <modality>/<id>.<ext> folders")
    for rid, line in lines.items():
        if not any(rid in m.files for m in modalities):
            raise FolderError(f"{os.path.join(root, SPLITS_FILE)}:{line}: recording {rid!r} has no media "
                              f"file in any modality folder ({', '.join(m.name for m in modalities)})")
    return Corpus(root, level, splits, groups, tuple(names), labels, categories, tuple(classes or ()),
                  modalities, dict(settings.get("rates_hz", {})),
                  float(settings.get("tolerance_s", align_lib.DEFAULT_TOLERANCE_S)), period)
