"""Audio loading and log-mel features pooled onto the 40 ms emotion-label grid (numpy).

The pipeline is: load (soundfile) -> mono -> resample (scipy.signal.resample_poly) -> centred STFT
with a periodic Hann window (reflect padding, as librosa ``center=True``) -> power spectrum ->
Slaney mel filterbank (as ``librosa.filters.mel`` defaults) -> ``log(mel + log_offset)`` on a 10 ms
grid -> pooled into label frames centred at ``t * frame_hop_s`` (frame 0 at time 0.00 s, the RECOLA
label convention), so feature frame ``t`` lines up with label frame ``t``.

``emobed_jax.features.mel_jax`` computes the same thing in ``jax.numpy``; both share the filterbank
and the pooling indices defined here.
"""
from __future__ import annotations

import dataclasses
import math
import os
import struct

import numpy as np
import scipy.signal
import soundfile

__all__ = [
    "AudioError",
    "LogMelConfig",
    "load_audio",
    "resample",
    "hann_window",
    "mel_filterbank",
    "num_stft_frames",
    "default_num_frames",
    "label_frame_index",
    "mel_power_spectrogram",
    "pool_label_frames",
    "log_mel_frames",
]

# Frames per STFT chunk: bounds memory (a 300 s recording has 30k frames of 512 samples).
_CHUNK_FRAMES = 4096
# Float tolerance when mapping label-frame boundaries (seconds) onto 10 ms frame indices.
_EPS = 1e-6


class AudioError(ValueError):
    """An audio file is unreadable, empty, truncated or not audio at all."""


@dataclasses.dataclass(frozen=True)
class LogMelConfig:
    """Log-mel feature settings.

    Attributes:
        sample_rate: rate (Hz) the waveform is resampled to before analysis.
        n_fft: FFT size in samples.
        win_length: analysis window length in samples (25 ms at 16 kHz), zero-padded to n_fft.
        hop_length: STFT hop in samples (10 ms at 16 kHz).
        n_mels: number of mel bands.
        fmin: lowest mel band edge (Hz).
        fmax: highest mel band edge (Hz); None means sample_rate / 2.
        frame_hop_s: label frame period in seconds (40 ms, RECOLA / AVEC).
        pooling: 'mean' (n_mels dims) or 'mean_std' (2 * n_mels dims: means then stds).
        log_offset: added to mel energies before the log, avoids log(0).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    fmin: float = 0.0
    fmax: float | None = None
    frame_hop_s: float = 0.04
    pooling: str = "mean"
    log_offset: float = 1e-6

    def __post_init__(self):
        if self.pooling not in ("mean", "mean_std"):
            raise ValueError(f"LogMelConfig.pooling: expected 'mean' or 'mean_std', got {self.pooling!r}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"LogMelConfig.win_length: expected 0 < win_length <= n_fft={self.n_fft}, "
                             f"got {self.win_length}")
        if self.hop_length <= 0 or self.n_mels <= 0 or self.sample_rate <= 0:
            raise ValueError("LogMelConfig: hop_length, n_mels and sample_rate must be positive, got "
                             f"{self.hop_length}, {self.n_mels}, {self.sample_rate}")
        if self.frame_hop_s + _EPS < self.hop_length / self.sample_rate:
            raise ValueError(f"LogMelConfig.frame_hop_s: expected >= hop_length / sample_rate = "
                             f"{self.hop_length / self.sample_rate} s, got {self.frame_hop_s}")
        if not 0 <= self.fmin < self.mel_fmax <= self.sample_rate / 2:
            raise ValueError(f"LogMelConfig.fmin/fmax: expected 0 <= fmin < fmax <= sample_rate/2, got "
                             f"fmin={self.fmin}, fmax={self.fmax}")
        if self.log_offset <= 0:
            raise ValueError(f"LogMelConfig.log_offset: expected > 0, got {self.log_offset}")

    @property
    def mel_fmax(self) -> float:
        """The effective upper band edge in Hz (fmax, or the Nyquist frequency when None)."""
        return float(self.sample_rate) / 2 if self.fmax is None else float(self.fmax)

    @property
    def feature_dim(self) -> int:
        """Feature dimension per label frame: n_mels, or 2 * n_mels for 'mean_std'."""
        return 2 * self.n_mels if self.pooling == "mean_std" else self.n_mels


# ----------------------------------------------------------------------------- loading


def _riff_data_truncated(path: str) -> tuple[int, int] | None:
    """Returns (declared, available) data bytes if a RIFF/WAVE data chunk is cut short, else None.

    libsndfile silently shortens a WAV whose data chunk runs past the end of the file, so a
    half-copied file would otherwise load as a shorter recording.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                available = size - pos - 8
                # 0 and 0xFFFFFFFF are used by streaming writers that never patch the header.
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    return chunk_size, available
                return None
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def resample(waveform: np.ndarray, orig_sample_rate: int, target_sample_rate: int) -> np.ndarray:
    """Resamples along the last axis with scipy.signal.resample_poly (polyphase, rational ratio).

    Args:
        waveform: [..., N] samples.
        orig_sample_rate: integer rate of ``waveform`` in Hz.
        target_sample_rate: integer rate wanted in Hz.

    Returns:
        [..., M] float32 samples at ``target_sample_rate``, M = ceil(N * target / orig).
    """
    orig, target = int(orig_sample_rate), int(target_sample_rate)
    if orig != orig_sample_rate or target != target_sample_rate or orig <= 0 or target <= 0:
        raise ValueError(f"resample: sample rates must be positive integers, got {orig_sample_rate} "
                         f"-> {target_sample_rate}")
    if orig == target:
        return np.asarray(waveform, dtype=np.float32)
    g = math.gcd(orig, target)
    out = scipy.signal.resample_poly(np.asarray(waveform, dtype=np.float64), target // g, orig // g,
                                     axis=-1)
    return out.astype(np.float32)


def load_audio(path: str | os.PathLike, target_sample_rate: int = 16000) -> np.ndarray:
    """Loads an audio file as float32 mono at ``target_sample_rate``.

    Multichannel audio is averaged to mono; the rate is changed with ``resample``. Values are
    clipped to [-1, 1] (polyphase resampling can overshoot full-scale input slightly).

    Args:
        path: any format libsndfile reads (wav, flac, ogg, ...).
        target_sample_rate: output rate in Hz.

    Returns:
        [N] float32 waveform in [-1, 1].

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: the file is not audio, is truncated, or holds no samples.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: audio file not found")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file (0 bytes), expected an audio recording")
    try:
        truncated = _riff_data_truncated(path)
    except (OSError, struct.error) as e:
        raise AudioError(f"{path}: cannot read WAV header ({e})") from e
    if truncated is not None:
        raise AudioError(f"{path}: truncated WAV file: data chunk declares {truncated[0]} bytes but "
                         f"only {truncated[1]} are present")
    try:
        with soundfile.SoundFile(path) as f:
            declared_frames, sample_rate = f.frames, f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as e:
        raise AudioError(f"{path}: not a readable audio file, or corrupt/truncated ({e})") from e
    except (RuntimeError, TypeError) as e:  # soundfile raises these for some malformed headers
        raise AudioError(f"{path}: not a readable audio file ({e})") from e
    if data.shape[0] < declared_frames:
        raise AudioError(f"{path}: truncated audio: header declares {declared_frames} frames, "
                         f"only {data.shape[0]} could be read")
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio file (0 samples), expected a recording")
    mono = data.mean(axis=1)
    return np.clip(resample(mono, sample_rate, target_sample_rate), -1.0, 1.0)


# ----------------------------------------------------------------------------- spectra


def hann_window(config: LogMelConfig) -> np.ndarray:
    """Periodic Hann window of win_length, zero-padded (centred) to n_fft, float64 [n_fft]."""
    win = scipy.signal.get_window("hann", config.win_length, fftbins=True)
    left = (config.n_fft - config.win_length) // 2
    return np.pad(win, (left, config.n_fft - config.win_length - left))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mel / 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    safe = np.maximum(hz, min_log_hz)
    return np.where(hz >= min_log_hz, min_log_mel + np.log(safe / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of ``_hz_to_mel``."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), mel * f_sp)


def mel_filterbank(config: LogMelConfig) -> np.ndarray:
    """Slaney-style triangular mel filterbank (area-normalised), as ``librosa.filters.mel``.

    Args:
        config: uses sample_rate, n_fft, n_mels, fmin and fmax.

    Returns:
        [n_mels, n_fft // 2 + 1] float64 weights.
    """
    fft_freqs = np.fft.rfftfreq(config.n_fft, d=1.0 / config.sample_rate)
    mel_edges = np.linspace(_hz_to_mel(config.fmin), _hz_to_mel(config.mel_fmax), config.n_mels + 2)
    hz_edges = _mel_to_hz(mel_edges)
    widths = np.diff(hz_edges)
    ramps = hz_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    # Slaney normalisation: each triangle has unit area in Hz, so band energy is a density.
    weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    return weights


def num_stft_frames(num_samples: int, config: LogMelConfig) -> int:
    """Number of centred 10 ms frames for ``num_samples`` samples (librosa center=True)."""
    return 1 + num_samples // config.hop_length


def default_num_frames(num_samples: int, config: LogMelConfig) -> int:
    """floor(duration / frame_hop_s) + 1 label frames for ``num_samples`` at config.sample_rate."""
    duration = num_samples / config.sample_rate
    return int(math.floor(duration / config.frame_hop_s + _EPS)) + 1


def label_frame_index(n_stft: int, num_frames: int, config: LogMelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Which 10 ms frames each label frame pools.

    Label frame t pools the STFT frames whose centres k * hop lie in
    [t * frame_hop_s - frame_hop_s / 2, t * frame_hop_s + frame_hop_s / 2); indices outside
    [0, n_stft) are clamped (edge padding), so the first and last label frames repeat edge frames.

    Args:
        n_stft: number of 10 ms frames available.
        num_frames: number of label frames wanted.
        config: gives hop_length / sample_rate and frame_hop_s.

    Returns:
        (index [num_frames, M] int32, valid [num_frames, M] bool); M is the most frames any label
        frame pools; invalid slots (only when the ratio is not an integer) must be ignored.
    """
    if n_stft <= 0 or num_frames <= 0:
        raise ValueError(f"label_frame_index: need n_stft > 0 and num_frames > 0, got {n_stft}, {num_frames}")
    hop_s = config.hop_length / config.sample_rate
    t = np.arange(num_frames, dtype=np.float64)
    lo = np.ceil((t * config.frame_hop_s - config.frame_hop_s / 2) / hop_s - _EPS).astype(np.int64)
    hi = np.ceil((t * config.frame_hop_s + config.frame_hop_s / 2) / hop_s - _EPS).astype(np.int64)
    hi = np.maximum(hi, lo + 1)
    width = int((hi - lo).max())
    offsets = np.arange(width)
    index = np.clip(lo[:, None] + offsets[None, :], 0, n_stft - 1).astype(np.int32)
    valid = offsets[None, :] < (hi - lo)[:, None]
    return index, valid


def mel_power_spectrogram(waveform: np.ndarray, config: LogMelConfig = LogMelConfig()) -> np.ndarray:
    """Mel power spectrogram on the 10 ms grid (before log and pooling).

    Args:
        waveform: [N] samples at config.sample_rate, N >= 1.
        config: analysis settings.

    Returns:
        [1 + N // hop_length, n_mels] float64 mel energies (power spectrum, Slaney filterbank).
    """
    x = np.asarray(waveform, dtype=np.float64)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"mel_power_spectrogram: expected a non-empty 1-D waveform, got shape {x.shape}")
    pad = config.n_fft // 2
    padded = np.pad(x, pad, mode="reflect") if x.shape[0] > 1 else np.pad(x, pad, mode="edge")
    frames = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft)[:: config.hop_length]
    frames = frames[: num_stft_frames(x.shape[0], config)]
    window, fbank_t = hann_window(config), np.ascontiguousarray(mel_filterbank(config).T)
    out = np.empty((frames.shape[0], config.n_mels), dtype=np.float64)
    for start in range(0, frames.shape[0], _CHUNK_FRAMES):
        spec = np.fft.rfft(frames[start:start + _CHUNK_FRAMES] * window, axis=-1)
        power = np.square(spec.real)
        power += np.square(spec.imag)
        np.matmul(power, fbank_t, out=out[start:start + _CHUNK_FRAMES])
    return out


def pool_label_frames(log_mel: np.ndarray, num_frames: int, config: LogMelConfig) -> np.ndarray:
    """Pools [K, n_mels] 10 ms features into [num_frames, feature_dim] label frames (see module doc)."""
    index, valid = label_frame_index(log_mel.shape[0], num_frames, config)
    gathered = log_mel[index]  # [T, M, n_mels]
    w = valid[..., None].astype(log_mel.dtype)
    count = w.sum(axis=1)
    mean = (gathered * w).sum(axis=1) / count
    if config.pooling == "mean":
        return mean
    std = np.sqrt(((gathered - mean[:, None]) ** 2 * w).sum(axis=1) / count)
    return np.concatenate([mean, std], axis=-1)


def log_mel_frames(waveform: np.ndarray, sample_rate: int, config: LogMelConfig = LogMelConfig(),
                   num_frames: int | None = None) -> np.ndarray:
    """Log-mel features pooled onto the label grid (frame t centred at t * frame_hop_s).

    Args:
        waveform: [N] mono samples (float, nominally [-1, 1]).
        sample_rate: rate of ``waveform``; resampled to config.sample_rate if different.
        config: feature settings.
        num_frames: label frames wanted; default floor(duration / frame_hop_s) + 1. When given,
            the output has exactly this many frames (the last 10 ms frame is repeated past the end
            of the audio), so features align with a label track of that length.

    Returns:
        [num_frames, config.feature_dim] float32.
    """
    x = np.asarray(waveform)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"log_mel_frames: expected a non-empty 1-D waveform, got shape {x.shape}")
    if num_frames is not None and num_frames <= 0:
        raise ValueError(f"log_mel_frames: num_frames must be positive, got {num_frames}")
    x = resample(x, sample_rate, config.sample_rate)
    if num_frames is None:
        num_frames = default_num_frames(x.shape[0], config)
    log_mel = np.log(mel_power_spectrogram(x, config) + config.log_offset)
    return pool_label_frames(log_mel, num_frames, config).astype(np.float32)
