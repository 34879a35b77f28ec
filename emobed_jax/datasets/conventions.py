"""What a dataset declares about how it is scored and exported, next to its builder.

Generic evaluation never names a dataset: it asks the builder's `CONVENTIONS` (a class attribute
of the tfds builder; `Conventions()` when absent) for
  * `group_key`: an example field whose values group examples for per-group scores
    (OMG-Emotion's `video_id` gives `ccc_<dim>_per_video`), or None;
  * `write_predictions`: a writer of the dataset's official prediction format, called as
    `write_predictions(path, split, examples, predictions, config, info) -> bool`; it returns
    False when it cannot write that format (e.g. the official file is not at hand), and the
    generic CSV is written instead;
  * `frame_rate_hz`: the rate of its label grid (`config.data.frame_rate_hz` must agree);
  * `label_names`: its regression label dimensions, each a float feature of the examples (`[T]`
    at frame level, a scalar per utterance), in this order (e.g. ('arousal', 'valence')).

A builder whose conventions depend on the data it was prepared from (a user's corpus) writes them
into its `info.metadata` instead: `metadata['conventions']` (any of the fields above) and
`metadata['label_names']` override the class attribute.
"""
from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Conventions:
    """A dataset's scoring and export conventions (see the module docstring)."""

    group_key: str | None = None
    write_predictions: Callable | None = None
    frame_rate_hz: float = 25.0
    label_names: tuple = ()


def feature_settings(builder) -> dict:
    """How each modality's features are made from raw media, as the builder declares it
    (`builder.feature_settings()`): modality -> JSON-able dict with a `kind` ('log_mel' with its
    `LogMelConfig` fields, 'egemaps', 'arff', 'openface_csv', 'npy', 'synthetic'). Stored in a
    run directory, so a trained model can turn new media into its input without the dataset."""
    method = getattr(builder, "feature_settings", None)
    return dict(method()) if callable(method) else {}


def of_builder(builder) -> Conventions:
    """The conventions a builder declares (`CONVENTIONS` on its class, or the defaults), updated
    by what its prepared data declares (`metadata['conventions']`, `metadata['label_names']`)."""
    conventions = getattr(type(builder), "CONVENTIONS", None)
    conventions = conventions if isinstance(conventions, Conventions) else Conventions()
    metadata = dict(builder.info.metadata or {})
    fields = {f.name for f in dataclasses.fields(Conventions)} - {"write_predictions"}
    declared = {k: v for k, v in dict(metadata.get("conventions") or {}).items() if k in fields}
    if "label_names" in metadata:
        declared["label_names"] = metadata["label_names"]
    if "label_names" in declared:
        declared["label_names"] = tuple(declared["label_names"])
    if declared.get("frame_rate_hz") is None:
        declared.pop("frame_rate_hz", None)
    return dataclasses.replace(conventions, **declared)
