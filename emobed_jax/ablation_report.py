"""The ablation's reports: statistics over seeds (pure functions), ablation.json, ablation.md and
ablation.png (`write_reports`). `runs` is `{regime: {"<row>_<target>": results}}` as
`ablation.run_ablation` returns it; each regime's rows are compared with that regime's
`monomodal`.
"""
from __future__ import annotations

import json
import os

import numpy as np
import scipy.stats

from emobed_jax import atomic

BASELINE = "monomodal"


def primary_metrics(task: str, reported: dict) -> tuple:
    """The metrics the table reports: accuracy, UAR and macro-F1, or the CCC of every label
    dimension and their mean (the dimensions are those `reported`, one evaluation's metrics, has:
    a `pearson_<dim>` per dimension)."""
    if task == "category":
        return ("accuracy", "uar", "macro_f1")
    return tuple(f"ccc_{k[len('pearson_'):]}" for k in reported if k.startswith("pearson_")) + (
        "ccc_mean",)


def headline_metric(task: str) -> str:
    """The one metric of the headline table and the plot."""
    return "uar" if task == "category" else "ccc_mean"


def headline_split(table: dict) -> str:
    """The split of the headline table: test, or validation where there is no test split."""
    return "test" if "test" in table else "validation"


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
    """One regime's runs (`{"<row>_<target>": results}`): per split, target, row and metric the
    per-seed values, mean, std and tests vs monomodal."""
    table = {}
    for res in runs.values():
        for split in res["metrics"]:
            table.setdefault(split, {})
    for split in table:
        for target in targets:
            for method in methods:
                res = runs.get(f"{method}_{target}")
                if res is None or split not in res["metrics"]:
                    continue
                base = runs.get(f"{BASELINE}_{target}")
                for metric in primary_metrics(task, _reported(runs)):
                    vals = np.asarray([m[metric] for m in res["metrics"][split]], np.float64)
                    entry = {"values": vals.tolist(), "mean": float(vals.mean()),
                             "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
                    if base is not None and method != BASELINE:
                        ref = np.asarray([m[metric] for m in base["metrics"][split]], np.float64)
                        entry.update(paired_tests(vals, ref))
                    table[split].setdefault(target, {}).setdefault(method, {})[metric] = entry
    return table


def headline(summary: dict, task: str) -> dict:
    """`{row: {target: {regime: entry}}}`: the headline metric on each regime's headline split
    (`summary`: `{regime: summarize(...)}`); an entry also names its split."""
    metric, out = headline_metric(task), {}
    for regime, table in summary.items():
        if not table:
            continue
        split = headline_split(table)
        for target, by_method in table[split].items():
            for method, metrics in by_method.items():
                out.setdefault(method, {}).setdefault(target, {})[regime] = {
                    **metrics[metric], "split": split}
    return out


def _cell(e: dict, wilcoxon: bool = True) -> str:
    cell = f"{e['mean']:.4f} ± {e['std']:.4f}"
    if "diff_mean" in e:
        cell += f" (Δ {e['diff_mean']:+.4f}; t-test p={e['t_test_p']:.3g}"
        cell += f", Wilcoxon p={e['wilcoxon_p']:.3g})" if wilcoxon else ")"
    return cell


def headline_markdown(head: dict, targets, regimes, task: str) -> list:
    """The headline table's lines: rows = methods, columns = target x regime."""
    columns = [(t, r) for t in targets for r in regimes]
    splits = sorted({e["split"] for by_t in head.values() for by_r in by_t.values()
                     for e in by_r.values()})
    lines = [f"## Headline: `{headline_metric(task)}` on {' / '.join(splits)}", "",
             "| method | " + " | ".join(f"{t} / {r}" for t, r in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for method, by_target in head.items():
        cells = [_cell(by_target[t][r], wilcoxon=False) if r in by_target.get(t, {}) else ""
                 for t, r in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + ["", "Δ: mean paired difference to the same regime's `monomodal` over seeds; "
                        "p: paired t-test.", ""]


def markdown(summary: dict, num_seeds: int, targets=(), task: str = "regression",
             reused: dict | None = None) -> str:
    """The report as Markdown: the headline table, then per regime, split and target mean ± std
    and Δ vs monomodal with p-values; `reused`: `{"<regime>/<run>": "<regime>/<run>"}`."""
    lines = [f"# Ablation ({num_seeds} seeds per cell; mean ± std over seeds)", ""]
    lines += headline_markdown(headline(summary, task), targets, list(summary), task)
    for regime, table in summary.items():
        lines += [f"## Regime `{regime}`", ""]
        for split, by_target in table.items():
            for target, by_method in by_target.items():
                names = list(next(iter(by_method.values())))
                lines += [f"### {regime}: {split}, target `{target}`", "",
                          "| method | " + " | ".join(names) + " |",
                          "| --- |" + " --- |" * len(names)]
                for method, metrics in by_method.items():
                    lines.append(f"| {method} | " + " | ".join(_cell(metrics[m]) for m in names)
                                 + " |")
                lines.append("")
        mine = {k: v for k, v in (reused or {}).items() if k.startswith(f"{regime}/")}
        for run, source in mine.items():
            lines.append(f"- `{run}` is the run `{source}`: the row never reads the auxiliary "
                         f"modalities, which are all this regime changes.")
        if mine:
            lines.append("")
    lines.append("Δ: mean paired difference to the regime's `monomodal` over seeds (same seeds, "
                 "so the same initialisation and data order per seed where shapes allow).")
    return "\n".join(lines) + "\n"


def plot(path: str, summary: dict, targets, task: str) -> None:
    """One panel per regime: x = targets, grouped bars per method (headline metric and split),
    ±std error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    head, metric = headline(summary, task), headline_metric(task)
    regimes = list(summary)
    fig = Figure(figsize=(6 * max(len(regimes), 1), 4))
    FigureCanvasAgg(fig)
    width = 0.8 / max(len(head), 1)
    for i, regime in enumerate(regimes):
        ax = fig.add_subplot(1, len(regimes), i + 1)
        for j, (method, by_target) in enumerate(head.items()):
            cells = [by_target.get(t, {}).get(regime) for t in targets]
            x = np.arange(len(targets)) + j * width
            ax.bar(x, [c["mean"] if c else np.nan for c in cells], width,
                   yerr=[c["std"] if c else 0.0 for c in cells], capsize=3, label=method)
        ax.set_xticks(np.arange(len(targets)) + 0.4 - width / 2)
        ax.set_xticklabels(list(targets))
        split = headline_split(summary[regime]) if summary[regime] else ""
        ax.set_title(f"regime {regime}: {metric} ({split})")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def write_reports(workdir: str, runs: dict, methods, targets, task: str, num_seeds: int) -> dict:
    """Writes ablation.json, ablation.md and ablation.png; returns `{regime: summary table}`."""
    summary = {regime: summarize(by_name, methods, targets, task) for regime, by_name in runs.items()}
    reused = {f"{regime}/{name}": r["reused_from"] for regime, by_name in runs.items()
              for name, r in by_name.items() if "reused_from" in r}
    payload = {"regimes": list(runs),
               "runs": {regime: {name: {"seeds": r["seeds"], "best_steps": r["best_steps"],
                                        "metrics": r["metrics"],
                                        **({"reused_from": r["reused_from"]}
                                           if "reused_from" in r else {})}
                                 for name, r in by_name.items()}
                        for regime, by_name in runs.items()},
               "reused": reused, "headline": headline(summary, task), "summary": summary}
    for name, content in (("ablation.json", json.dumps(payload, indent=2, default=float)),
                          ("ablation.md", markdown(summary, num_seeds, targets, task, reused))):
        with atomic.atomic_write(os.path.join(workdir, name)) as f:
            f.write(content)
    plot(os.path.join(workdir, "ablation.png"), summary, targets, task)
    return summary
