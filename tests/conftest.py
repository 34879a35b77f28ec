"""Test setup: two CPU devices (for data-parallel tests) and a shared tiny synthetic dataset."""
import os

# Must happen before jax is imported anywhere: two host devices for jit/pmap equivalence tests.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=2").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # A persistent XLA compilation cache for this test session only, inherited by the
    # subprocesses the tests start (CLI, preemption, several processes): the same tiny models
    # then compile once instead of once per process (about a quarter of those tests' time).
    import atexit
    import shutil
    import tempfile

    _CACHE = tempfile.mkdtemp(prefix="emobed_jax_test_cache_")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
    """A tfds data_dir holding `synthetic_emotion/tiny`, built once per session."""
    import tensorflow_datasets as tfds

    import emobed_jax.datasets  # noqa: F401

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("synthetic_emotion/tiny", data_dir=data_dir).download_and_prepare(
        file_format="array_record")
    return data_dir


def small_run(config, steps, eval_every, **overrides):
    """Shrinks any experiment config for a test: small conv model, few steps, one prefetch thread.

    Args:
      config: an experiment config.
      steps: num_train_steps.
      eval_every: eval and checkpoint interval.
      **overrides: dotted keys, e.g. `**{"data.max_frames": 200}`.
    """
    config.update_from_flattened_dict({
        "data.prefetch_threads": 1, "model.encoder": "conv", "model.hidden": 16,
        "model.embedding_dim": 16, "batch_size": 8, "num_train_steps": steps,
        "eval_every_steps": eval_every, "checkpoint_every_steps": eval_every,
        "log_every_steps": 10, "optimizer.learning_rate": 3e-3, "optimizer.warmup_steps": 5,
        "loss.align_frames": 64, **overrides})
    return config


def make_tiny_config(data_dir, **overrides):
    """configs/synthetic.py shrunk for tests: tiny data, small model, few steps."""
    from configs import synthetic

    config = synthetic.get_config()
    config.data.config = "tiny"
    config.data.data_dir = data_dir
    config.data.window_frames = 50
    config.data.window_hop_frames = 25
    config.data.prefetch_threads = 1
    config.batch_size = 8
    config.eval_batch_size = 4
    config.num_train_steps = 12
    config.eval_every_steps = 6
    config.checkpoint_every_steps = 6
    config.log_every_steps = 3
    config.model.hidden = 16
    config.model.num_layers = 1
    config.model.embedding_dim = 16
    config.model.head_hidden = (16,)
    config.model.dropout = 0.0
    config.optimizer.warmup_steps = 2
    config.loss.align_frames = 64
    config.update_from_flattened_dict(overrides)
    return config


@pytest.fixture
def tiny_config(synthetic_data_dir):
    """Factory: `tiny_config(method='joint', **{'loss.margin': 0.1})`."""
    return lambda **kw: make_tiny_config(synthetic_data_dir, **kw)


def run_steps(config, devices, steps):
    """Builds the experiment and trains `steps` steps through the training loop.

    Returns:
      (final state fetched to the host, list of per-step metric dicts of floats).
    """
    import jax

    from emobed_jax.training import experiment, loop

    exp = experiment.build(config, devices=devices)
    state, rng = exp.init_state()
    history = []
    record = loop.Every(1, lambda step, state, metrics: history.append(metrics))
    stream, _ = exp.train_stream(0)
    state = loop.run(state, exp.compile_train_step(), map(exp.par.put_batch, stream), rng,
                     start_step=0, num_steps=steps, hooks=[record])
    return jax.device_get(state), history
