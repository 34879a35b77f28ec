"""The paper's table: monomodal vs joint vs crossmodal vs EmoBed (and cross-modal distillation,
`distill`), per inference modality.

`run_ablation` trains every method x target with `num_seeds` vmapped replicas (skipping runs
already finished in the workdir), and `write_reports` writes `ablation.json` (every run's
metrics), `ablation.md` (mean ± std per method and target, the difference to the monomodal
baseline with a paired t-test and a Wilcoxon signed-rank test over seeds) and `ablation.png`.

A `distill` run trains its teacher per run and per seed: `<workdir>/distill_<target>/teacher`
holds K teacher replicas with the run's seeds, and student replica k learns from teacher
replica k (`training.teacher.prepare_replicas`). The teacher differs per target (it sees that
target's auxiliary modalities), and a teacher per seed makes every seed an independent repetition
of the whole procedure, so the spread and the paired tests include the teacher's variance
(docs/methods.md). A finished teacher is reused when the run is repeated.
"""
from __future__ import annotations

import copy
import json
import logging
import os

import numpy as np
import scipy.stats

from emobed_jax import atomic
from emobed_jax.training import replicas

log = logging.getLogger(__name__)


def run_ablation(config, workdir: str, num_seeds: int, methods, targets, devices=None) -> dict:
    """Trains (or reuses) every method x target run.

    Args:
      config: the base experiment config.
      workdir: output directory; run `<method>_<target>` lives in `workdir/<method>_<target>`.
      num_seeds: seeds per run (config.seed, config.seed + 1, ...).
      methods, targets: sequences of names.
      devices: devices to use.

    Returns:
      `{"<method>_<target>": results dict}`.
    """
    runs = {}
    for target in targets:
        for method in methods:
            name = f"{method}_{target}"
            run_dir = os.path.join(workdir, name)
            done = os.path.join(run_dir, "results.json")
            cfg = copy.deepcopy(config)
            cfg.method, cfg.target_modality, cfg.num_seeds = method, target, num_seeds
            if os.path.exists(done):
                with open(done) as f:
                    previous = json.load(f)
                if (previous["step"] == cfg.num_train_steps and len(previous["seeds"]) == num_seeds
                        and previous["config"]["seed"] == cfg.seed):
                    log.info("%s: finished earlier, reusing %s", name, done)
                    runs[name] = previous
                    continue
            log.info("training %s (%d seeds)", name, num_seeds)
            runs[name] = replicas.train_replicas(cfg, run_dir, devices)
    return runs


def primary_metrics(task: str, reported: dict) -> tuple:
    """The metrics the table reports: accuracy, UAR and macro-F1, or the CCC of every label
    dimension and their mean (the dimensions are those `reported`, one evaluation's metrics, has:
    a `pearson_<dim>` per dimension)."""
    if task == "category":
        return ("accuracy", "uar", "macro_f1")
    return tuple(f"ccc_{k[len('pearson_'):]}" for k in reported if k.startswith("pearson_")) + (
        "ccc_mean",)


def _reported(runs: dict) -> dict:
    """One evaluation's metrics from the runs (they all report the same names)."""
    for res in runs.values():
        for per_seed in res["metrics"].values():
            return per_seed[0]
    return {}


def paired_tests(values: np.ndarray, baseline: np.ndarray) -> dict:
    """Mean difference and p-values of a paired t-test and a Wilcoxon test over seeds."""
    diff = values - baseline
    out = {"diff_mean": float(diff.mean()), "diff_std": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
           "t_test_p": float("nan"), "wilcoxon_p": float("nan")}
    if len(diff) >= 2 and np.any(diff != 0):
        out["t_test_p"] = float(scipy.stats.ttest_rel(values, baseline).pvalue)
        out["wilcoxon_p"] = float(scipy.stats.wilcoxon(values, baseline).pvalue)
    return out


def summarize(runs: dict, methods, targets, task: str) -> dict:
    """Per split, target, method and metric: per-seed values, mean, std and tests vs monomodal."""
    table = {}
    for name, res in runs.items():
        for split, per_seed in res["metrics"].items():
            table.setdefault(split, {})
    for split in table:
        for target in targets:
            for method in methods:
                res = runs.get(f"{method}_{target}")
                if res is None or split not in res["metrics"]:
                    continue
                base = runs.get(f"monomodal_{target}")
                for metric in primary_metrics(task, _reported(runs)):
                    vals = np.asarray([m[metric] for m in res["metrics"][split]], np.float64)
                    entry = {"values": vals.tolist(), "mean": float(vals.mean()),
                             "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
                    if base is not None and method != "monomodal":
                        ref = np.asarray([m[metric] for m in base["metrics"][split]], np.float64)
                        entry.update(paired_tests(vals, ref))
                    table[split].setdefault(target, {}).setdefault(method, {})[metric] = entry
    return table


def markdown(table: dict, num_seeds: int) -> str:
    """The table as Markdown: mean ± std, and Δ vs monomodal with p-values."""
    lines = [f"# Ablation ({num_seeds} seeds per cell; mean ± std over seeds)", ""]
    for split, by_target in table.items():
        for target, by_method in by_target.items():
            names = list(next(iter(by_method.values())))
            lines += [f"## {split}, target `{target}`", "",
                      "| method | " + " | ".join(names) + " |",
                      "| --- |" + " --- |" * len(names)]
            for method, metrics in by_method.items():
                cells = []
                for metric in names:
                    e = metrics[metric]
                    cell = f"{e['mean']:.4f} ± {e['std']:.4f}"
                    if "diff_mean" in e:
                        cell += (f" (Δ {e['diff_mean']:+.4f}; t-test p={e['t_test_p']:.3g}, "
                                 f"Wilcoxon p={e['wilcoxon_p']:.3g})")
                    cells.append(cell)
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    lines.append("Δ: mean paired difference to `monomodal` over seeds (same seeds, so the same "
                 "initialisation and data order per seed where shapes allow).")
    return "\n".join(lines) + "\n"


def plot(path: str, table: dict) -> None:
    """Bars with ±std error bars: one panel per split x target, one group per metric."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(s, t) for s, by_t in table.items() for t in by_t]
    fig = Figure(figsize=(6 * max(len(panels), 1), 4))
    FigureCanvasAgg(fig)
    for i, (split, target) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        by_method = table[split][target]
        metrics = list(next(iter(by_method.values())))
        width = 0.8 / max(len(by_method), 1)
        for j, (method, vals) in enumerate(by_method.items()):
            x = np.arange(len(metrics)) + j * width
            ax.bar(x, [vals[m]["mean"] for m in metrics], width,
                   yerr=[vals[m]["std"] for m in metrics], capsize=3, label=method)
        ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2)
        ax.set_xticklabels(metrics)
        ax.set_title(f"{split}, target {target}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def write_reports(workdir: str, runs: dict, methods, targets, task: str, num_seeds: int) -> dict:
    """Writes ablation.json, ablation.md and ablation.png; returns the summary table."""
    table = summarize(runs, methods, targets, task)
    payload = {"runs": {name: {"seeds": r["seeds"], "best_steps": r["best_steps"],
                               "metrics": r["metrics"]} for name, r in runs.items()},
               "summary": table}
    for name, content in (("ablation.json", json.dumps(payload, indent=2, default=float)),
                          ("ablation.md", markdown(table, num_seeds))):
        with atomic.atomic_write(os.path.join(workdir, name)) as f:
            f.write(content)
    plot(os.path.join(workdir, "ablation.png"), table)
    return table
