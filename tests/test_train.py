"""Training: the loss falls, an interrupted run resumes to identical parameters, NaN stops it."""
import json
import os

import jax
import numpy as np
import optax
import pytest

from conftest import run_steps
from emobed_jax.training import checkpoints, experiment, state as ts, train


@pytest.mark.parametrize("method", ["monomodal", "joint", "crossmodal", "emobed"])
def test_loss_falls_on_a_small_problem(tiny_config, method):
    config = tiny_config(method=method, **{"optimizer.learning_rate": 3e-3, "model.encoder": "conv"})
    config.num_train_steps = 40
    _, m = run_steps(config, jax.devices()[:1], 40)
    first = np.mean([x["loss"] for x in m[:5]])
    last = np.mean([x["loss"] for x in m[-5:]])
    assert last < first - 0.2, (first, last)
    # Each method trains exactly its terms (README "The methods").
    terms = {k for k in m[0] if k.startswith("task_") or k == "align"}
    assert terms == {"monomodal": {"task_audio"}, "joint": {"task_audio", "task_video"},
                     "crossmodal": {"task_audio", "align"},
                     "emobed": {"task_audio", "task_video", "align"}}[method]
    if "align" in terms:
        assert m[0]["align_active_terms"] == 2.0  # both directions, one auxiliary modality
        # The alignment term is trained too.
        assert np.mean([x["align"] for x in m[-5:]]) < np.mean([x["align"] for x in m[:5]])


def _params(workdir):
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "latest"))
    step = ckpt.latest_step()
    restored = ckpt.restore_arrays(step)
    ckpt.close()
    return step, restored["params"]


def test_interrupted_run_resumes_to_identical_parameters(tiny_config, tmp_path, monkeypatch):
    config = tiny_config(method="emobed", **{"model.encoder": "conv"})
    full = str(tmp_path / "full")
    results_full = train.train_and_evaluate(config, full, devices=jax.devices()[:1])

    # Crash right after the step-6 checkpoint of the interrupted run is written.
    original_save = checkpoints.Checkpointer.save

    def crashing_save(self, state, meta):
        original_save(self, state, meta)
        if self.directory.endswith("latest") and int(jax.device_get(state.step)) == 6:
            raise KeyboardInterrupt("simulated preemption")

    interrupted = str(tmp_path / "interrupted")
    monkeypatch.setattr(checkpoints.Checkpointer, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, interrupted, devices=jax.devices()[:1])
    assert _params(interrupted)[0] == 6
    assert not os.path.exists(os.path.join(interrupted, "results.json"))
    monkeypatch.setattr(checkpoints.Checkpointer, "save", original_save)
    results_resumed = train.train_and_evaluate(config, interrupted, devices=jax.devices()[:1])

    step_a, params_a = _params(full)
    step_b, params_b = _params(interrupted)
    assert step_a == step_b == config.num_train_steps
    jax.tree_util.tree_map(np.testing.assert_array_equal, params_a, params_b)
    assert results_resumed["metrics"] == results_full["metrics"]
    with open(os.path.join(full, "results.json")) as f:
        saved = json.load(f)
    assert saved["step"] == 12 and saved["config"]["method"] == "emobed"
    assert set(saved["metrics"]) == {"validation", "test"}
    assert {"ccc_arousal", "ccc_valence"} <= set(saved["metrics"]["validation"])


def test_nonfinite_loss_stops_with_step_and_term(tiny_config, tmp_path):
    config = tiny_config(method="monomodal", **{"optimizer.learning_rate": 1e30,
                                                "optimizer.grad_clip_norm": 0.0,
                                                "loss.regression": "mse", "model.encoder": "conv"})
    config.log_every_steps = 1
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step \d+: terms \["):
        train.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])


def test_incompatible_checkpoint_names_the_differing_parameters(tiny_config, tmp_path):
    config = tiny_config(method="monomodal", **{"model.encoder": "conv"})
    config.num_train_steps = 2
    train.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
    wider = tiny_config(method="monomodal", **{"model.encoder": "conv", "model.embedding_dim": 24})
    wider.num_train_steps = 4
    # The run's description refuses it first, naming the key ...
    with pytest.raises(ValueError, match=r"model.embedding_dim: run 16 vs passed 24"):
        train.train_and_evaluate(wider, str(tmp_path), devices=jax.devices()[:1])
    # ... and without run.json the checkpoint itself names the differing parameters.
    os.remove(tmp_path / "run.json")
    with pytest.raises(checkpoints.IncompatibleCheckpointError,
                       match=r"different model \(\d+ parameters differ: .*projector_audio/dense/kernel: "
                             r"checkpoint \[16, 16\] vs config \[16, 24\]"):
        train.train_and_evaluate(wider, str(tmp_path), devices=jax.devices()[:1])


def test_skip_nonfinite_updates_keeps_parameters_and_counts(tiny_config, monkeypatch):
    """With skipping on, a NaN batch leaves the parameters unchanged and is counted."""
    config = tiny_config(method="monomodal", **{"model.encoder": "conv"})
    exp = experiment.build(config, devices=jax.devices()[:1])
    init_rng, rng = experiment.init_rngs(0)
    state = ts.create_state(exp.model, config, exp.example_batch(), init_rng)
    step = jax.jit(ts.bind_train_step(exp.objective, skip_nonfinite=True))
    stream, _ = exp.train_stream(0)
    batch = next(stream)
    batch["features"]["audio"][0, 0, 0] = np.nan
    new, metrics = step(state, batch, rng)
    assert float(metrics["nonfinite"]) == 1.0 and int(new.skipped) == 1 and int(new.step) == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, new.params, state.params)
    good_batch = next(stream)
    good, metrics = step(new, good_batch, rng)
    assert float(metrics["nonfinite"]) == 0.0 and int(good.skipped) == 1
    # The skipped update left no trace: the optimiser state was not advanced either.
    reference, _ = step(state, good_batch, rng)
    jax.tree_util.tree_map(np.testing.assert_array_equal, good.params, reference.params)
    later, _ = step(good, next(stream), rng)  # (the first update has warm-up learning rate 0)
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), later.params, state.params)
    assert any(jax.tree_util.tree_leaves(changed))


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_flat_clip_equals_optax_and_grad_norm_is_the_global_norm(max_norm):
    """The one-vector clip scales exactly like optax's per-leaf one and keeps its state."""
    keys = jax.random.split(jax.random.key(0), 3)
    tree = {"a": jax.random.normal(keys[0], (3, 4)), "b": {"c": jax.random.normal(keys[1], (5,)),
                                                          "d": jax.random.normal(keys[2], (2, 2, 2))}}
    ours, ref = ts.clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)
    assert (jax.tree_util.tree_structure(ours.init(tree))
            == jax.tree_util.tree_structure(ref.init(tree)))
    got, _ = jax.jit(ours.update)(tree, ours.init(tree))
    want, _ = jax.jit(ref.update)(tree, ref.init(tree))
    jax.tree_util.tree_map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6), got, want)
    norm = float(optax.global_norm(got))
    assert norm == pytest.approx(min(max_norm, float(optax.global_norm(tree))), rel=1e-5)


def test_grad_norm_metric_is_optax_global_norm(tiny_config):
    config = tiny_config(method="emobed", **{"model.encoder": "conv"})
    exp = experiment.build(config, devices=jax.devices()[:1])
    init_rng, rng = experiment.init_rngs(0)
    state = ts.create_state(exp.model, config, exp.example_batch(), init_rng)
    batch = next(exp.train_stream(0)[0])
    _, metrics = jax.jit(ts.bind_train_step(exp.objective))(state, batch, rng)
    grads = jax.jit(jax.grad(lambda p: ts._loss_fn(p, state, exp.objective, batch,
                                                   jax.random.fold_in(rng, 0), None)[0]))(
        state.params)
    assert float(metrics["grad_norm"]) == pytest.approx(float(optax.global_norm(grads)), rel=1e-5)
    assert float(metrics["grad_norm"]) > 0
