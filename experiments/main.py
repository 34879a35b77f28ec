"""Command-line entry point: `python experiments/main.py --config=configs/synthetic.py --workdir=DIR`.

Flags:
  --config            an ml_collections config file (optionally `file.py:ARG`); override any
                      key with `--config.KEY=VALUE` (unknown keys are rejected).
  --workdir           output directory (checkpoints, TensorBoard events, results.json).
  --mode              train (default) or eval (restores the best checkpoint, or
                      --checkpoint_step, and evaluates the target modality alone).
  --eval_splits       eval mode: comma-separated splits (default: config.eval_splits present).
  --checkpoint_step   eval mode: a step kept in checkpoints/latest instead of the best one.
  --coordinator_address, --num_processes, --process_id
                      multi-process runs (jax.distributed); see README "Several hosts".
"""
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train or evaluate a checkpoint.")
_EVAL_SPLITS = flags.DEFINE_list("eval_splits", None, "Eval mode: splits to evaluate.")
_CHECKPOINT_STEP = flags.DEFINE_integer("checkpoint_step", None, "Eval mode: checkpoint step.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 for jax.distributed.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a distributed run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

    if _COORDINATOR.value:
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
    from emobed_jax import train

    logging.getLogger().setLevel(logging.INFO if jax.process_index() == 0 else logging.WARNING)
    config = _CONFIG.value
    if _MODE.value == "train":
        results = train.train_and_evaluate(config, _WORKDIR.value)
        summary = results["metrics"]
    else:
        summary = train.evaluate_checkpoint(config, _WORKDIR.value, _EVAL_SPLITS.value,
                                            _CHECKPOINT_STEP.value)
    if jax.process_index() == 0:
        for split, values in summary.items():
            shown = {k: round(v, 4) for k, v in values.items() if isinstance(v, float)}
            print(f"{split}: {shown}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
