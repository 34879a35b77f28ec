"""Several processes: `experiments/launch_local.py` runs `main.py` as 2 processes x 1 CPU device
(jax.distributed, gloo collectives) and ends with exactly the parameters and metrics of 1 process
x 2 devices on the same config (the default encoder: the fused BLSTM)."""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import make_tiny_config
from emobed_jax.training import checkpoints, train

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "experiments" / "launch_local.py"


def _config(data_dir):
    return make_tiny_config(data_dir, **{
        "method": "emobed", "num_train_steps": 6,
        "eval_every_steps": 6, "checkpoint_every_steps": 6, "log_every_steps": 3})


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _override_flags(config) -> list:
    """`--config.KEY=VALUE` for every key where `config` differs from configs/synthetic.py."""
    from configs import synthetic

    base, wanted = _flat(synthetic.get_config().to_dict()), _flat(config.to_dict())
    return [f"--config.{key}={value if isinstance(value, str) else repr(value)}"
            for key, value in sorted(wanted.items()) if base.get(key) != value]


def _final_state(workdir) -> tuple[int, dict]:
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "latest"))
    step = ckpt.latest_step()
    arrays = ckpt.restore_arrays(step)
    ckpt.close()
    return step, arrays


def _as_json(config) -> dict:
    return json.loads(json.dumps(config.to_dict()))


def _results(workdir) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def test_two_processes_train_like_one_process_with_two_devices(synthetic_data_dir, tmp_path):
    config = _config(synthetic_data_dir)
    multi, single = tmp_path / "two_processes", tmp_path / "one_process"
    log_path = tmp_path / "launcher.log"
    # The two processes start from an empty data_dir: process 0 prepares the dataset while
    # process 1 waits for it (the generator is deterministic, so the data are the same).
    fresh = _config(str(tmp_path / "tfds"))
    command = [sys.executable, str(LAUNCHER), "--num_processes=2", "--devices_per_process=1",
               "--timeout_s=150", "--", "--config=configs/synthetic.py", f"--workdir={multi}",
               *_override_flags(fresh)]
    # The two-process run goes on in the background (output to a file, so a full pipe cannot
    # stall it) while this process trains the one-process, two-device reference.
    with open(log_path, "w") as log:
        launcher = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            assert len(jax.devices()) == 2
            train.train_and_evaluate(config, str(single))
            status = launcher.wait(timeout=170)
        finally:
            if launcher.poll() is None:
                launcher.kill()
    output = log_path.read_text()
    assert status == 0, output[-5000:]

    step_multi, state_multi = _final_state(multi)
    step_single, state_single = _final_state(single)
    assert step_multi == step_single == 6
    leaves_multi = jax.tree_util.tree_leaves_with_path(state_multi["params"])
    leaves_single = jax.tree_util.tree_leaves(state_single["params"])
    assert len(leaves_multi) == len(leaves_single) > 0
    for (path, a), b in zip(leaves_multi, leaves_single):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))

    results_multi, results_single = _results(multi), _results(single)
    assert results_multi["config"] == _as_json(fresh)  # the CLI flags gave the same config
    assert results_single["config"] == _as_json(config)
    assert results_multi["metrics"] == results_single["metrics"]
    assert {"validation", "test"} <= set(results_multi["metrics"])
    assert output.count("[0] preparing dataset synthetic_emotion") == 1
    assert "[1] preparing dataset" not in output and "Downloading" not in output
    # Only process 0 reports and writes the TensorBoard events.
    assert "[0] ccc_mean " in output and "[1] ccc_mean" not in output
    assert len(list((multi / "tensorboard").iterdir())) == 1


def test_launcher_fails_when_the_processes_fail(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(LAUNCHER), "--num_processes=2", "--timeout_s=60", "--",
         "--config=configs/synthetic.py", f"--workdir={tmp_path / 'w'}", "--config.nonexistent=1"],
        cwd=REPO, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 1
    # The first process to fail names the bad key; the launcher then stops the other, which may
    # or may not have printed the same line by then (a race the launcher is meant to cut short).
    failed = [i for i in (0, 1)
              if f"[{i}] FATAL Flags parsing error: --config.nonexistent" in proc.stdout]
    assert failed, proc.stdout[-2000:]
    assert len(failed) == 2 or re.search(r"process [01] failed first \(exit status 1\); stopping "
                                         r"the others", proc.stderr)


def test_launcher_needs_main_arguments():
    proc = subprocess.run([sys.executable, str(LAUNCHER), "--num_processes=2"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "expected the main.py arguments after '--'" in proc.stderr


@pytest.mark.parametrize("flags, expected", [
    ("--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=2",
     "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=1"),
    ("", "--xla_force_host_platform_device_count=1"),
])
def test_worker_environment_replaces_the_device_count(flags, expected):
    sys.path.insert(0, str(LAUNCHER.parent))
    try:
        import launch_local
    finally:
        sys.path.remove(str(LAUNCHER.parent))
    env = launch_local.process_env(1, {"XLA_FLAGS": flags})
    assert env["XLA_FLAGS"] == expected and env["JAX_PLATFORMS"] == "cpu"
