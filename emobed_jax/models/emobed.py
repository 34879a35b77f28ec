"""The EmoBed network: per modality an encoder, pooling and a projector; one shared head.

`EmoBedModel` computes only the modalities present in its input, so the same parameters serve
training (all modalities) and monomodal inference (the target modality alone). Parameters are
named `encoder_<m>`, `pool_<m>` (attention pooling only), `projector_<m>` and `shared_head`; the
head is a single submodule called once per modality, so its parameters exist exactly once.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import ml_collections

from emobed_jax.models import lstm
from emobed_jax.models.conv import ConvEncoder
from emobed_jax.models.head import SharedHead
from emobed_jax.models.pooled import PooledEncoder
from emobed_jax.models.pooling import Pool, length_mask
from emobed_jax.models.projector import Projector

ENCODERS = ("lstm", "conv", "pooled")  # 'pooled': per utterance or frame window (models/pooled.py)


def make_encoder(kind: str, hidden: int, num_layers: int, bidirectional: bool, kernel_size: int,
                 dropout: float, rnn_impl: str, name: str, causal: bool = False) -> nn.Module:
    """Builds the encoder `kind` (one of `ENCODERS`): an `lstm.LSTMStack` or a `ConvEncoder`.

    Args:
      kind: 'lstm' or 'conv'.
      hidden, num_layers: units (per direction) and layers.
      bidirectional, rnn_impl: LSTM only (`rnn_impl` is `LSTMStack.impl`).
      kernel_size: conv only.
      dropout: dropout after each layer (training only).
      name: the submodule's name.
      causal: frame t sees no later frame: conv pads on the left only; an LSTM must then be
        unidirectional (a unidirectional LSTM is causal either way).

    Returns:
      A module mapping `(x [B, T, D], lengths [B], train)` to `[B, T, H']`, zero at padding.

    Raises:
      ValueError: `causal` with `bidirectional` (a backward direction reads future frames).
    """
    if causal and bidirectional:
        raise ValueError("model.causal=True with model.bidirectional=True: a causal encoder sees "
                         "no future frame; set model.bidirectional=False")
    if kind == "lstm":
        return lstm.LSTMStack(hidden=hidden, num_layers=num_layers, bidirectional=bidirectional,
                              dropout=dropout, impl=rnn_impl, name=name)
    if kind == "conv":
        return ConvEncoder(hidden=hidden, num_layers=num_layers, kernel_size=kernel_size,
                           dropout=dropout, causal=causal, name=name)
    if kind == "pooled":
        # It needs the frame mask, not only the lengths; EmoBedModel builds it itself.
        raise ValueError("model.encoder='pooled' is not built by make_encoder (it reads the "
                         "frame mask); its centred window reads future frames, so it cannot "
                         "stream")
    raise ValueError(f"model.encoder={kind!r}: expected one of {list(ENCODERS)}")


class EmoBedModel(nn.Module):
    """Multimodal encoders into one shared emotion embedding space, with a shared head.

    Attributes:
      modalities: every modality the model has parameters for.
      level: 'frame' (one output per frame) or 'utterance' (pooled, one output per example).
      num_outputs: 2 for arousal/valence regression, the class count for classification.
      encoder: one of `ENCODERS`.
      rnn_impl: the LSTM implementation, one of `lstm.IMPLS`.
      hidden, num_layers, bidirectional, kernel_size, dropout: encoder settings.
      causal: encoders see no future frame (`make_encoder`).
      pooling: one of `pooling.POOLING` (utterance level only).
      embedding_dim: size of the shared embedding.
      projector_activation: one of `projector.ACTIVATIONS`.
      head_hidden, head_dropout: the shared head's hidden widths and dropout.
      pooled_statistics: the statistics of the 'pooled' encoder (`pooled.STATISTICS`).
      pooled_window_frames: the 'pooled' encoder's centred window at frame level (frames).
      frame_dropout: training only: each valid frame is masked out with this probability.
      feature_noise: training only: Gaussian noise of this standard deviation is added to the
        (normalised) features of valid frames.
    """

    modalities: Sequence[str]
    level: str = "frame"
    num_outputs: int = 2
    encoder: str = "lstm"
    rnn_impl: str = "auto"
    hidden: int = 64
    num_layers: int = 2
    bidirectional: bool = True
    kernel_size: int = 5
    dropout: float = 0.0
    causal: bool = False
    pooling: str = "mean"
    embedding_dim: int = 64
    projector_activation: str = "tanh"
    head_hidden: Sequence[int] = (32,)
    head_dropout: float = 0.0
    pooled_statistics: Sequence[str] = ("mean", "std")
    pooled_window_frames: int = 50
    frame_dropout: float = 0.0
    feature_noise: float = 0.0

    @nn.compact
    def __call__(self, features: Mapping[str, jax.Array], lengths: Mapping[str, jax.Array],
                 masks: Mapping[str, jax.Array], train: bool = False):
        """Runs every modality in `features` through its encoder, projector and the shared head.

        Args:
          features: modality -> `[B, T_m, D_m]` frames (invalid frames already zeroed).
          lengths: modality -> `[B]` number of frames (padding excluded).
          masks: modality -> `[B, T_m]` 1 for frames that carry information (used by pooling).
          train: enables dropout, frame dropout and feature noise.

        Returns:
          (embeddings, outputs): dicts modality -> `[B, T, E]`/`[B, T, K]` at frame level or
          `[B, E]`/`[B, K]` at utterance level.
        """
        unknown = sorted(set(features) - set(self.modalities))
        if unknown:
            raise ValueError(f"modalities {unknown} have no parameters; model has "
                             f"{list(self.modalities)}")
        head = SharedHead(hidden=tuple(self.head_hidden), num_outputs=self.num_outputs,
                          dropout=self.head_dropout, name="shared_head")
        mods = sorted(features)
        embeddings, outputs = {}, {}
        if self.encoder == "pooled" and self.level != "utterance" and self.causal:
            raise ValueError("model.causal=True with model.encoder='pooled' at frame level: its "
                             "centred window reads future frames; use model.encoder='lstm' or "
                             "'conv' for a causal model")
        for m in mods:
            x = features[m]
            # Frame-level callers may pass no masks (only pooling, the pooled encoder and the
            # regularisers use them).
            mask = masks[m] if m in masks else length_mask(lengths[m], x.shape[1])
            if train and self.frame_dropout > 0:
                # Frame dropout: the model must not rely on any single frame (few utterances).
                keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.frame_dropout,
                                            mask.shape)
                mask = mask * keep.astype(mask.dtype)
                x = x * keep[..., None].astype(x.dtype)
            if train and self.feature_noise > 0:
                noise = jax.random.normal(self.make_rng("dropout"), x.shape, x.dtype)
                x = x + self.feature_noise * noise * (mask[..., None] > 0).astype(x.dtype)
            if self.encoder == "pooled":
                # It reads the mask (after frame dropout), not only the lengths: the statistics
                # skip invalid frames. Per utterance it pools by itself (no `pool_<m>`).
                window = None if self.level == "utterance" else self.pooled_window_frames
                h = PooledEncoder(hidden=self.hidden, num_layers=self.num_layers,
                                  dropout=self.dropout, statistics=tuple(self.pooled_statistics),
                                  window_frames=window, name=f"encoder_{m}")(
                                      x, mask, train, lengths[m])
            else:
                encoder = make_encoder(self.encoder, self.hidden, self.num_layers,
                                       self.bidirectional, self.kernel_size, self.dropout,
                                       self.rnn_impl, name=f"encoder_{m}", causal=self.causal)
                h = encoder(x, lengths[m], train)
                if self.level == "utterance":
                    h = Pool(self.pooling, name=f"pool_{m}")(h, mask)
            embeddings[m] = Projector(self.embedding_dim, self.projector_activation,
                                      name=f"projector_{m}")(h)
            outputs[m] = head(embeddings[m], train)
        return embeddings, outputs


def model_from_config(config: ml_collections.ConfigDict, level: str, num_outputs: int) -> EmoBedModel:
    """Builds the model a config describes.

    Args:
      config: experiment config (`config.model`, `config.modalities`, `config.method`).
      level: 'frame' or 'utterance' (from the dataset).
      num_outputs: head outputs (2 for arousal/valence, else the class count).

    Returns:
      An `EmoBedModel`; the monomodal baseline and the distillation student have parameters for
      the target modality only.
    """
    from emobed_jax.losses import objective  # the table of target-only methods

    m = config.model
    modalities = ((config.target_modality,) if config.method in objective.TARGET_ONLY_METHODS
                  else tuple(config.modalities))
    return EmoBedModel(
        modalities=modalities, level=level, num_outputs=num_outputs, encoder=m.encoder,
        rnn_impl=m.rnn_impl,
        hidden=m.hidden, num_layers=m.num_layers, bidirectional=m.bidirectional,
        kernel_size=m.kernel_size, dropout=m.dropout, pooling=m.pooling,
        # Runs stored before the key existed have centred convolutions.
        causal=bool(m.get("causal", False)),
        embedding_dim=m.embedding_dim, projector_activation=m.projector_activation,
        head_hidden=tuple(m.head_hidden), head_dropout=m.head_dropout,
        # Runs stored before these keys existed: the defaults, which change nothing.
        pooled_statistics=tuple(m.get("pooled_statistics", ("mean", "std"))),
        pooled_window_frames=int(m.get("pooled_window_frames", 50)),
        frame_dropout=float(m.get("frame_dropout", 0.0)),
        feature_noise=float(m.get("feature_noise", 0.0)))
