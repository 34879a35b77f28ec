"""Visual frame features: OpenFace 2.x ``FeatureExtraction`` CSVs and plain ``.npy`` arrays.

OpenFace writes one row per video frame with a header such as
``frame, face_id, timestamp, confidence, success, gaze_0_x, ..., AU45_c`` (fields separated by
", "; a plain "," is accepted too). Features are selected by *column groups* (``COLUMN_GROUPS``):
by default action-unit intensities and presences, gaze and head pose (49 numbers per frame);
landmark and shape-model columns are only read when their group is asked for.

A frame is valid when OpenFace's ``success`` is nonzero and every selected value is finite.
Invalid frames keep their time slot (so frame t still means time ``timestamps[t]``) with features
set to 0 and ``mask[t] = False``; the model ignores them through the mask.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Sequence

import numpy as np

__all__ = [
    "OpenFaceError",
    "VisualFrames",
    "COLUMN_GROUPS",
    "DEFAULT_GROUPS",
    "group_columns",
    "feature_dim",
    "read_openface_csv",
    "load_visual_npy",
]

_AU_INTENSITY = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20",
                 "23", "25", "26", "45")
# OpenFace predicts AU28 presence only (no intensity regressor), hence one more presence column.
_AU_PRESENCE = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20",
                "23", "25", "26", "28", "45")


def _indexed(prefixes: Sequence[str], count: int) -> tuple[str, ...]:
    return tuple(f"{p}{i}" for p in prefixes for i in range(count))


# Column names exactly as OpenFace 2.x FeatureExtraction writes them.
COLUMN_GROUPS: dict[str, tuple[str, ...]] = {
    "au_intensity": tuple(f"AU{n}_r" for n in _AU_INTENSITY),
    "au_presence": tuple(f"AU{n}_c" for n in _AU_PRESENCE),
    "gaze": ("gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z",
             "gaze_angle_x", "gaze_angle_y"),
    "pose": ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"),
    "landmarks_2d": _indexed(("x_", "y_"), 68),
    "landmarks_3d": _indexed(("X_", "Y_", "Z_"), 68),
    "eye_landmarks_2d": _indexed(("eye_lmk_x_", "eye_lmk_y_"), 56),
    "eye_landmarks_3d": _indexed(("eye_lmk_X_", "eye_lmk_Y_", "eye_lmk_Z_"), 56),
    "shape_params": ("p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty") + _indexed(("p_",), 34),
}

DEFAULT_GROUPS: tuple[str, ...] = ("au_intensity", "au_presence", "gaze", "pose")

# Columns every reader call needs besides the feature columns.
_REQUIRED = ("timestamp", "success")


class OpenFaceError(ValueError):
    """A visual feature file is malformed: no header, missing columns, bad values or shape."""


@dataclasses.dataclass(frozen=True)
class VisualFrames:
    """Per-frame visual features of one clip.

    Attributes:
        features: [T, D] float32; rows of invalid frames are 0.
        mask: [T] bool, True where the frame carries a face.
        timestamps: [T] float64 seconds from OpenFace, or None for ``.npy`` sources.
    """

    features: np.ndarray
    mask: np.ndarray
    timestamps: np.ndarray | None


def group_columns(groups: Sequence[str] = DEFAULT_GROUPS) -> tuple[str, ...]:
    """Returns the OpenFace column names of ``groups``, in group order.

    Args:
        groups: names from ``COLUMN_GROUPS``.

    Returns:
        The column names (feature order of ``read_openface_csv``).
    """
    if isinstance(groups, str):
        raise ValueError(f"groups: expected a sequence of group names, got the string {groups!r}")
    unknown = [g for g in groups if g not in COLUMN_GROUPS]
    if unknown or not groups:
        raise ValueError(f"groups: unknown or empty column groups {unknown or list(groups)}; "
                         f"expected a non-empty subset of {sorted(COLUMN_GROUPS)}")
    if len(set(groups)) != len(groups):
        raise ValueError(f"groups: duplicate group names in {list(groups)}")
    return tuple(c for g in groups for c in COLUMN_GROUPS[g])


def feature_dim(groups: Sequence[str] = DEFAULT_GROUPS) -> int:
    """Number of features per frame ``read_openface_csv`` returns for ``groups``."""
    return len(group_columns(groups))


def _read_header(path: str) -> list[str]:
    with open(path, "r", encoding="utf-8-sig", newline="") as f:
        line = f.readline()
    names = [n.strip() for n in line.strip("\r\n").split(",")]
    if not line.strip():
        raise OpenFaceError(f"{path}: empty file, expected an OpenFace CSV with a header row")
    numeric = 0
    for n in names:
        try:
            float(n)
            numeric += 1
        except ValueError:
            pass
    if numeric == len(names):
        raise OpenFaceError(f"{path}: no header row (first line is numeric); expected OpenFace "
                            f"column names such as 'frame, face_id, timestamp, confidence, success'")
    return names


def _best_row_per_frame(columns: dict[str, np.ndarray]) -> np.ndarray | None:
    """Row indices keeping one row per frame, or None when frames are already unique.

    OpenFace's multi-face tools write one row per (frame, face); we keep the successful row with
    the highest tracking confidence so each time step has exactly one face.
    """
    if "frame" not in columns:
        return None
    frame = columns["frame"]
    if np.unique(frame).size == frame.size:
        return None
    success = columns["success"] != 0
    confidence = columns.get("confidence", np.zeros_like(frame))
    order = np.lexsort((-confidence, ~success, frame))
    first = np.ones(order.size, dtype=bool)
    first[1:] = frame[order][1:] != frame[order][:-1]
    return order[first]


def read_openface_csv(path: str | os.PathLike,
                      groups: Sequence[str] = DEFAULT_GROUPS) -> VisualFrames:
    """Reads an OpenFace 2.x ``FeatureExtraction`` CSV.

    Args:
        path: the CSV (", " or "," separated, with OpenFace's header row).
        groups: column groups to read (``COLUMN_GROUPS`` keys); landmark groups only if listed.

    Returns:
        ``VisualFrames`` with features [T, feature_dim(groups)], mask [T] (``success`` != 0 and
        all selected values finite) and timestamps [T]. A CSV with a header but no rows gives T = 0.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OpenFaceError: no header, missing columns (all named), or unparsable rows.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: OpenFace CSV not found")
    wanted = group_columns(groups)
    header = _read_header(path)
    position = {name: i for i, name in enumerate(header)}
    missing = [c for c in _REQUIRED + wanted if c not in position]
    if missing:
        raise OpenFaceError(f"{path}: missing OpenFace columns {missing} (groups {list(groups)}); "
                            f"the header has {len(header)} columns starting {header[:5]}")
    extra = tuple(c for c in ("frame", "confidence") if c in position)
    names = _REQUIRED + extra + wanted
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data" for T = 0
            data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[position[c] for c in names],
                              ndmin=2, dtype=np.float64, comments=None, encoding="utf-8")
    except ValueError as e:
        raise OpenFaceError(f"{path}: malformed OpenFace data row ({e}; rows counted after the "
                            f"header); expected {len(header)} numeric fields per row") from e
    columns = {c: data[:, i] for i, c in enumerate(names[:len(_REQUIRED) + len(extra)])}
    features = data[:, len(_REQUIRED) + len(extra):]
    keep = _best_row_per_frame(columns)
    if keep is not None:
        features = features[keep]
        columns = {c: v[keep] for c, v in columns.items()}
    mask = (columns["success"] != 0) & np.isfinite(features).all(axis=1)
    features = np.where(mask[:, None], features, 0.0).astype(np.float32)
    return VisualFrames(features=features, mask=mask, timestamps=columns["timestamp"])


def load_visual_npy(path: str | os.PathLike, expected_dim: int | None = None) -> VisualFrames:
    """Loads a ``.npy`` visual feature array (frames x dims).

    Rows holding any non-finite value are treated as frames without a face: masked and zeroed.

    Args:
        path: a ``.npy`` file with a 2-D numeric array.
        expected_dim: if given, the required number of columns.

    Returns:
        ``VisualFrames`` with float32 features [T, D], mask [T] and ``timestamps=None``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OpenFaceError: unreadable file, not 2-D, not numeric or wrong width.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: visual feature array not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise OpenFaceError(f"{path}: not a readable .npy array ({e})") from e
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise OpenFaceError(f"{path}: expected a 2-D numeric array (frames x dims), got shape "
                            f"{array.shape} dtype {array.dtype}")
    if expected_dim is not None and array.shape[1] != expected_dim:
        raise OpenFaceError(f"{path}: expected {expected_dim} feature columns, got {array.shape[1]}")
    values = array.astype(np.float64)
    mask = np.isfinite(values).all(axis=1)
    features = np.where(mask[:, None], values, 0.0).astype(np.float32)
    return VisualFrames(features=features, mask=mask, timestamps=None)
