"""Several seeds in one program: replica k of a vmapped run equals a separate run with seed k,
whether the replicas share one device or are split over several."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import run_steps
from emobed_jax.training import experiment, replicas


def _separate_run(config, seed, steps):
    config.seed = seed
    return run_steps(config, jax.devices()[:1], steps)[0].params


@pytest.mark.parametrize("num_devices", [1, 2])
def test_replica_k_equals_a_separate_run_with_seed_k(tiny_config, num_devices):
    steps = 5
    config = tiny_config(method="emobed", **{"model.encoder": "conv"})
    exp = experiment.build(config, devices=jax.devices()[:1])
    seeds = [3, 4]
    states, keys = replicas.init_replicas(exp, seeds)
    devices = replicas.replica_devices(len(seeds), jax.devices()[:num_devices])
    assert len(devices) == num_devices  # conftest makes two CPU devices
    step_fn, split = replicas.compile_replica_step(exp.objective, devices)
    states, keys = jax.device_put(states, split), jax.device_put(keys, split)
    streams = [exp.train_stream(0, s)[0] for s in seeds]
    batches = [jax.device_put(replicas._stack([next(s) for s in streams]), split)
               for _ in range(steps)]
    # No communication between devices: an all-gather (jit's automatic partitioning of the
    # mining's top_k) made every device thread wait for all the others, and aborted on the CPU.
    hlo = step_fn.lower(states, batches[0], keys).compile().as_text()
    for collective in ("all-gather", "all-reduce", "collective-permute", "all-to-all"):
        assert collective not in hlo
    for batch in batches:
        states, metrics = step_fn(states, batch, keys)
    assert metrics["loss"].shape == (2,)
    # Each device holds its own replica: the parameters are split, not copied.
    leaf = jax.tree_util.tree_leaves(states.params)[0]
    assert {s.device for s in leaf.addressable_shards} == set(devices)
    assert leaf.addressable_shards[0].data.shape[0] == 2 // num_devices
    stacked = jax.device_get(states.params)
    for k, seed in enumerate(seeds):
        separate = _separate_run(tiny_config(method="emobed", **{"model.encoder": "conv"}), seed, steps)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a[k], b, rtol=1e-5, atol=1e-6),
                               stacked, separate)
    # The replicas really differ (different seeds, different data orders).
    diff = jax.tree_util.tree_map(lambda a: float(np.max(np.abs(a[0] - a[1]))), stacked)
    assert max(jax.tree_util.tree_leaves(diff)) > 1e-2


def test_train_replicas_writes_per_seed_metrics(tiny_config, tmp_path):
    config = tiny_config(method="monomodal", **{"model.encoder": "conv"})
    config.num_seeds = 2
    config.num_train_steps = 6
    results = replicas.train_replicas(config, str(tmp_path))  # split over both CPU devices
    assert results["seeds"] == [0, 1]
    assert len(results["metrics"]["validation"]) == 2 and len(results["metrics"]["test"]) == 2
    a, b = (m["ccc_mean"] for m in results["metrics"]["validation"])
    assert a != b


def test_replica_devices_divide_the_replicas():
    devices = list("abcdefgh")
    assert replicas.replica_devices(5, devices[:2]) == ["a"]  # 5 replicas cannot split over 2
    assert replicas.replica_devices(6, devices[:4]) == ["a", "b", "c"]
    assert replicas.replica_devices(4, devices) == ["a", "b", "c", "d"]
    assert replicas.replica_devices(1, devices) == ["a"]


def test_claim_cpu_devices_before_jax_starts():
    code = ("from emobed_jax.training import replicas; import jax; "
            "print(replicas.claim_cpu_devices(3), len(jax.devices('cpu')), "
            "replicas.claim_cpu_devices(4), len(jax.devices('cpu')))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert out.stdout.split() == ["True", "3", "False", "3"], out.stderr[-2000:]
    # The user's own XLA_FLAGS device count wins.
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert out.stdout.split() == ["False", "2", "False", "2"], out.stderr[-2000:]
