"""SyntheticEmotion: an embedded, download-free audio-visual emotion dataset (tfds builder).

Each recording has a smooth latent arousal/valence trajectory at 25 Hz. Audio is a 16 kHz
waveform synthesised from it (syllable-like voiced segments: tempo, loudness and pitch follow
arousal; valence tilts the spectrum slightly and bends the pitch within each syllable) and stored
as 40-band log-mel frames on the 40 ms label grid; the waveform itself is not stored. Video is a
20-dim facial-action-unit / head-pose vector per label frame, driven mostly by valence and more
weakly by arousal, with brief face dropouts (``video_mask`` False, features 0). So audio predicts
arousal well and valence poorly and video the reverse, which makes crossmodal training meaningful.

Every recording is generated from ``np.random.default_rng((seed, split_id, index))`` and every
speaker from ``default_rng((seed, 3, speaker_id))``, so an example does not depend on generation
order. Validation and test speakers are disjoint from train speakers. See docs/synthetic.md.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.signal
import tensorflow_datasets as tfds

from emobed_jax.datasets import conventions
from emobed_jax.features import audio as audio_lib

__all__ = ["CATEGORY_NAMES", "VIDEO_FEATURE_NAMES", "MODALITIES", "SyntheticEmotionConfig",
           "split_speakers", "latent_category", "generate_recording", "recording_waveform",
           "SyntheticEmotion"]

CATEGORY_NAMES = ("neutral", "happy", "angry", "sad", "calm")
VIDEO_FEATURE_NAMES = (
    "AU12_lip_corner_puller", "AU06_cheek_raiser", "AU15_lip_corner_depressor", "AU04_brow_lowerer",
    "AU01_inner_brow_raiser", "AU02_outer_brow_raiser", "AU05_upper_lid_raiser", "AU07_lid_tightener",
    "AU09_nose_wrinkler", "AU10_upper_lip_raiser", "AU14_dimpler", "AU17_chin_raiser",
    "AU20_lip_stretcher", "AU25_lips_part", "AU26_jaw_drop", "head_yaw", "head_pitch",
    "head_speed", "gaze_x", "eye_closure")
MODALITIES = ("audio", "video")
SPLITS = ("train", "validation", "test")
FRAME_RATE = 25  # label frames per second (40 ms, as RECOLA)
SAMPLE_RATE = 16000
NEUTRAL_RADIUS = 0.25  # |mean latent| below this is 'neutral'
_SPEAKER_STREAM = 3  # rng stream id for speakers (splits use 0, 1, 2)
_NUM_HARMONICS = 16  # with F0 <= 450 Hz every harmonic stays below 7.2 kHz < Nyquist
_SPEECH_RMS = 0.04  # RMS of active voiced speech at neutral arousal and 0 dB speaker gain


@dataclasses.dataclass(eq=False)
class SyntheticEmotionConfig(tfds.core.BuilderConfig):
    """Size and difficulty knobs of a ``synthetic_emotion`` build.

    Attributes:
        num_train, num_validation, num_test: recordings per split (each >= 1).
        duration_s: length of every recording in seconds (labels: duration_s * 25 + 1 frames).
        audio_snr_db: additive white noise level relative to active speech at neutral arousal.
        video_noise_std: std of the Gaussian noise added to every video feature per frame.
        num_speakers: speakers in total; validation and test each get max(1, round(n / 6)) of
            them, disjoint from the train speakers (needs >= 3).
        seed: base seed; the same config always yields the same data.
        label_noise_std: std of smooth annotation noise added to the latent to give the labels.
        rater_delay_s: labels lag the latent by this much (0 by default; RECOLA raters lag 2-4 s).
        face_dropouts_per_min: mean number of brief (0.2-1 s) no-face spans in the video.
        audio_features: log-mel settings for the ``audio`` feature.
    """

    num_train: int = 48
    num_validation: int = 16
    num_test: int = 16
    duration_s: float = 24.0
    audio_snr_db: float = 15.0
    video_noise_std: float = 0.1
    num_speakers: int = 12
    seed: int = 0
    label_noise_std: float = 0.03
    rater_delay_s: float = 0.0
    face_dropouts_per_min: float = 2.0
    audio_features: audio_lib.LogMelConfig = audio_lib.LogMelConfig()

    def __post_init__(self):
        for field in ("num_train", "num_validation", "num_test"):
            if getattr(self, field) < 1:
                raise ValueError(f"SyntheticEmotionConfig {self.name!r}: {field} must be >= 1, got "
                                 f"{getattr(self, field)}")
        if self.num_speakers < 3:
            raise ValueError(f"SyntheticEmotionConfig {self.name!r}: num_speakers must be >= 3 "
                             f"(train, validation and test speakers are disjoint), got {self.num_speakers}")
        if self.duration_s < 2.0:
            raise ValueError(f"SyntheticEmotionConfig {self.name!r}: duration_s must be >= 2, got "
                             f"{self.duration_s}")
        if not 0 <= self.rater_delay_s < self.duration_s:
            raise ValueError(f"SyntheticEmotionConfig {self.name!r}: rater_delay_s must be in "
                             f"[0, duration_s), got {self.rater_delay_s}")
        if self.audio_features.sample_rate != SAMPLE_RATE or self.audio_features.frame_hop_s != 1 / FRAME_RATE:
            raise ValueError(f"SyntheticEmotionConfig {self.name!r}: audio_features must use "
                             f"sample_rate={SAMPLE_RATE} and frame_hop_s={1 / FRAME_RATE}")

    @property
    def num_frames(self) -> int:
        """Label frames per recording (frame 0 at 0.00 s, the last at duration_s)."""
        return int(round(self.duration_s * FRAME_RATE)) + 1


def split_speakers(num_speakers: int) -> dict[str, tuple[int, ...]]:
    """Speaker ids per split: the last ids go to test, the ones before to validation."""
    held = max(1, round(num_speakers / 6))
    train = num_speakers - 2 * held
    return {"train": tuple(range(train)), "validation": tuple(range(train, train + held)),
            "test": tuple(range(train + held, num_speakers))}


def latent_category(mean_arousal: float, mean_valence: float) -> int:
    """Recording category from the mean latent: neutral near 0, else the quadrant.

    Returns:
        Index into CATEGORY_NAMES: neutral if hypot(a, v) < NEUTRAL_RADIUS, else happy (a >= 0,
        v >= 0), angry (a >= 0, v < 0), sad (a < 0, v < 0) or calm (a < 0, v >= 0).
    """
    if np.hypot(mean_arousal, mean_valence) < NEUTRAL_RADIUS:
        return 0
    if mean_arousal >= 0:
        return 1 if mean_valence >= 0 else 2
    return 4 if mean_valence >= 0 else 3


def _smooth_noise(rng: np.random.Generator, length: int, cutoff_hz: float, fs: float,
                  channels: int = 1) -> np.ndarray:
    """Unit-variance low-pass Gaussian noise [length, channels] (2nd-order Butterworth)."""
    sos = scipy.signal.butter(2, cutoff_hz, fs=fs, output="sos")
    warmup = int(4 * fs / cutoff_hz)  # lets the filter reach its stationary state
    out = scipy.signal.sosfilt(sos, rng.standard_normal((length + warmup, channels)), axis=0)[warmup:]
    impulse = scipy.signal.sosfilt(sos, np.eye(1, warmup + length)[0])
    return out / np.sqrt(np.sum(impulse ** 2))


def _speaker(seed: int, speaker_id: int) -> dict:
    """Speaker nuisance: pitch, tempo, loudness, timbre (formants, tilt) and facial offsets."""
    rng = np.random.default_rng((seed, _SPEAKER_STREAM, speaker_id))
    return {
        "f0": rng.uniform(95.0, 230.0), "rate": rng.uniform(3.3, 4.7), "gain_db": rng.normal(0.0, 2.0),
        "bright": rng.uniform(-0.15, 0.15),
        "formants": (rng.uniform(450.0, 850.0), rng.uniform(1100.0, 2200.0)),
        "video_offset": rng.normal(0.0, 0.12, len(VIDEO_FEATURE_NAMES)),
        "expressivity": rng.uniform(0.7, 1.3),
    }


def _synthesise_audio(rng: np.random.Generator, latent: np.ndarray, spk: dict,
                      config: SyntheticEmotionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like waveform from the latent; returns (waveform [N], speech activity per frame [T])."""
    n = int(round(config.duration_s * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    a = np.interp(t, np.arange(len(latent)) / FRAME_RATE, latent[:, 0])
    v = np.interp(t, np.arange(len(latent)) / FRAME_RATE, latent[:, 1])
    # Syllables: a phase that advances at the speaking rate (faster when aroused).
    syl_phase = np.cumsum(spk["rate"] * 2.0 ** (0.7 * a)) / SAMPLE_RATE + rng.uniform()
    syl = syl_phase.astype(np.int64)
    frac, duty = syl_phase - syl, 0.65
    num_syl = syl[-1] + 1
    voiced = rng.random(num_syl) < 0.85  # some syllable slots are pauses
    env = np.where(frac < duty, np.sin(np.pi * np.minimum(frac / duty, 1.0)) ** 2, 0.0) * voiced[syl]
    # Pitch (semitones): arousal raises it; valence makes syllables rise (+) or fall (-).
    progress = np.minimum(frac / duty, 1.0) - 0.5
    semitones = (5.0 * a + 3.0 * v * progress + rng.normal(0.0, 1.0, num_syl)[syl]
                 + 0.7 * np.interp(t, np.arange(len(latent)) / FRAME_RATE,
                                   _smooth_noise(rng, len(latent), 1.0, FRAME_RATE)[:, 0]))
    f0 = np.clip(spk["f0"] * 2.0 ** (semitones / 12.0), 60.0, 450.0)
    theta = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    # Harmonic sum for a dark (k^-2) and a bright (k^-1) spectrum, sin(k theta) by recurrence.
    k = np.arange(1, _NUM_HARMONICS + 1)
    dark, bright = k ** -2.0, k ** -1.0
    dark, bright = dark / np.sqrt(np.sum(dark ** 2) / 2), bright / np.sqrt(np.sum(bright ** 2) / 2)
    # float32 and in-place updates: this loop dominates the build time.
    s_prev, s_cur = np.zeros(n, np.float32), np.sin(theta).astype(np.float32)
    two_cos = (2 * np.cos(theta)).astype(np.float32)
    sum_dark, sum_bright, tmp = np.zeros(n, np.float32), np.zeros(n, np.float32), np.empty(n, np.float32)
    for i in range(_NUM_HARMONICS):
        sum_dark += np.multiply(s_cur, np.float32(dark[i]), out=tmp)
        sum_bright += np.multiply(s_cur, np.float32(bright[i]), out=tmp)
        np.multiply(two_cos, s_cur, out=tmp)
        tmp -= s_prev
        s_prev, s_cur, tmp = s_cur, tmp, s_prev
    w = np.clip(0.5 + 0.3 * a + 0.12 * v + spk["bright"], 0.0, 1.0)  # valence: a weak brightness cue
    voice = (1 - w) * sum_dark + w * sum_bright
    # Speaker timbre: two formant resonances on top of the source.
    for gain, fc in zip((1.0, 0.6), spk["formants"]):
        b, den = scipy.signal.iirpeak(fc, Q=4.0, fs=SAMPLE_RATE)
        voice = voice + gain * scipy.signal.lfilter(b, den, voice)
    voice /= np.sqrt(np.mean(voice ** 2))
    loud = 10.0 ** ((spk["gain_db"] + 10.0 * a + rng.normal(0.0, 1.5, num_syl)[syl]) / 20.0)
    speech = _SPEECH_RMS * loud * env * voice
    # Active speech RMS is _SPEECH_RMS * sqrt(3/8) (the mean of sin^4 over a syllable is 3/8).
    noise_rms = _SPEECH_RMS * np.sqrt(3 / 8) * 10.0 ** (-config.audio_snr_db / 20.0)
    wave = np.clip(speech + noise_rms * rng.standard_normal(n), -1.0, 1.0).astype(np.float32)
    # Speech activity per label frame: mean envelope over [t - 20 ms, t + 20 ms), edge padded.
    hop, num = SAMPLE_RATE // FRAME_RATE, len(latent)
    padded = np.pad(env, (hop // 2, max(0, num * hop - hop // 2 - n)), mode="edge")[: num * hop]
    activity = padded.reshape(num, hop).mean(axis=1)
    return wave, activity


def _synthesise_video(rng: np.random.Generator, latent: np.ndarray, activity: np.ndarray, spk: dict,
                      config: SyntheticEmotionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Facial AU / head-pose features [T, 20] and the face mask [T] from the latent."""
    num = len(latent)
    a, v = latent[:, 0], latent[:, 1]
    e = spk["expressivity"]

    def s(x):
        return 1.0 / (1.0 + np.exp(-x))

    head = _smooth_noise(rng, num, 0.5, FRAME_RATE, channels=3)
    motion = 0.7 + 0.3 * a  # livelier head movement when aroused
    blinks = (rng.random(num) < 0.02 * (1.0 + 0.5 * a)).astype(np.float64)
    eye_closure = np.convolve(blinks, [0.5, 1.0, 0.5], mode="same")
    # Valence drives most action units; arousal enters fewer of them and more weakly.
    features = np.stack([
        s(e * 3.0 * v - 0.5), s(e * 2.5 * v + 0.3 * a - 1.0), s(-e * 2.5 * v - 1.0),
        s(-e * 2.0 * v + 0.3 * a - 0.5), s(-e * 1.5 * v - 0.4 * a - 0.5), s(0.6 * a - 0.5),
        s(0.5 * a + 0.3 * v), s(-1.5 * e * v + 0.3 * a - 0.5), s(-2.5 * e * v - 1.5),
        s(-2.0 * e * v + 0.2 * a - 1.0), s(2.0 * e * v - 1.0), s(-1.5 * e * v - 0.3 * a - 0.5),
        s(-1.5 * e * v + 0.5 * a - 1.0), 0.2 + 0.6 * activity, 0.1 + 0.5 * activity * (1.0 + 0.3 * a),
        0.3 * motion * head[:, 0], 0.2 * motion * head[:, 1] + 0.15 * v,
        0.3 * motion * np.abs(np.gradient(head[:, 0])) * FRAME_RATE / 4, 0.3 * head[:, 2],
        eye_closure,
    ], axis=1)
    # Noise: frame-level jitter plus a slow drift (tracking/lighting) that smoothing cannot remove.
    drift = _smooth_noise(rng, num, 0.2, FRAME_RATE, channels=features.shape[1])
    noise = config.video_noise_std * (rng.standard_normal(features.shape) + drift)
    features += spk["video_offset"] + noise
    mask = np.ones(num, dtype=bool)
    for _ in range(rng.poisson(config.face_dropouts_per_min * config.duration_s / 60.0)):
        start = rng.integers(0, num)
        mask[start:start + int(rng.uniform(0.2, 1.0) * FRAME_RATE)] = False
    features[~mask] = 0.0  # as RECOLA/OpenFace: no face, zero features
    return features.astype(np.float32), mask


def generate_recording(config: SyntheticEmotionConfig, split: str, index: int) -> dict:
    """One example of the common schema (deterministic in config.seed, split and index).

    Args:
        config: the build config.
        split: 'train', 'validation' or 'test'.
        index: 0-based recording index within the split.

    Returns:
        dict with name, speaker, audio [T, D_audio], video [T, 20], video_mask [T], arousal [T],
        valence [T], category (a CATEGORY_NAMES index).
    """
    return _generate(config, split, index)[0]


def recording_waveform(config: SyntheticEmotionConfig, split: str, index: int) -> np.ndarray:
    """The 16 kHz float32 waveform [N] whose log-mel frames are that recording's ``audio``.

    The dataset stores only the features; this regenerates the waveform by the same random
    stream, so a trained model can be run on the raw audio of a dataset recording (tests, demos).
    """
    return _generate(config, split, index)[1]


def _generate(config: SyntheticEmotionConfig, split: str, index: int) -> tuple[dict, np.ndarray]:
    """(example, waveform) of one recording: the one generator behind both public functions."""
    if split not in SPLITS:
        raise ValueError(f"generate_recording: split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng((config.seed, SPLITS.index(split), index))
    speakers = split_speakers(config.num_speakers)[split]
    speaker_id = speakers[index % len(speakers)]
    spk = _speaker(config.seed, speaker_id)
    num = config.num_frames
    offset = rng.uniform(-0.55, 0.55, size=2)  # recordings differ in mean emotion
    latent = np.tanh(offset + 0.45 * _smooth_noise(rng, num, 0.1, FRAME_RATE, channels=2))
    wave, activity = _synthesise_audio(rng, latent, spk, config)
    video, mask = _synthesise_video(rng, latent, activity, spk, config)
    delay = int(round(config.rater_delay_s * FRAME_RATE))
    lagged = np.concatenate([np.repeat(latent[:1], delay, axis=0), latent[: num - delay]])
    labels = np.clip(lagged + config.label_noise_std * _smooth_noise(rng, num, 1.0, FRAME_RATE, 2),
                     -1.0, 1.0).astype(np.float32)
    return {
        "name": f"{split}_{index + 1}",
        "speaker": f"spk{speaker_id:02d}",
        "audio": audio_lib.log_mel_frames(wave, SAMPLE_RATE, config.audio_features, num_frames=num),
        "video": video,
        "video_mask": mask,
        "arousal": labels[:, 0],
        "valence": labels[:, 1],
        "category": latent_category(*latent.mean(axis=0)),
    }, wave


class SyntheticEmotion(tfds.core.GeneratorBasedBuilder):
    """Synthetic audio-visual recordings with continuous arousal/valence and a category."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        SyntheticEmotionConfig(name="default", description="48/16/16 recordings x 24 s, 12 speakers."),
        SyntheticEmotionConfig(name="tiny", description="8/4/4 recordings x 8 s, 6 speakers (tests).",
                               num_train=8, num_validation=4, num_test=4, duration_s=8.0,
                               num_speakers=6),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    CONVENTIONS = conventions.Conventions(label_names=("arousal", "valence"))

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def feature_settings(self) -> dict:
        """Audio: log-mel of the 16 kHz waveform; video: generated features (no extractor)."""
        return {"audio": {"kind": "log_mel", **dataclasses.asdict(self.builder_config.audio_features)},
                "video": {"kind": "synthetic"}}

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic audio-visual emotion recordings (see docs/synthetic.md): log-mel "
                        "audio carries arousal, facial features carry valence.",
            features=tfds.features.FeaturesDict({
                "name": tfds.features.Text(),
                "speaker": tfds.features.Text(),
                "audio": tfds.features.Tensor(shape=(None, cfg.audio_features.feature_dim),
                                              dtype=np.float32),
                "video": tfds.features.Tensor(shape=(None, len(VIDEO_FEATURE_NAMES)), dtype=np.float32),
                "video_mask": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
                "arousal": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                "valence": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                "category": tfds.features.ClassLabel(names=CATEGORY_NAMES),
            }),
            metadata=tfds.core.MetadataDict(
                modalities=list(MODALITIES), skipped={},
                speakers={k: [f"spk{i:02d}" for i in v]
                          for k, v in split_speakers(cfg.num_speakers).items()}),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        cfg = self.builder_config
        count = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}[split]
        for index in range(count):
            example = generate_recording(cfg, split, index)
            yield example["name"], example
