"""OMG-Emotion (One-Minute Gradual Emotion, 2018) as a manual-download tfds builder.

``manual_dir`` holds the organisers' annotation CSVs and the media prepared from the clips::

    omg_TrainVideos.csv  omg_ValidationVideos.csv  [omg_TestVideos_WithLabels.csv]
    audio/<video>/<utterance stem>.wav        (experiments/prepare_omg.py; any rate, any channels)
    openface/<video>/<utterance stem>.csv     (OpenFace 2.x FeatureExtraction)
    visual/<video>/<utterance stem>.npy       (alternative visual source, frames x dims)

One example per utterance (CSV row). Because about half of the YouTube links are dead, media are
often missing. Policy: an utterance is kept when at least one modality is present; a missing
modality is stored as a zero-length sequence ``[0, D]`` and counted, and the training pipeline
drops or masks examples according to its target modality. Rows with neither modality, and rows
whose ``EmotionMaxVote`` is empty, are skipped and counted; any other value that is not one of
0..6 is an error naming the file and line (a wrong or edited CSV, not a missing label). The counts go to the
log and to ``info.metadata``: ``rows``, ``skipped`` ({split: {'invalid_category', 'no_media'}}) and
``missing`` ({split: {'audio', 'video'}}, kept examples stored with a zero-length modality).
``train_mean`` ({'arousal', 'valence'}) is the label mean over all valid train CSV rows.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import logging
import math
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from emobed_jax.datasets import conventions, omg_export
from emobed_jax.features import audio as audio_lib
from emobed_jax.features import openface

__all__ = ["CATEGORY_NAMES", "SPLIT_FILES", "OmgRow", "read_annotations", "OmgEmotionConfig",
           "OmgEmotion", "write_official_predictions"]

log = logging.getLogger(__name__)

CATEGORY_NAMES = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
SPLIT_FILES = {
    "train": "omg_TrainVideos.csv",
    "validation": "omg_ValidationVideos.csv",
    "test": "omg_TestVideos_WithLabels.csv",
}
_REQUIRED_COLUMNS = ("video", "utterance", "arousal", "valence", "EmotionMaxVote")
MODALITIES = ("audio", "video")
_VISUAL_LAYOUT = {"openface": ("openface", ".csv"), "npy": ("visual", ".npy")}


@dataclasses.dataclass(frozen=True)
class OmgRow:
    """One annotated utterance of an official CSV.

    Attributes:
        row_index: 0-based position among the CSV's data rows (the scorer pairs rows by order).
        video: the ``video`` field, e.g. ``5b44393ed``.
        utterance: the ``utterance`` field, e.g. ``utterance_4.mp4``.
        arousal: in [0, 1].
        valence: in [-1, 1].
        category: ``EmotionMaxVote`` as an index into ``CATEGORY_NAMES``.
    """

    row_index: int
    video: str
    utterance: str
    arousal: float
    valence: float
    category: int

    @property
    def stem(self) -> str:
        """The utterance file name without extension (media file names use it)."""
        return os.path.splitext(self.utterance)[0]

    @property
    def name(self) -> str:
        """The example name ``<video>/<utterance stem>``."""
        return f"{self.video}/{self.stem}"


def _parse_category(text: str | None) -> int | None:
    """EmotionMaxVote as an int in 0..6 ("4" or a spreadsheet's "4.0"), else None."""
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    if not value.is_integer() or not 0 <= value < len(CATEGORY_NAMES):
        return None
    return int(value)


def read_annotations(path: str | os.PathLike) -> tuple[list[OmgRow], int]:
    """Reads an official OMG-Emotion annotation CSV with labels.

    Args:
        path: ``omg_TrainVideos.csv``-style file (header
            ``link,start,end,video,utterance,arousal,valence,EmotionMaxVote``).

    Returns:
        (rows with a valid category in file order, number of rows skipped for an empty
        ``EmotionMaxVote``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: missing columns, short rows, non-numeric arousal/valence, an
            ``EmotionMaxVote`` that is neither empty nor one of 0..6, or a duplicate
            ``<video>/<utterance>``; the message names the file, line and field.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: OMG-Emotion annotation CSV not found")
    rows, invalid, seen = [], 0, {}
    with open(path, "r", encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in _REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected a header with "
                             f"{list(_REQUIRED_COLUMNS)} (a labelled OMG-Emotion CSV), got {header}")
        reader.fieldnames = header
        for index, record in enumerate(reader):
            line = index + 2
            if any(record.get(c) is None for c in _REQUIRED_COLUMNS):
                raise ValueError(f"{path}, line {line}: expected {len(header)} fields, the row is short")
            values = {}
            for field in ("arousal", "valence"):
                try:
                    values[field] = float(record[field])
                except ValueError:
                    values[field] = math.nan
                if not math.isfinite(values[field]):
                    raise ValueError(f"{path}, line {line}, field {field!r}: expected a number, "
                                     f"got {record[field]!r}")
            vote = (record["EmotionMaxVote"] or "").strip()
            category = _parse_category(vote)
            if vote and category is None:
                codes = ", ".join(f"{i} {n}" for i, n in enumerate(CATEGORY_NAMES))
                raise ValueError(f"{path}, line {line}, field 'EmotionMaxVote': expected a category "
                                 f"code 0..6 ({codes}) or empty (row skipped), got {vote!r}")
            video, utterance = record["video"].strip(), record["utterance"].strip()
            if not video or not utterance:
                raise ValueError(f"{path}, line {line}: empty 'video' or 'utterance' field")
            key = f"{video}/{os.path.splitext(utterance)[0]}"
            if key in seen:
                raise ValueError(f"{path}, line {line}: utterance {key!r} already on line {seen[key]}")
            seen[key] = line
            if category is None:
                invalid += 1
                continue
            rows.append(OmgRow(index, video, utterance, values["arousal"], values["valence"],
                               category))
    return rows, invalid


@dataclasses.dataclass(eq=False)
class OmgEmotionConfig(tfds.core.BuilderConfig):
    """Feature settings of an ``omg_emotion`` build.

    Attributes:
        visual_source: 'openface' (``openface/<video>/<stem>.csv``) or 'npy'
            (``visual/<video>/<stem>.npy``).
        openface_groups: OpenFace column groups (``openface.COLUMN_GROUPS``) for 'openface'.
        visual_dim: feature width of the ``.npy`` arrays; required for 'npy'.
        audio_features: log-mel settings (the same code as the other datasets).
    """

    visual_source: str = "openface"
    openface_groups: tuple[str, ...] = openface.DEFAULT_GROUPS
    visual_dim: int | None = None
    audio_features: audio_lib.LogMelConfig = audio_lib.LogMelConfig()

    def __post_init__(self):
        if self.visual_source == "openface":
            openface.group_columns(self.openface_groups)  # validates the group names
        elif self.visual_source == "npy":
            if not self.visual_dim or self.visual_dim <= 0:
                raise ValueError(f"OmgEmotionConfig {self.name!r}: visual_source='npy' needs a "
                                 f"positive visual_dim, got {self.visual_dim!r}")
        else:
            raise ValueError(f"OmgEmotionConfig {self.name!r}: visual_source must be 'openface' or "
                             f"'npy', got {self.visual_source!r}")

    @property
    def video_dim(self) -> int:
        """Width of the ``video`` feature."""
        if self.visual_source == "npy":
            return int(self.visual_dim)
        return openface.feature_dim(self.openface_groups)


def write_official_predictions(path: str, split: str, examples, predictions: list, config,
                               info) -> bool:
    """Writes a split's predictions in the official CSV's row order (the organisers' scorer pairs
    rows by position); the `write_predictions` of OMG-Emotion's `Conventions`.

    Columns `video,utterance,arousal,valence,category,has_media`; utterances without the target
    modality (or without media) get the training mean and `has_media=0`.

    Args:
      path: the CSV to write.
      split: the split name (selects the official CSV in `config.data.manual_dir`).
      examples: the split's `batching.Examples`.
      predictions: per example, label-time predictions (outputs or logits), or None.
      config: the experiment config (task, manual_dir).
      info: the dataset description (`train_mean` metadata).

    Returns:
      False (nothing written) when the official CSV is not found in `config.data.manual_dir`.
    """
    manual_dir = config.data.manual_dir
    name = SPLIT_FILES.get(split)
    if not manual_dir or not name or not os.path.exists(os.path.join(manual_dir, name)):
        log.warning("official OMG CSV for split %r not found (set config.data.manual_dir); "
                    "writing the generic prediction CSV instead", split)
        return False
    mean = info.metadata.get("train_mean") or {}
    train_mean = (float(mean.get("arousal", 0.0)), float(mean.get("valence", 0.0)))
    out = {}
    for example, p in zip(examples.data.names, predictions):
        if p is None:
            continue
        if config.task == "category":
            out[example] = (*train_mean, int(np.argmax(p)))
        else:
            out[example] = (float(p[0]), float(p[1]), None)
    counts = omg_export.write_predictions_csv(path, os.path.join(manual_dir, name), out,
                                              train_mean)
    log.info("%s: %s", path, counts)
    return True


class OmgEmotion(tfds.core.GeneratorBasedBuilder):
    """OMG-Emotion utterances with log-mel audio and OpenFace (or .npy) visual sequences."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        OmgEmotionConfig(name="openface", description="OpenFace AU intensities and presences, "
                         "gaze and pose (49 dims); 40 log-mel bands at 25 Hz."),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "openface"
    # Scores per video as well; predictions exported in the official CSV's order.
    CONVENTIONS = conventions.Conventions(group_key="video_id",
                                          write_predictions=write_official_predictions,
                                          label_names=("arousal", "valence"))
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put the official CSVs (omg_TrainVideos.csv, omg_ValidationVideos.csv and, if you have it,
    omg_TestVideos_WithLabels.csv) in manual_dir. Download the clips with the organisers' script,
    run `python experiments/prepare_omg.py --videos_dir <clips> --out_dir <manual_dir>` to write
    audio/<video>/<utterance stem>.wav, and run OpenFace 2.x FeatureExtraction on each clip to get
    openface/<video>/<utterance stem>.csv (see docs/omg_emotion.md).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description="OMG-Emotion utterances: 7 categories (EmotionMaxVote), arousal and "
                        "valence, with log-mel audio and per-frame visual features.",
            features=tfds.features.FeaturesDict({
                "name": tfds.features.Text(),
                "video_id": tfds.features.Text(),
                "utterance": tfds.features.Text(),
                "row_index": tfds.features.Scalar(dtype=np.int32),
                "category": tfds.features.ClassLabel(names=CATEGORY_NAMES),
                "arousal": tfds.features.Tensor(shape=(), dtype=np.float32),
                "valence": tfds.features.Tensor(shape=(), dtype=np.float32),
                "audio": tfds.features.Tensor(shape=(None, cfg.audio_features.feature_dim),
                                              dtype=np.float32),
                "video": tfds.features.Tensor(shape=(None, cfg.video_dim), dtype=np.float32),
                "video_mask": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
            }),
            metadata=tfds.core.MetadataDict(modalities=list(MODALITIES)),
            homepage="https://github.com/knowledgetechnologyuhh/OMGEmotionChallenge",
            citation="""@inproceedings{barros2018omg,
  title={The {OMG}-Emotion Behavior Dataset},
  author={Barros, Pablo and Churamani, Nikhil and Lakomkin, Egor and Siqueira, Henrique and
          Sutherland, Alexander and Wermter, Stefan},
  booktitle={International Joint Conference on Neural Networks (IJCNN)},
  year={2018}}""",
        )

    def feature_settings(self) -> dict:
        """Audio: log-mel of the utterance's wav; video: OpenFace 2.x CSV columns or .npy arrays."""
        cfg = self.builder_config
        video = ({"kind": "openface_csv", "groups": list(cfg.openface_groups)}
                 if cfg.visual_source == "openface" else {"kind": "npy", "dim": cfg.visual_dim})
        return {"audio": {"kind": "log_mel", **dataclasses.asdict(cfg.audio_features)},
                "video": video}

    def _media_paths(self, manual_dir: str, row: OmgRow) -> dict[str, str]:
        """Where the row's audio and visual files must be (they may not exist)."""
        folder, ext = _VISUAL_LAYOUT[self.builder_config.visual_source]
        return {
            "audio": os.path.join(manual_dir, "audio", row.video, row.stem + ".wav"),
            "video": os.path.join(manual_dir, folder, row.video, row.stem + ext),
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        try:
            manual_dir = os.fspath(dl_manager.manual_dir)
        except AssertionError as e:  # tfds reports a missing or empty manual dir with an assert
            raise FileNotFoundError(str(e)) from None
        metadata = self.info.metadata
        for key in ("rows", "skipped", "missing"):
            metadata[key] = {}
        generators = {}
        for split, file_name in SPLIT_FILES.items():
            csv_path = os.path.join(manual_dir, file_name)
            if split == "test" and not os.path.isfile(csv_path):
                log.info("omg_emotion: %s not found, building no test split", csv_path)
                continue
            rows, invalid = read_annotations(csv_path)
            present = [{m: os.path.isfile(p) for m, p in self._media_paths(manual_dir, r).items()}
                       for r in rows]
            if not any(any(p.values()) for p in present):
                layout = self._media_paths(manual_dir, OmgRow(0, "<video>", "<stem>", 0, 0, 0))
                raise ValueError(
                    f"omg_emotion: split {split!r} would be empty: {csv_path} has {len(rows)} rows "
                    f"with a valid EmotionMaxVote ({invalid} invalid) and none of them has media "
                    f"(looked for {layout['audio']} and {layout['video']})")
            metadata["rows"][split] = len(rows) + invalid
            if split == "train":
                # What prediction files get for utterances without media (omg_export).
                metadata["train_mean"] = {d: float(np.mean([getattr(r, d) for r in rows]))
                                          for d in ("arousal", "valence")}
            generators[split] = self._generate_examples(split, manual_dir, rows, invalid, present)
        return generators

    def _generate_examples(self, split: str, manual_dir: str, rows: list[OmgRow], invalid: int,
                           present: list[dict[str, bool]]) -> Iterator[tuple[str, dict]]:
        cfg = self.builder_config
        skipped = collections.Counter(invalid_category=invalid, no_media=0)
        missing = collections.Counter(audio=0, video=0)
        for row, has in zip(rows, present):
            paths = self._media_paths(manual_dir, row)
            audio = self._audio_features(paths["audio"]) if has["audio"] else None
            visual = self._visual_features(paths["video"]) if has["video"] else None
            if visual is not None and visual.features.shape[0] == 0:
                log.warning("omg_emotion: %s has no frames; treated as missing", paths["video"])
                visual = None
            if audio is None and visual is None:
                skipped["no_media"] += 1
                continue
            for modality, value in (("audio", audio), ("video", visual)):
                missing[modality] += value is None
            if audio is None:
                audio = np.zeros((0, cfg.audio_features.feature_dim), np.float32)
            if visual is None:
                visual = openface.VisualFrames(np.zeros((0, cfg.video_dim), np.float32),
                                               np.zeros((0,), bool), None)
            yield row.name, {
                "name": row.name,
                "video_id": row.video,
                "utterance": row.utterance,
                "row_index": row.row_index,
                "category": row.category,
                "arousal": np.float32(row.arousal),
                "valence": np.float32(row.valence),
                "audio": audio,
                "video": visual.features,
                "video_mask": visual.mask,
            }
        if skipped["no_media"] == len(rows):
            raise ValueError(f"omg_emotion: split {split!r} is empty: every media file found under "
                             f"{manual_dir} for it has no frames")
        self.info.metadata["skipped"][split] = dict(skipped)
        self.info.metadata["missing"][split] = dict(missing)
        log.info("omg_emotion %s: %d rows, kept %d; skipped %s; kept with a missing modality %s",
                 split, len(rows) + invalid, len(rows) - skipped["no_media"], dict(skipped),
                 dict(missing))

    def _audio_features(self, path: str) -> np.ndarray:
        config = self.builder_config.audio_features
        waveform = audio_lib.load_audio(path, target_sample_rate=config.sample_rate)
        return audio_lib.log_mel_frames(waveform, config.sample_rate, config)

    def _visual_features(self, path: str) -> openface.VisualFrames:
        cfg = self.builder_config
        if cfg.visual_source == "npy":
            return openface.load_visual_npy(path, expected_dim=cfg.visual_dim)
        return openface.read_openface_csv(path, cfg.openface_groups)
