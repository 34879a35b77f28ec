"""The study of issue 16: method rows x inference targets x training regimes x seeds.

`run_ablation` trains every regime x row x target with `num_seeds` vmapped replicas (skipping
runs already finished in the workdir) and `ablation_report.write_reports` writes `ablation.json`,
`ablation.md` (a headline table, then per regime mean ± std per row and target, the difference
to that regime's `monomodal` with a paired t-test and a Wilcoxon signed-rank test over seeds) and
`ablation.png`.

Rows (`METHOD_ROWS`) and regimes (`REGIMES`) are config overrides, so adding one is adding data.
Run `<row>_<target>` of regime `<regime>` lives in `<workdir>/<regime>/<row>_<target>`.

A row that never reads the auxiliary modalities (`method='monomodal'`: `monomodal`, `pooled`)
trains the same model on the same data whatever `data.aux_fraction` says (checked exactly in
tests/test_ablation.py), so under a regime that only changes auxiliary modalities
(`AUXILIARY_ONLY_KEYS`) it reuses the `all` regime's run of the same row and target; the
results say so (`reused_from`), and so do the reports.

A `distill` run trains its teacher per run and per seed: `<workdir>/<regime>/distill_<target>/
teacher` holds K teacher replicas with the run's seeds, and student replica k learns from
teacher replica k (`training.teacher.prepare_replicas`). The teacher differs per target (it sees
that target's auxiliary modalities) and per regime, and a teacher per seed makes every seed an
independent repetition of the whole procedure, so the spread and the paired tests include the
teacher's variance (docs/methods.md). A finished teacher is reused when the run is repeated.
"""
from __future__ import annotations

import copy
import json
import logging
import os

from emobed_jax.ablation_report import paired_tests, write_reports  # noqa: F401 (the API)
from emobed_jax.training import replicas

log = logging.getLogger(__name__)

# Row name -> config overrides (dotted keys). Every row sets `method`.
METHOD_ROWS = {
    "monomodal": {"method": "monomodal"},
    "joint": {"method": "joint"},
    "crossmodal": {"method": "crossmodal"},
    "emobed": {"method": "emobed"},
    "distill": {"method": "distill"},
    # The pooled-statistics baseline: statistics of the target's valid frames, then an MLP, with
    # no auxiliary modality (the linear-baseline family's strongest member, docs/small_corpus.md).
    "pooled": {"method": "monomodal", "model.encoder": "pooled"},
}
# Regime name -> config overrides (dotted keys); see data/regimes.py.
REGIMES = {
    # Everything as configured: every label and every auxiliary modality.
    "all": {},
    # 10% of the training recordings keep their labels. The others keep their media and feed the
    # alignment through instance positives (the same recording in two modalities), since without
    # a label the 'bins' rule has nothing to pair them by.
    "labels10": {"data.label_fraction": 0.1, "loss.positives": "instance"},
    # Half the training recordings keep their auxiliary modalities (the others: sensor not worn).
    "aux50": {"data.aux_fraction": 0.5},
}
# Keys that change only the auxiliary modalities: rows that never read them cannot differ.
AUXILIARY_ONLY_KEYS = frozenset({"data.aux_fraction"})


def _known(names, known: dict, what: str, flag: str) -> tuple:
    names = tuple(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown} in {flag}; expected any of {list(known)}")
    if not names:
        raise ValueError(f"{flag} is empty; expected any of {list(known)}")
    return names


def check_regimes(names) -> tuple:
    """The regime names, or a ValueError listing the known ones."""
    return _known(names, REGIMES, "regime(s)", "--regimes")


def check_methods(names) -> tuple:
    """The row names, or a ValueError listing the known ones."""
    return _known(names, METHOD_ROWS, "method row(s)", "--methods")


def overrides(row: str, regime: str) -> dict:
    """The config overrides of run `row` under `regime` (the regime's win on a shared key)."""
    return {**METHOD_ROWS[row], **REGIMES[regime]}


def run_config(config, row: str, target: str, regime: str, num_seeds: int):
    """A copy of `config` for one run: the row's and the regime's overrides, target and seeds."""
    cfg = copy.deepcopy(config)
    cfg.update_from_flattened_dict(overrides(row, regime))
    cfg.target_modality, cfg.num_seeds = target, num_seeds
    return cfg


def reuse_source(row: str, regime: str) -> str | None:
    """The regime whose run of `row` this regime's run equals, or None when it must train: rows
    that never read the auxiliary modalities, under a regime that only changes those."""
    keys = set(REGIMES[regime])
    if regime == "all" or not keys or not keys <= AUXILIARY_ONLY_KEYS:
        return None
    return "all" if METHOD_ROWS[row]["method"] == "monomodal" else None


def _dotted(d: dict, key: str):
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return KeyError
        d = d[part]
    return d


def finished(previous: dict, cfg, keys) -> bool:
    """Whether `previous` (a results.json) is the run `cfg` asks for: same steps, seeds and
    values of the override keys `keys` (row and regime)."""
    return (previous["step"] == cfg.num_train_steps and len(previous["seeds"]) == cfg.num_seeds
            and previous["config"]["seed"] == cfg.seed
            and all(_dotted(previous["config"], k) == _dotted(cfg.to_dict(), k) for k in keys))


def run_name(row: str, target: str) -> str:
    return f"{row}_{target}"


def run_ablation(config, workdir: str, num_seeds: int, methods, targets, regimes=("all",),
                 devices=None) -> dict:
    """Trains (or reuses) every regime x row x target run.

    Args:
      config: the base experiment config.
      workdir: output directory; see the module docstring for the layout.
      num_seeds: seeds per run (config.seed, config.seed + 1, ...).
      methods: row names (`METHOD_ROWS`); targets: inference modalities; regimes: `REGIMES` names.
      devices: devices to use.

    Returns:
      `{regime: {"<row>_<target>": results dict}}`; a run taken from another regime's has
      `reused_from` ("<regime>/<row>_<target>").
    """
    methods, regimes = check_methods(methods), check_regimes(regimes)
    runs = {regime: {} for regime in regimes}
    order = sorted(regimes, key=lambda r: r != "all")  # sources first
    for regime in order:
        for target in targets:
            for row in methods:
                name = run_name(row, target)
                source = reuse_source(row, regime)
                if source is not None:
                    ref = f"{source}/{name}"
                    log.info("%s/%s: never reads the auxiliary modalities, reusing %s", regime,
                             name, ref)
                    res = runs[source].get(name) if source in runs else None
                    if res is None:
                        res = _run(config, workdir, source, row, target, num_seeds, devices)
                    runs[regime][name] = {**res, "reused_from": ref}
                    continue
                runs[regime][name] = _run(config, workdir, regime, row, target, num_seeds, devices)
    return runs


def _run(config, workdir, regime, row, target, num_seeds, devices) -> dict:
    """One run: its finished results, or trained now."""
    name = run_name(row, target)
    run_dir = os.path.join(workdir, regime, name)
    done = os.path.join(run_dir, "results.json")
    cfg = run_config(config, row, target, regime, num_seeds)
    if os.path.exists(done):
        with open(done) as f:
            previous = json.load(f)
        if finished(previous, cfg, overrides(row, regime)):
            log.info("%s/%s: finished earlier, reusing %s", regime, name, done)
            return previous
    log.info("training %s/%s (%d seeds)", regime, name, num_seeds)
    return replicas.train_replicas(cfg, run_dir, devices)
