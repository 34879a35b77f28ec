"""experiments/predict.py and inference.media: a trained run on new audio and feature files gives
the rows --mode=eval gives for the same recording; bad inputs are named with their reason."""
import csv
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
import soundfile

from cli_helpers import ROOT
from emobed_jax.datasets import synthetic_emotion
from emobed_jax.features import audio as audio_lib
from emobed_jax.features import openface
from emobed_jax.inference import media, recognizer
from emobed_jax.training import train

TINY = next(c for c in synthetic_emotion.SyntheticEmotion.BUILDER_CONFIGS if c.name == "tiny")
RECORDING = 1  # validation_2: any validation recording will do


@pytest.fixture(scope="module")
def audio_run(synthetic_data_dir, tmp_path_factory):
    """A tiny trained audio run (conv encoder, 6 steps, label delays 0.2 s / 0.08 s, so the
    delay handling is compared too) and its eval rows for validation."""
    from conftest import make_tiny_config

    config = make_tiny_config(synthetic_data_dir, method="emobed", target_modality="audio",
                              **{"model.encoder": "conv", "num_train_steps": 6,
                                 "eval_every_steps": 3, "checkpoint_every_steps": 3,
                                 "data.label_delay_s.arousal": 0.2,
                                 "data.label_delay_s.valence": 0.08})
    workdir = str(tmp_path_factory.mktemp("audio_run"))
    train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    out = str(tmp_path_factory.mktemp("eval"))
    train.evaluate_checkpoint(None, workdir, splits=["validation"], plots=False, output_dir=out,
                              devices=jax.devices()[:1])
    return workdir, _read_csv(os.path.join(out, "predictions_validation.csv"))


@pytest.fixture(scope="module")
def rec(audio_run):
    return recognizer.Recognizer.from_workdir(audio_run[0])


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _predict(args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "predict.py")] + args,
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def _write_feature_csv(path, times, features, delimiter=","):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["frameTime"] + [f"mel_{k}" for k in range(features.shape[1])])
        for t, row in zip(times, features):
            w.writerow([f"{t:.2f}"] + [repr(float(v)) for v in row])


def _write_arff(path, times, features):
    with open(path, "w") as f:
        f.write("@relation logmel\n@attribute name string\n@attribute frameTime numeric\n")
        f.writelines(f"@attribute mel_{k} numeric\n" for k in range(features.shape[1]))
        f.write("@data\n")
        f.writelines(f"'x',{t:.2f}," + ",".join(repr(float(v)) for v in row) + "\n"
                     for t, row in zip(times, features))


def test_waveform_of_a_recording_gives_its_stored_features():
    wave = synthetic_emotion.recording_waveform(TINY, "validation", RECORDING)
    example = synthetic_emotion.generate_recording(TINY, "validation", RECORDING)
    np.testing.assert_array_equal(
        audio_lib.log_mel_frames(wave, synthetic_emotion.SAMPLE_RATE, TINY.audio_features),
        example["audio"])


def test_wav_predictions_equal_eval_rows(audio_run, tmp_path):
    workdir, eval_rows = audio_run
    wave = synthetic_emotion.recording_waveform(TINY, "validation", RECORDING)
    # float32 WAV: 16-bit PCM would quantise the waveform and change the features.
    soundfile.write(tmp_path / "rec.wav", wave, synthetic_emotion.SAMPLE_RATE, subtype="FLOAT")
    proc = _predict([f"--workdir={workdir}", "--input=rec.wav", "--plot"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {os.path.join('rec.predictions.csv')}" in proc.stdout
    assert (tmp_path / "rec.predictions.png").stat().st_size > 0
    rows = _read_csv(tmp_path / "rec.predictions.csv")
    # The first 5 arousal rows repeat the first prediction: label delay undone as eval does.
    assert len({r["arousal"] for r in rows[:6]}) == 1 and rows[5]["arousal"] != rows[6]["arousal"]
    expected = [r for r in eval_rows if r["recording"] == f"validation_{RECORDING + 1}"]
    assert len(rows) == len(expected) == TINY.num_frames
    for got, want in zip(rows, expected):
        assert float(got["time"]) == pytest.approx(float(want["frameTime"]), abs=1e-9)
        for dim in ("arousal", "valence"):
            assert float(got[dim]) == pytest.approx(float(want[dim]), abs=1e-5), (got, want)


def test_stereo_and_other_rates_work(rec, tmp_path):
    wave = synthetic_emotion.recording_waveform(TINY, "validation", RECORDING)
    reference = rec.predict(wave, synthetic_emotion.SAMPLE_RATE).outputs
    soundfile.write(tmp_path / "stereo.wav", np.stack([wave, wave], 1), 16000, subtype="FLOAT")
    track = media.read_input(str(tmp_path / "stereo.wav"), rec)
    np.testing.assert_allclose(rec.predict_features(track.features).outputs, reference, atol=1e-6)
    soundfile.write(tmp_path / "cd.wav", audio_lib.resample(wave, 16000, 44100), 44100)
    track = media.read_input(str(tmp_path / "cd.wav"), rec)
    assert track.features.shape == (TINY.num_frames, 40)
    # 44.1 kHz 16-bit round trip: a different waveform, yet log-mel frames stay close.
    assert np.abs(track.features - media.read_input(str(tmp_path / "stereo.wav"), rec).features
                  ).mean() < 0.05


def test_feature_files_equal_predict_features(rec, tmp_path):
    features = synthetic_emotion.generate_recording(TINY, "validation", RECORDING)["audio"]
    times = np.arange(len(features)) * 0.04
    expected = rec.predict_features(features).outputs
    _write_feature_csv(tmp_path / "f.csv", times, features, delimiter=";")
    _write_arff(tmp_path / "f.arff", times, features)
    for name in ("f.csv", "f.arff"):
        track = media.read_input(str(tmp_path / name), rec)
        np.testing.assert_array_equal(track.features, features)
        np.testing.assert_allclose(track.times, times, atol=1e-9)
        np.testing.assert_array_equal(rec.predict_features(track.features).outputs, expected)


def test_align_to_grid_takes_the_nearest_frame_and_refuses_other_rates():
    times = 0.012 + 0.04 * np.array([0, 1, 2, 4, 5])  # a 12 ms offset and a missing frame
    index, grid = media.align_to_grid(times, 25.0)
    np.testing.assert_allclose(grid, [0.0, 0.04, 0.08, 0.12, 0.16, 0.2])
    np.testing.assert_array_equal(index, [0, 1, 2, 2, 3, 4])
    with pytest.raises(media.MediaError, match=r"x.csv: frames every 33.33 ms \(30 Hz\); .* 40 ms"):
        media.align_to_grid(np.arange(10) / 30.0, 25.0, "x.csv")
    with pytest.raises(media.MediaError, match="strictly increasing"):
        media.align_to_grid(np.array([0.0, 0.04, 0.04]), 25.0)


def test_openface_csv_uses_the_runs_groups(tmp_path):
    groups = ["gaze", "pose"]
    fake = types.SimpleNamespace(input_dim=openface.feature_dim(groups), level="frame",
                                 frame_rate_hz=25.0, target="video",
                                 feature_settings={"kind": "openface_csv", "groups": groups})
    columns = ["frame", "face_id", "timestamp", "confidence", "success"] + list(
        openface.group_columns(groups)) + ["AU01_r"]
    with open(tmp_path / "face.csv", "w") as f:
        f.write(", ".join(columns) + "\n")
        for t in range(5):
            values = [t + 1, 0, t * 0.04, 0.9, int(t != 2)] + [t + k / 100 for k in range(15)]
            f.write(", ".join(str(v) for v in values) + "\n")
    track = media.read_input(str(tmp_path / "face.csv"), fake)
    assert track.kind == "openface" and track.features.shape == (5, 14)
    np.testing.assert_array_equal(track.valid, [True, True, False, True, True])
    assert track.features[3, 0] == pytest.approx(3.0)


def _bad_files(folder):
    """Bad inputs with the words their message must hold."""
    (folder / "empty.wav").write_bytes(b"")
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    soundfile.write(folder / "short.wav", np.zeros(300, np.float32), 16000)
    _write_feature_csv(folder / "wide.csv", np.arange(3) * 0.04, np.zeros((3, 7)))
    return {"empty.wav": "empty file", "corrupt.wav": "not a readable audio file",
            "short.wav": "shorter than one 40 ms label frame",
            "wide.csv": "7 feature columns, expected 40"}


def test_folder_reports_bad_files_and_goes_on(audio_run, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    wave = synthetic_emotion.recording_waveform(TINY, "validation", RECORDING)
    soundfile.write(folder / "a.wav", wave, 16000, subtype="FLOAT")
    soundfile.write(folder / "b.wav", np.stack([wave, 0.5 * wave], 1)[:8000], 8000)
    (folder / "notes.txt").write_text("not media")
    reasons = _bad_files(folder)
    proc = _predict([f"--workdir={audio_run[0]}", f"--input={folder}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for name, reason in reasons.items():
        assert f"error: {folder / name}: " in proc.stderr and reason in proc.stderr, name
    assert "predicted 2 of 6 files" in proc.stdout and "4 failed; 1 skipped" in proc.stdout
    out = tmp_path / "media.predictions"
    assert sorted(os.listdir(out)) == ["a.predictions.csv", "b.predictions.csv"]
    assert len(_read_csv(out / "b.predictions.csv")) == 26  # 1 s at 8 kHz: 0.00 .. 1.00 s
    # Nothing predicted: exit status 1, still no traceback.
    (folder / "a.wav").unlink()
    (folder / "b.wav").unlink()
    proc = _predict([f"--workdir={audio_run[0]}", f"--input={folder}", "--output=x"], cwd=tmp_path)
    assert proc.returncode == 1 and "predicted 0 of 4 files" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_bad_inputs_name_the_file_and_the_expectation(rec, tmp_path):
    for name, reason in _bad_files(tmp_path).items():
        with pytest.raises(media.MediaError) as e:
            media.read_input(str(tmp_path / name), rec)
        assert str(e.value).startswith(str(tmp_path / name)) and reason in str(e.value), e.value
    (tmp_path / "x.npy").write_bytes(b"")
    with pytest.raises(media.MediaError, match=r"x.npy: a .npy array has no times"):
        media.read_input(str(tmp_path / "x.npy"), rec)
    (tmp_path / "x.mp4").write_bytes(b"")
    with pytest.raises(media.MediaError, match=r"x.mp4: unsupported file type '.mp4'"):
        media.read_input(str(tmp_path / "x.mp4"), rec)
    (tmp_path / "notime.csv").write_text("a,b\n1,2\n")
    with pytest.raises(media.MediaError, match=r"notime.csv: first column 'a' is not a time"):
        media.read_input(str(tmp_path / "notime.csv"), rec)


def test_cli_bad_file_and_bad_workdirs(audio_run, tmp_path):
    workdir, _ = audio_run
    (tmp_path / "empty.wav").write_bytes(b"")
    proc = _predict([f"--workdir={workdir}", "--input=empty.wav"], cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: empty.wav: empty file" in proc.stderr
    proc = _predict([f"--workdir={tmp_path}", "--input=empty.wav"], cwd=tmp_path)
    assert proc.returncode == 1 and "run.json does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    # A run directory whose checkpoints are gone.
    nockpt = tmp_path / "nockpt"
    nockpt.mkdir()
    for name in ("run.json", "normalization.npz"):
        (nockpt / name).write_bytes((open(os.path.join(workdir, name), "rb")).read())
    proc = _predict([f"--workdir={nockpt}", "--input=empty.wav"], cwd=tmp_path)
    assert proc.returncode == 1 and "no 'best' checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_utterance_rows(tmp_path):
    """Utterance-level CSVs: one row, class probabilities and the argmax (category task)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_cli", os.path.join(ROOT, "experiments",
                                                                               "predict.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    fake = types.SimpleNamespace(task="category", level="utterance", class_names=("a", "b", "c"),
                                 label_names=("arousal", "valence"))
    pred = recognizer.Prediction(np.zeros(3), np.zeros(4), np.array([0.2, 0.5, 0.3]))
    cli.write_csv(str(tmp_path / "c.csv"), pred, None, fake, "clip")
    assert _read_csv(tmp_path / "c.csv") == [
        {"name": "clip", "category": "b", "p_a": "0.200000", "p_b": "0.500000", "p_c": "0.300000"}]
    fake.task = "regression"
    cli.write_csv(str(tmp_path / "r.csv"), recognizer.Prediction(np.array([0.1, -0.25]), None),
                  None, fake, "clip")
    assert _read_csv(tmp_path / "r.csv") == [
        {"name": "clip", "arousal": "0.100000", "valence": "-0.250000"}]


def test_a_group_centred_run_centres_each_recording_on_its_valid_frames(audio_run):
    """`data.normalize='group'` runs: a recording given to the recogniser is its own group,
    centred on the mean of its valid frames (a constant offset, e.g. a person's resting face,
    changes nothing; invalid frames do not move the centre)."""
    plain = recognizer.Recognizer.from_workdir(audio_run[0])
    centred = recognizer.Recognizer.from_workdir(audio_run[0])
    centred.group_centred = True  # before its first call: compiled per object
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, plain.input_dim)).astype(np.float32)
    shift = 3.0 * rng.normal(size=plain.input_dim).astype(np.float32)
    valid = np.ones(80, bool)
    valid[10:20] = False
    wild = x.copy()
    wild[10:20] = 1e3
    a = centred.predict_features(x, valid).outputs
    np.testing.assert_allclose(centred.predict_features(x + shift, valid).outputs, a, atol=1e-4)
    np.testing.assert_allclose(centred.predict_features(wild, valid).outputs, a, atol=1e-5)
    by_hand = plain.predict_features(x - x[valid].mean(axis=0), valid).outputs
    np.testing.assert_allclose(by_hand, a, atol=1e-4)
    assert not np.allclose(plain.predict_features(x + shift, valid).outputs, a, atol=1e-3)


def test_a_group_centred_run_is_not_streamed(audio_run):
    from emobed_jax.inference import streaming

    rec = recognizer.Recognizer.from_workdir(audio_run[0])
    rec.group_centred = True
    with pytest.raises(streaming.StreamError, match=r"data.normalize='group'.*predict whole "
                                                    r"recordings instead"):
        streaming.Stream(rec)
