"""Tests for emobed_jax.features.audio (numpy) and emobed_jax.features.mel_jax (JAX)."""
from __future__ import annotations

import functools

import jax
import librosa
import numpy as np
import pytest
import soundfile

from emobed_jax.features import audio, mel_jax
from emobed_jax.features.audio import AudioError, LogMelConfig

SR = 16000


def _test_signal(seconds: float = 1.3, seed: int = 0) -> np.ndarray:
    """An amplitude-modulated tone plus noise: varied spectrum and energy across frames."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


# ----------------------------------------------------------------------------- config


def test_feature_dim_and_validation():
    assert LogMelConfig().feature_dim == 40
    assert LogMelConfig(pooling="mean_std", n_mels=64).feature_dim == 128
    with pytest.raises(ValueError, match="pooling"):
        LogMelConfig(pooling="max")
    with pytest.raises(ValueError, match="win_length"):
        LogMelConfig(win_length=1024, n_fft=512)
    with pytest.raises(ValueError, match="fmin/fmax"):
        LogMelConfig(fmax=9000.0)


# ----------------------------------------------------------------------------- vs librosa


@pytest.mark.parametrize("kwargs", [{}, {"n_mels": 64, "fmin": 50.0, "fmax": 7600.0},
                                    {"sample_rate": 22050, "n_fft": 1024, "n_mels": 80}])
def test_filterbank_matches_librosa(kwargs):
    config = LogMelConfig(**kwargs)
    ours = audio.mel_filterbank(config)
    ref = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                              fmin=config.fmin, fmax=config.fmax, htk=False, norm="slaney",
                              dtype=np.float64)
    assert ours.shape == (config.n_mels, config.n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("num_samples", [16000, 16003, 7919])
def test_mel_power_matches_librosa(num_samples):
    config = LogMelConfig()
    y = _test_signal(2.0)[:num_samples].astype(np.float64)
    ref = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=config.n_fft, hop_length=config.hop_length, win_length=config.win_length,
        window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=config.n_mels,
        fmin=config.fmin, fmax=config.fmax, dtype=np.float64).T
    ours = audio.mel_power_spectrogram(y, config)
    assert ours.shape == ref.shape == (1 + num_samples // 160, 40)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12 * ref.max())
    # The JAX version (float32) on the same grid.
    ours_jax = np.asarray(mel_jax.mel_power_spectrogram_jax(y.astype(np.float32), config))
    np.testing.assert_allclose(ours_jax, ref, rtol=2e-3, atol=1e-5 * ref.max())


# ----------------------------------------------------------------------------- numpy vs JAX


@pytest.mark.parametrize("pooling", ["mean", "mean_std"])
def test_jax_matches_numpy(pooling):
    config = LogMelConfig(pooling=pooling)
    batch = np.stack([_test_signal(1.3, seed=0), _test_signal(1.3, seed=1)[::-1]])
    expected = np.stack([audio.log_mel_frames(x, SR, config) for x in batch])
    fn = jax.jit(functools.partial(mel_jax.log_mel_frames_jax, config=config))
    got = np.asarray(fn(batch))
    assert got.shape == expected.shape == (2, 33, config.feature_dim)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    single = np.asarray(fn(batch[0]))
    np.testing.assert_allclose(single, expected[0], rtol=1e-4, atol=1e-4)
    padded = np.asarray(mel_jax.log_mel_frames_jax(batch[0], config, num_frames=40))
    np.testing.assert_allclose(padded, audio.log_mel_frames(batch[0], SR, config, num_frames=40),
                               rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- pooling and alignment


def test_pooling_uses_four_centred_frames_with_edge_padding():
    config = LogMelConfig(pooling="mean_std")
    y = _test_signal(1.0)
    log_mel = np.log(audio.mel_power_spectrogram(y, config) + config.log_offset)  # 101 frames
    feats = audio.log_mel_frames(y, SR, config)
    assert feats.shape == (26, 80)
    for t in (0, 1, 12, 25):
        idx = np.clip(np.arange(4 * t - 2, 4 * t + 2), 0, log_mel.shape[0] - 1)
        np.testing.assert_allclose(feats[t, :40], log_mel[idx].mean(0), rtol=1e-5)
        np.testing.assert_allclose(feats[t, 40:], log_mel[idx].std(0), rtol=1e-4, atol=1e-5)
    # Frame 0 covers [-20, 20) ms: two edge copies of 10 ms frame 0, then frames 0 and 1.
    np.testing.assert_allclose(feats[0, :40], (3 * log_mel[0] + log_mel[1]) / 4, rtol=1e-5)


def test_num_frames_default_and_forced():
    config = LogMelConfig()
    y = _test_signal(8.0)
    assert audio.log_mel_frames(y, SR).shape == (201, 40)  # 8 s / 40 ms + 1
    assert audio.log_mel_frames(y[:-1], SR).shape == (200, 40)
    assert audio.log_mel_frames(y[:16000 + 639], SR).shape == (25 + 1, 40)
    longer = audio.log_mel_frames(y, SR, num_frames=210)
    assert longer.shape == (210, 40)
    np.testing.assert_allclose(longer[:200], audio.log_mel_frames(y, SR)[:200], rtol=1e-6)
    # Past the end of the audio, the last 10 ms frame is repeated.
    last = np.log(audio.mel_power_spectrogram(y, config)[-1] + config.log_offset)
    np.testing.assert_allclose(longer[205:], np.tile(last, (5, 1)), rtol=1e-5)
    assert audio.log_mel_frames(y, SR, num_frames=50).shape == (50, 40)
    with pytest.raises(ValueError, match="num_frames"):
        audio.log_mel_frames(y, SR, num_frames=0)
    with pytest.raises(ValueError, match="non-empty"):
        audio.log_mel_frames(np.zeros(0, np.float32), SR)


def test_onset_lands_on_the_right_label_frame():
    # Silence then a loud tone from exactly 1.00 s. Label frame 24 pools 10 ms frames centred at
    # 0.94-0.97 s (25 ms windows end by 0.9825 s): silent. Frame 25 (centres 0.98-1.01 s) straddles
    # the onset; frame 26 (centres from 1.02 s, windows from 1.0075 s) is all tone.
    t = np.arange(2 * SR) / SR
    y = np.where(t >= 1.0, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)
    energy = audio.log_mel_frames(y, SR).max(axis=1)  # the band holding the tone
    assert energy.shape == (51,)
    assert energy[:25].max() < np.log(2e-6)
    assert energy[26:].min() > energy[:25].max() + 10
    assert energy[:25].max() + 5 < energy[25] < energy[26] - 5


def test_resampled_input_matches_native_rate():
    t = np.arange(int(1.5 * 48000)) / 48000
    y48 = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y16 = audio.resample(y48, 48000, SR)
    assert y16.shape == (24000,)
    np.testing.assert_allclose(audio.log_mel_frames(y48, 48000), audio.log_mel_frames(y16, SR), rtol=1e-6)


# ----------------------------------------------------------------------------- loading


def test_load_audio_44k_stereo_to_16k_mono(tmp_path):
    sr_in, freq = 44100, 1000.0
    t = np.arange(2 * sr_in) / sr_in
    left, right = 0.6 * np.sin(2 * np.pi * freq * t), 0.2 * np.sin(2 * np.pi * freq * t)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), sr_in, subtype="PCM_16")
    y = audio.load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert y.shape == (32000,)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    peak_hz = np.argmax(spectrum) * SR / y.size
    assert abs(peak_hz - freq) < 1.0
    # Mono is the channel mean: amplitude (0.6 + 0.2) / 2.
    assert np.max(np.abs(y[1000:-1000])) == pytest.approx(0.4, abs=0.01)
    assert np.max(np.abs(y)) <= 1.0


def test_load_audio_native_rate_is_exact(tmp_path):
    y = _test_signal(0.5)
    path = tmp_path / "a.flac"
    soundfile.write(path, y, SR, subtype="PCM_24")
    np.testing.assert_allclose(audio.load_audio(path), y, atol=1e-6)


def test_load_audio_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.wav"):
        audio.load_audio(tmp_path / "nothere.wav")


def test_load_audio_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("frameTime,arousal\n0.00,0.1\n")
    with pytest.raises(AudioError, match="notes.wav.*not a readable audio file"):
        audio.load_audio(path)


def test_load_audio_empty(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, np.float32), SR, subtype="PCM_16")
    with pytest.raises(AudioError, match="empty.wav.*0 samples"):
        audio.load_audio(path)


def test_load_audio_truncated_wav(tmp_path):
    full = tmp_path / "full.wav"
    soundfile.write(full, _test_signal(1.0), SR, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="cut.wav.*truncated"):
        audio.load_audio(cut)
    header_only = tmp_path / "header_only.wav"
    header_only.write_bytes(data[:44])
    with pytest.raises(AudioError, match="header_only.wav.*truncated"):
        audio.load_audio(header_only)
    assert audio.load_audio(full).shape == (16000,)  # the intact file still loads


def test_load_audio_truncated_flac(tmp_path):
    full = tmp_path / "full.flac"
    soundfile.write(full, _test_signal(1.0), SR)
    data = full.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="cut.flac"):
        audio.load_audio(cut)
