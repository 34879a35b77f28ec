"""Speed of using a trained recogniser, for `experiments/benchmark.py --inference=true`.

Trains two small runs of the default model size on the built-in dataset's `tiny` config (a few
steps: speed does not depend on how well a model is trained): a bidirectional one for offline
prediction and export, a causal one (`model.bidirectional=False`) for streaming. Then measures:
  * offline: `Recognizer.predict` of a 5-minute 16 kHz recording (log-mel features + model), as a
    real-time factor, and the feature extraction alone;
  * streaming: `Stream.push` fed one 40 ms hop at a time over a minute of audio: real-time factor
    and per-hop latency percentiles (p50, p99, max);
  * export: `export_run` time, artifact load time and first-call time (compile) on this machine.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np


def _train_run(workdir: str, data_dir: str, bidirectional: bool) -> None:
    from configs import synthetic
    from emobed_jax.training import train

    config = synthetic.get_config("monomodal,audio")
    config.data.config = "tiny"
    config.data.data_dir = data_dir
    config.model.bidirectional = bidirectional
    config.num_train_steps = 2
    config.eval_every_steps = config.checkpoint_every_steps = config.log_every_steps = 2
    config.eval_splits = ("validation",)
    train.train_and_evaluate(config, workdir)


def _waveform(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.1 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.size)).astype(
        np.float32)


def _timed(fn, repeats: int) -> list:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(offline_seconds: float = 300.0, stream_seconds: float = 60.0,
            repeats: int = 3) -> dict:
    """Runs every inference measurement; returns the JSON-ready results."""
    import logging

    from emobed_jax.inference import export, streaming
    from emobed_jax.inference.recognizer import Recognizer

    logging.getLogger("emobed_jax").setLevel(logging.WARNING)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        offline_run, causal_run = os.path.join(tmp, "bilstm"), os.path.join(tmp, "causal")
        _train_run(offline_run, os.path.join(tmp, "tfds"), bidirectional=True)
        _train_run(causal_run, os.path.join(tmp, "tfds"), bidirectional=False)

        rec = Recognizer.from_workdir(offline_run)
        wav = _waveform(offline_seconds)
        rec.predict(wav, 16000)  # compile for this length
        total = _timed(lambda: rec.predict(wav, 16000), repeats)
        features = _timed(lambda: rec.features_from_waveform(wav, 16000), repeats)
        result["offline"] = {
            "audio_s": offline_seconds, "seconds": statistics.median(total),
            "realtime_factor": offline_seconds / statistics.median(total),
            "features_seconds": statistics.median(features)}

        causal = Recognizer.from_workdir(causal_run)
        hop = int(round(16000 * 0.04))
        audio = _waveform(stream_seconds, seed=1)
        warm = streaming.Stream(causal)
        warm.push(audio[: 16000])  # compile the per-frame step
        stream = streaming.Stream(causal)
        latencies = []
        start = time.perf_counter()
        for begin in range(0, audio.size, hop):
            t0 = time.perf_counter()
            stream.push(audio[begin:begin + hop])
            latencies.append(time.perf_counter() - t0)
        stream.flush()
        elapsed = time.perf_counter() - start
        lat_ms = 1000 * np.asarray(latencies)
        result["streaming"] = {
            "audio_s": stream_seconds, "hop_ms": 40.0, "seconds": elapsed,
            "realtime_factor": stream_seconds / elapsed,
            "latency_ms": {"p50": float(np.percentile(lat_ms, 50)),
                           "p99": float(np.percentile(lat_ms, 99)), "max": float(lat_ms.max())}}

        out = os.path.join(tmp, "export")
        start = time.perf_counter()
        sidecar = export.export_run(offline_run, out)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = export.load(out)
        load_s = time.perf_counter() - start
        fn = loaded.functions["predict_waveform"]
        ten = _waveform(10.0, seed=2)[None]
        args = (ten, np.asarray([ten.shape[1]], np.int32))
        start = time.perf_counter()
        np.asarray(fn.call(*args)["outputs"])
        first_s = time.perf_counter() - start
        again = _timed(lambda: np.asarray(fn.call(*args)["outputs"]), repeats)
        result["export"] = {"export_seconds": export_s, "load_seconds": load_s,
                            "first_call_seconds_10s_audio": first_s,
                            "call_seconds_10s_audio": statistics.median(again),
                            "platforms": sorted({p for f in sidecar["functions"].values()
                                                 for p in f["platforms"]})}
    return result


def format_result(result: dict) -> str:
    """A plain-text summary of `measure`'s result."""
    o, s, e = result["offline"], result["streaming"], result["export"]
    return "\n".join([
        f"inference offline: {o['audio_s']:.0f} s of audio in {o['seconds']:.2f} s "
        f"({o['realtime_factor']:.0f}x real time; features alone {o['features_seconds']:.2f} s)",
        f"inference streaming (40 ms hops): {s['realtime_factor']:.0f}x real time, per-hop "
        f"latency p50 {s['latency_ms']['p50']:.2f} ms, p99 {s['latency_ms']['p99']:.2f} ms, "
        f"max {s['latency_ms']['max']:.2f} ms",
        f"export: written in {e['export_seconds']:.1f} s ({', '.join(e['platforms'])}), loaded in "
        f"{e['load_seconds']:.2f} s, first call (10 s audio) {e['first_call_seconds_10s_audio']:.2f}"
        f" s, then {e['call_seconds_10s_audio'] * 1000:.0f} ms"])
