"""experiments/ablation.py: every method x target x seed, reports, statistics, resumability."""
import json
import os

import numpy as np
import pytest

from cli_helpers import ROOT, tiny_flags
from emobed_jax import ablation


def test_paired_tests_match_scipy_on_known_values():
    values = np.array([0.5, 0.6, 0.7, 0.65, 0.8])
    base = np.array([0.4, 0.55, 0.6, 0.66, 0.7])
    out = ablation.paired_tests(values, base)
    assert out["diff_mean"] == pytest.approx(0.068)
    assert 0 < out["t_test_p"] < 0.1 and 0 < out["wilcoxon_p"] <= 0.2


def test_ablation_cli_writes_reports_and_reuses_finished_runs(synthetic_data_dir, tmp_path):
    import subprocess
    import sys

    flags = tiny_flags(synthetic_data_dir, str(tmp_path), num_train_steps=4, eval_every_steps=2)
    args = [sys.executable, os.path.join(ROOT, "experiments", "ablation.py"), "--seeds=2",
            "--methods=monomodal,emobed", "--targets=audio"] + flags
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "ablation.json") as f:
        report = json.load(f)
    assert set(report["runs"]) == {"monomodal_audio", "emobed_audio"}
    cell = report["summary"]["validation"]["audio"]["emobed"]["ccc_mean"]
    assert len(cell["values"]) == 2 and "wilcoxon_p" in cell and "t_test_p" in cell
    md = (tmp_path / "ablation.md").read_text()
    assert "| emobed |" in md and "Wilcoxon p=" in md
    assert (tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = os.path.getmtime(tmp_path / "emobed_audio" / "results.json")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.getmtime(tmp_path / "emobed_audio" / "results.json") == before
