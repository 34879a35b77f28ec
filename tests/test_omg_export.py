"""Tests for emobed_jax.omg_export: prediction CSVs in official order and the official CCC."""
from __future__ import annotations

import csv
import math

import audmetric
import numpy as np
import pytest

from emobed_jax.datasets import omg_export
from omg_fixtures import HEADER, VALIDATION_LINES

TRAIN_MEAN = (0.4, 0.05)
# The CCC is the project's float32 JAX CCC (see CCC_TOL in test_metrics.py for the measured error).
CCC_TOL = 1e-6


@pytest.fixture
def official(tmp_path):
    path = tmp_path / "omg_ValidationVideos.csv"
    path.write_text("\n".join([HEADER] + VALIDATION_LINES) + "\n")
    return path


def _read(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_rows_follow_official_order_and_missing_get_train_mean(tmp_path, official):
    predictions = {  # deliberately not in file order; bytes keys as tfds returns names
        "664ea0ccc_34/utterance_744": (0.61, -0.2, 4),
        b"4ae5ecb00_1/utterance_1": (np.float32(0.5), np.float64(0.125), np.int64(6)),
        "4ae5ecb00_1/utterance_3": (0.3, 0.3, None),
        "664ea0ccc_34/utterance_742": (0.25, -0.75, 1),
    }
    out = tmp_path / "out" / "predictions_validation.csv"
    summary = omg_export.write_predictions_csv(out, official, predictions, TRAIN_MEAN)
    assert summary == {"rows": 6, "predicted": 4, "filled": 2}
    rows = _read(out)
    assert rows[0] == ["video", "utterance", "arousal", "valence", "category", "has_media"]
    assert [r[:2] for r in rows[1:]] == [line.split(",")[3:5] for line in VALIDATION_LINES]
    assert rows[1][2:] == ["0.5", "0.125", "6", "1"]
    assert rows[2][2:] == ["0.4", "0.05", "", "0"]           # utterance_2: no prediction
    assert rows[3][2:] == ["0.3", "0.3", "", "1"]
    assert rows[4][2:] == ["0.25", "-0.75", "1", "1"]
    assert rows[5][2:] == ["0.4", "0.05", "", "0"]           # utterance_743: no prediction
    assert rows[6][2:] == ["0.61", "-0.2", "4", "1"]
    assert list(out.parent.iterdir()) == [out]                # no temporary file left


def test_fallback_category_and_unlabelled_official_csv(tmp_path):
    official = tmp_path / "omg_TestVideos.csv"
    official.write_text("link,start,end,video,utterance\n"
                        "https://y/1,0.0,1.0,vidA,utterance_1.mp4\n"
                        "https://y/1,1.0,2.0,vidA,utterance_2.mp4\n")
    out = tmp_path / "p.csv"
    omg_export.write_predictions_csv(out, official, {"vidA/utterance_2": (0.1, 0.2, 3)},
                                     TRAIN_MEAN, fallback_category=4)
    assert _read(out)[1:] == [["vidA", "utterance_1.mp4", "0.4", "0.05", "4", "0"],
                              ["vidA", "utterance_2.mp4", "0.1", "0.2", "3", "1"]]


@pytest.mark.parametrize("predictions, match", [
    ({"nosuch/utterance_1": (0.1, 0.2, 3)}, r"not in .*omg_ValidationVideos\.csv.*nosuch/utterance_1"),
    ({"4ae5ecb00_1/utterance_1": (0.1, 0.2, 7)}, "category must be an EmotionMaxVote code 0..6"),
    ({"4ae5ecb00_1/utterance_1": (0.1, float("nan"), 3)}, "must be finite"),
    ({"4ae5ecb00_1/utterance_1": (0.1, 0.2)}, "expected .arousal, valence, category"),
])
def test_bad_predictions_raise_and_leave_existing_file(tmp_path, official, predictions, match):
    out = tmp_path / "p.csv"
    out.write_text("previous\n")
    with pytest.raises(ValueError, match=match):
        omg_export.write_predictions_csv(out, official, predictions, TRAIN_MEAN)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["omg_ValidationVideos.csv", "p.csv"]


def _gold_and_predictions(tmp_path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    gold_a, gold_v = rng.uniform(0, 1, n), rng.uniform(-1, 1, n)
    pred_a = 0.6 * gold_a + rng.normal(0.1, 0.15, n)
    pred_v = 0.8 * gold_v + rng.normal(-0.05, 0.3, n)
    gold = tmp_path / "gold.csv"
    lines = [HEADER] + [f"https://y/{i},0,1,vid{i // 10},utterance_{i}.mp4,{float(a)!r},{float(v)!r},4"
                        for i, (a, v) in enumerate(zip(gold_a, gold_v))]
    gold.write_text("\n".join(lines) + "\n")
    predictions = {f"vid{i // 10}/utterance_{i}": (a, v, None)
                   for i, (a, v) in enumerate(zip(pred_a, pred_v))}
    return gold, predictions, (gold_a, gold_v), (pred_a, pred_v)


def _reference_ccc(x, y):
    """CCC in float64 from its definition with population moments."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_official_ccc_matches_float64_reference(tmp_path):
    gold, predictions, (ga, gv), (pa, pv) = _gold_and_predictions(tmp_path)
    out = tmp_path / "pred.csv"
    omg_export.write_predictions_csv(out, gold, predictions, TRAIN_MEAN)
    scores = omg_export.official_ccc(out, gold)
    assert scores["ccc_arousal"] == pytest.approx(_reference_ccc(ga, pa), abs=CCC_TOL)
    assert scores["ccc_valence"] == pytest.approx(_reference_ccc(gv, pv), abs=CCC_TOL)
    assert scores["ccc_arousal"] == pytest.approx(audmetric.concordance_cc(ga, pa), abs=CCC_TOL)
    assert scores["pearson_valence"] == pytest.approx(np.corrcoef(gv, pv)[0, 1], abs=1e-12)
    assert scores["mse_arousal"] == pytest.approx(np.mean((ga - pa) ** 2), abs=1e-15)
    assert 0.3 < scores["ccc_arousal"] < 0.95 and 0.3 < scores["ccc_valence"] < 0.95


def test_official_ccc_is_global_not_per_video(tmp_path):
    gold, predictions, (ga, _), (pa, _) = _gold_and_predictions(tmp_path, n=40)
    out = tmp_path / "pred.csv"
    omg_export.write_predictions_csv(out, gold, predictions, TRAIN_MEAN)
    per_video = np.mean([_reference_ccc(ga[i:i + 10], pa[i:i + 10]) for i in range(0, 40, 10)])
    score = omg_export.official_ccc(out, gold)["ccc_arousal"]
    assert score == pytest.approx(_reference_ccc(ga, pa), abs=CCC_TOL)
    assert abs(score - per_video) > 1e-3


def test_filled_rows_keep_pairing_and_count_in_the_score(tmp_path):
    gold, predictions, (ga, _), (pa, _) = _gold_and_predictions(tmp_path, n=30)
    del predictions["vid0/utterance_3"], predictions["vid2/utterance_29"]
    out = tmp_path / "pred.csv"
    omg_export.write_predictions_csv(out, gold, predictions, TRAIN_MEAN)
    pa = pa.copy()
    pa[[3, 29]] = TRAIN_MEAN[0]
    assert omg_export.official_ccc(out, gold)["ccc_arousal"] == pytest.approx(
        _reference_ccc(ga, pa), abs=CCC_TOL)


def test_official_ccc_checks_rows(tmp_path):
    gold, predictions, _, _ = _gold_and_predictions(tmp_path, n=20)
    out = tmp_path / "pred.csv"
    omg_export.write_predictions_csv(out, gold, predictions, TRAIN_MEAN)
    rows = _read(out)
    rows[3], rows[4] = rows[4], rows[3]
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ValueError, match=r"pred\.csv, line 4: vid0/utterance_3\.mp4 but "
                                         r".*gold\.csv has vid0/utterance_2\.mp4"):
        omg_export.official_ccc(out, gold)
    assert math.isfinite(omg_export.official_ccc(out, gold, check_order=False)["ccc_arousal"])
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows[:-1])
    with pytest.raises(ValueError, match=r"has 19 rows but .*gold\.csv has 20"):
        omg_export.official_ccc(out, gold)


def test_constant_prediction_gives_nan_like_the_official_script(tmp_path):
    gold, predictions, _, _ = _gold_and_predictions(tmp_path, n=10)
    out = tmp_path / "pred.csv"
    omg_export.write_predictions_csv(out, gold, {}, TRAIN_MEAN)
    scores = omg_export.official_ccc(out, gold)
    assert math.isnan(scores["ccc_arousal"]) and math.isnan(scores["pearson_valence"])
