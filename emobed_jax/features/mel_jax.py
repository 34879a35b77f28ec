"""Log-mel features on the 40 ms label grid in jax.numpy (jit-able, batched, accelerator-ready).

Computes exactly what ``emobed_jax.features.audio.log_mel_frames`` computes (centred STFT with
reflect padding, periodic Hann window, power spectrum, Slaney mel filterbank, log, pooling onto
label frames), for waveforms already at ``config.sample_rate``. The filterbank, window and pooling
indices are numpy constants from ``audio.py``; they depend only on the config and the (static)
waveform length, so a jitted call retraces only when the length changes.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from emobed_jax.features import audio

__all__ = ["mel_power_spectrogram_jax", "log_mel_frames_jax"]


def mel_power_spectrogram_jax(waveform: jnp.ndarray,
                              config: audio.LogMelConfig = audio.LogMelConfig()) -> jnp.ndarray:
    """Mel power spectrogram on the 10 ms grid (before log and pooling).

    Args:
        waveform: [..., N] samples at config.sample_rate, N >= 2.
        config: analysis settings.

    Returns:
        [..., 1 + N // hop_length, n_mels] float32 mel energies.
    """
    waveform = jnp.asarray(waveform, dtype=jnp.float32)
    num_samples = waveform.shape[-1]
    if num_samples < 2:
        raise ValueError(f"mel_power_spectrogram_jax: need at least 2 samples, got shape {waveform.shape}")
    pad = config.n_fft // 2
    pad_width = [(0, 0)] * (waveform.ndim - 1) + [(pad, pad)]
    padded = jnp.pad(waveform, pad_width, mode="reflect")
    n_frames = audio.num_stft_frames(num_samples, config)
    # Static gather indices build the [..., K, n_fft] frame tensor in one op (no Python loop).
    frame_index = (np.arange(n_frames)[:, None] * config.hop_length
                   + np.arange(config.n_fft)[None, :])
    frames = padded[..., frame_index] * jnp.asarray(audio.hann_window(config), dtype=jnp.float32)
    spec = jnp.fft.rfft(frames, axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    fbank = jnp.asarray(audio.mel_filterbank(config).T, dtype=jnp.float32)
    return power @ fbank


def log_mel_frames_jax(waveform: jnp.ndarray, config: audio.LogMelConfig = audio.LogMelConfig(),
                       num_frames: int | None = None) -> jnp.ndarray:
    """Log-mel features pooled onto the label grid, as ``audio.log_mel_frames``.

    Args:
        waveform: [..., N] samples already at config.sample_rate (no resampling here).
        config: feature settings (static under jit: pass it via ``functools.partial`` or
            ``static_argnums``).
        num_frames: label frames wanted (static); default floor(duration / frame_hop_s) + 1.

    Returns:
        [..., num_frames, config.feature_dim] float32.
    """
    waveform = jnp.asarray(waveform, dtype=jnp.float32)
    if num_frames is None:
        num_frames = audio.default_num_frames(waveform.shape[-1], config)
    log_mel = jnp.log(mel_power_spectrogram_jax(waveform, config) + config.log_offset)
    index, valid = audio.label_frame_index(log_mel.shape[-2], num_frames, config)
    gathered = log_mel[..., index, :]  # [..., T, M, n_mels]
    w = jnp.asarray(valid, dtype=jnp.float32)[..., None]
    count = w.sum(axis=-2)
    mean = (gathered * w).sum(axis=-2) / count
    if config.pooling == "mean":
        return mean
    std = jnp.sqrt(((gathered - mean[..., None, :]) ** 2 * w).sum(axis=-2) / count)
    return jnp.concatenate([mean, std], axis=-1)
