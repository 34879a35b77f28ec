"""Single-device, jit-sharded and pmap training give the same parameters (2 CPU devices), with
the default encoder (the fused BLSTM on a CPU)."""
import jax
import numpy as np
import pytest

from conftest import run_steps


def _train(config, devices, mode, steps=4):
    assert config.model.encoder == "lstm" and config.model.rnn_impl == "auto"  # the defaults
    config.parallelism = mode
    state, history = run_steps(config, devices, steps)
    return state.params, [m["loss"] for m in history]


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
