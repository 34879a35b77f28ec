"""The ablation table: every method x target x seed, with statistics against the baseline.

    python experiments/ablation.py --config=configs/synthetic.py --workdir=DIR [--seeds=5] \
        [--methods=monomodal,joint,crossmodal,emobed,distill] [--targets=audio,video] \
        [--config.KEY=VALUE]

Writes DIR/ablation.json, DIR/ablation.md and DIR/ablation.png; runs already finished in DIR
are reused. Seeds run as vmapped replicas in one program (config.num_seeds). A `distill` run
first trains one teacher per seed in DIR/distill_<target>/teacher (docs/methods.md).
"""
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_SEEDS = flags.DEFINE_integer("seeds", 5, "Seeds per method x target.")
_METHODS = flags.DEFINE_list("methods", ["monomodal", "joint", "crossmodal", "emobed"],
                             "Methods (any of monomodal, joint, crossmodal, emobed, distill).")
_TARGETS = flags.DEFINE_list("targets", ["audio", "video"], "Inference modalities.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from emobed_jax import ablation

    from emobed_jax import console

    console.setup()  # our lines only: no library INFO, no note about a missing TPU backend
    config = _CONFIG.value
    os.makedirs(_WORKDIR.value, exist_ok=True)
    runs = ablation.run_ablation(config, _WORKDIR.value, _SEEDS.value, _METHODS.value, _TARGETS.value)
    ablation.write_reports(_WORKDIR.value, runs, _METHODS.value, _TARGETS.value, config.task,
                           _SEEDS.value)
    with open(os.path.join(_WORKDIR.value, "ablation.md")) as f:
        print(f.read())


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from emobed_jax import tcmalloc

    tcmalloc.reexec()  # where installed: 1.4-1.8x faster JAX on the CPU
    app.run(main)
