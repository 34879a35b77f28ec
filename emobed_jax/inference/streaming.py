"""Live prediction: a causal run applied to audio as it arrives, one prediction per label hop.

    stream = Stream(Recognizer.from_workdir("runs/causal_audio"))
    for time_s, outputs in stream.push(pcm):   # float32 mono at the run's sample rate
        ...
    for time_s, outputs in stream.flush():     # at the end of the audio
        ...

`LogMelStream` is the front end: the log-mel frames `features.audio.log_mel_frames` computes for
the whole waveform, produced incrementally. A 10 ms STFT frame is computed as soon as its samples
are in (the first ones with the same reflect padding at the start), a label frame as soon as the
10 ms frames it pools are; `flush` adds the end's reflect padding and the last label frames, as the
offline path does. No resampling: input must be at the run's `feature_settings` sample rate.

`Stream` carries the encoder's state (an LSTM's `(h, c)` per layer, a causal conv's receptive-field
window per layer) and runs encoder, projector and head frame by frame. Only causal models stream
(a unidirectional LSTM, or a conv encoder trained with `model.causal=True`); frame-level runs only.

Label time: the model's output at feature frame t predicts dimension k's label at frame t + d_k
(`data.delay`). Item tau (time tau / frame_rate_hz s) carries, per dimension, the output of frame
max(tau - d_k, 0): exactly `Recognizer.predict`'s row tau (`delay.unshift_predictions`, whose first
d_k rows repeat frame 0). Item tau is emitted when frame tau - min(d) is in, so frame 0 emits items
0..min(d). After `flush` the stream has emitted min(d) items past the recording's last label frame
(offline drops them). See docs/streaming.md.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from emobed_jax.features import audio as audio_lib
from emobed_jax.models import conv, emobed, lstm
from emobed_jax.models.head import SharedHead
from emobed_jax.models.projector import Projector


class StreamError(ValueError):
    """A model or input the stream cannot use (the message says why)."""


class Item(NamedTuple):
    """One emitted prediction: `outputs [K]` (`label_names`) at label time `time_s` seconds."""

    time_s: float
    outputs: np.ndarray


def _samples(pcm) -> np.ndarray:
    """`pcm` as float32 samples (offline `log_mel_frames` rounds to float32 too), or refused."""
    x = np.asarray(pcm)
    if x.ndim != 1:
        raise StreamError(f"push: expected 1-D mono samples, got shape {x.shape} (average the "
                          f"channels first)")
    if not np.issubdtype(x.dtype, np.floating):
        raise StreamError(f"push: expected float samples in [-1, 1], got dtype {x.dtype} (16-bit "
                          f"PCM: divide by 32768)")
    return x.astype(np.float32).astype(np.float64)


class LogMelStream:
    """`audio.log_mel_frames` of a growing waveform (at `config.sample_rate`), label frame by
    label frame; push all samples then `flush` and the frames equal the offline ones."""

    def __init__(self, config: audio_lib.LogMelConfig):
        self.config = config
        self._hop, self._pad = config.hop_length, config.n_fft // 2
        self._window = audio_lib.hann_window(config)
        self._fbank_t = np.ascontiguousarray(audio_lib.mel_filterbank(config).T)
        self._buf, self._buf_start = np.zeros(0), 0     # samples kept, absolute index of the first
        self._logmel, self._lm_start = np.zeros((0, config.n_mels)), 0  # 10 ms frames kept
        self._num_samples = self._next_stft = self._next_label = 0
        self.done = False

    def _bounds(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # `audio.label_frame_index`'s [lo, hi) before clamping, for any label frames t (that
        # function builds every frame from 0; a stream needs the newest alone). Tested equal.
        c, eps = self.config, audio_lib._EPS
        hop_s = c.hop_length / c.sample_rate
        lo = np.ceil((t * c.frame_hop_s - c.frame_hop_s / 2) / hop_s - eps).astype(np.int64)
        hi = np.ceil((t * c.frame_hop_s + c.frame_hop_s / 2) / hop_s - eps).astype(np.int64)
        return lo, np.maximum(hi, lo + 1)

    def _stft(self, stop: int) -> None:
        """Computes 10 ms frames up to `stop` (exclusive); samples past the end reflect (flush)."""
        k = np.arange(self._next_stft, stop)
        if not len(k):
            return
        n = self._num_samples
        idx = np.abs(np.arange(k[0] * self._hop - self._pad, k[-1] * self._hop + self._pad))
        idx = np.where(idx >= n, 2 * (n - 1) - idx, idx)  # the reflect padding at either end
        seg = self._buf[idx - self._buf_start]
        frames = np.lib.stride_tricks.sliding_window_view(seg, self.config.n_fft)[:: self._hop]
        spec = np.fft.rfft(frames * self._window, axis=-1)
        power = np.square(spec.real) + np.square(spec.imag)
        self._append(np.log(power @ self._fbank_t + self.config.log_offset))
        self._next_stft = stop

    def _append(self, logmel: np.ndarray) -> None:
        self._logmel = np.concatenate([self._logmel, logmel])

    def _pool(self, stop: int, n_stft: int) -> np.ndarray:
        """Label frames up to `stop` (exclusive), as `audio.pool_label_frames` (clamped indices)."""
        t = np.arange(self._next_label, stop)
        lo, hi = self._bounds(t.astype(np.float64))
        offsets = np.arange(int((hi - lo).max()) if len(t) else 1)
        index = np.clip(lo[:, None] + offsets, 0, n_stft - 1) - self._lm_start
        w = (offsets[None, :] < (hi - lo)[:, None])[..., None].astype(np.float64)
        gathered, count = self._logmel[index], w.sum(axis=1)
        mean = (gathered * w).sum(axis=1) / count
        out = mean
        if self.config.pooling == "mean_std":
            std = np.sqrt(((gathered - mean[:, None]) ** 2 * w).sum(axis=1) / count)
            out = np.concatenate([mean, std], axis=-1)
        self._next_label = stop
        return out.astype(np.float32)

    def _trim(self) -> None:
        # Keep the 10 ms frames the next label frame pools, and the samples the next STFT frame
        # and the end's reflect padding (the last pad + 1 samples) read: memory stays bounded.
        first = max(min(int(self._bounds(np.float64(self._next_label))[0]),
                        self._next_stft - 1), 0)
        self._logmel, self._lm_start = self._logmel[first - self._lm_start:], first
        keep = max(min(self._next_stft * self._hop - self._pad,
                       self._num_samples - self._pad - 1), 0)
        self._buf, self._buf_start = self._buf[keep - self._buf_start:], keep

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Adds samples; returns the `[n, feature_dim]` float32 label frames they complete."""
        if self.done:
            raise StreamError("push after flush: the stream has ended; start a new one")
        x = _samples(pcm)
        self._buf = np.concatenate([self._buf, x])
        self._num_samples = n = self._num_samples + len(x)
        if n <= self._pad:  # frame 0's start reflection reads samples 1..pad
            return np.zeros((0, self.config.feature_dim), np.float32)
        # STFT frame k reads samples [k*hop - pad, k*hop + pad).
        self._stft(max((n - self._pad) // self._hop + 1, self._next_stft))
        # Label frame t is final once the frames it pools are computed, and it exists offline for
        # any longer waveform once t * frame_hop_s <= duration.
        t = self._next_label
        while (self._bounds(np.float64(t))[1] <= self._next_stft
               and t < audio_lib.default_num_frames(n, self.config)):
            t += 1
        out = self._pool(t, self._next_stft)
        self._trim()
        return out

    def flush(self) -> np.ndarray:
        """Ends the waveform: returns the label frames the end padding completes."""
        if self.done:
            return np.zeros((0, self.config.feature_dim), np.float32)
        self.done, n = True, self._num_samples
        if n == 0:
            return np.zeros((0, self.config.feature_dim), np.float32)
        n_stft = audio_lib.num_stft_frames(n, self.config)
        if n <= self._pad:  # too short for one reflection: nothing was computed, do it offline
            self._append(np.log(audio_lib.mel_power_spectrogram(self._buf, self.config)
                                + self.config.log_offset))
        else:
            self._stft(n_stft)
        return self._pool(audio_lib.default_num_frames(n, self.config), n_stft)


class Stream:
    """A causal frame-level run of a `Recognizer`, fed audio as it arrives (module docstring).

    Attributes:
      sample_rate: the rate `push` expects (the run's `feature_settings['sample_rate']`; no
        resampling happens here).
      label_names: what each `outputs` entry is.
      delays: the run's label delay in frames per dimension.
      frame_rate_hz: label frames per second (item tau is at tau / frame_rate_hz s).
    """

    def __init__(self, recognizer):
        """Prepares a stream of `recognizer` (an `inference.recognizer.Recognizer`).

        Raises:
          StreamError: the run is not causal (bidirectional LSTM, centred conv), not frame-level
            regression, or its target is not log-mel audio; the message names the setting.
        """
        rec = recognizer
        if rec.level != "frame" or rec.task == "category":
            raise StreamError(f"streaming needs a frame-level regression run; this one is "
                              f"{rec.level}-level, task {rec.task!r}")
        if rec.group_centred:
            raise StreamError("this run centres each recording's features on the recording's own "
                              "mean (data.normalize='group'), which a stream does not know before "
                              "its end: cannot stream; predict whole recordings instead")
        settings = dict(rec.feature_settings)
        if settings.pop("kind", None) != "log_mel":
            raise StreamError(f"modality {rec.target!r} of this run is not made from audio by "
                              f"log-mel ({rec.feature_settings or 'no settings'}): cannot stream")
        self.front = LogMelStream(audio_lib.LogMelConfig(**settings))
        self.sample_rate = self.front.config.sample_rate
        model, m = rec.model, rec.target
        if model.encoder == "lstm" and model.bidirectional:
            raise StreamError("this run's LSTM is bidirectional: each frame depends on the whole "
                              "recording, so it cannot stream; train a causal model with "
                              "model.bidirectional=False")
        if model.encoder == "conv" and not model.causal:
            raise StreamError("this run's conv encoder is centred (padding 'SAME'): each frame "
                              "reads future frames, so it cannot stream; train a causal model "
                              "with model.causal=True model.bidirectional=False")
        self.rec, self.label_names = rec, rec.label_names
        self.delays, self.frame_rate_hz = rec.delays.astype(int), rec.frame_rate_hz
        params = rec.params
        encoder = emobed.make_encoder(model.encoder, model.hidden, model.num_layers,
                                      model.bidirectional, model.kernel_size, 0.0, model.rnn_impl,
                                      name=None, causal=model.causal)
        projector = Projector(model.embedding_dim, model.projector_activation)
        head = SharedHead(tuple(model.head_hidden), model.num_outputs)
        if model.encoder == "lstm":
            enc_step, state = lstm.step, lstm.initial_state(params[f"encoder_{m}"])
        else:
            enc_step = lambda p, s, x: conv.step(encoder, p, s, x)  # noqa: E731
            state = conv.initial_state(encoder)

        def frame(params, state, x):
            state, h = enc_step(params[f"encoder_{m}"], state, x)
            emb = projector.apply({"params": params[f"projector_{m}"]}, h)
            return state, head.apply({"params": params["shared_head"]}, emb)[0]

        self._frame, self._state = jax.jit(frame), state
        self._params = jax.tree_util.tree_map(jnp.asarray, params)
        # Outputs of the frames items still need: the first (edge padding) and the last
        # max(d) - min(d) + 1 (the item of frame t reads frame tau - d_k for each k).
        self._first, self._recent, self._num_frames, self._next_item = None, [], 0, 0
        self._span = int(self.delays.max() - self.delays.min()) + 1 if len(self.delays) else 1

    def _emit(self, features: np.ndarray) -> list[Item]:
        items, d = [], self.delays
        d_min = int(d.min()) if len(d) else 0
        for x in self.rec.normalize(features):
            self._state, out = self._frame(self._params, self._state, x[None])
            out = np.asarray(out, np.float64)
            t, self._num_frames = self._num_frames, self._num_frames + 1
            self._first = out if self._first is None else self._first
            self._recent = (self._recent + [out])[-self._span:]
            for tau in range(self._next_item, t + d_min + 1):
                # Dimension k of item tau is frame tau - d_k's output; before frame 0, frame 0's.
                src = np.maximum(tau - d, 0)
                rows = [self._first if s == 0 else self._recent[s - t - 1] for s in src]
                items.append(Item(tau / self.frame_rate_hz,
                                  np.array([r[k] for k, r in enumerate(rows)])))
            self._next_item = t + d_min + 1
        return items

    def push(self, pcm: np.ndarray) -> list[Item]:
        """Feeds samples: 1-D float mono at `sample_rate` (any length, empty too); returns the
        items they complete. One 40 ms hop of samples completes at most one label frame, hence
        one item (min(d) + 1 items at the first frame); a longer chunk returns one per hop.

        Raises:
          StreamError: a non-1-D or non-float input, or a push after `flush`.
        """
        return self._emit(self.front.push(pcm))

    def flush(self) -> list[Item]:
        """Ends the stream: the items of the last label frames, which the end's reflect padding
        completes (as the offline features). Pushing afterwards is refused."""
        return self._emit(self.front.flush())
