"""Single-device, jit-sharded and pmap training give the same parameters (2 CPU devices)."""
import jax
import numpy as np
import pytest

from emobed_jax import experiment, train_step as ts


def _train(config, devices, mode, steps=4):
    config.model.encoder = "conv"  # the equivalence is about the step, not the encoder; conv compiles fast
    config.parallelism = mode
    exp = experiment.build(config, devices=devices)
    init_rng, rng = experiment.init_rngs(config.seed)
    state = exp.par.put_state(ts.create_state(exp.model, config, experiment.example_batch(exp), init_rng))
    step_fn = exp.par.compile_train_step(lambda axis: ts.bind_train_step(exp.objective, axis_name=axis))
    stream, _ = experiment.train_stream(exp, 0)
    losses = []
    for _ in range(steps):
        state, metrics = step_fn(state, exp.par.put_batch(next(stream)), rng)
        losses.append(float(metrics["loss"]))
    return jax.device_get(state.params), losses


@pytest.mark.parametrize("method", ["emobed"])
def test_single_jit_sharded_and_pmap_agree(tiny_config, method):
    assert jax.device_count() == 2, "conftest sets two CPU devices"
    devices = jax.devices()
    ref, ref_losses = _train(tiny_config(method=method), devices[:1], "jit")
    sharded, sharded_losses = _train(tiny_config(method=method), devices, "jit")
    pmapped, pmap_losses = _train(tiny_config(method=method), devices, "pmap")
    np.testing.assert_allclose(sharded_losses, ref_losses, rtol=1e-5)
    np.testing.assert_allclose(pmap_losses, ref_losses, rtol=1e-5)
    # Parameters moved (so equality is not trivially of the initial values) ...
    init, _ = _train(tiny_config(method=method), devices[:1], "jit", steps=0)
    moved = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), ref, init)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-3
    # ... and agree across the three modes.
    for other in (sharded, pmapped):
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                               ref, other)
