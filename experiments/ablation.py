"""The ablation study: every method row x target x training regime x seed, with statistics
against each regime's monomodal baseline.

    python experiments/ablation.py --config=configs/synthetic.py --workdir=DIR [--seeds=5] \
        [--methods=monomodal,joint,crossmodal,emobed,distill,pooled] [--targets=audio,video] \
        [--regimes=all,labels10,aux50] [--config.KEY=VALUE]

The study of issue 16 (every row, both targets, three regimes, five seeds):

    python experiments/ablation.py --config=configs/synthetic.py --workdir=runs/study16 \
        --seeds=5 --methods=monomodal,joint,crossmodal,emobed,distill,pooled \
        --targets=audio,video --regimes=all,labels10,aux50

(`pooled` is `method='monomodal'` with `model.encoder='pooled'`; regimes: `all` as configured,
`labels10` = `data.label_fraction=0.1` with `loss.positives='instance'`, `aux50` =
`data.aux_fraction=0.5`; `emobed_jax.ablation.METHOD_ROWS` / `REGIMES`.)

Writes DIR/ablation.json, DIR/ablation.md and DIR/ablation.png; run ROW_TARGET of a regime
lives in DIR/REGIME/ROW_TARGET, and runs already finished there (same steps, seeds and
overrides) are reused. Rows that never read the auxiliary modalities (monomodal, pooled) are not
trained again under `aux50`: they reuse the `all` run, as the reports say. Seeds run as vmapped
replicas in one program (config.num_seeds). A `distill` run first trains one teacher per seed in
DIR/REGIME/distill_TARGET/teacher (docs/methods.md).
"""
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_SEEDS = flags.DEFINE_integer("seeds", 5, "Seeds per method x target x regime.")
_METHODS = flags.DEFINE_list(
    "methods", ["monomodal", "joint", "crossmodal", "emobed"],
    "Method rows (any of monomodal, joint, crossmodal, emobed, distill, pooled).")
_TARGETS = flags.DEFINE_list("targets", ["audio", "video"], "Inference modalities.")
_REGIMES = flags.DEFINE_list("regimes", ["all"], "Training regimes (any of all, labels10, aux50).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from emobed_jax import ablation

    from emobed_jax import console

    console.setup()  # our lines only: no library INFO, no note about a missing TPU backend
    from emobed_jax.training import replicas

    replicas.claim_cpu_devices(_SEEDS.value)  # one CPU device per seed, before JAX starts
    config = _CONFIG.value
    try:  # before any training: a typo in a name is a usage error
        ablation.check_methods(_METHODS.value)
        ablation.check_regimes(_REGIMES.value)
    except ValueError as e:
        raise app.UsageError(str(e))
    os.makedirs(_WORKDIR.value, exist_ok=True)
    runs = ablation.run_ablation(config, _WORKDIR.value, _SEEDS.value, _METHODS.value,
                                 _TARGETS.value, _REGIMES.value)
    ablation.write_reports(_WORKDIR.value, runs, _METHODS.value, _TARGETS.value, config.task,
                           _SEEDS.value)
    with open(os.path.join(_WORKDIR.value, "ablation.md")) as f:
        print(f.read())


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from emobed_jax import tcmalloc

    tcmalloc.reexec()  # where installed: 1.4-1.8x faster JAX on the CPU
    app.run(main)
