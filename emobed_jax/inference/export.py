"""Portable export of a trained recogniser with `jax.export` (StableHLO), and its loader.

`export_run(workdir, output)` writes, next to a JSON sidecar (`export.json`):
  * `predict_features.jaxexport`: `(features [b, t, D] float32 unnormalised, lengths [b] int32)`
    -> outputs; always written;
  * `predict_waveform.jaxexport`: `(waveform [b, s] float32 mono at the run's sample rate,
    num_samples [b] int32)` -> outputs, with the log-mel features computed inside (JAX); only for
    runs whose target modality is made by log-mel (others need an external extractor).
Both normalise with the run's training statistics, apply the target encoder -> projector -> head
and undo the label delay exactly as `Recognizer.predict_features` does. The batch and time
dimensions are symbolic, so one artifact serves every batch size and length; rows shorter than
the padded width are described by `lengths` / `num_samples` (padding values are ignored).

`load(directory)` checks the sidecar (the platform of this machine, the JAX version window)
before deserialising, so a stale or foreign artifact fails with a message, not deep in XLA.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from emobed_jax import atomic
from emobed_jax.features import audio as audio_lib
from emobed_jax.inference.recognizer import Recognizer

SIDECAR = "export.json"
FILES = {"predict_waveform": "predict_waveform.jaxexport",
         "predict_features": "predict_features.jaxexport"}
PLATFORMS = ("cpu", "cuda", "tpu")
FORMAT = 1
# JAX's stated guarantee for serialized `jax.export` artifacts (docs "Exporting and
# serialization", "Compatibility guarantees"): a consumer may be up to 6 months NEWER than the
# producer (backward compatibility) and about 3 weeks OLDER (forward compatibility).
BACKWARD_DAYS, FORWARD_DAYS = 180, 21
COMPATIBILITY = (f"jax.export guarantees that this artifact loads and runs with a jax/jaxlib "
                 f"released up to {BACKWARD_DAYS // 30} months after the writer's (backward "
                 f"compatibility) and up to about {FORWARD_DAYS // 7} weeks before it (forward "
                 f"compatibility); outside that window re-export from the run directory")


class ExportError(ValueError):
    """A run that cannot be exported, or an export directory this machine cannot load."""


def _log_mel_batch(waveform, num_samples, cfg: audio_lib.LogMelConfig):
    """`audio.log_mel_frames` for a padded batch with a symbolic sample count.

    `mel_jax` builds its gather indices in numpy from a static length; here they are built
    from iotas, so the sample dimension may stay symbolic and each row uses its own length for
    the reflect padding and the edge clamping, as the numpy features of that row alone.

    Returns:
      (features [b, s // L + 1, feature_dim], label frames per row [b]); L samples per label frame.
    """
    r, c_lo, width = _pooling_pattern(cfg)
    hop, n_fft = cfg.hop_length, cfg.n_fft
    n = num_samples.astype(jnp.int32)[:, None, None]
    k = jnp.arange(1 + waveform.shape[1] // hop, dtype=jnp.int32)
    idx = k[:, None] * hop + jnp.arange(n_fft, dtype=jnp.int32)[None, :] - n_fft // 2
    # numpy's 'reflect' padding, repeated as often as needed, is periodic with period 2 (n - 1).
    period = jnp.maximum(2 * (n - 1), 1)
    idx = jnp.mod(idx[None], period)
    idx = jnp.where(idx >= n, period - idx, idx)
    frames = jax.vmap(lambda w, i: w[i])(waveform.astype(jnp.float32), idx)
    spec = jnp.fft.rfft(frames * jnp.asarray(audio_lib.hann_window(cfg), jnp.float32), axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    log_mel = jnp.log(power @ jnp.asarray(audio_lib.mel_filterbank(cfg).T, jnp.float32)
                      + cfg.log_offset)
    samples_per_frame = r * hop
    t = jnp.arange(waveform.shape[1] // samples_per_frame + 1, dtype=jnp.int32)
    n_stft = 1 + num_samples.astype(jnp.int32) // hop
    pool = t[:, None] * r + c_lo + jnp.arange(width, dtype=jnp.int32)[None, :]
    pool = jnp.clip(pool[None], 0, n_stft[:, None, None] - 1)
    gathered = jax.vmap(lambda lm, i: lm[i])(log_mel, pool)  # [b, T, width, n_mels]
    mean = gathered.mean(axis=-2)
    feats = mean if cfg.pooling == "mean" else jnp.concatenate(
        [mean, jnp.sqrt(((gathered - mean[..., None, :]) ** 2).mean(axis=-2))], axis=-1)
    return feats, num_samples.astype(jnp.int32) // samples_per_frame + 1


def _pooling_pattern(cfg: audio_lib.LogMelConfig) -> tuple[int, int, int]:
    """(STFT frames per label frame r, first pooled offset, pooled width) when the label grid is
    a whole number of STFT hops; checked against `audio.label_frame_index` itself.

    Raises:
      ExportError: the grid ratio is fractional (pooling windows then vary in width).
    """
    ratio = cfg.frame_hop_s * cfg.sample_rate / cfg.hop_length
    r = int(round(ratio))
    if r < 1 or abs(ratio - r) > 1e-6:
        raise ExportError(f"frame_hop_s={cfg.frame_hop_s} s is not a whole number of STFT hops "
                          f"({cfg.hop_length}/{cfg.sample_rate} s): the waveform function needs it")
    c_lo = int(math.ceil(-r / 2 - 1e-6))
    width = int(math.ceil(r / 2 - 1e-6)) - c_lo
    index, valid = audio_lib.label_frame_index(10 * r * 64, 64, cfg)
    ours = np.clip(np.arange(64)[:, None] * r + c_lo + np.arange(width)[None], 0, 10 * r * 64 - 1)
    if index.shape != ours.shape or not valid.all() or not np.array_equal(index, ours):
        raise ExportError("the run's log-mel pooling differs from the exportable pattern")
    return r, c_lo, width


def _export(fn, args, platforms) -> tuple[jax.export.Exported, dict]:
    """Lowers for all `platforms` at once; on failure, for those that lower alone."""
    jitted = jax.jit(fn)
    try:
        return jax.export.export(jitted, platforms=list(platforms))(*args), {}
    except Exception:  # noqa: BLE001 - which platform failed is found out below
        pass
    ok, failed = [], {}
    for p in platforms:
        try:
            jax.export.export(jitted, platforms=[p])(*args)
            ok.append(p)
        except Exception as e:  # noqa: BLE001 - recorded in the sidecar, the export goes on
            failed[p] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    if not ok:
        raise ExportError(f"the model lowers for none of {list(platforms)}: {failed}")
    return jax.export.export(jitted, platforms=ok)(*args), failed


def _spec(name, shape, dtype, meaning) -> dict:
    return {"name": name, "dtype": dtype, "shape": [str(d) for d in shape], "meaning": meaning}


def export_run(workdir: str, output: str, platforms=PLATFORMS, checkpoint: str = "best") -> dict:
    """Exports a run directory's model to `output`; returns the sidecar written there.

    Raises:
      ExportError / RecognizerError: the run cannot be loaded or lowered for any platform.
    """
    rec = Recognizer.from_workdir(workdir, checkpoint=checkpoint)
    predict = rec.forward  # the Recognizer's own inference function, traced with symbolic shapes
    b, t = jax.export.symbolic_shape("b, t")
    d = rec.input_dim
    functions = {"predict_features": (predict, (
        jax.ShapeDtypeStruct((b, t, d), jnp.float32), jax.ShapeDtypeStruct((b,), jnp.int32)), [
        _spec("features", ("b", "t", d), "float32", "unnormalised target-modality features"),
        _spec("lengths", ("b",), "int32", "valid frames per row; later frames are padding")])}
    fs = rec.feature_settings
    log_mel = fs.get("kind") == "log_mel"
    if log_mel:
        cfg = audio_lib.LogMelConfig(**{k: v for k, v in fs.items() if k != "kind"})
        _pooling_pattern(cfg)
        bw, s = jax.export.symbolic_shape("b, s", constraints=("s >= 2",))

        def from_waveform(waveform, num_samples):
            feats, lengths = _log_mel_batch(waveform, num_samples, cfg)
            return predict(feats, lengths)

        functions["predict_waveform"] = (from_waveform, (
            jax.ShapeDtypeStruct((bw, s), jnp.float32), jax.ShapeDtypeStruct((bw,), jnp.int32)), [
            _spec("waveform", ("b", "s"), "float32",
                  f"mono samples in [-1, 1] at {cfg.sample_rate} Hz, rows zero-padded to s"),
            _spec("num_samples", ("b",), "int32", "valid samples per row (>= 2)")])
    os.makedirs(output, exist_ok=True)
    written, failures = {}, {}
    for name, (fn, args, specs) in functions.items():
        exported, failed = _export(fn, args, platforms)
        with atomic.atomic_write(os.path.join(output, FILES[name]), "wb") as f:
            f.write(exported.serialize())
        written[name] = {"file": FILES[name], "inputs": specs,
                         "platforms": list(exported.platforms),
                         "calling_convention_version": exported.calling_convention_version}
        failures.update({f"{name}/{p}": why for p, why in failed.items()})
    stale = os.path.join(output, FILES["predict_waveform"])
    if not log_mel and os.path.exists(stale):
        os.remove(stale)  # an earlier export of another run must not be mistaken for this one's
    sidecar = _sidecar(rec, workdir, written, failures, platforms)
    atomic.write_json(os.path.join(output, SIDECAR), sidecar)
    return sidecar


def _sidecar(rec, workdir, written, failures, platforms) -> dict:
    fs = rec.feature_settings
    delays = [int(x) for x in rec.delays]
    frame = rec.level == "frame" and rec.task != "category"
    return {
        "format": FORMAT, "workdir": os.path.abspath(workdir), "step": rec.step,
        "target_modality": rec.target, "level": rec.level, "task": rec.task,
        "label_names": list(rec.label_names),
        "class_names": None if rec.class_names is None else list(rec.class_names),
        "frame_rate_hz": rec.frame_rate_hz, "input_dim": rec.input_dim,
        "feature_settings": fs,
        "sample_rate": fs.get("sample_rate"), "hop_length": fs.get("hop_length"),
        "samples_per_label_frame": (None if fs.get("kind") != "log_mel" else
                                    int(round(fs["frame_hop_s"] * fs["sample_rate"]))),
        "waveform_input": ("predict_waveform computes the log-mel features itself"
                           if "predict_waveform" in written else
                           f"none: {rec.target!r} features are {fs.get('kind', 'unknown')!r}, "
                           f"which needs an external extractor; call predict_features"),
        "label_delay_frames": delays,
        "label_delay_s": [x / rec.frame_rate_hz for x in delays],
        "outputs": {
            "outputs": ("[b, T, K]: label k at time t / frame_rate_hz s (delay undone: from the "
                        "frame t - label_delay_frames[k], the first frames repeat frame 0)"
                        if frame else "[b, C] class logits" if rec.task == "category"
                        else "[b, K] utterance-level values"),
            "embeddings": "shared embeddings on the model's own (undelayed) time line",
            "lengths": "valid label frames per row (rows past it are padding)",
            **({"probabilities": "[b, C] softmax of the logits"} if rec.task == "category"
               else {})},
        "functions": written, "platforms_requested": list(platforms),
        "lowering_failures": failures,
        "jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
        "calling_convention_version": next(iter(written.values()))["calling_convention_version"],
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "compatibility": {"backward_days": BACKWARD_DAYS, "forward_days": FORWARD_DAYS,
                          "text": COMPATIBILITY},
    }


@dataclasses.dataclass
class Loaded:
    """An export directory, deserialised: `sidecar` (dict) and `functions` (name ->
    `jax.export.Exported`; call `functions[name].call(*args)`)."""

    sidecar: dict
    functions: dict


def _version(v: str) -> tuple:
    return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())


def load(directory: str, check_version: bool = True) -> Loaded:
    """Loads an export directory after checking that this machine can run it.

    Raises:
      ExportError: no sidecar; exported for other platforms than this machine's; a JAX version
        outside the compatibility window (skip that check with `check_version=False`).
    """
    path = os.path.join(directory, SIDECAR)
    if not os.path.isfile(path):
        raise ExportError(f"{path} does not exist: {directory!r} is not an export directory "
                          f"(write one with experiments/export.py --workdir=RUN --output=DIR)")
    try:
        with open(path, encoding="utf-8") as f:
            sidecar = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{path} is not readable JSON ({e})") from e
    here = jax.export.default_export_platform()
    functions = {}
    for name, info in sidecar.get("functions", {}).items():
        if here not in info["platforms"]:
            raise ExportError(f"{name} was exported for platforms {info['platforms']}, this machine "
                              f"runs {here!r}: re-export with --platforms={here}")
    writer, mine = sidecar.get("jax_version", "?"), jax.__version__
    if check_version and writer != mine:
        written = datetime.datetime.fromisoformat(sidecar["exported_at"])
        age = (datetime.datetime.now(datetime.timezone.utc) - written).days
        if _version(mine) < _version(writer):
            raise ExportError(f"{directory} was written by jax {writer}, this is jax {mine} (older): "
                              f"{COMPATIBILITY}")
        if age > BACKWARD_DAYS:
            raise ExportError(f"{directory} was written by jax {writer} {age} days ago, this is jax "
                              f"{mine}: {COMPATIBILITY}")
    for name, info in sidecar.get("functions", {}).items():
        with open(os.path.join(directory, info["file"]), "rb") as f:
            try:
                functions[name] = jax.export.deserialize(bytearray(f.read()))
            except Exception as e:  # noqa: BLE001 - a damaged or incompatible artifact
                raise ExportError(f"{info['file']}: cannot deserialise ({e}); written by jax "
                                  f"{writer}, this is jax {mine}") from e
    return Loaded(sidecar, functions)
