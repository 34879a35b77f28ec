"""tfds builder ``recola``: RECOLA as distributed for AVEC 2016 (manual download, array_record).

One example per recording: ``name``, the gold-standard ``arousal`` / ``valence`` (one value per
40 ms frame; their frame count T defines the recording's length) and one ``[T, D]`` float32 stream
per modality found in the package, every stream aligned to the label frames:

- ``audio``: log-mel (config ``logmel``, from ``recordings_audio/*.wav`` via
  ``emobed_jax.features.audio``), eGeMAPSv02 low-level descriptors from ``opensmile`` mean-pooled
  onto the 40 ms frames (``egemaps``), or the package's eGeMAPS functionals from
  ``features_audio/<dimension>/*.arff`` (``functionals``);
- one stream per other ``features_<X>`` folder (``video_geometric``, ``video_appearance``, ``ecg``,
  ``hrhrv``, ``eda``, ...: the folder name without ``features_``, lower-cased), dimensions read from
  the ARFF header; video streams also get ``<stream>_mask`` (False where all features are 0, i.e.
  no face was detected).

The package ships feature files once per emotion dimension (different windows). Configs named
after the audio source alone read the ``arousal`` files; ``<audio>_valence`` reads the valence files;
``<audio>_both`` keeps both as ``<modality>_arousal`` and ``<modality>_valence`` streams.

The streams depend on the package on disk, which tfds only reveals when preparing, so the features
are fixed in ``_download_and_prepare`` from a scan of the manual dir (a prepared dataset reads them
from its ``features.json``).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from emobed_jax.datasets import conventions
from emobed_jax.features import align as align_lib
from emobed_jax.features import arff as arff_lib
from emobed_jax.features import audio as audio_lib
from emobed_jax.features import egemaps
# Shared with the other builders (features.align); kept importable as recola.pool_to_label_frames.
from emobed_jax.features.align import pool_to_label_frames

__all__ = ["Recola", "RecolaConfig", "RecolaError", "Stream", "PackageLayout", "scan_package",
           "align_length", "pool_to_label_frames"]

log = logging.getLogger(__name__)

AUDIO_SOURCES = ("logmel", "egemaps", "functionals")
FEATURE_DIMENSIONS = ("arousal", "valence", "both")
DIMENSIONS = ("arousal", "valence")
SPLIT_PREFIXES = {"train": "train", "validation": "dev", "test": "test"}
FRAME_HOP_S = 0.04
GOLD_DIR, AUDIO_DIR, FEATURE_PREFIX = "ratings_gold_standard", "recordings_audio", "features_"
_RECORDING_RE = re.compile(r"^(train|dev|test)_(.+)\.arff$")

_MANUAL = f"""\
Pass the root of the unpacked AVEC 2016 RECOLA package (licensed from the RECOLA team) as the manual
dir. Needed: `{GOLD_DIR}/{{arousal,valence}}/*.arff` (labels) and the sources of the streams wanted:
`{AUDIO_DIR}/*.wav` (configs logmel*, egemaps*), `features_audio/` (functionals*),
`features_video_geometric/`, `features_video_appearance/`, any other `features_*/` (ECG, HRHRV,
EDA). Absent folders are left out; `recordings_video/` and `ratings_individual/` are not used.
"""


class RecolaError(ValueError):
    """The RECOLA package's content is inconsistent (lengths, dimensions, values)."""


@dataclasses.dataclass(eq=False)
class RecolaConfig(tfds.core.BuilderConfig):
    """Which audio stream to build and which feature files (emotion dimension) to read.

    Attributes:
        audio: 'logmel', 'egemaps' or 'functionals' (see the module docstring).
        feature_dimension: 'arousal', 'valence' or 'both': which ``features_*/<dimension>/``
            files are read; 'both' stores ``<modality>_arousal`` and ``<modality>_valence``.
        logmel: log-mel settings for audio='logmel' (frame_hop_s must stay 0.04).
    """

    audio: str = "logmel"
    feature_dimension: str = "arousal"
    logmel: audio_lib.LogMelConfig = dataclasses.field(default_factory=audio_lib.LogMelConfig)

    def __post_init__(self):
        if self.audio not in AUDIO_SOURCES:
            raise ValueError(f"RecolaConfig.audio: expected one of {AUDIO_SOURCES}, got {self.audio!r}")
        if self.feature_dimension not in FEATURE_DIMENSIONS:
            raise ValueError(f"RecolaConfig.feature_dimension: expected one of {FEATURE_DIMENSIONS}, "
                             f"got {self.feature_dimension!r}")
        if abs(self.logmel.frame_hop_s - FRAME_HOP_S) > 1e-9:
            raise ValueError(f"RecolaConfig.logmel.frame_hop_s: RECOLA labels are every {FRAME_HOP_S} s, "
                             f"got {self.logmel.frame_hop_s}")


@dataclasses.dataclass(frozen=True)
class Stream:
    """One feature sequence stored per example.

    Attributes:
        key: example key ('audio', 'video_geometric', 'ecg_valence', ...).
        source: 'logmel', 'egemaps' (from wavs) or 'arff' (from feature files).
        folder: folder holding ``<recording>.wav`` / ``<recording>.arff``.
        dim: feature dimension D.
        masked: whether ``<key>_mask`` is stored (video: all-zero frames have no face).
    """

    key: str
    source: str
    folder: str
    dim: int
    masked: bool = False

    def path(self, recording: str) -> str:
        """The file this stream reads for ``recording``."""
        return os.path.join(self.folder, recording + (".arff" if self.source == "arff" else ".wav"))


@dataclasses.dataclass(frozen=True)
class PackageLayout:
    """What ``scan_package`` found: recordings per split, streams, and what was left out (why)."""

    manual_dir: str
    recordings: dict[str, tuple[str, ...]]
    streams: tuple[Stream, ...]
    left_out: dict[str, str]

    def gold_path(self, dimension: str, recording: str) -> str:
        """Gold-standard ARFF of ``recording`` for 'arousal' or 'valence'."""
        return os.path.join(self.manual_dir, GOLD_DIR, dimension, recording + ".arff")


def _recording_key(name: str) -> tuple:
    """Natural order: train_2 before train_10."""
    suffix = _RECORDING_RE.match(name + ".arff").group(2)
    return (int(suffix), "") if suffix.isdigit() else (float("inf"), suffix)


def _scan_recordings(manual_dir: str) -> dict[str, tuple[str, ...]]:
    """Recordings with gold standards in both dimensions, per split (test only if present)."""
    found = {}
    for dimension in DIMENSIONS:
        folder = os.path.join(manual_dir, GOLD_DIR, dimension)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: gold-standard folder not found; expected "
                                    f"{GOLD_DIR}/{{arousal,valence}}/<recording>.arff in the manual dir")
        found[dimension] = {f[:-5] for f in os.listdir(folder) if _RECORDING_RE.match(f)}
    for dimension, other in (("arousal", "valence"), ("valence", "arousal")):
        missing = sorted(found[dimension] - found[other])
        if missing:
            raise FileNotFoundError(f"{os.path.join(manual_dir, GOLD_DIR, other, missing[0] + '.arff')}: "
                                    f"not found, but {dimension} has a gold standard for {missing[0]}")
    recordings = {}
    for split, prefix in SPLIT_PREFIXES.items():
        names = sorted((r for r in found["arousal"] if r.startswith(prefix + "_")), key=_recording_key)
        if names:
            recordings[split] = tuple(names)
        elif split != "test":
            raise FileNotFoundError(f"{os.path.join(manual_dir, GOLD_DIR, 'arousal', prefix + '_*.arff')}: "
                                    f"no gold standard found for the {split} split")
        else:
            log.info("RECOLA: no test gold standards (%s), so no test split is built",
                     os.path.join(manual_dir, GOLD_DIR, "arousal", "test_*.arff"))
    return recordings


def scan_package(manual_dir: str | os.PathLike, config: RecolaConfig) -> PackageLayout:
    """Finds the recordings and the streams a config builds from an AVEC 2016 package.

    A source folder that is absent, or that lacks the file of some recording, is left out: listed
    in ``left_out`` with the reason (the first missing file) and logged as a warning.

    Args:
        manual_dir: root of the unpacked package.
        config: the builder config.

    Returns:
        The layout, streams ordered audio first, then by name.

    Raises:
        FileNotFoundError: missing gold standards (train or dev) or no usable stream; the message
            names the expected path.
    """
    manual_dir = os.fspath(manual_dir)
    recordings = _scan_recordings(manual_dir)
    names = [n for split_names in recordings.values() for n in split_names]
    dims = DIMENSIONS if config.feature_dimension == "both" else (config.feature_dimension,)
    candidates, left_out = [], {}
    audio_dir = os.path.join(manual_dir, AUDIO_DIR)
    if config.audio != "functionals":
        candidates.append(Stream("audio", config.audio, audio_dir, 0))
    for folder in sorted(os.listdir(manual_dir)):
        modality = folder[len(FEATURE_PREFIX):].lower()
        if not folder.startswith(FEATURE_PREFIX) or not os.path.isdir(os.path.join(manual_dir, folder)):
            continue
        if modality == "audio" and config.audio != "functionals":
            left_out[os.path.join(manual_dir, folder)] = f"audio comes from {AUDIO_DIR} (config {config.name})"
            continue
        for dimension in dims:
            key = f"{modality}_{dimension}" if config.feature_dimension == "both" else modality
            candidates.append(Stream(key, "arff", os.path.join(manual_dir, folder, dimension), 0,
                                     masked=modality.startswith("video")))
    if config.audio == "functionals" and not any(c.key.startswith("audio") for c in candidates):
        left_out[os.path.join(manual_dir, FEATURE_PREFIX + "audio")] = "folder absent: no audio stream"
    streams = []
    for stream in candidates:
        missing = [stream.path(n) for n in names if not os.path.isfile(stream.path(n))]
        if not os.path.isdir(stream.folder):
            left_out[stream.folder] = "folder absent"
        elif missing:
            left_out[stream.folder] = f"{len(missing)} recording file(s) missing, e.g. {missing[0]}"
        elif stream.source == "arff":
            attributes = arff_lib.read_arff_header(stream.path(names[0]))[1]
            dim = len(arff_lib.numeric_feature_names(attributes))
            if dim == 0:
                raise RecolaError(f"{stream.path(names[0])}: no numeric feature attribute in the header")
            streams.append(dataclasses.replace(stream, dim=dim))
        else:
            dim = config.logmel.feature_dim if config.audio == "logmel" else egemaps.feature_dim()
            streams.append(dataclasses.replace(stream, dim=dim))
    streams.sort(key=lambda s: (not s.key.startswith("audio"), s.key))
    for path, why in left_out.items():
        log.warning("RECOLA: %s left out (%s)", path, why)
    if not streams:
        raise FileNotFoundError(f"{manual_dir}: no usable modality for config {config.name!r}; expected "
                                f"{AUDIO_DIR}/ or features_<modality>/{dims[0]}/ folders")
    return PackageLayout(manual_dir, recordings, tuple(streams), left_out)


def align_length(x: np.ndarray, num_frames: int, path: str, gold_path: str) -> np.ndarray:
    """``features.align.align_length`` (trim or edge-pad by up to 2 frames), raising RecolaError.

    Raises:
        RecolaError: a larger difference, naming both files and lengths.
    """
    try:
        return align_lib.align_length(x, num_frames, path, gold_path)
    except align_lib.AlignError as e:
        raise RecolaError(str(e)) from None


def _labels(path: str) -> np.ndarray:
    """Values [T] of a gold-standard ARFF, checked to lie on the 40 ms label grid."""
    data = arff_lib.read_arff(path)
    if data.frame_times is None or data.values.shape[1] != 1:
        raise RecolaError(f"{path}: expected attributes frameTime and one numeric gold-standard value, "
                          f"got numeric attributes {list(data.feature_names)}")
    t = data.frame_times
    if data.num_rows == 0 or abs(t[0]) > FRAME_HOP_S / 2 or \
            (t.size > 1 and np.abs(np.diff(t) - FRAME_HOP_S).max() > 1e-3):
        raise RecolaError(f"{path}: frameTime must run 0.00, {FRAME_HOP_S:.2f}, ... in {FRAME_HOP_S} s "
                          f"steps (the label grid)")
    if not np.all(np.isfinite(data.values)):
        raise RecolaError(f"{path}: GoldStandard has missing or non-finite values")
    return data.values[:, 0]


def _read_stream(stream: Stream, recording: str, num_frames: int, gold_path: str,
                 config: RecolaConfig) -> np.ndarray:
    path = stream.path(recording)
    if stream.source == "arff":
        data = arff_lib.read_arff(path)
        if data.values.shape[1] != stream.dim:
            raise RecolaError(f"{path}: {data.values.shape[1]} feature attributes, expected {stream.dim} "
                              f"as in the other files of {stream.folder}")
        if not np.all(np.isfinite(data.values)):
            raise RecolaError(f"{path}: missing ('?') or non-finite feature values")
        return align_length(data.values, num_frames, path, gold_path)
    rate = config.logmel.sample_rate if stream.source == "logmel" else egemaps.SAMPLE_RATE
    wav = audio_lib.load_audio(path, target_sample_rate=rate)
    duration_frames = int(np.floor(wav.shape[0] / rate / FRAME_HOP_S + 1e-6)) + 1
    # The features are computed for exactly num_frames; this only rejects a wrong file.
    align_length(np.empty(duration_frames), num_frames, path, gold_path)
    if stream.source == "logmel":
        return audio_lib.log_mel_frames(wav, rate, config.logmel, num_frames=num_frames)
    values, centres = egemaps.lld_frames(wav)
    return pool_to_label_frames(values, centres, num_frames)


def load_example(layout: PackageLayout, recording: str, config: RecolaConfig) -> dict:
    """Reads one recording's labels and streams, aligned to the gold standard's T frames."""
    arousal, valence = (_labels(layout.gold_path(d, recording)) for d in DIMENSIONS)
    if arousal.shape != valence.shape:
        raise RecolaError(f"{layout.gold_path('arousal', recording)} has {arousal.shape[0]} frames but "
                          f"{layout.gold_path('valence', recording)} has {valence.shape[0]}; expected equal")
    example = {"name": recording, "arousal": arousal, "valence": valence}
    for stream in layout.streams:
        x = _read_stream(stream, recording, arousal.shape[0], layout.gold_path("arousal", recording), config)
        example[stream.key] = x.astype(np.float32)
        if stream.masked:
            example[stream.key + "_mask"] = np.any(x != 0, axis=1)
    return example


def _features(layout: PackageLayout) -> tfds.features.FeaturesDict:
    frames = functools.partial(tfds.features.Tensor, dtype=np.float32)
    spec = {"name": tfds.features.Text(), "arousal": frames(shape=(None,)), "valence": frames(shape=(None,))}
    for s in layout.streams:
        spec[s.key] = frames(shape=(None, s.dim))
        if s.masked:
            spec[s.key + "_mask"] = tfds.features.Tensor(shape=(None,), dtype=np.bool_)
    return tfds.features.FeaturesDict(spec)


def _configs() -> list[RecolaConfig]:
    return [RecolaConfig(name=audio if dimension == "arousal" else f"{audio}_{dimension}", audio=audio,
                         feature_dimension=dimension,
                         description=f"audio: {audio}; features_*/{dimension} files")
            for audio in AUDIO_SOURCES for dimension in FEATURE_DIMENSIONS]


class Recola(tfds.core.GeneratorBasedBuilder):
    """RECOLA (AVEC 2016): continuous arousal/valence every 40 ms, audio/video/physiology streams."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "logmel"
    CONVENTIONS = conventions.Conventions(label_names=DIMENSIONS)
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # features=None: restored from features.json when prepared, else set in _download_and_prepare.
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__, features=None, metadata=tfds.core.MetadataDict(),
            homepage="https://diuf.unifr.ch/main/diva/recola/",
            citation="Valstar et al., AVEC 2016: Depression, Mood, and Emotion Recognition Workshop and "
                     "Challenge, ACM AVEC 2016.")

    def feature_settings(self) -> dict:
        """Audio as the builder config makes it (log-mel from the wavs, eGeMAPS low-level
        descriptors through opensmile, or the AVEC functionals ARFFs); every other stream is read
        from the AVEC feature ARFFs."""
        cfg = self.builder_config
        audio = {"logmel": {"kind": "log_mel", **dataclasses.asdict(cfg.logmel)},
                 "egemaps": {"kind": "egemaps", "frame_hop_s": FRAME_HOP_S},
                 "functionals": {"kind": "arff"}}[cfg.audio]
        streams = (self.info.metadata or {}).get("modalities") or ["audio"]
        return {m: audio if m == "audio" else {"kind": "arff"} for m in streams}

    def _download_and_prepare(self, dl_manager, download_config):
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError as e:  # tfds reports a missing or empty manual dir with an assert
            raise FileNotFoundError(str(e)) from None
        layout = scan_package(manual_dir, self.builder_config)
        self._layout = layout
        # tfds has no public setter; the features must be known before SplitBuilder is created.
        self.info._features = _features(layout)  # pylint: disable=protected-access
        self.info.metadata.update({
            "modalities": [s.key for s in layout.streams],
            "feature_dims": {s.key: s.dim for s in layout.streams},
            "sources": {s.key: os.path.relpath(s.folder, layout.manual_dir) + f" ({s.source})"
                        for s in layout.streams},
            "masked": [s.key for s in layout.streams if s.masked],
            "recordings": {k: list(v) for k, v in layout.recordings.items()},
            "left_out": {os.path.relpath(k, layout.manual_dir): v for k, v in layout.left_out.items()},
            "feature_dimension": self.builder_config.feature_dimension,
            "frame_hop_s": FRAME_HOP_S,
            "skipped": {},
        })
        super()._download_and_prepare(dl_manager, download_config)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(names) for split, names in self._layout.recordings.items()}

    def _generate_examples(self, names):
        for name in names:
            yield name, load_example(self._layout, name, self.builder_config)
