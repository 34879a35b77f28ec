"""Everything a run needs, built once from a config: data, model, objective, devices.

Building splits in two: `data.pipeline.load(config)` reads the dataset, and
`model_and_objective(config, info, ...)` builds the model and the objective from the config and
the dataset's description alone, so tools that never read a dataset (the benchmark) build
exactly what training builds. `build` does both and places them on a device mesh; training,
checkpoint evaluation, several seeds and the tests all start from it.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from emobed_jax import config as config_lib
from emobed_jax.data import loading, pipeline
from emobed_jax.losses import objective as objective_lib
from emobed_jax.models import emobed
from emobed_jax.training import parallel, state as ts


def num_outputs(config, info: loading.DatasetInfo) -> int:
    """Head outputs: one per label dimension (`info.label_names`), or one logit per category."""
    return len(info.label_names) if config.task != "category" else len(info.class_names)


def model_and_objective(config, info: loading.DatasetInfo, class_counts=None,
                        train_targets=None):
    """The model and the objective a config describes, for a dataset described by `info`.

    Args:
      config: a validated experiment config.
      info: the dataset description (level, classes).
      class_counts: training class counts (class-weighted cross-entropy).
      train_targets: `[N, K]` training labels (quantile bins for label agreement).

    Returns:
      (`emobed.EmoBedModel`, `objective.Objective`).
    """
    model = emobed.model_from_config(config, info.level, num_outputs(config, info))
    obj = objective_lib.objective_from_config(config, info.level, class_counts, train_targets)
    return model, obj


@dataclasses.dataclass
class Experiment:
    """A configured experiment.

    Attributes:
      config: the validated config.
      data: the prepared dataset (`pipeline.Data`).
      model: the Flax model.
      objective: the static loss settings.
      par: the `parallel.Parallel` placement helper.
    """

    config: object
    data: pipeline.Data
    model: emobed.EmoBedModel
    objective: objective_lib.Objective
    par: parallel.Parallel

    @property
    def info(self) -> loading.DatasetInfo:
        return self.data.info

    @property
    def splits(self) -> dict:
        return self.data.splits

    @property
    def delays(self) -> np.ndarray:
        return self.data.delays

    @property
    def eval_split_names(self) -> list:
        return [s for s in self.config.eval_splits if s in self.splits]

    @property
    def best_metric(self) -> str:
        return config_lib.best_metric(self.config)

    def train_stream(self, start_step: int = 0, seed: int | None = None):
        """This process's rows of the training batches from `start_step` (`pipeline.train_stream`)."""
        return pipeline.train_stream(self.data, self.config, start_step, seed,
                                     parallel.local_rows(self.config.batch_size))

    def example_batch(self) -> dict:
        """One training-shaped batch (for parameter initialisation)."""
        return next(self.train_stream(0)[0])

    def init_state(self, seed: int | None = None, place: bool = True, teacher=None):
        """The step-0 train state and the training key of `seed` (default `config.seed`).

        Args:
          seed: the seed.
          place: put both on the mesh (replicated); False keeps them where they were made.
          teacher: the frozen `training.teacher.Teacher` of a distillation run, or None.

        Returns:
          (state, train_rng).
        """
        init_rng, train_rng = init_rngs(self.config.seed if seed is None else seed)
        state = ts.create_state(self.model, self.config, self.example_batch(), init_rng,
                                teacher=teacher)
        if not place:
            return state, train_rng
        return self.par.put_state(state), self.par.put_state(train_rng)

    def compile_train_step(self):
        """The jitted (or pmapped) `f(state, batch, rng) -> (state, metrics)`."""
        skip = bool(self.config.skip_nonfinite_updates)
        return self.par.compile_train_step(
            lambda axis: ts.bind_train_step(self.objective, axis_name=axis, skip_nonfinite=skip))

    def compile_predict(self, modality: str | None = None):
        """The compiled monomodal `f(params, batch) -> (embeddings, outputs)` of `modality`
        (default: the target)."""
        fn = functools.partial(ts.predict_step, apply_fn=self.model.apply,
                               modalities=(modality or self.config.target_modality,))
        return self.par.compile_predict(fn)


def build(config, devices=None, stats: dict | None = None) -> Experiment:
    """Validates the config, prepares the dataset, builds the model and places it.

    Args:
      config: experiment config.
      devices: devices for the mesh (default: all).
      stats: normalisation statistics to use (a stored run's) instead of the training split's.

    Returns:
      An `Experiment`.
    """
    mesh = parallel.make_mesh(devices)
    config_lib.validate_config(config, num_devices=mesh.devices.size)
    data = pipeline.load(config, stats)
    config_lib.validate_against_dataset(config, data.info)
    train_targets = data.train_targets() if config.task != "category" else None
    model, obj = model_and_objective(config, data.info, data.class_counts(), train_targets)
    return Experiment(config=config, data=data, model=model, objective=obj,
                      par=parallel.Parallel(config.parallelism, mesh))


def init_rngs(seed: int):
    """(parameter-init key, training key) from a seed."""
    init_rng, train_rng = jax.random.split(jax.random.key(seed))
    return init_rng, train_rng
