"""tfds builder ``emotion_folder``: a user's own corpus in a documented folder layout (issue 14).

``manual_dir`` holds ``splits.csv``, the labels (``labels/<id>.csv`` per recording at frame level,
or one ``labels.csv`` at utterance level), an optional ``corpus.json`` and one folder per modality
(``folder_layout`` describes and checks the layout). One example per recording: ``name``, one float
feature per label dimension (named as in the label CSV header), ``category`` / ``group`` when
given, and per modality ``m`` a ``[n, D_m]`` float32 stream with its ``m_mask``.

Frame level: every stream is brought onto the label grid by ``features.align.to_label_grid`` (the
one rule: mean of the frames within half a label period, else the nearest frame; coverage checked
against ``tolerance_s``), so each stream has exactly T rows, T the label count. Wavs become log-mel
with a hop of the label period (config ``logmel``) or eGeMAPSv02 low-level descriptors through
opensmile (``egemaps``). Utterance level: streams keep their own rate.

The streams depend on the corpus, which tfds only reveals when preparing, so the features are
fixed in ``_download_and_prepare`` from a scan of the manual dir, as ``recola`` does. Counts of
padded / trimmed frames and of recordings without a file per modality go to ``info.metadata``.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow_datasets as tfds

from emobed_jax.datasets import folder_layout
from emobed_jax.datasets.folder_layout import FolderError
from emobed_jax.features import align as align_lib
from emobed_jax.features import arff as arff_lib
from emobed_jax.features import audio as audio_lib
from emobed_jax.features import egemaps
from emobed_jax.features import openface
from emobed_jax.features import timeseries

__all__ = ["EmotionFolder", "EmotionFolderConfig", "FolderError", "load_stream"]

log = logging.getLogger(__name__)

EXTRACTORS = ("logmel", "egemaps")
EGEMAPS_DIM = 25  # eGeMAPSv02 low-level descriptors

_MANUAL = """\
Pass your corpus folder as the manual dir: splits.csv (id,split[,group]), labels/<id>.csv (frame
level: a time column + one column per label dimension) or labels.csv (utterance level:
id,<dims...>[,category]), optional corpus.json ({"rates_hz": {...}, "classes": [...],
"tolerance_s": 0.5}) and one folder per modality holding <id>.wav / .csv / .arff / .npy files.
"""


@dataclasses.dataclass(eq=False)
class EmotionFolderConfig(tfds.core.BuilderConfig):
    """How wav files become features.

    Attributes:
        extractor: 'logmel' (``features.audio``; at frame level the hop is the label period) or
            'egemaps' (opensmile eGeMAPSv02 low-level descriptors, 10 ms frames).
        logmel: log-mel settings; ``frame_hop_s`` is replaced by the label period at frame level.
    """

    extractor: str = "logmel"
    logmel: audio_lib.LogMelConfig = dataclasses.field(default_factory=audio_lib.LogMelConfig)

    def __post_init__(self):
        if self.extractor not in EXTRACTORS:
            raise ValueError(f"EmotionFolderConfig.extractor: expected one of {EXTRACTORS}, got {self.extractor!r}")

    @property
    def wav_dim(self) -> int:
        """Feature width of a wav modality."""
        return self.logmel.feature_dim if self.extractor == "logmel" else EGEMAPS_DIM


def _logmel_config(config: EmotionFolderConfig, period_s: float | None) -> audio_lib.LogMelConfig:
    """The config's log-mel settings, with the label period as hop at frame level."""
    return config.logmel if period_s is None else dataclasses.replace(config.logmel, frame_hop_s=period_s)


def load_stream(modality: folder_layout.Modality, path: str, config: EmotionFolderConfig,
                corpus: folder_layout.Corpus) -> timeseries.TimedFrames:
    """Reads one media file as frames with times (None: consecutive label frames) and validity.

    Raises:
        FolderError: an unreadable file or one of another width than the folder's; names the file.
    """
    try:
        if modality.kind == "wav":
            frames = _wav_frames(path, config, corpus.period_s)
        elif modality.kind == "openface":
            visual = openface.read_openface_csv(path)
            frames = timeseries.TimedFrames(visual.features, visual.timestamps, visual.mask, ())
        elif modality.kind == "csv":
            frames = timeseries.read_timed_csv(path)
        elif modality.kind == "arff":
            data = arff_lib.read_arff(path)
            valid = np.isfinite(data.values).all(axis=1)
            frames = timeseries.TimedFrames(np.where(valid[:, None], data.values, 0).astype(np.float32),
                                            data.frame_times, valid, data.feature_names)
        else:
            frames = timeseries.read_npy(path, corpus.rates_hz[modality.name])
    except (ValueError, OSError) as e:
        if isinstance(e, FolderError):
            raise
        raise FolderError(f"{path}: cannot be read as {modality.kind} features ({e})") from None
    if frames.values.ndim != 2 or frames.values.shape[1] != modality.dim:
        raise FolderError(f"{path}: {frames.values.shape[-1]} features per frame, expected {modality.dim} "
                          f"as in the other files of {modality.folder}")
    if not len(frames.values):
        raise FolderError(f"{path}: no frames; expected at least one")
    return frames


def _wav_frames(path: str, config: EmotionFolderConfig, period_s: float | None) -> timeseries.TimedFrames:
    """Log-mel frames at k * hop, or eGeMAPS LLDs at their centre times."""
    if config.extractor == "logmel":
        logmel = _logmel_config(config, period_s)
        wav = audio_lib.load_audio(path, target_sample_rate=logmel.sample_rate)
        values = audio_lib.log_mel_frames(wav, logmel.sample_rate, logmel)
        times = np.arange(len(values)) * logmel.frame_hop_s
    else:
        wav = audio_lib.load_audio(path, target_sample_rate=egemaps.SAMPLE_RATE)
        values, times = egemaps.lld_frames(wav)
    return timeseries.TimedFrames(values, times, np.isfinite(values).all(axis=1), ())


def _features(corpus: folder_layout.Corpus) -> tfds.features.FeaturesDict:
    label_shape = (None,) if corpus.level == "frame" else ()
    spec = {"name": tfds.features.Text()}
    spec.update({n: tfds.features.Tensor(shape=label_shape, dtype=np.float32) for n in corpus.label_names})
    if corpus.categories is not None:
        spec["category"] = tfds.features.ClassLabel(names=list(corpus.classes))
    if corpus.groups is not None:
        spec["group"] = tfds.features.Text()
    for m in corpus.modalities:
        spec[m.name] = tfds.features.Tensor(shape=(None, m.dim), dtype=np.float32)
        spec[m.name + "_mask"] = tfds.features.Tensor(shape=(None,), dtype=np.bool_)
    return tfds.features.FeaturesDict(spec)


def _source(m: folder_layout.Modality, config: EmotionFolderConfig) -> str:
    detail = f"wav, {config.extractor}" if m.kind == "wav" else m.kind
    return f"{m.name}/ ({detail})"


class EmotionFolder(tfds.core.GeneratorBasedBuilder):
    """A user's emotion corpus from a folder: label dimensions, categories and modalities as found."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        EmotionFolderConfig(name="logmel", extractor="logmel", description="wav -> log-mel (40 bands)"),
        EmotionFolderConfig(name="egemaps", extractor="egemaps", description="wav -> eGeMAPSv02 LLDs"),
    ]
    DEFAULT_CONFIG_NAME = "logmel"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # features=None: restored from features.json when prepared, else set in _download_and_prepare.
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=None,
                                     metadata=tfds.core.MetadataDict())

    def feature_settings(self) -> dict:
        """Per modality how its features are made from raw media: wavs by the config's extractor
        (log-mel with the label period as hop at frame level), the files by their kind."""
        metadata = self.info.metadata or {}
        rate = (metadata.get("conventions") or {}).get("frame_rate_hz")
        cfg = self.builder_config
        settings = {}
        # Timed files at frame level were pooled onto the label grid: prediction does the same.
        grid = {"align": "label_grid", "tolerance_s": float(metadata.get("tolerance_s", 0.5))} \
            if rate else {}
        for m, kind in (metadata.get("kinds") or {}).items():
            if kind == "wav" and cfg.extractor == "logmel":
                logmel = _logmel_config(cfg, 1.0 / rate if rate else None)
                settings[m] = {"kind": "log_mel", **dataclasses.asdict(logmel)}
            elif kind == "wav":
                settings[m] = {"kind": "egemaps", "frame_hop_s": 1.0 / rate if rate else 0.01}
            elif kind == "openface":
                settings[m] = {"kind": "openface_csv", "groups": list(openface.DEFAULT_GROUPS),
                               **grid}
            elif kind == "csv":
                settings[m] = {"kind": "csv", **grid}
            elif kind == "npy":
                settings[m] = {"kind": "npy",
                               "rate_hz": float(metadata.get("rates_hz", {}).get(m, 0)), **grid}
            else:
                settings[m] = {"kind": "arff", **grid}
        return settings

    def _download_and_prepare(self, dl_manager, download_config):
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError as e:  # tfds reports a missing or empty manual dir with an assert
            raise folder_layout.FolderNotFoundError(str(e)) from None
        corpus = folder_layout.scan_corpus(manual_dir, self.builder_config.wav_dim)
        self._corpus = corpus
        # tfds has no public setter; the features must be known before SplitBuilder is created.
        self.info._features = _features(corpus)  # pylint: disable=protected-access
        frame = corpus.level == "frame"
        self.info.metadata.update({
            "level": corpus.level,
            "label_names": list(corpus.label_names),
            "modalities": [m.name for m in corpus.modalities],
            "feature_dims": {m.name: m.dim for m in corpus.modalities},
            "sources": {m.name: _source(m, self.builder_config) for m in corpus.modalities},
            "kinds": {m.name: m.kind for m in corpus.modalities},  # what feature_settings reads
            "rates_hz": dict(corpus.rates_hz),
            "tolerance_s": float(corpus.tolerance_s),
            "conventions": {"frame_rate_hz": 1.0 / corpus.period_s if frame else None,
                            "group_key": "group" if corpus.groups is not None else None},
            "alignment": {s: {m.name: {"padded": 0, "trimmed": 0} for m in corpus.modalities}
                          for s in corpus.splits},
            "missing": {s: {m.name: sum(r not in m.files for r in ids) for m in corpus.modalities}
                        for s, ids in corpus.splits.items()},
            "recordings": {s: list(ids) for s, ids in corpus.splits.items()},
        })
        super()._download_and_prepare(dl_manager, download_config)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split, ids) for split, ids in self._corpus.splits.items()}

    def _generate_examples(self, split, ids):
        for rid in ids:
            yield rid, self._example(split, rid)

    def _example(self, split: str, rid: str) -> dict:
        corpus, cfg = self._corpus, self.builder_config
        example = {"name": rid}
        if corpus.groups is not None:
            example["group"] = corpus.groups[rid]
        if corpus.categories is not None:
            example["category"] = corpus.classes.index(corpus.categories[rid])
        if corpus.level == "frame":
            labels_path, grid, values = corpus.labels[rid]
            example.update({n: values[:, k].astype(np.float32) for k, n in enumerate(corpus.label_names)})
        else:
            example.update({n: np.float32(corpus.labels[rid][k]) for k, n in enumerate(corpus.label_names)})
        for m in corpus.modalities:
            if rid not in m.files:
                rows = len(grid) if corpus.level == "frame" else 0
                example[m.name] = np.zeros((rows, m.dim), np.float32)
                example[m.name + "_mask"] = np.zeros((rows,), bool)
                continue
            frames = load_stream(m, m.files[rid], cfg, corpus)
            values, valid = frames.values, frames.valid
            if corpus.level == "frame":
                # A file without times (ARFF without frameTime): rows are consecutive label frames.
                times = frames.times if frames.times is not None else grid[0] + np.arange(len(values)) * corpus.period_s
                try:
                    values, valid, counts = align_lib.to_label_grid(
                        values, times, valid, grid, corpus.tolerance_s, path=m.files[rid],
                        labels_path=labels_path, period_s=corpus.period_s)
                except align_lib.AlignError as e:
                    raise FolderError(str(e)) from None
                total = self.info.metadata["alignment"][split][m.name]
                for key, n in counts.items():
                    total[key] += n
            example[m.name], example[m.name + "_mask"] = values.astype(np.float32), np.asarray(valid, bool)
        return example
