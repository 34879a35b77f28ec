"""Command-line entry point: `python experiments/main.py --config=configs/synthetic.py --workdir=DIR`.

Flags:
  --config            an ml_collections config file (optionally `file.py:ARG`); override any
                      key with `--config.KEY=VALUE` (unknown keys are rejected). Required for
                      training; in eval mode the run's stored config is used, and a passed one
                      may only change evaluation settings (splits, eval batch size,
                      post-processing, data locations).
  --workdir           output directory (checkpoints, TensorBoard events, results.json).
  --mode              train (default) or eval (restores the best checkpoint, or
                      --checkpoint_step, and evaluates the target modality alone).
  --eval_splits       eval mode: comma-separated splits (default: config.eval_splits present).
  --checkpoint_step   eval mode: a step kept in checkpoints/latest instead of the best one.
  --output_dir        eval mode: where to write metrics, predictions and plots (default: the
                      workdir; use it for a read-only workdir).
  --coordinator_address, --num_processes, --process_id
                      multi-process runs (jax.distributed); see README "Several processes".
  --distributed       initialise jax.distributed with the cluster's own settings (Cloud TPU
                      slices, SLURM, Open MPI), i.e. without the three flags above.

Ctrl-C (SIGINT) or SIGTERM at any moment ends the program with one line and status 130 / 143;
during training the `latest` checkpoint is saved first, and the workdir and the data dir are left
resumable (rerun the same command). Where tcmalloc is installed, the program re-executes itself
with it preloaded (`emobed_jax.tcmalloc`; EMOBED_TCMALLOC=0 turns this off).
"""
import os
import signal
import sys
import threading
import time

if __name__ == "__main__":
    # Before anything else (imports take time): the re-executed process starts from here, and
    # a signal only ends it with one line once the handlers below are installed.
    from emobed_jax import tcmalloc

    tcmalloc.reexec()


class Terminated(BaseException):
    """SIGTERM, raised where the program is (like KeyboardInterrupt for SIGINT), so that open
    files and temporary folders are cleaned up on the way out."""


_SIGNALS = []  # the signals received (outside training, which checkpoints on them itself)
INTERRUPTED = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}


# False while the program imports its libraries: a signal then ends it at once (nothing to clean
# up yet, and an exception raised inside a library's import can surface as that library's own
# traceback or ImportError). Set once the imports are done; from then on the signal is raised
# where the program is, so temporary folders (a dataset being prepared) are removed on the way out.
_PAST_IMPORTS = []


def _on_signal(signum, frame):
    _SIGNALS.append(signum)
    if not _PAST_IMPORTS:
        _exit_interrupted()
    # Raised where the program is; but a signal landing in a callback Python cannot raise from
    # (e.g. JAX's garbage-collection hook) is swallowed there, so a watchdog ends the program
    # a few seconds later if the exception did not.
    threading.Thread(target=_exit_soon, daemon=True).start()
    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _exit_soon(seconds: float = 2.0) -> None:
    time.sleep(seconds)
    _exit_interrupted()


def _exit_interrupted() -> None:
    """One line, then exit at once with 128 + the signal number (130 / 143); callable at any
    point of start-up (the flags may not exist yet)."""
    signum = _SIGNALS[0] if _SIGNALS else signal.SIGINT
    code, what = 128 + signum, INTERRUPTED[signum]
    absl_flags = sys.modules.get("absl.flags")
    parsed = "_WORKDIR" in globals() and absl_flags is not None and absl_flags.FLAGS.is_parsed()
    workdir = _WORKDIR.value if parsed else None
    where = f"; {workdir} is resumable: rerun the same command" if workdir else ""
    bars = getattr(sys.modules.get("tqdm"), "tqdm", None)
    fresh_line = "\n" if getattr(bars, "_instances", None) else ""  # not glued to a progress bar
    sys.stderr.write(f"{fresh_line}{what}: stopped{where}\n")
    sys.stderr.flush()
    os._exit(code)  # at once: no library's exit handler may wait on a thread now


def _quiet_unraisable(unraisable, default=sys.unraisablehook):
    """The swallowed signal exception is not an error to print (the watchdog reports it)."""
    if not isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
        default(unraisable)


# First thing: a signal during start-up must end with one line, not a traceback. Also where the
# parent shell started us with SIGINT ignored (a background job).
signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGTERM, _on_signal)  # last: once SIGTERM is caught, both are (tests rely on it)
sys.unraisablehook = _quiet_unraisable

import importlib.util  # noqa: E402
import re  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train or evaluate a checkpoint.")
_EVAL_SPLITS = flags.DEFINE_list("eval_splits", None, "Eval mode: splits to evaluate.")
_CHECKPOINT_STEP = flags.DEFINE_integer("checkpoint_step", None, "Eval mode: checkpoint step.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Eval mode: output directory.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 for jax.distributed.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a distributed run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Initialise jax.distributed from the cluster environment.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        _run()
    except BaseException as e:  # noqa: BLE001 - sorted out below, anything else re-raised
        if _SIGNALS or isinstance(e, (KeyboardInterrupt, Terminated)):
            # (an extension module interrupted while loading reports an ImportError instead)
            _exit_interrupted()
        if not isinstance(e, (ValueError, OSError)):
            from emobed_jax.training import failfast

            failfast.fail_unexpected(e)  # several processes: traceback, tell the others, exit now
            raise
        # Bad input (config values, files, workdir): the message says what to fix; no traceback.
        # EMOBED_TRACEBACK=1 shows it anyway.
        if os.environ.get("EMOBED_TRACEBACK"):
            raise
        sys.stderr.write(f"error: {type(e).__name__}: {e}\n")
        from emobed_jax.training import failfast

        failfast.fail(f"{type(e).__name__}: {e}")  # sys.exit(1); several processes: all stop now


def _run():
    from emobed_jax import console

    console.setup()  # before JAX initialises its backends (its TPU note is noise on a CPU)
    import jax

    config = _CONFIG.value
    if _MODE.value == "train" and config is not None and config.num_seeds > 1:
        from emobed_jax.training import replicas

        replicas.claim_cpu_devices(config.num_seeds)  # one CPU device per seed, before JAX starts
    if _COORDINATOR.value or _DISTRIBUTED.value:
        # Before any other jax call. Unset arguments are detected from the environment (TPU
        # metadata, SLURM, Open MPI); on CPU, jax's default gloo collectives link the processes.
        # Short timeouts and a watcher: the first failing process stops all (training/failfast.py).
        from emobed_jax.training import failfast

        failfast.initialize(coordinator_address=_COORDINATOR.value,
                            num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
    from emobed_jax.training import train

    from emobed_jax.training import preemption

    _PAST_IMPORTS.append(True)  # signals are raised from here on (see _on_signal)
    console.setup(main_process=jax.process_index() == 0)
    if _MODE.value == "train" and config is None:
        raise ValueError("--config is required for --mode=train (e.g. --config=configs/synthetic.py)")
    if _MODE.value == "train":
        if config.num_seeds > 1:
            from emobed_jax.training import replicas

            results = replicas.train_replicas(config, _WORKDIR.value)
            summary = {f"{split} (seed {seed})": m for split, per_seed in results["metrics"].items()
                       for seed, m in zip(results["seeds"], per_seed)}
        else:
            try:
                results = train.train_and_evaluate(config, _WORKDIR.value)
            except preemption.Preempted as e:
                print(e, flush=True)
                sys.exit(e.exit_code)
            summary = results["metrics"]
    else:
        summary = train.evaluate_checkpoint(config, _WORKDIR.value, _EVAL_SPLITS.value,
                                            _CHECKPOINT_STEP.value, output_dir=_OUTPUT_DIR.value)
        if jax.process_index() == 0:
            step = next(iter(summary.values()))["step"] if summary else None
            print(f"evaluated step {step} of {_WORKDIR.value}; wrote eval_<split>.json, "
                  f"predictions_<split>.csv and plots to {_OUTPUT_DIR.value or _WORKDIR.value}",
                  flush=True)
    if jax.process_index() == 0:
        print(console.summary_table(summary), flush=True)


def _parse_flags(argv):
    """absl's flag parsing, with a clear message for a `--config.KEY` the config does not have.

    ml_collections reports an unknown key as a bare KeyError/AttributeError traceback.
    """
    try:
        return app.parse_flags_with_usage(argv)
    except (KeyError, AttributeError) as e:
        sys.stderr.write(f"FATAL Flags parsing error: {_unknown_key_message(argv, e)}\n")
        sys.exit(1)


def _config_keys(argv, path: list):
    """Sorted keys of the sub-config at `path` of the --config file, or None if not loadable."""
    specs = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    specs += [b for a, b in zip(argv, argv[1:]) if a == "--config"]
    if not specs:
        return None
    spec = specs[-1]
    file_name, _, arg = spec.partition(":")
    try:
        module_spec = importlib.util.spec_from_file_location("_config_for_message", file_name)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
        for key in path:
            config = config[key]
        return sorted(config.keys())
    except Exception:  # noqa: BLE001 (the message is still useful without the list)
        return None


def _unknown_key_message(argv, error) -> str:
    text = str(error.args[0] if error.args else error)
    named = text.split("Did you mean")[0]  # ml_collections names only the missing field
    overrides = [a[2:].split("=", 1)[0].split(".")[1:] for a in argv[1:] if a.startswith("--config.")]
    found = [(parts, i) for parts in overrides for i, part in enumerate(parts)
             if re.search(rf"(?<!\w){re.escape(part)}(?!\w)", named)]
    if not found:
        return f"cannot apply the --config.KEY overrides: {text}"
    parts, i = found[0]
    hint = re.search(r'Did you mean "([^"]+)"', text)
    keys = _config_keys(argv, parts[:i])
    expected = (f"did you mean {hint.group(1)!r}? " if hint else "") + (
        f"expected one of {keys}" if keys else "expected a key the config file defines")
    return (f"--config.{'.'.join(parts)}: {'.'.join(['config'] + parts[:i])} has no key "
            f"{parts[i]!r} (unknown keys are rejected rather than ignored); {expected}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        app.run(main, flags_parser=_parse_flags)
    except (KeyboardInterrupt, Terminated):  # before or after main (flag parsing, exit)
        _exit_interrupted()
    except BaseException:
        if _SIGNALS:
            _exit_interrupted()
        raise
