"""Preemption: SIGTERM/SIGINT checkpoint and exit cleanly; kill -9 loses only the work since the
last checkpoint; a rerun resumes to exactly the parameters and results of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cli_helpers import ROOT, run_main, tiny_flags
from emobed_jax.training import checkpoints

STEPS = {"num_train_steps": 80, "checkpoint_every_steps": 10, "eval_every_steps": 40,
         "log_every_steps": 10}


def _latest(workdir):
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "latest"))
    step = ckpt.latest_step()
    arrays = ckpt.restore_arrays(step) if step is not None else None
    ckpt.close()
    return step, arrays


def _results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def uninterrupted(synthetic_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    run_main(tiny_flags(synthetic_data_dir, workdir, **STEPS))
    return workdir


def _start_and_signal(data_dir, workdir, signum):
    """Starts a run, waits for its first checkpoint, sends `signum`, returns the finished process."""
    args = [sys.executable, os.path.join(ROOT, "experiments", "main.py")] + tiny_flags(
        data_dir, workdir, **STEPS)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    first = os.path.join(workdir, "checkpoints", "latest", "10")
    deadline = time.monotonic() + 120
    while not os.path.isdir(first) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted:\n" + proc.stderr.read()[-2000:]
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


# SIGKILL (at three moments, resumed each time) is tests/test_checkpoint_faults.py's soak test.
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143)], ids=["SIGTERM"])
def test_interrupted_then_resumed_equals_uninterrupted(synthetic_data_dir, tmp_path, uninterrupted,
                                                       signum, code):
    workdir = str(tmp_path)
    returncode, out, err = _start_and_signal(synthetic_data_dir, workdir, signum)
    assert returncode == code, err[-2000:]
    step, _ = _latest(workdir)
    assert 10 <= step < STEPS["num_train_steps"]
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    if signum == signal.SIGTERM:
        assert f"stopped by SIGTERM after step {step}; checkpoint saved in" in out
    run_main(tiny_flags(synthetic_data_dir, workdir, **STEPS))
    step_a, a = _latest(uninterrupted)
    step_b, b = _latest(workdir)
    assert step_a == step_b == STEPS["num_train_steps"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, a["params"], b["params"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, a["opt_state"], b["opt_state"])
    assert _results(workdir)["metrics"] == _results(uninterrupted)["metrics"]


def test_sigint_checkpoints_and_exits_130(synthetic_data_dir, tmp_path):
    returncode, out, err = _start_and_signal(synthetic_data_dir, str(tmp_path), signal.SIGINT)
    assert returncode == 130, err[-2000:]
    step, _ = _latest(str(tmp_path))
    assert f"stopped by SIGINT after step {step}" in out
