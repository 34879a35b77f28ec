"""`Recognizer`: a trained run, loaded from its workdir alone, applied to new media.

    rec = Recognizer.from_workdir("runs/emobed_audio")
    out = rec.predict(waveform, sample_rate)      # raw audio (log-mel models)
    out = rec.predict_features(features)          # [T, D] features of the target modality
    stream = rec.stream()                         # a causal run, live: push(pcm) / flush()

Everything comes from the run directory (`run_dir`): the config, the dataset description (label
names, classes, frame rate, label delays), the feature-extraction settings and the training
normalisation statistics; the parameters come from the best (or a chosen) checkpoint. No dataset
and no `manual_dir` are read. Inference is monomodal: target encoder -> projector -> shared head,
exactly as `--mode=eval` runs it, and frame-level outputs are mapped onto the label time line
with the label delay undone as evaluation does (`data.delay.unshift_predictions`).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from emobed_jax import run_dir
from emobed_jax.data import loading
from emobed_jax.datasets import conventions
from emobed_jax.features import audio as audio_lib


class RecognizerError(ValueError):
    """A workdir, checkpoint or input the recogniser cannot use (the message says why)."""


@dataclasses.dataclass
class Prediction:
    """A recording's predictions.

    Attributes:
      outputs: frame level `[T, K]` label-time values (K = `label_names`) at `frame_rate_hz`;
        utterance level `[K]` values, or class logits `[C]` for the category task.
      embeddings: the shared-embedding vectors (`[T, E]` or `[E]`), on the model's time line.
      probabilities: category task: softmax of the logits, else None.
    """

    outputs: np.ndarray
    embeddings: np.ndarray
    probabilities: np.ndarray | None = None


def dataset_info(record: dict) -> loading.DatasetInfo:
    """The `DatasetInfo` a stored run's model was built for, from `run.json` alone."""
    d = record["dataset"]
    return loading.DatasetInfo(
        name=d["name"], level=d["level"], modalities=tuple(d["modalities"]),
        feature_dims=dict(d["feature_dims"]),
        class_names=None if d["class_names"] is None else tuple(d["class_names"]),
        splits=(), metadata={},
        conventions=conventions.Conventions(group_key=d["group_key"],
                                            frame_rate_hz=d["frame_rate_hz"],
                                            label_names=tuple(d["label_names"])),
        feature_settings=dict(record.get("feature_settings") or {}),
        label_names=tuple(d["label_names"]))


class Recognizer:
    """A trained model of a run directory, ready to predict from its target modality.

    Build it with `from_workdir`. Attributes: `config`, `info` (`loading.DatasetInfo`),
    `target` (the inference modality), `level`, `task`, `label_names`, `class_names`,
    `frame_rate_hz`, `delays` (label delay in frames per dimension), `feature_settings` (how the
    target's features are made from raw media), `step` (the restored checkpoint step),
    `model`, `params`.
    """

    def __init__(self, record: dict, model, params, step: int):
        self.record = record
        self.config = record["config"]
        self.info = dataset_info(record)
        self.target = self.config.target_modality
        self.level, self.task = self.info.level, self.config.task
        self.label_names = tuple(record["dataset"]["label_names"])
        self.class_names = self.info.class_names
        self.frame_rate_hz = float(record["dataset"]["frame_rate_hz"])
        self.delays = np.asarray(record["dataset"]["label_delay_frames"], int)
        self.feature_settings = dict(self.info.feature_settings.get(self.target) or {})
        self.input_dim = int(self.info.feature_dims[self.target])
        stats = record["stats"]
        self.mean, self.std = (stats[self.target] if stats else (None, None))
        # data.normalize='group': training centred each group (speaker, video) on its own mean;
        # a recording given here is its own group, centred on the mean of its valid frames.
        self.group_centred = (loading.normalize_mode(self.config.data.get("normalize", True))
                              == "group")
        self.model, self.params, self.step = model, params, step

    @classmethod
    def from_workdir(cls, workdir: str, checkpoint: str = "best", step: int | None = None):
        """Loads a run directory.

        Args:
          workdir: a training workdir (`run.json`, `normalization.npz`, `checkpoints/`).
          checkpoint: 'best' or 'latest'.
          step: a step kept under that checkpoint kind (default: its newest).

        Raises:
          RecognizerError: naming what is missing or unusable.
        """
        from emobed_jax.training import checkpoints, experiment

        try:
            record = run_dir.read(workdir)
        except run_dir.RunDirError as e:
            raise RecognizerError(str(e)) from None
        directory = os.path.join(workdir, "checkpoints", checkpoint)
        if not os.path.isdir(directory):
            raise RecognizerError(f"{directory} does not exist: the run has no {checkpoint!r} "
                                  f"checkpoint yet (train with experiments/main.py)")
        ckpt = checkpoints.Checkpointer(directory)
        try:
            step = ckpt.latest_step() if step is None else step
            if step is None:
                raise RecognizerError(f"{directory} holds no checkpoint")
            params = ckpt.restore_arrays(step)["params"]
        finally:
            ckpt.close()
        model, _ = experiment.model_and_objective(record["config"], dataset_info(record))
        return cls(record, model, params, int(step))

    def forward(self, features, lengths, valid=None) -> dict:
        """The run's inference as one pure JAX function on a padded batch; `predict_features`
        runs it jitted and `inference.export` serialises it, so both compute the same thing.

        Args:
          features: `[b, t, D]` unnormalised target-modality features (padding: anything).
          lengths: `[b]` valid frames per row.
          valid: optional `[b, t]` bool, False for frames without the modality (no face).

        Returns:
          `outputs` (frame level: on the label time line, delay undone as evaluation does;
          category: logits), `embeddings`, `lengths`, and `probabilities` for the category task.
        """
        x = features.astype(jnp.float32)
        lengths = lengths.astype(jnp.int32)
        ok = jnp.all(jnp.isfinite(x), axis=-1)
        if valid is not None:
            ok = ok & valid
        # Padding and invalid frames are masked, as evaluation batches mask them.
        mask = (jnp.arange(x.shape[1])[None] < lengths[:, None]) & ok
        if self.group_centred:
            w = mask[..., None].astype(x.dtype)
            x0 = jnp.where(mask[..., None], x, 0.0)
            x = x - jnp.sum(x0 * w, axis=1, keepdims=True) / jnp.maximum(
                jnp.sum(w, axis=1, keepdims=True), 1.0)
        if self.mean is not None:
            x = (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)
        x = jnp.where(ok[..., None], x, 0.0)  # as `data.nonfinite='mask'`: bad frames are 0
        m = self.target
        emb, out = self.model.apply({"params": self.params}, {m: x}, {m: lengths},
                                    {m: mask.astype(jnp.float32)}, train=False)
        emb, out = emb[m], out[m]
        result = {"embeddings": emb, "lengths": lengths}
        if self.task == "category":
            result["probabilities"] = jax.nn.softmax(out, axis=-1)
        elif self.level == "frame":
            # Label t takes the prediction made at frame t - delay, edge-padded at the start
            # (`data.delay.unshift_predictions`, the evaluation's rule).
            t = jnp.arange(out.shape[1], dtype=jnp.int32)[:, None]
            src = jnp.maximum(t - jnp.asarray(self.delays, jnp.int32)[None, :], 0)
            out = out[:, src, jnp.arange(out.shape[2])[None, :]]
        result["outputs"] = out
        return result

    def normalize(self, features: np.ndarray) -> np.ndarray:
        """Standardises `[T, D]` features with the training statistics, as training did;
        non-finite frames become 0, as `data.nonfinite='mask'` makes them. (For the streaming
        path, which refuses `data.normalize='group'` runs: a stream cannot know a recording's
        mean before it ends; `forward` centres whole recordings.)"""
        x = np.asarray(features, np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise RecognizerError(f"features of shape {x.shape}: expected [frames, "
                                  f"{self.input_dim}] for modality {self.target!r}")
        finite = np.all(np.isfinite(x), axis=1, keepdims=True)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return np.where(finite, x, 0.0).astype(np.float32)

    def predict_features(self, features: np.ndarray, valid: np.ndarray | None = None) -> Prediction:
        """Predicts from `[T, D]` (unnormalised) target-modality features on the label grid.

        Args:
          features: the target modality's features, as the dataset made them.
          valid: optional `[T]` bool, False for frames without the modality (e.g. no face);
            frames with a non-finite value are invalid too. Invalid frames are masked.
        """
        x = np.asarray(features, np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise RecognizerError(f"features of shape {x.shape}: expected [frames, "
                                  f"{self.input_dim}] for modality {self.target!r}")
        n = len(x)
        if n == 0:
            raise RecognizerError(f"no frame of {self.target!r} features to predict from")
        ok = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
        if ok.shape != (n,):
            raise RecognizerError(f"valid of shape {np.shape(valid)}: expected [{n}]")
        # Padded to a power of two (>= 64 frames) so recordings of many lengths share a few
        # compiled shapes; padded frames are masked, as in evaluation batches.
        size = max(64, 1 << (n - 1).bit_length())
        r = _jitted_forward(self, np.pad(x, ((0, size - n), (0, 0)))[None],
                            np.asarray([n], np.int32), np.pad(ok, (0, size - n))[None])
        # Frame level: drop the padding; utterance level: one row per recording.
        rows = slice(0, n) if self.level == "frame" else slice(None)
        out, emb = (np.asarray(r[k][0][rows], np.float64) for k in ("outputs", "embeddings"))
        probs = r.get("probabilities")
        return Prediction(out, emb, None if probs is None else np.asarray(probs[0], np.float64))

    def features_from_waveform(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """The target modality's features of a waveform, as the dataset made them (log-mel)."""
        if self.feature_settings.get("kind") != "log_mel":
            raise RecognizerError(
                f"modality {self.target!r} of this run is made by {self.feature_settings or 'an'} "
                f"extractor, not from a waveform by log-mel: pass its feature file instead")
        settings = {k: v for k, v in self.feature_settings.items() if k != "kind"}
        wav = np.asarray(waveform, np.float64)
        if wav.ndim == 2:  # [samples, channels] -> mono
            wav = wav.mean(axis=1)
        if wav.ndim != 1 or len(wav) == 0:
            raise RecognizerError(f"waveform of shape {np.shape(waveform)}: expected samples "
                                  f"[N] or [N, channels] with N > 0")
        return audio_lib.log_mel_frames(wav, int(sample_rate), audio_lib.LogMelConfig(**settings))

    def stream(self):
        """A live `streaming.Stream` of this (causal) run: `push(pcm)` / `flush()`."""
        from emobed_jax.inference import streaming

        return streaming.Stream(self)

    def predict(self, waveform: np.ndarray, sample_rate: int) -> Prediction:
        """Predicts from raw audio (any rate and channel count; resampled as training's data)."""
        return self.predict_features(self.features_from_waveform(waveform, sample_rate))


# Compiled per Recognizer object (static, hashed by identity): its parameters, statistics and
# delays are constants of the compiled function.
_jitted_forward = jax.jit(Recognizer.forward, static_argnums=0)
