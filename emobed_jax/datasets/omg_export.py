"""OMG-Emotion prediction files in the official row order, and the official CCC scorer.

The challenge's scorer reads the gold CSV and a prediction CSV with pandas and pairs them *by row
order* (it never looks at the ``video``/``utterance`` columns), then computes one CCC per dimension
over all utterances of the split: ``2 * r * sd_gold * sd_pred / (sd_pred^2 + sd_gold^2 +
(mean_pred - mean_gold)^2)`` with Pearson's r from ``scipy.stats.pearsonr`` and population
(ddof = 0) moments. That is the project's CCC (`emobed_jax.losses.ccc.masked_ccc`, reached through
`evaluation.metrics.ccc`) except for constant columns, where ``pearsonr`` is undefined and the
script gets NaN (the metric gives 0, or 1 for two equal constants). A prediction file must therefore have exactly one row per gold row, in the gold
order, including utterances whose clip could not be downloaded. ``write_predictions_csv`` fills
those with the training-set mean (a constant that adds no correlation but keeps the pairing
intact) and flags them with ``has_media = 0``.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Mapping, Sequence

import numpy as np
import scipy.stats

from emobed_jax import atomic
from emobed_jax.evaluation import metrics

__all__ = ["PREDICTION_COLUMNS", "read_official_order", "write_predictions_csv", "official_ccc"]

PREDICTION_COLUMNS = ("video", "utterance", "arousal", "valence", "category", "has_media")
# EmotionMaxVote codes 0..6: Anger, Disgust, Fear, Happy, Neutral, Sad, Surprise.
_NUM_CATEGORIES = 7


def _read_csv(path: str, required: Sequence[str]) -> list[dict[str, str]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: CSV not found")
    with open(path, "r", encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; header is {header}")
        reader.fieldnames = header
        rows = list(reader)
    for i, row in enumerate(rows):
        if any(row.get(c) is None for c in required):
            raise ValueError(f"{path}, line {i + 2}: short row, expected fields {list(required)}")
    return rows


def read_official_order(official_csv: str | os.PathLike) -> list[tuple[str, str]]:
    """Returns ``(video, utterance)`` of every row of an official CSV, in file order.

    Works with the labelled and the unlabelled files (only ``video`` and ``utterance`` are read).
    """
    rows = _read_csv(os.fspath(official_csv), ("video", "utterance"))
    return [(r["video"].strip(), r["utterance"].strip()) for r in rows]


def _utterance_name(video: str, utterance: str) -> str:
    return f"{video}/{os.path.splitext(utterance)[0]}"


def _check_prediction(label: str, value) -> tuple[float, float, int | None]:
    """Validates one (arousal, valence, category) triple; ``label`` names it in errors."""
    try:
        arousal, valence, category = value
        arousal, valence = float(arousal), float(valence)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{label}: expected (arousal, valence, category or None) with numeric "
                         f"arousal and valence, got {value!r}") from e
    if not (math.isfinite(arousal) and math.isfinite(valence)):
        raise ValueError(f"{label}: arousal and valence must be finite, got "
                         f"{arousal}, {valence}")
    if category is not None:
        try:
            code = int(category)
            valid = code == category and 0 <= code < _NUM_CATEGORIES
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"{label}: category must be an EmotionMaxVote code "
                             f"0..{_NUM_CATEGORIES - 1} or None, got {category!r}")
        category = code
    return arousal, valence, category


def write_predictions_csv(path: str | os.PathLike, official_csv: str | os.PathLike,
                          predictions: Mapping[str | bytes, tuple],
                          train_mean: tuple[float, float],
                          fallback_category: int | None = None) -> dict[str, int]:
    """Writes ``video,utterance,arousal,valence,category,has_media`` in the official row order.

    Args:
        path: output CSV; written to a temporary file in the same folder, then renamed.
        official_csv: the split's official CSV (labelled or not), which fixes the row order.
        predictions: ``'<video>/<utterance stem>'`` (str or bytes, as tfds returns names) ->
            ``(arousal, valence, category)``, category an EmotionMaxVote code 0..6 or None.
        train_mean: (arousal, valence) written for utterances without a prediction.
        fallback_category: category written for those; None leaves the cell empty.

    Returns:
        ``{'rows': ..., 'predicted': ..., 'filled': ...}``.

    Raises:
        ValueError: a prediction for an utterance not in ``official_csv``, or a malformed value.
    """
    path, official_csv = os.fspath(path), os.fspath(official_csv)
    order = read_official_order(official_csv)
    preds = {(k.decode() if isinstance(k, bytes) else k): v for k, v in predictions.items()}
    names = [_utterance_name(v, u) for v, u in order]
    unknown = sorted(set(preds) - set(names))
    if unknown:
        raise ValueError(f"{len(unknown)} predictions name utterances that are not in "
                         f"{official_csv} (first: {unknown[:5]}); expected '<video>/<utterance stem>'")
    fill = _check_prediction("train_mean/fallback_category", (*train_mean, fallback_category))
    out_rows, predicted = [], 0
    for (video, utterance), name in zip(order, names):
        if name in preds:
            arousal, valence, category = _check_prediction(f"predictions[{name!r}]", preds[name])
            has_media, predicted = 1, predicted + 1
        else:
            (arousal, valence, category), has_media = fill, 0
        out_rows.append([video, utterance, repr(arousal), repr(valence),
                         "" if category is None else str(category), str(has_media)])
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with atomic.atomic_write(path, newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(PREDICTION_COLUMNS)
        writer.writerows(out_rows)
    return {"rows": len(order), "predicted": predicted, "filled": len(order) - predicted}


def _official_ccc_1d(gold: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(CCC, Pearson r) as the challenge script computes them (NaN when r is undefined).

    2 r sd_g sd_p equals 2 cov with population moments, so the CCC is `metrics.ccc`; only the
    constant-column case differs, and it is decided here as the script decides it.
    """
    if np.ptp(gold) == 0 or np.ptp(pred) == 0:
        return math.nan, math.nan  # pearsonr is undefined (the script warns and gets NaN)
    return metrics.ccc(pred, gold), float(scipy.stats.pearsonr(pred, gold)[0])


def official_ccc(pred_csv: str | os.PathLike, gold_csv: str | os.PathLike,
                 check_order: bool = True) -> dict[str, float]:
    """Scores a prediction CSV against a gold CSV as the OMG-Emotion challenge script does.

    Rows are paired by position; one CCC per dimension over all rows, population moments.

    Args:
        pred_csv: CSV with ``arousal`` and ``valence`` columns (e.g. from ``write_predictions_csv``).
        gold_csv: the labelled official CSV.
        check_order: also require equal ``video``/``utterance`` per row when ``pred_csv`` has
            them (the official script does not check; a mismatch there means a wrong score).

    Returns:
        ``ccc_arousal``, ``ccc_valence``, ``pearson_arousal``, ``pearson_valence``,
        ``mse_arousal``, ``mse_valence`` as floats (CCC and r are NaN for a constant column).

    Raises:
        ValueError: different row counts, a non-numeric value, or (check_order) a row mismatch.
    """
    pred_csv, gold_csv = os.fspath(pred_csv), os.fspath(gold_csv)
    gold = _read_csv(gold_csv, ("video", "utterance", "arousal", "valence"))
    pred = _read_csv(pred_csv, ("arousal", "valence"))
    if not gold:
        raise ValueError(f"{gold_csv}: no rows to score")
    if len(pred) != len(gold):
        raise ValueError(f"{pred_csv} has {len(pred)} rows but {gold_csv} has {len(gold)}; the "
                         f"scorer pairs rows by order, so they must match one to one")
    if check_order and "video" in pred[0] and "utterance" in pred[0]:
        for i, (p, g) in enumerate(zip(pred, gold)):
            if (p["video"].strip(), p["utterance"].strip()) != (g["video"].strip(),
                                                                g["utterance"].strip()):
                raise ValueError(f"{pred_csv}, line {i + 2}: {p['video']}/{p['utterance']} but "
                                 f"{gold_csv} has {g['video']}/{g['utterance']} there; rows must "
                                 f"follow the gold order")
    result = {}
    for dim in ("arousal", "valence"):
        columns = []
        for path, rows in ((gold_csv, gold), (pred_csv, pred)):
            try:
                columns.append(np.array([float(r[dim]) for r in rows], dtype=np.float64))
            except ValueError as e:
                raise ValueError(f"{path}, column {dim!r}: expected numbers ({e})") from e
        g, p = columns
        result[f"ccc_{dim}"], result[f"pearson_{dim}"] = _official_ccc_1d(g, p)
        result[f"mse_{dim}"] = float(np.mean((g - p) ** 2))
    return result
