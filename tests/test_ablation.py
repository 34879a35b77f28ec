"""experiments/ablation.py: method rows x targets x regimes x seeds, reports, statistics,
reuse of finished runs and of runs that cannot differ."""
import json
import os

import numpy as np
import pytest

from cli_helpers import ROOT, tiny_flags
from emobed_jax import ablation, ablation_report


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


def test_unknown_regime_or_row_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown regime.*'labels5'.*'all', 'labels10', 'aux50'"):
        ablation.check_regimes(["all", "labels5"])
    with pytest.raises(ValueError, match=r"unknown method row.*'lasso'.*'pooled'"):
        ablation.run_ablation(None, "unused", 2, ["monomodal", "lasso"], ["audio"])
    with pytest.raises(ValueError, match=r"unknown regime.*'aux10'"):
        ablation.run_ablation(None, "unused", 2, ["monomodal"], ["audio"], ["aux10"])


def _fake_trainer(calls):
    """Stands in for replicas.train_replicas: records the config, writes results.json."""
    from emobed_jax import atomic

    def train(cfg, run_dir, devices=None):
        calls.append((run_dir, cfg))
        seeds = [cfg.seed + k for k in range(cfg.num_seeds)]
        res = {"config": cfg.to_dict(), "seeds": seeds, "step": cfg.num_train_steps,
               "best_steps": [1] * len(seeds),
               "metrics": {"test": [{"ccc_mean": 0.1 * k} for k in range(len(seeds))]}}
        os.makedirs(run_dir, exist_ok=True)
        atomic.write_json(os.path.join(run_dir, "results.json"), res)
        return res
    return train


def test_regime_and_row_overrides_reach_each_run_and_aux_blind_rows_are_reused(
        tmp_path, monkeypatch):
    from configs import synthetic

    calls = []
    monkeypatch.setattr(ablation.replicas, "train_replicas", _fake_trainer(calls))
    config = synthetic.get_config()
    rows, regimes = ("monomodal", "emobed", "pooled"), ("aux50", "labels10", "all")
    runs = ablation.run_ablation(config, str(tmp_path), 2, rows, ("audio",), regimes)
    trained = {os.path.relpath(d, tmp_path): cfg for d, cfg in calls}
    # monomodal and pooled under aux50 are the `all` runs; everything else trains once.
    assert sorted(trained) == sorted([f"{g}/{r}_audio" for g in ("all", "labels10") for r in rows]
                                     + ["aux50/emobed_audio"])
    for name, cfg in trained.items():
        regime, run = name.split("/")
        row = run[:-len("_audio")]
        with open(tmp_path / regime / run / "results.json") as f:
            written = json.load(f)["config"]
        for c in (cfg.to_dict(), written):
            assert c["method"] == ("monomodal" if row == "pooled" else row)
            assert c["target_modality"] == "audio" and c["num_seeds"] == 2
            assert c["model"]["encoder"] == ("pooled" if row == "pooled" else config.model.encoder)
            assert c["data"]["label_fraction"] == (0.1 if regime == "labels10" else 1.0)
            assert c["loss"]["positives"] == ("instance" if regime == "labels10"
                                              else config.loss.positives)
            assert c["data"]["aux_fraction"] == (0.5 if regime == "aux50" else 1.0)
    assert list(runs) == list(regimes)
    assert runs["aux50"]["pooled_audio"]["reused_from"] == "all/pooled_audio"
    assert runs["aux50"]["monomodal_audio"]["config"]["data"]["aux_fraction"] == 1.0
    assert "reused_from" not in runs["aux50"]["emobed_audio"]
    # A second call trains nothing; a run whose regime's overrides changed trains again.
    calls.clear()
    ablation.run_ablation(config, str(tmp_path), 2, rows, ("audio",), regimes)
    assert calls == []
    monkeypatch.setitem(ablation.REGIMES, "labels10", {"data.label_fraction": 0.2,
                                                       "loss.positives": "instance"})
    ablation.run_ablation(config, str(tmp_path), 2, ("emobed",), ("audio",), ("labels10",))
    assert [os.path.relpath(d, tmp_path) for d, _ in calls] == ["labels10/emobed_audio"]
    assert calls[0][1].data.label_fraction == 0.2


def test_premise_of_reuse_monomodal_ignores_the_auxiliary_modalities(tiny_config):
    """Why aux* regimes reuse the `all` run of monomodal (and pooled): with half the training
    recordings stripped of their auxiliary modalities, a monomodal replica run gives the very
    same metrics, seed by seed."""
    import jax

    from emobed_jax.training import replicas

    results = []
    for fraction in (1.0, 0.5):
        cfg = tiny_config(**{"method": "monomodal", "target_modality": "audio", "num_seeds": 2,
                             "model.encoder": "conv", "num_train_steps": 2,
                             "eval_every_steps": 2, "checkpoint_every_steps": 2,
                             "data.aux_fraction": fraction})
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            results.append(replicas.train_replicas(cfg, d, jax.devices()[:1]))
    assert results[0]["metrics"] == results[1]["metrics"]
    assert results[0]["best_steps"] == results[1]["best_steps"]


def _results(seed_values: dict) -> dict:
    """A hand-made results dict: split -> per-seed ccc_mean (ccc_arousal = the same)."""
    return {"seeds": [0, 1, 2], "best_steps": [1, 1, 1], "metrics": {
        split: [{"pearson_arousal": v, "ccc_arousal": v, "ccc_mean": v} for v in vals]
        for split, vals in seed_values.items()}}


def test_headline_table_values():
    import scipy.stats

    mono = {"validation": [0.1, 0.2, 0.3], "test": [0.50, 0.55, 0.62]}
    joint = {"validation": [0.2, 0.2, 0.2], "test": [0.52, 0.60, 0.61]}
    mono_aux = {"validation": [0.1, 0.2, 0.3], "test": [0.40, 0.47, 0.45]}
    joint_aux = {"validation": [0.1, 0.2, 0.3], "test": [0.41, 0.50, 0.49]}
    runs = {"all": {"monomodal_audio": _results(mono), "joint_audio": _results(joint)},
            "aux50": {"monomodal_audio": _results(mono_aux), "joint_audio": _results(joint_aux)}}
    summary = {g: ablation_report.summarize(r, ("monomodal", "joint"), ("audio",), "regression")
               for g, r in runs.items()}
    head = ablation_report.headline(summary, "regression")
    assert set(head) == {"monomodal", "joint"} and set(head["joint"]["audio"]) == {"all", "aux50"}
    for regime, vals, base in (("all", joint, mono), ("aux50", joint_aux, mono_aux)):
        v, b = np.array(vals["test"]), np.array(base["test"])
        cell = head["joint"]["audio"][regime]
        assert cell["split"] == "test" and cell["values"] == vals["test"]
        assert cell["mean"] == pytest.approx(v.mean(), abs=1e-12)
        assert cell["std"] == pytest.approx(v.std(ddof=1), abs=1e-12)
        assert cell["diff_mean"] == pytest.approx((v - b).mean(), abs=1e-12)
        assert cell["t_test_p"] == pytest.approx(scipy.stats.ttest_rel(v, b).pvalue, rel=1e-9)
        m = head["monomodal"]["audio"][regime]
        assert m["mean"] == pytest.approx(b.mean()) and "diff_mean" not in m
    md = ablation_report.markdown(summary, 3, ("audio",), "regression")
    v, b = np.array(joint["test"]), np.array(mono["test"])
    row = next(line for line in md.splitlines() if line.startswith("| joint |"))
    assert row.split(" | ")[1] == (f"{v.mean():.4f} ± {v.std(ddof=1):.4f} (Δ {(v - b).mean():+.4f};"
                                   f" t-test p={scipy.stats.ttest_rel(v, b).pvalue:.3g})")
    assert "| method | audio / all | audio / aux50 |" in md
    # Without a test split the headline falls back to validation.
    val_only = {"validation": summary["all"]["validation"]}
    assert ablation_report.headline({"all": val_only}, "regression")["joint"]["audio"]["all"][
        "split"] == "validation"


def test_ablation_cli_writes_reports_and_reuses_finished_runs(synthetic_data_dir, tmp_path):
    import subprocess
    import sys

    flags = tiny_flags(synthetic_data_dir, str(tmp_path), num_train_steps=2, eval_every_steps=2,
                       checkpoint_every_steps=2)
    args = [sys.executable, os.path.join(ROOT, "experiments", "ablation.py"), "--seeds=2",
            "--methods=monomodal,joint", "--targets=audio", "--regimes=all,aux50"] + flags
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "ablation.json") as f:
        report = json.load(f)
    assert report["regimes"] == ["all", "aux50"]
    assert set(report["runs"]["aux50"]) == {"monomodal_audio", "joint_audio"}
    assert report["reused"] == {"aux50/monomodal_audio": "all/monomodal_audio"}
    assert not (tmp_path / "aux50" / "monomodal_audio").exists()
    with open(tmp_path / "aux50" / "joint_audio" / "results.json") as f:
        assert json.load(f)["config"]["data"]["aux_fraction"] == 0.5
    cell = report["summary"]["aux50"]["test"]["audio"]["joint"]["ccc_mean"]
    assert len(cell["values"]) == 2 and "wilcoxon_p" in cell and "t_test_p" in cell
    assert report["headline"]["joint"]["audio"]["aux50"]["mean"] == cell["mean"]
    md = (tmp_path / "ablation.md").read_text()
    assert "| joint |" in md and "Wilcoxon p=" in md and "| audio / aux50 |" in md
    assert "`aux50/monomodal_audio` is the run `all/monomodal_audio`" in md
    assert (tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = os.path.getmtime(tmp_path / "aux50" / "joint_audio" / "results.json")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.getmtime(tmp_path / "aux50" / "joint_audio" / "results.json") == before
    proc = subprocess.run(args[:-len(flags)] + ["--regimes=all,aux5"] + flags,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "unknown regime(s) ['aux5']" in proc.stderr
