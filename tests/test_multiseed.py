"""Several seeds in one program: replica k of a vmapped run equals a separate run with seed k."""
import jax
import numpy as np

from conftest import run_steps
from emobed_jax.training import experiment, replicas


def _separate_run(config, seed, steps):
    config.seed = seed
    return run_steps(config, jax.devices()[:1], steps)[0].params


def test_replica_k_equals_a_separate_run_with_seed_k(tiny_config):
    steps = 5
    config = tiny_config(method="emobed", **{"model.encoder": "conv"})
    exp = experiment.build(config, devices=jax.devices()[:1])
    seeds = [3, 4]
    states, keys = replicas.init_replicas(exp, seeds)
    step_fn, sharding = replicas.compile_replica_step(exp)
    streams = [exp.train_stream(0, s)[0] for s in seeds]
    for _ in range(steps):
        batch = replicas._stack([next(s) for s in streams])
        states, metrics = step_fn(states, jax.device_put(batch, sharding), keys)
    assert metrics["loss"].shape == (2,)
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
    results = replicas.train_replicas(config, str(tmp_path), devices=jax.devices()[:1])
    assert results["seeds"] == [0, 1]
    assert len(results["metrics"]["validation"]) == 2 and len(results["metrics"]["test"]) == 2
    a, b = (m["ccc_mean"] for m in results["metrics"]["validation"])
    assert a != b
