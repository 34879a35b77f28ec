"""experiments/main.py end to end: train -> results.json -> eval from the checkpoint -> same metrics."""
import csv
import json
import os

import pytest

from cli_helpers import run_main, tiny_flags


def test_train_then_eval_reproduces_metrics(synthetic_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    run_main(tiny_flags(synthetic_data_dir, workdir))
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["step"] == 8
    assert results["config"]["method"] == "emobed"
    val = results["metrics"]["validation"]
    assert -1.0 <= val["ccc_arousal"] <= 1.0 and -1.0 <= val["ccc_valence"] <= 1.0
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "best"))
    assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))

    proc = run_main(tiny_flags(synthetic_data_dir, workdir) + ["--mode=eval"])
    # The summary: one row per metric, one column per split.
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["validation", "test"])
    row = next(r for r in lines[header + 1:] if r.startswith("ccc_arousal "))
    for split in ("validation", "test"):
        with open(os.path.join(workdir, f"eval_{split}.json")) as f:
            ev = json.load(f)
        for key in ("ccc_arousal", "ccc_valence", "ccc_arousal_per_recording"):
            assert ev[key] == pytest.approx(results["metrics"][split][key], abs=1e-9), key
        column = ["validation", "test"].index(split) + 1
        assert float(row.split()[column]) == pytest.approx(ev["ccc_arousal"], abs=1e-4)
        with open(os.path.join(workdir, f"predictions_{split}.csv")) as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["recording", "frameTime", "arousal", "valence", "arousal_gold",
                                 "valence_gold"]
        assert rows[0]["frameTime"] == "0.00" and rows[1]["frameTime"] == "0.04"
        assert len({r["recording"] for r in rows}) == 4  # tiny: 4 recordings per eval split


def test_unknown_config_key_is_rejected(synthetic_data_dir, tmp_path):
    proc = run_main(tiny_flags(synthetic_data_dir, str(tmp_path)) + ["--config.no_such_key=1"],
                    expect_ok=False)
    assert proc.returncode != 0
    assert "no_such_key" in proc.stderr


def test_invalid_value_lists_valid_ones(synthetic_data_dir, tmp_path):
    proc = run_main(tiny_flags(synthetic_data_dir, str(tmp_path), method="foo"), expect_ok=False)
    assert proc.returncode != 0
    assert "config.method='foo' is not valid; expected one of" in proc.stderr
