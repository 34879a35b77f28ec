"""The training loop, once: `f(state, batch, rng) -> (state, metrics)` called step after step,
with periodic actions (hooks) for everything else.

Every caller trains through `run`: `train.train_and_evaluate` (logging, evaluation, checkpoints,
preemption), `replicas.train_replicas` (K vmapped seeds), `experiments/benchmark.py` (timing) and
the tests. The loop never waits for the device between steps: the metrics of the steps since the
last action are fetched together when an action is due, checked for non-finite values (a state
that went through a non-finite update is never evaluated or checkpointed), and handed to the
actions as floats (or arrays of K floats for vmapped replicas).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Protocol, Sequence

import jax
import numpy as np


class Hook(Protocol):
    """A periodic action: `due` is asked after every step, on every process, in hook order."""

    def due(self, step: int, last: bool) -> bool:
        """Whether the action runs after `step` (`last`: the final step)."""

    def __call__(self, step: int, state, metrics: dict) -> None:
        """Runs the action on the state after `step` and that step's fetched metrics."""


class Every:
    """A hook running `fn(step, state, metrics)` every `every_steps` steps and after the last.

    Args:
      every_steps: the period.
      fn: the action.
    """

    def __init__(self, every_steps: int, fn: Callable):
        self.every_steps = int(every_steps)
        self.fn = fn

    def due(self, step: int, last: bool) -> bool:
        """Due at multiples of the period and at the final step."""
        return last or step % self.every_steps == 0

    def __call__(self, step: int, state, metrics: dict) -> None:
        self.fn(step, state, metrics)


def nonfinite_error(step: int, metrics: dict, replica: int | None = None) -> FloatingPointError:
    """The error for a non-finite update, naming the step, the terms and what to do."""
    terms = {k: v for k, v in metrics.items() if k == "loss" or k.startswith(("task_", "align", "distill"))}
    bad = [k for k, v in terms.items() if not math.isfinite(v) and k != "loss"] or (
        ["loss"] if not math.isfinite(terms["loss"]) else ["gradient"])
    where = f" (replica {replica})" if replica is not None else ""
    return FloatingPointError(
        f"non-finite loss at step {step}{where}: terms {bad} (values {terms}); the last good "
        f"checkpoint is kept. Lower config.optimizer.learning_rate, check the inputs, or set "
        f"config.skip_nonfinite_updates=True to skip such updates")


def fetch_metrics(recent: Sequence[tuple[int, dict]], raise_nonfinite: bool) -> dict:
    """Fetches the metrics of the steps since the last action; raises at the first non-finite.

    Args:
      recent: (step, metrics on the device) pairs.
      raise_nonfinite: raise `FloatingPointError` for a non-finite loss or gradient.

    Returns:
      The newest step's metrics: floats, or `[K]` arrays for vmapped replicas.
    """
    fetched = jax.device_get(list(recent))
    if raise_nonfinite:
        for step, metrics in fetched:
            loss = np.atleast_1d(np.asarray(metrics["loss"], np.float64))
            bad = np.atleast_1d(np.asarray(metrics.get("nonfinite", 0.0))) > 0
            for k in np.flatnonzero(~np.isfinite(loss) | bad):
                one = {n: float(np.atleast_1d(v)[k]) for n, v in metrics.items()}
                raise nonfinite_error(step, one, int(k) if loss.size > 1 else None)
    newest = fetched[-1][1]
    return {k: float(v) if np.ndim(v) == 0 else np.asarray(v) for k, v in newest.items()}


def run(state, step_fn: Callable, batches: Iterable, rng, *, start_step: int, num_steps: int,
        hooks: Sequence[Hook] = (), raise_nonfinite: bool = True, progress=None):
    """Trains from `start_step` to `num_steps`.

    Args:
      state: the train state (placed on the devices).
      step_fn: the compiled `f(state, batch, rng) -> (state, metrics)`.
      batches: device-ready batches, the first one for step `start_step`.
      rng: the run's base key (the step folds in its step number).
      start_step: the state's step.
      num_steps: the step to stop at.
      hooks: periodic actions, run in this order after each step where due.
      raise_nonfinite: stop with `FloatingPointError` at a non-finite update (the step skips
        such updates itself when built with `skip_nonfinite`; then they are only counted).
      progress: an object with `update(1)` (e.g. a tqdm bar), or None.

    Returns:
      The final state.
    """
    batches = iter(batches)
    recent = []
    for step in range(start_step + 1, num_steps + 1):
        state, metrics = step_fn(state, next(batches), rng)
        recent.append((step, metrics))
        if progress is not None:
            progress.update(1)
        last = step == num_steps
        due = [hook for hook in hooks if hook.due(step, last)]
        if due:
            fetched = fetch_metrics(recent, raise_nonfinite)
            recent = []
            for hook in due:
                hook(step, state, fetched)
    return state
