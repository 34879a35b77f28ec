"""Preemption: SIGTERM/SIGINT finish the step, checkpoint, and exit with one line and 128 + the
signal's number. (Resuming to exactly the uninterrupted run: tests/test_checkpoint_faults.py.)"""
import os
import signal
import subprocess
import sys
import time

import pytest

from cli_helpers import ROOT, tiny_flags
from emobed_jax.training import checkpoints

STEPS = {"num_train_steps": 80, "checkpoint_every_steps": 10, "eval_every_steps": 40,
         "log_every_steps": 10}


def _latest(workdir):
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "latest"))
    step = ckpt.latest_step()
    ckpt.close()
    return step


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


# Resuming after SIGTERM and after SIGKILL (at three moments) to exactly the uninterrupted run is
# tests/test_checkpoint_faults.py's soak test.
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_checkpoints_and_exits_128_plus_its_number(synthetic_data_dir, tmp_path, signum,
                                                           code):
    returncode, out, err = _start_and_signal(synthetic_data_dir, str(tmp_path), signum)
    assert returncode == code, err[-2000:]
    step = _latest(str(tmp_path))
    assert 10 <= step < STEPS["num_train_steps"]
    assert not os.path.exists(os.path.join(str(tmp_path), "results.json"))
    name = signal.Signals(signum).name
    assert f"stopped by {name} after step {step}; checkpoint saved in" in out
