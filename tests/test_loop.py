"""The training loop alone, with a hand-made step: hook timing, fetched metrics, non-finite stops."""
import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax.training import loop


def _step(state, batch, rng):
    """A fake step: the state counts steps; the 'loss' is the batch value."""
    return state + 1, {"loss": jnp.asarray(batch, jnp.float32), "nonfinite": jnp.zeros(()),
                       "task_audio": jnp.asarray(batch, jnp.float32)}


class _Progress:
    def __init__(self):
        self.count = 0

    def update(self, n):
        self.count += n


def test_hooks_run_at_their_steps_with_that_steps_metrics():
    calls = []
    every3 = loop.Every(3, lambda step, state, m: calls.append(("every3", step, int(state),
                                                                m["loss"])))
    every5 = loop.Every(5, lambda step, state, m: calls.append(("every5", step, int(state),
                                                                m["loss"])))
    progress = _Progress()
    batches = (float(v) for v in itertools.count(10))  # step s (from 1) sees batch 10 + s - 1
    final = loop.run(jnp.asarray(2), _step, batches, None, start_step=2, num_steps=9,
                     hooks=[every3, every5], progress=progress)
    assert int(final) == 9 and progress.count == 7
    # Steps 3..9 run; every3 at 3, 6, 9 (9 is also the last); every5 at 5 and the last (9).
    assert calls == [("every3", 3, 3, 10.0), ("every5", 5, 5, 12.0), ("every3", 6, 6, 13.0),
                     ("every3", 9, 9, 16.0), ("every5", 9, 9, 16.0)]


def test_a_nonfinite_step_stops_the_run_naming_step_and_term():
    seen = []
    hook = loop.Every(4, lambda step, state, m: seen.append(step))
    batches = iter([1.0, 2.0, math.nan, 4.0, 5.0])
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 3: terms \['task_audio'\]"):
        loop.run(jnp.asarray(0), _step, batches, None, start_step=0, num_steps=5, hooks=[hook])
    assert seen == []  # the state after the bad update reached no action
    # With skipping (the step keeps the old state itself), the loop goes on.
    batches = iter([1.0, 2.0, math.nan, 4.0, 5.0])
    loop.run(jnp.asarray(0), _step, batches, None, start_step=0, num_steps=5, hooks=[hook],
             raise_nonfinite=False)
    assert seen == [4, 5]


def test_replicas_name_the_nonfinite_replica():
    recent = [(7, {"loss": np.asarray([0.5, np.nan, 0.2]), "nonfinite": np.zeros(3),
                   "align": np.asarray([0.1, 0.2, 0.3])})]
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 7 \(replica 1\)"):
        loop.fetch_metrics(recent, raise_nonfinite=True)
    fine = [(8, {"loss": np.asarray([0.5, 0.4]), "nonfinite": np.zeros(2)})]
    np.testing.assert_array_equal(loop.fetch_metrics(fine, True)["loss"], [0.5, 0.4])
