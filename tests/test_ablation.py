"""experiments/ablation.py: every method x target x seed, reports, statistics, resumability."""
import json
import os

import numpy as np
import pytest

from cli_helpers import ROOT, tiny_flags
from emobed_jax import ablation


def test_paired_tests_exact_values():
    import itertools

    import scipy.stats

    values = np.array([0.5, 0.58, 0.73, 0.65, 0.84])
    base = np.array([0.4, 0.55, 0.6, 0.66, 0.7])
    out = ablation.paired_tests(values, base)
    d = values - base  # 0.10, 0.03, 0.13, -0.01, 0.14: no ties, so Wilcoxon's p is exact
    assert out["diff_mean"] == pytest.approx(0.078)
    assert out["diff_std"] == pytest.approx(np.sqrt(np.sum((d - 0.078) ** 2) / 4))
    # Paired t-test by its formula: t = mean / (sd / sqrt(n)), two-sided, n - 1 = 4 dof.
    t = d.mean() / (d.std(ddof=1) / np.sqrt(5))
    assert out["t_test_p"] == pytest.approx(2 * scipy.stats.t.sf(abs(t), 4), rel=1e-9)
    # Wilcoxon signed-rank by enumeration of all 2^5 sign patterns of the ranks 1..5:
    # W+ = 14 (only rank 1 is negative); P(W+ >= 14) = 2/32, two-sided 4/32.
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w_plus = ranks[d > 0].sum()
    assert w_plus == 14
    dist = [sum(r for r, s in zip(range(1, 6), signs) if s) for signs in
            itertools.product((0, 1), repeat=5)]
    expected = 2 * min(np.mean([w >= w_plus for w in dist]), np.mean([w <= w_plus for w in dist]))
    assert expected == pytest.approx(0.125)
    assert out["wilcoxon_p"] == pytest.approx(expected, rel=1e-9)


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
