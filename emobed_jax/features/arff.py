"""A small, strict reader for the ARFF files of the AVEC 2016 RECOLA package.

``scipy.io.arff`` refuses ``string`` attributes, which every AVEC file starts with
(``@attribute Instance_name string``), so this module reads the dense ARFF subset those files use:
``@relation``, ``@attribute NAME TYPE`` (numeric/real/integer, string, nominal ``{...}``, date),
``@data`` and comma-separated rows. Keywords are case-insensitive, ``%`` starts a comment line,
blank lines are ignored, string values may be unquoted, 'single-' or "double-quoted", and ``?``
(ARFF's missing value) reads as NaN in numeric columns.

Every problem raises ``ArffError`` naming the file, the line number and what was expected; a file
is never read partially.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re

import numpy as np

__all__ = ["ArffError", "ArffData", "read_arff", "read_arff_header", "numeric_feature_names"]

_NUMERIC_TYPES = ("numeric", "real", "integer")
_ATTRIBUTE_RE = re.compile(r"""@attribute\s+('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)\s+(.+)$""",
                           re.IGNORECASE)
_FRAME_TIME = "frametime"


class ArffError(ValueError):
    """An ARFF file is malformed or does not hold what the caller expects."""


@dataclasses.dataclass(frozen=True)
class ArffData:
    """The content of one ARFF file.

    Attributes:
        path: the file read.
        relation: the ``@relation`` name ('' if the header has none).
        attributes: (name, type) per column in header order; numeric types are reported as
            'numeric', other keywords lower-cased, nominal types as written ('{a,b}').
        strings: values of every non-numeric column, by attribute name.
        frame_times: float64 [rows] values of the ``frameTime`` column (matched
            case-insensitively), or None when the file has no such column.
        feature_names: the numeric attributes other than frameTime, in header order.
        values: float32 [rows, len(feature_names)] values of those attributes.
    """

    path: str
    relation: str
    attributes: tuple[tuple[str, str], ...]
    strings: dict[str, tuple[str, ...]]
    frame_times: np.ndarray | None
    feature_names: tuple[str, ...]
    values: np.ndarray

    @property
    def names(self) -> tuple[str, ...]:
        """Values of the first string column (AVEC: ``Instance_name``), or () if there is none."""
        return next(iter(self.strings.values()), ())

    @property
    def num_rows(self) -> int:
        """Number of data rows."""
        return int(self.values.shape[0])


def _unquote(token: str) -> str:
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return token[1:-1]
    return token


def _parse_header(lines: list[str], path: str) -> tuple[str, list[tuple[str, str]], int]:
    """Returns (relation, attributes, index of the first line after @data)."""
    relation, attributes = "", []
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        keyword = line.split(None, 1)[0].lower()
        if keyword == "@relation":
            parts = line.split(None, 1)
            relation = _unquote(parts[1]) if len(parts) > 1 else ""
        elif keyword == "@attribute":
            match = _ATTRIBUTE_RE.match(line)
            if match is None:
                raise ArffError(f"{path}:{i + 1}: malformed @attribute line, expected "
                                f"'@attribute NAME TYPE', got {line!r}")
            name, type_ = _unquote(match.group(1)), match.group(2).strip()
            if type_.startswith("{"):
                attributes.append((name, type_))
                continue
            type_ = type_.split()[0].lower()
            if type_ in _NUMERIC_TYPES:
                type_ = "numeric"
            elif type_ not in ("string", "date"):
                raise ArffError(f"{path}:{i + 1}: attribute {name!r} has unsupported type "
                                f"{type_!r}, expected numeric, real, integer, string, date or a "
                                "nominal {...} list")
            attributes.append((name, type_))
        elif keyword == "@data":
            if not attributes:
                raise ArffError(f"{path}:{i + 1}: @data before any @attribute, expected the "
                                "attributes to be declared first")
            return relation, attributes, i + 1
        elif attributes and not line.startswith("@"):
            raise ArffError(f"{path}:{i + 1}: unexpected line in the ARFF header: {line[:60]!r} "
                            "looks like a data row, but no '@data' line comes before it; expected "
                            "a line '@data' between the @attribute declarations and the rows")
        else:
            raise ArffError(f"{path}:{i + 1}: unexpected line in the ARFF header, expected "
                            f"@relation, @attribute or @data, got {line!r}")
    raise ArffError(f"{path}:{len(lines)}: no @data section, expected a line '@data' after the "
                    "@attribute declarations")


def _tokenize(text: str) -> list[str]:
    """Splits one data row; the quote character is whichever quote the row uses first."""
    single, double = text.find("'"), text.find('"')
    quote = '"' if double >= 0 and (single < 0 or double < single) else "'"
    return next(csv.reader([text], quotechar=quote, escapechar="\\", skipinitialspace=True))


def _row_error(path: str, lineno: int, row: list[str], numeric: list[int],
               attributes: list[tuple[str, str]]) -> ArffError:
    """Names the first non-numeric value of a row that numpy refused to convert."""
    for col in numeric:
        token = row[col].strip()
        try:
            float("nan" if token == "?" else token)
        except ValueError:
            name = attributes[col][0]
            return ArffError(f"{path}:{lineno}: column {col + 1} ({name!r}) holds {token!r}, "
                             "expected a number")
    return ArffError(f"{path}:{lineno}: could not read the row as numbers")


def read_arff_header(path: str | os.PathLike) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Reads only the header (up to ``@data``), cheap even for large files.

    Args:
        path: the .arff file.

    Returns:
        (relation, attributes) as in ``ArffData``.

    Raises:
        FileNotFoundError: the file does not exist.
        ArffError: malformed header or no ``@data`` line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: ARFF file not found")
    lines = []
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        for raw in f:
            lines.append(raw.rstrip("\r\n"))
            if raw.strip().lower().startswith("@data"):
                break
    relation, attributes, _ = _parse_header(lines, path)
    return relation, tuple(attributes)


def numeric_feature_names(attributes: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The attributes ``read_arff`` returns as ``values``: numeric ones other than frameTime."""
    return tuple(name for name, type_ in attributes
                 if type_ == "numeric" and name.lower() != _FRAME_TIME)


def read_arff(path: str | os.PathLike) -> ArffData:
    """Reads a dense ARFF file.

    Args:
        path: the .arff file.

    Returns:
        An ``ArffData``; numeric values as float32 (frameTime as float64).

    Raises:
        FileNotFoundError: the file does not exist.
        ArffError: malformed header, missing @data, a row with too few or too many columns, or a
            non-numeric value in a numeric column; the message names the file and line number.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: ARFF file not found")
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        lines = f.read().splitlines()
    relation, attributes, start = _parse_header(lines, path)

    linenos, texts = [], []
    for i in range(start, len(lines)):
        text = lines[i].strip()
        if text and not text.startswith("%"):
            if text.startswith("{"):
                raise ArffError(f"{path}:{i + 1}: sparse ARFF rows ('{{...}}') are not supported, "
                                "expected a dense comma-separated row")
            linenos.append(i + 1)
            texts.append(text)

    rows = [_tokenize(text) for text in texts]
    n_cols = len(attributes)
    for lineno, row in zip(linenos, rows):
        if len(row) != n_cols:
            raise ArffError(f"{path}:{lineno}: row has {len(row)} columns, expected {n_cols} "
                            f"(one per @attribute)")

    numeric = [c for c, (_, t) in enumerate(attributes) if t == "numeric"]
    frame_col = next((c for c in numeric if attributes[c][0].lower() == _FRAME_TIME), None)
    feature_cols = [c for c in numeric if c != frame_col]
    numeric_set = set(numeric)
    for k, text in enumerate(texts):
        if "?" in text:  # ARFF's missing value; rare, so only those rows pay for the rewrite
            rows[k] = ["nan" if c in numeric_set and tok.strip() == "?" else tok
                       for c, tok in enumerate(rows[k])]
    if numeric and numeric == list(range(numeric[0], numeric[-1] + 1)):
        lo, hi = numeric[0], numeric[-1] + 1
        pick = lambda row: row[lo:hi]  # noqa: E731  (AVEC files: one slice per row, no per-value loop)
    else:
        pick = lambda row: [row[c] for c in numeric]  # noqa: E731
    try:
        table = np.array([pick(row) for row in rows], dtype=np.float64)
    except ValueError:
        for lineno, row in zip(linenos, rows):
            try:
                np.array(pick(row), dtype=np.float64)
            except ValueError:
                raise _row_error(path, lineno, row, numeric, attributes) from None
        raise
    table = table.reshape(len(rows), len(numeric))

    position = {c: j for j, c in enumerate(numeric)}
    frame_times = None if frame_col is None else table[:, position[frame_col]].copy()
    values = table[:, [position[c] for c in feature_cols]].astype(np.float32)
    strings = {attributes[c][0]: tuple(_unquote(row[c]) for row in rows)
               for c in range(n_cols) if c not in position}
    return ArffData(path=path, relation=relation, attributes=tuple(attributes), strings=strings,
                    frame_times=frame_times, feature_names=tuple(attributes[c][0] for c in feature_cols),
                    values=values)
