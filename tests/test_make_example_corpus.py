"""experiments/make_example_corpus.py: the layout of docs/folder.md at both levels, determinism,
the stream rates, and a signal a linear model can learn."""
import csv
import hashlib
import json
import os
import pathlib
import sys

import numpy as np
import pytest
import soundfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments"))
import make_example_corpus as mec  # noqa: E402


@pytest.fixture(scope="module")
def frame_corpus(tmp_path_factory):
    """The default frame-level corpus (seed 0) and its summary."""
    out = tmp_path_factory.mktemp("frame") / "corpus"
    return out, mec.write_corpus(out)


@pytest.fixture(scope="module")
def utterance_corpus(tmp_path_factory):
    """A smaller utterance-level corpus (2/1/1 sessions of 20 s)."""
    out = tmp_path_factory.mktemp("utterance") / "corpus"
    return out, mec.write_corpus(out, level="utterance", train=2, validation=1, test=1,
                                 duration_s=20.0)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _table(path):
    """(header, float array) of a per-frame CSV."""
    rows = _rows(path)
    return rows[0], np.array(rows[1:], dtype=np.float64)


def _files(root):
    return sorted(str(p.relative_to(root)) for p in pathlib.Path(root).rglob("*") if p.is_file())


def _ccc(x, y):
    mx, my = x.mean(), y.mean()
    return 2 * np.mean((x - mx) * (y - my)) / (x.var() + y.var() + (mx - my) ** 2)


def test_frame_layout(frame_corpus):
    out, summary = frame_corpus
    splits = _rows(out / "splits.csv")
    assert splits[0] == ["id", "split", "group"]
    ids = {s: [r[0] for r in splits[1:] if r[1] == s] for s in mec.SPLITS}
    assert {s: len(v) for s, v in ids.items()} == {"train": 6, "validation": 3, "test": 3}
    assert ids == summary["recordings"]
    groups = {s: {r[2] for r in splits[1:] if r[1] == s} for s in mec.SPLITS}
    assert groups == {s: set(g) for s, g in summary["groups"].items()}
    assert not groups["train"] & groups["validation"] and not groups["train"] & groups["test"]
    assert len(groups["train"]) == 3
    all_ids = [i for v in ids.values() for i in v]
    expected = {"splits.csv", "corpus.json"}
    for rid in all_ids:
        expected |= {f"labels/{rid}.csv", f"audio/{rid}.wav", f"video/{rid}.csv",
                     f"physio/{rid}.csv"}
    expected.discard("physio/train_06.csv")  # the recording without a physio file
    assert set(_files(out)) == expected
    assert summary["missing"] == {"train": {"physio": ["train_06"]}}
    assert json.loads((out / "corpus.json").read_text()) == {"tolerance_s": 0.5}
    assert not (out / "labels.csv").exists()
    header, labels = _table(out / "labels" / "train_01.csv")
    assert header == ["time", "arousal", "valence", "dominance"]
    assert np.all(np.abs(labels[:, 1:]) <= 1.0) and np.all(np.isfinite(labels))
    assert labels[:, 1:].std(axis=0).min() > 0.05  # trajectories move
    assert _table(out / "video" / "train_01.csv")[0] == ["time"] + list(mec.VIDEO_FEATURES)
    assert _table(out / "physio" / "train_01.csv")[0] == ["time"] + list(mec.PHYSIO_FEATURES)
    assert len(mec.VIDEO_FEATURES) == 10 and len(mec.PHYSIO_FEATURES) == 3


def test_frame_rates_and_coverage(frame_corpus):
    out, summary = frame_corpus
    for rid in summary["recordings"]["validation"] + ["train_01", "train_02"]:
        label_t = _table(out / "labels" / f"{rid}.csv")[1][:, 0]
        np.testing.assert_allclose(np.diff(label_t), 1 / 25, atol=1e-6)
        assert label_t[0] == 0.0 and label_t[-1] == pytest.approx(30.0)
        video = _table(out / "video" / f"{rid}.csv")[1]
        steps = np.round(np.diff(video[:, 0]) * 30, 3)
        # Consecutive frames 1/30 s apart; a dropped stretch is a whole number of frames.
        assert np.all(steps >= 1) and np.all(steps == np.round(steps))
        physio = _table(out / "physio" / f"{rid}.csv")[1]
        np.testing.assert_allclose(np.diff(physio[:, 0]), 1 / 50, atol=1e-6)
        assert np.all(np.isfinite(physio))
        # Every stream covers the label range within the 0.5 s tolerance.
        for t in (video[:, 0], physio[:, 0]):
            assert t[0] <= 0.5 and t[-1] >= label_t[-1] - 0.5
        assert physio[-1, 0] == pytest.approx(30.5)  # frames past the labels: trimmed
        wave, rate = soundfile.read(out / "audio" / f"{rid}.wav")
        assert rate == 16000 and wave.ndim == 1 and len(wave) == 30 * 16000
        assert 0.005 < np.sqrt(np.mean(wave ** 2)) < 0.5
    # What exercises alignment: NaN rows, a stretch of absent rows, a late start.
    video_01 = _table(out / "video" / "train_01.csv")[1]
    video_02 = _table(out / "video" / "train_02.csv")[1]
    assert video_01[0, 0] == pytest.approx(0.2)
    assert np.isnan(video_01[:, 1:]).all(axis=1).any()
    assert np.diff(video_02[:, 0]).max() >= 1.0


def test_utterance_layout(utterance_corpus):
    out, summary = utterance_corpus
    rows = _rows(out / "labels.csv")
    assert rows[0] == ["id", "arousal", "valence", "dominance", "category"]
    splits = _rows(out / "splits.csv")
    assert splits[0] == ["id", "split", "group"]
    assert [r[0] for r in rows[1:]] == [r[0] for r in splits[1:]]
    assert {r[1] for r in splits[1:]} == set(mec.SPLITS)
    assert json.loads((out / "corpus.json").read_text()) == {"classes": list(mec.CLASSES)}
    assert not (out / "labels").exists()
    ids = [r[0] for r in rows[1:]]
    assert all(i.count("/") == 1 for i in ids)  # <session>/utt_<nn>: ids with a sub-folder
    expected = {"splits.csv", "corpus.json", "labels.csv"}
    for rid in ids:
        expected |= {f"audio/{rid}.wav", f"video/{rid}.csv", f"physio/{rid}.csv"}
    no_video = [v for m in summary["missing"].values() for v in m["video"]]
    assert len(no_video) == 3  # an utterance of each split's first session has no video file
    expected -= {f"video/{rid}.csv" for rid in no_video}
    assert set(_files(out)) == expected
    values = np.array([r[1:4] for r in rows[1:]], float)
    assert np.all(np.abs(values) <= 1.0)
    for r in rows[1:]:
        assert r[4] == mec.category(float(r[1]), float(r[2]))
    assert {r[4] for r in rows[1:]} <= set(mec.CLASSES)
    assert len({r[4] for r in rows[1:]}) >= 3
    for rid in ids[:4]:
        wave, rate = soundfile.read(out / "audio" / f"{rid}.wav")
        assert rate == 16000 and 2.0 <= len(wave) / rate <= 5.0
        physio = _table(out / "physio" / f"{rid}.csv")[1]
        assert physio[0, 0] == 0.0
        np.testing.assert_allclose(np.diff(physio[:, 0]), 1 / 50, atol=1e-6)
        assert len(physio) / 50 == pytest.approx(len(wave) / rate, abs=0.03)


def test_deterministic(tmp_path):
    digests = []
    for name in ("a", "b"):
        mec.write_corpus(tmp_path / name, train=2, validation=1, test=1, duration_s=8.0, seed=3)
        digests.append({f: hashlib.sha256((tmp_path / name / f).read_bytes()).hexdigest()
                        for f in _files(tmp_path / name)})
    assert digests[0] == digests[1]
    mec.write_corpus(tmp_path / "c", train=2, validation=1, test=1, duration_s=8.0, seed=4)
    other = (tmp_path / "c" / "labels" / "train_01.csv").read_bytes()
    assert other != (tmp_path / "a" / "labels" / "train_01.csv").read_bytes()


def test_refuses_and_overwrites(tmp_path):
    mec.write_corpus(tmp_path / "c", train=4, validation=1, test=1, duration_s=6.0)
    with pytest.raises(mec.CorpusExistsError, match="not empty"):
        mec.write_corpus(tmp_path / "c", train=1, validation=1, test=0, duration_s=6.0)
    # Overwriting a larger corpus with a smaller one leaves no stale recording behind.
    summary = mec.write_corpus(tmp_path / "c", train=1, validation=1, test=0, duration_s=6.0,
                               overwrite=True)
    assert summary["recordings"] == {"train": ["train_01"], "validation": ["validation_01"]}
    assert len(_files(tmp_path / "c")) == 2 + 4 * 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(mec.CorpusExistsError, match="no splits.csv"):
        mec.write_corpus(tmp_path / "other", overwrite=True)
    with pytest.raises(ValueError, match="level"):
        mec.write_corpus(tmp_path / "x", level="segment")
    with pytest.raises(ValueError, match="validation"):
        mec.write_corpus(tmp_path / "x", validation=0)


def test_cli(tmp_path, capsys):
    assert mec.main([f"--out={tmp_path / 'c'}", "--recordings_per_split=1,1,0",
                     "--duration_s=6", "--level=utterance"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["level"] == "utterance" and summary["classes"] == list(mec.CLASSES)
    assert mec.main([f"--out={tmp_path / 'c'}"]) == 1  # not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mec.main([f"--out={tmp_path / 'd'}", "--recordings_per_split=1,1"])


def _pooled_features(out, rid):
    """Video and physio features on the label times (valid frames linearly interpolated)."""
    label_path = out / "labels" / f"{rid}.csv"
    labels = _table(label_path)[1]
    columns = []
    for m in ("video", "physio"):
        path = out / m / f"{rid}.csv"
        if not path.exists():
            return None
        table = _table(path)[1]
        ok = np.isfinite(table[:, 1:]).all(axis=1)
        columns += [np.interp(labels[:, 0], table[ok, 0], table[ok, c])
                    for c in range(1, table.shape[1])]
    return np.stack(columns, axis=1), labels[:, 1:]


def test_linear_model_learns(frame_corpus):
    from sklearn.linear_model import Ridge

    out, summary = frame_corpus

    def split_data(split):
        pairs = [p for p in (_pooled_features(out, r) for r in summary["recordings"][split]) if p]
        return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])

    model = Ridge(alpha=1.0).fit(*split_data("train"))
    x, y = split_data("validation")
    prediction = model.predict(x)
    cccs = [_ccc(prediction[:, k], y[:, k]) for k in range(3)]
    assert sum(c > 0.3 for c in cccs) >= 2, cccs
    assert max(cccs) < 0.97, cccs  # learnable, not trivial
