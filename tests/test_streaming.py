"""Streaming: the incremental log-mel front end equals `log_mel_frames`; a causal run streamed in
any chunking equals `Recognizer.predict` on the whole waveform; non-causal runs and bad input are
refused; the causal config options are validated."""
import copy
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from emobed_jax import config as config_lib
from emobed_jax.features import audio as audio_lib
from emobed_jax.inference.recognizer import Recognizer
from emobed_jax.inference.streaming import LogMelStream, Stream, StreamError
from emobed_jax.models import conv, emobed, lstm

SR = 16000
DELAYS = [3, 1]  # unequal, both > 0: items 0..1 come from frame 0, then one per frame


def _chunks(n: int, sizes, rng) -> list[tuple[int, int]]:
    """Splits [0, n) into chunks cycling through `sizes` ('r': a random size up to 2000)."""
    out, start, i = [], 0, 0
    while start < n:
        size = sizes[i % len(sizes)]
        size = int(rng.integers(1, 2000)) if size == "r" else size
        out.append((start, min(start + size, n)))
        start, i = start + size, i + 1
    return out


def _wave(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    tone = np.sin(2 * np.pi * 220 * np.arange(n) / SR) * np.linspace(0, 1, n)
    return (0.3 * tone + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("pooling", ["mean", "mean_std"])
def test_front_end_equals_log_mel_frames(pooling):
    cfg = audio_lib.LogMelConfig(pooling=pooling)
    rng = np.random.default_rng(1)
    for n in (1, 100, 256, 257, 300, 415, 416, 639, 640, 641, 1056, 1057, SR + 37):
        x = _wave(n / SR + 1e-9, seed=n)[:n]
        want = audio_lib.log_mel_frames(x, SR, cfg)
        for sizes in ([n], [1], [7, 160], ["r"]):
            if sizes == [1] and n > 2000:
                continue
            stream, parts = LogMelStream(cfg), []
            for a, b in _chunks(n, sizes, rng):
                parts.append(stream.push(x[a:b]))
            parts.append(stream.flush())
            got = np.concatenate(parts)
            assert got.shape == want.shape, (n, sizes)
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"{n} {sizes}")


def test_label_bounds_equal_label_frame_index():
    cfg = audio_lib.LogMelConfig()
    index, valid = audio_lib.label_frame_index(10 ** 7, 5000, cfg)
    lo, hi = LogMelStream(cfg)._bounds(np.arange(5000, dtype=np.float64))
    offsets = np.arange(index.shape[1])
    np.testing.assert_array_equal(np.clip(lo[:, None] + offsets, 0, None), index)
    np.testing.assert_array_equal(offsets < (hi - lo)[:, None], valid)


def _recognizer(encoder: str, **model) -> Recognizer:
    """A Recognizer of a freshly initialised model, with the run record training would write."""
    config = config_lib.get_base_config()
    config.method, config.modalities = "monomodal", ("audio", "video")
    config.model.encoder, config.model.hidden, config.model.num_layers = encoder, 8, 2
    config.model.kernel_size, config.model.embedding_dim = 3, 8
    config.model.head_hidden, config.model.bidirectional = (8,), False
    config.model.update(model)
    mel = audio_lib.LogMelConfig()
    dim = mel.feature_dim
    net = emobed.model_from_config(config, "frame", 2)
    x = jnp.zeros((1, 5, dim))
    params = net.init(jax.random.PRNGKey(3), {"audio": x}, {"audio": jnp.array([5])},
                      {"audio": jnp.ones((1, 5))})["params"]
    rng = np.random.default_rng(2)
    record = {
        "config": config,
        "dataset": {"name": "synthetic", "level": "frame", "modalities": ["audio", "video"],
                    "feature_dims": {"audio": dim, "video": 3}, "class_names": None,
                    "group_key": None, "frame_rate_hz": 25.0,
                    "label_names": ["arousal", "valence"], "label_delay_frames": DELAYS},
        "feature_settings": {"audio": {"kind": "log_mel", **dataclasses.asdict(mel)}},
        "stats": {"audio": (rng.normal(-8, 1, dim).astype(np.float32),
                            rng.uniform(1, 3, dim).astype(np.float32))},
    }
    return Recognizer(record, net, params, step=0)


@pytest.fixture(scope="module", params=["lstm", "conv"])
def causal(request):
    if request.param == "lstm":
        return _recognizer("lstm")
    return _recognizer("conv", causal=True)


def _streamed(rec, x, sizes, rng):
    stream, items = Stream(rec), []
    for a, b in _chunks(len(x), sizes, rng):
        items += stream.push(x[a:b])
    return items + stream.flush()


def _check_equals_offline(rec, x, items):
    want = rec.predict(x, SR).outputs
    d_min = min(DELAYS)
    assert len(items) == len(want) + d_min
    times = np.array([t for t, _ in items])
    np.testing.assert_allclose(times, np.arange(len(items)) / 25.0, atol=1e-12)
    got = np.stack([o for _, o in items])
    np.testing.assert_allclose(got[: len(want)], want, atol=1e-5, rtol=0)
    # The min(d) items past the recording's end: frames tau - d_k, which offline drops.
    undelayed = copy.copy(rec)
    undelayed.delays = np.zeros_like(rec.delays)
    raw, tail = undelayed.predict(x, SR).outputs, np.arange(len(want), len(items))
    for k, d in enumerate(DELAYS):
        np.testing.assert_allclose(got[tail, k], raw[tail - d, k], atol=1e-5, rtol=0)


def test_stream_equals_offline_in_any_chunking(causal):
    rng = np.random.default_rng(4)
    x = _wave(2.3)[:36841]  # not a whole number of hops: the end padding matters
    for sizes in ([1], [7], [160], [400], [640], [1, 7, 160, 400, 640], ["r"], ["r", 1, "r"]):
        _check_equals_offline(causal, x, _streamed(causal, x, sizes, rng))


def test_stream_equals_offline_long_chunks(causal):
    rng = np.random.default_rng(5)
    x = _wave(12.5, seed=3)[:-3]
    for sizes in ([10 * SR], [SR // 2, 10 * SR], [int(rng.integers(1, 10 * SR))]):
        _check_equals_offline(causal, x, _streamed(causal, x, sizes, rng))


def test_one_hop_returns_one_item(causal):
    stream, x = causal.stream(), _wave(1.0)  # Recognizer.stream() is Stream(recognizer)
    assert isinstance(stream, Stream)
    counts = [len(stream.push(x[i:i + 640])) for i in range(0, len(x), 640)]
    assert counts == [min(DELAYS) + 1] + [1] * (len(counts) - 1)
    assert stream.sample_rate == SR


def test_input_checks(causal):
    stream = Stream(causal)
    assert stream.push(np.zeros(0, np.float32)) == []
    with pytest.raises(StreamError, match="expected 1-D mono samples, got shape"):
        stream.push(np.zeros((100, 2), np.float32))
    with pytest.raises(StreamError, match="expected float samples .* got dtype int16"):
        stream.push(np.zeros(100, np.int16))
    assert stream.flush() == []  # ended before any frame: nothing to emit
    with pytest.raises(StreamError, match="push after flush"):
        stream.push(np.zeros(10, np.float32))


def test_non_causal_models_are_refused():
    with pytest.raises(StreamError, match="LSTM is bidirectional.*model.bidirectional=False"):
        Stream(_recognizer("lstm", bidirectional=True))
    with pytest.raises(StreamError, match="conv encoder is centred.*model.causal=True"):
        Stream(_recognizer("conv"))


@pytest.mark.parametrize("kind", ["lstm", "conv"])
def test_step_equals_the_parallel_encoder(kind):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 17, 5))
    if kind == "lstm":
        enc = lstm.LSTMStack(hidden=6, num_layers=2, bidirectional=False, impl="fused")
        params = enc.init(jax.random.PRNGKey(1), x, jnp.array([17, 17]))["params"]
        step, state = lstm.step, lstm.initial_state(params, 2)
    else:
        enc = conv.ConvEncoder(hidden=6, num_layers=3, kernel_size=3, causal=True)
        params = enc.init(jax.random.PRNGKey(1), x, jnp.array([17, 17]))["params"]
        step, state = (lambda p, s, v: conv.step(enc, p, s, v)), conv.initial_state(enc, 2)
    want = enc.apply({"params": params}, x, jnp.array([17, 17]))
    got = []
    for t in range(17):
        state, y = step(params, state, x[:, t])
        got.append(y)
    np.testing.assert_allclose(np.stack(got, 1), want, atol=1e-5)
    # Causal: the first 9 frames do not depend on the rest.
    np.testing.assert_allclose(enc.apply({"params": params}, x[:, :9], jnp.array([9, 9])),
                               want[:, :9], atol=1e-5)


def test_steps_refuse_non_causal_encoders():
    x = jnp.zeros((1, 4, 3))
    bi = lstm.LSTMStack(hidden=4, num_layers=1, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional LSTM cannot run frame by frame"):
        lstm.initial_state(bi.init(jax.random.PRNGKey(0), x, jnp.array([4]))["params"])
    centred = conv.ConvEncoder(hidden=4, num_layers=1, kernel_size=3)
    params = centred.init(jax.random.PRNGKey(0), x, jnp.array([4]))["params"]
    with pytest.raises(ValueError, match="needs a causal encoder"):
        conv.step(centred, params, conv.initial_state(centred), x[:, 0])


def test_causal_config_is_validated():
    config = config_lib.get_base_config()
    config.model.encoder, config.model.causal = "conv", True
    with pytest.raises(ValueError, match="model.causal=True with config.model.bidirectional=True"):
        config_lib.validate_config(config)
    config.model.bidirectional = False
    config_lib.validate_config(config)
    stored = config.to_dict()  # as a run.json holds it: no type-safe field to refuse a string
    stored["model"]["causal"] = "yes"
    config = ml_collections.ConfigDict(stored)
    with pytest.raises(ValueError, match=r"config.model.causal='yes': expected True or False"):
        config_lib.validate_config(config)
    with pytest.raises(ValueError, match="set model.bidirectional=False"):
        emobed.make_encoder("lstm", 4, 1, True, 3, 0.0, "scan", name="e", causal=True)


def test_a_trained_causal_run_streams(synthetic_data_dir, tmp_path):
    """The CLI's config path end to end: model.causal trains, the workdir loads and streams."""
    from conftest import make_tiny_config
    from emobed_jax.training import train

    config = make_tiny_config(synthetic_data_dir, method="monomodal", **{
        "model.encoder": "conv", "model.causal": True, "model.bidirectional": False,
        "num_train_steps": 3, "eval_every_steps": 3, "checkpoint_every_steps": 3,
        "eval_splits": ("validation",)})
    train.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
    rec = Recognizer.from_workdir(str(tmp_path))
    assert rec.model.causal and rec.feature_settings["sample_rate"] == SR
    x = _wave(1.5, seed=7)
    want = rec.predict(x, SR).outputs
    got = np.stack([o for _, o in _streamed(rec, x, [400, "r"], np.random.default_rng(6))])
    d_min = int(rec.delays.min())
    assert len(got) == len(want) + d_min
    np.testing.assert_allclose(got[: len(want)], want, atol=1e-5, rtol=0)


def test_cli_streams_a_wav_and_raw_pcm(synthetic_data_dir, tmp_path):
    """`predict.py --stream`: a wav fed hop by hop prints the offline rows; raw 16-bit PCM on
    standard input too; a stream that stops mid-sample prints its rows, then a clear error."""
    import subprocess
    import sys

    import soundfile

    from cli_helpers import ROOT
    from conftest import make_tiny_config
    from emobed_jax.training import train

    config = make_tiny_config(synthetic_data_dir, method="monomodal", **{
        "model.bidirectional": False, "num_train_steps": 2, "eval_every_steps": 2,
        "checkpoint_every_steps": 2, "eval_splits": ("validation",)})
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    rec = Recognizer.from_workdir(workdir)
    x = _wave(2.0, seed=3)
    pcm16 = np.round(np.clip(x, -1, 1) * 32767).astype("<i2")
    want = rec.predict(pcm16.astype(np.float32) / 32768.0, SR).outputs
    wav = tmp_path / "in.wav"
    soundfile.write(wav, pcm16, SR, subtype="PCM_16")
    script = [sys.executable, f"{ROOT}/experiments/predict.py", f"--workdir={workdir}", "--stream"]

    def rows(stdout):
        lines = stdout.strip().splitlines()
        assert lines[0] == "time,arousal,valence"
        return np.asarray([[float(v) for v in line.split(",")] for line in lines[1:]])

    proc = subprocess.run(script + [f"--input={wav}", "--norealtime", f"--output={tmp_path / 'o.csv'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = rows(proc.stdout)
    np.testing.assert_allclose(got[: len(want), 1:], want, atol=1e-5)
    np.testing.assert_allclose(got[: len(want), 0], np.arange(len(want)) / 25.0, atol=1e-9)
    assert (tmp_path / "o.csv").read_text().splitlines()[1:3] == proc.stdout.splitlines()[1:3]

    raw = pcm16.tobytes()
    proc = subprocess.run(script + ["--input=-"], input=raw, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(rows(proc.stdout.decode())[: len(want), 1:], want, atol=1e-5)

    proc = subprocess.run(script + ["--input=-"], input=raw + b"\x01", capture_output=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "standard input ended mid-sample" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    np.testing.assert_allclose(rows(proc.stdout.decode())[: len(want), 1:], want, atol=1e-5)
