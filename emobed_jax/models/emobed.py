"""The EmoBed network: encoder and projector per modality, one shared recognition head.

`EmoBedModel` computes only the modalities present in its input, so the same parameters serve
training (all modalities) and monomodal inference (the target modality alone). The head is a
single submodule called once per modality: its parameters exist exactly once.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from emobed_jax.models import encoders

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu, "linear": lambda x: x}


class EmoBedModel(nn.Module):
    """Multimodal encoders into one shared emotion embedding space, with a shared head.

    Attributes:
      modalities: every modality the model has parameters for.
      level: 'frame' (one output per frame) or 'utterance' (pooled, one output per example).
      num_outputs: 2 for arousal/valence regression, the class count for classification.
      encoder, hidden, num_layers, bidirectional, kernel_size, dropout: encoder settings.
      rnn_impl: LSTM implementation: 'auto' (cuDNN on a GPU, else 'fused'), 'fused' (hand-written
        VJP, fast on CPUs), 'cudnn' or 'flax' (nn.RNN); see `encoders.RecurrentEncoder`.
      pooling: 'mean' or 'attention' (utterance level only).
      embedding_dim: size of the shared embedding.
      projector_activation: 'tanh', 'relu' or 'linear'.
      head_hidden, head_dropout: the shared head's hidden widths and dropout.
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
    pooling: str = "mean"
    embedding_dim: int = 64
    projector_activation: str = "tanh"
    head_hidden: Sequence[int] = (32,)
    head_dropout: float = 0.0

    @nn.compact
    def __call__(self, features: Mapping[str, jax.Array], lengths: Mapping[str, jax.Array],
                 masks: Mapping[str, jax.Array], train: bool = False):
        """Runs every modality in `features` through its encoder, projector and the shared head.

        Args:
          features: modality -> `[B, T_m, D_m]` frames (invalid frames already zeroed).
          lengths: modality -> `[B]` number of frames (padding excluded).
          masks: modality -> `[B, T_m]` 1 for frames that carry information (used by pooling).
          train: enables dropout.

        Returns:
          (embeddings, outputs): dicts modality -> `[B, T, E]`/`[B, T, K]` at frame level or
          `[B, E]`/`[B, K]` at utterance level.
        """
        unknown = sorted(set(features) - set(self.modalities))
        if unknown:
            raise ValueError(f"modalities {unknown} have no parameters; model has {list(self.modalities)}")
        head = encoders.MLPHead(hidden=tuple(self.head_hidden), num_outputs=self.num_outputs,
                                dropout=self.head_dropout, name="shared_head")
        activation = _ACTIVATIONS[self.projector_activation]
        embeddings, outputs = {}, {}
        mods = sorted(features)
        rnn_impl = encoders.resolve_rnn_impl(self.rnn_impl)
        if self.encoder == "lstm" and rnn_impl != "flax":
            # 'fused': the modalities' LSTMs run as streams of shared loops (one per layer and
            # pass, not one per modality); parameters and results are those of separate encoders.
            stacks = [encoders.FusedLSTMParams(self.hidden, self.num_layers, self.bidirectional,
                                               self.dropout, name=f"encoder_{m}")(
                                                   features[m].shape, train) for m in mods]
            encoded = dict(zip(mods, encoders.run_fused_lstm_stacks(
                [features[m] for m in mods], [lengths[m] for m in mods], stacks,
                self.bidirectional, rnn_impl)))
        else:
            encoded = {m: encoders.make_encoder(
                self.encoder, self.hidden, self.num_layers, self.bidirectional, self.kernel_size,
                self.dropout, name=f"encoder_{m}", rnn_impl=rnn_impl)(
                    features[m], lengths[m], train) for m in mods}
        for m in mods:
            h = encoded[m]
            if self.level == "utterance":
                if self.pooling == "attention":
                    h = encoders.AttentionPool(name=f"pool_{m}")(h, masks[m])
                else:
                    h = encoders.masked_mean_pool(h, masks[m])
            e = activation(nn.Dense(self.embedding_dim, name=f"projector_{m}")(h))
            embeddings[m] = e
            outputs[m] = head(e, train)
        return embeddings, outputs


def model_from_config(config: ml_collections.ConfigDict, level: str, num_outputs: int) -> EmoBedModel:
    """Builds the model a config describes.

    Args:
      config: experiment config (`config.model`, `config.modalities`, `config.method`).
      level: 'frame' or 'utterance' (from the dataset).
      num_outputs: head outputs (2 for arousal/valence, else the class count).

    Returns:
      An `EmoBedModel`; the monomodal baseline has parameters for the target modality only.
    """
    m = config.model
    modalities = ((config.target_modality,) if config.method == "monomodal"
                  else tuple(config.modalities))
    return EmoBedModel(
        modalities=modalities, level=level, num_outputs=num_outputs, encoder=m.encoder,
        rnn_impl=m.rnn_impl,
        hidden=m.hidden, num_layers=m.num_layers, bidirectional=m.bidirectional,
        kernel_size=m.kernel_size, dropout=m.dropout, pooling=m.pooling,
        embedding_dim=m.embedding_dim, projector_activation=m.projector_activation,
        head_hidden=tuple(m.head_hidden), head_dropout=m.head_dropout)
