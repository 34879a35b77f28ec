"""Portable export (`experiments/export.py`, `inference.export`): the artifacts, deserialised in a
fresh process that imports only jax and numpy, predict what `Recognizer` predicts; the JAX
log-mel inside equals the numpy training features; bad inputs fail with a message."""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax.features import audio
from emobed_jax.inference import export
from emobed_jax.inference.recognizer import Recognizer
from emobed_jax.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000
# Two lengths, not multiples of the hop or of the 640-sample label frame, the second padded.
LENGTHS = (SR * 3 + 77, SR * 2 - 301)

# The consumer: a fresh interpreter with jax, numpy and json only (no emobed_jax on its path).
CONSUMER = """
import json, sys
import jax, numpy as np
d, io = sys.argv[1], np.load(sys.argv[2])
side = json.load(open(d + "/export.json"))
out = {}
for name, info in side["functions"].items():
    exp = jax.export.deserialize(bytearray(open(d + "/" + info["file"], "rb").read()))
    args = [io[name + "/" + s["name"]] for s in info["inputs"]]
    for key, value in exp.call(*args).items():
        out[name + "/" + key] = np.asarray(value)
np.savez(sys.argv[3], **out)
print("consumer modules:", sorted(m for m in sys.modules if m.startswith("emobed")))
"""


@pytest.fixture(scope="module")
def audio_run(synthetic_data_dir, tmp_path_factory):
    """A tiny trained run whose target (audio) is log-mel, with label delays set in run.json."""
    from conftest import make_tiny_config

    config = make_tiny_config(synthetic_data_dir, method="emobed",
                              **{"model.encoder": "conv", "num_train_steps": 6,
                                 "eval_every_steps": 3, "checkpoint_every_steps": 3})
    workdir = str(tmp_path_factory.mktemp("audio_run"))
    train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    # The synthetic labels have no delay; distinct delays make the unshifting observable.
    path = os.path.join(workdir, "run.json")
    with open(path) as f:
        record = json.load(f)
    record["dataset"]["label_delay_frames"] = [2, 5]
    with open(path, "w") as f:
        json.dump(record, f)
    return workdir


def _waves():
    rng = np.random.default_rng(0)
    t = np.arange(max(LENGTHS)) / SR
    waves = [0.3 * np.sin(2 * np.pi * (180 + 40 * i) * t[:n]) + 0.05 * rng.standard_normal(n)
             for i, n in enumerate(LENGTHS)]
    # Padding past a row's num_samples is noise: the artifact must never read it.
    batch = rng.uniform(-1, 1, (2, max(LENGTHS))).astype(np.float32)
    for i, w in enumerate(waves):
        batch[i, :len(w)] = w
    return [w.astype(np.float32) for w in waves], batch


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "export.py"), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def exported(audio_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export"))
    proc = _cli(f"--workdir={audio_run}", f"--output={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_sidecar_describes_the_artifacts(exported, audio_run):
    out, stdout = exported
    side = json.load(open(os.path.join(out, export.SIDECAR)))
    rec = Recognizer.from_workdir(audio_run)
    assert side["step"] == rec.step and side["label_names"] == ["arousal", "valence"]
    assert side["label_delay_frames"] == [2, 5] and side["label_delay_s"] == [0.08, 0.2]
    assert (side["sample_rate"], side["hop_length"], side["samples_per_label_frame"]) == (
        SR, 160, 640)
    assert side["functions"]["predict_waveform"]["inputs"][0]["shape"] == ["b", "s"]
    assert side["functions"]["predict_features"]["inputs"][0]["shape"] == ["b", "t", "40"]
    assert "cpu" in side["functions"]["predict_features"]["platforms"]
    assert side["jax_version"] == jax.__version__ and side["compatibility"]["backward_days"] == 180
    for name in ("predict_waveform", "predict_features"):
        assert os.path.isfile(os.path.join(out, export.FILES[name])), name
        assert name in stdout


def test_fresh_process_matches_the_recognizer(exported, audio_run, tmp_path):
    out, _ = exported
    rec = Recognizer.from_workdir(audio_run)
    waves, batch = _waves()
    feats = [audio.log_mel_frames(w, SR) for w in waves]
    fbatch = np.zeros((2, len(feats[0]), 40), np.float32)
    fbatch[1, len(feats[1]):] = 1e3  # padding values must not leak into the valid frames
    for i, f in enumerate(feats):
        fbatch[i, :len(f)] = f
    inputs = {"predict_waveform/waveform": batch,
              "predict_waveform/num_samples": np.asarray(LENGTHS, np.int32),
              "predict_features/features": fbatch,
              "predict_features/lengths": np.asarray([len(f) for f in feats], np.int32)}
    np.savez(tmp_path / "in.npz", **inputs)
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(script), out, str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "consumer modules: []" in proc.stdout
    got = np.load(tmp_path / "out.npz")
    for i, (w, f) in enumerate(zip(waves, feats)):
        n = len(f)
        assert got["predict_features/lengths"][i] == n == got["predict_waveform/lengths"][i]
        want = rec.predict_features(f)
        np.testing.assert_allclose(got["predict_features/outputs"][i, :n], want.outputs,
                                   atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["predict_features/embeddings"][i, :n], want.embeddings,
                                   atol=1e-5, rtol=0)
        # float32 log-mel inside (within ~2e-6 of the float64 features on these signals, see
        # the test below) moves the outputs by far less than 1e-5.
        np.testing.assert_allclose(got["predict_waveform/outputs"][i, :n],
                                   rec.predict(w, SR).outputs, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["predict_waveform/embeddings"][i, :n],
                                   rec.predict(w, SR).embeddings, atol=1e-5, rtol=0)


def test_jax_log_mel_equals_the_training_features():
    """The model was trained on `audio.log_mel_frames` (float64, then cast to float32). The JAX
    log-mel is float32 throughout: the FFT's rounding error is ~1e-7 of the frame's loudest
    band, so log values differ by ~1e-7 / (band power / peak power). Bands within ~60 dB of the
    peak (noisy signals, speech) agree to 1e-5 (measured 1.4e-6); a pure tone's far-off bands
    120 dB down (next to silence, floored by the 1e-6 log offset) to 2e-4 (measured 4.2e-5).
    The pooling indices (which 10 ms frames make a label frame) must match exactly: a one-frame
    shift changes values by far more than these tolerances."""
    waves, batch = _waves()
    got, lengths = jax.jit(export._log_mel_batch, static_argnums=2)(
        jnp.asarray(batch), jnp.asarray(LENGTHS), audio.LogMelConfig())
    for i, w in enumerate(waves):
        want = audio.log_mel_frames(w, SR)
        assert int(lengths[i]) == len(want)
        np.testing.assert_allclose(np.asarray(got[i, :len(want)]), want, atol=1e-5, rtol=0)
    n = SR * 2 + 123
    tone = (0.9 * np.sin(2 * np.pi * 440 * np.arange(n) / SR)).astype(np.float32)
    tone[SR // 2:SR] = 0.0
    got, _ = export._log_mel_batch(jnp.asarray(tone[None]), jnp.asarray([n]), audio.LogMelConfig())
    np.testing.assert_allclose(np.asarray(got[0]), audio.log_mel_frames(tone, SR), atol=2e-4)
    # Short recordings (fewer samples than half an FFT) use numpy's repeated reflection.
    short = waves[1][:100]
    got, _ = export._log_mel_batch(jnp.asarray(short[None]), jnp.asarray([100]),
                                   audio.LogMelConfig())
    np.testing.assert_allclose(np.asarray(got[0]), audio.log_mel_frames(short, SR), atol=1e-5)
    cfg = audio.LogMelConfig(pooling="mean_std")
    got, _ = export._log_mel_batch(jnp.asarray(batch[:1]), jnp.asarray(LENGTHS[:1]), cfg)
    np.testing.assert_allclose(np.asarray(got[0]), audio.log_mel_frames(waves[0], SR, cfg),
                               atol=1e-4)


def test_other_feature_kinds_export_features_only(audio_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(audio_run, run)
    record = json.load(open(run / "run.json"))
    record["feature_settings"]["audio"] = {"kind": "egemaps"}
    json.dump(record, open(run / "run.json", "w"))
    side = export.export_run(str(run), str(tmp_path / "out"), platforms=["cpu"])
    assert list(side["functions"]) == ["predict_features"]
    assert "needs an external extractor" in side["waveform_input"]
    assert not (tmp_path / "out" / export.FILES["predict_waveform"]).exists()


def test_load_checks_platform_and_sidecar(exported, tmp_path):
    out, _ = exported
    loaded = export.load(out)
    assert set(loaded.functions) == {"predict_waveform", "predict_features"}
    foreign = tmp_path / "foreign"
    shutil.copytree(out, foreign)
    side = json.load(open(foreign / export.SIDECAR))
    for info in side["functions"].values():
        info["platforms"] = ["tpu"]
    json.dump(side, open(foreign / export.SIDECAR, "w"))
    with pytest.raises(export.ExportError, match=r"exported for platforms \['tpu'\], this "
                                                 r"machine runs 'cpu'"):
        export.load(str(foreign))
    side["jax_version"] = "99.0.0"
    for info in side["functions"].values():
        info["platforms"] = ["cpu"]
    json.dump(side, open(foreign / export.SIDECAR, "w"))
    with pytest.raises(export.ExportError, match=r"written by jax 99.0.0.*6 months"):
        export.load(str(foreign))
    side["jax_version"], side["exported_at"] = "0.4.30", "2024-07-01T00:00:00+00:00"
    json.dump(side, open(foreign / export.SIDECAR, "w"))
    with pytest.raises(export.ExportError, match=r"written by jax 0.4.30 \d+ days ago"):
        export.load(str(foreign))
    assert set(export.load(str(foreign), check_version=False).functions) == set(loaded.functions)
    os.remove(foreign / export.SIDECAR)
    with pytest.raises(export.ExportError, match=r"export.json does not exist"):
        export.load(str(foreign))


def test_cli_errors_are_one_line(audio_run, tmp_path):
    proc = _cli(f"--workdir={tmp_path / 'nothing'}", f"--output={tmp_path / 'o'}")
    assert proc.returncode == 1 and "run.json does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    run = tmp_path / "no_ckpt"
    shutil.copytree(audio_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    proc = _cli(f"--workdir={run}", f"--output={tmp_path / 'o'}")
    assert proc.returncode == 1 and "has no 'best' checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
