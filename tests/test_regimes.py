"""Regimes where auxiliary modalities should matter (data/regimes.py): a fraction of training
labels, a fraction of training recordings with their auxiliaries, and label-free instance
positives that let unlabelled pairs feed the alignment."""
import dataclasses

import numpy as np
import pytest

from emobed_jax.data import batching, loading, pipeline, regimes
from emobed_jax.losses import agreement
from test_objective import (MODALITIES, TARGET, make_objective, ref_align, run,
                            utterance_batch)


def test_chosen_recordings_are_a_fixed_count_and_depend_on_the_subset_seed_only():
    a = regimes.chosen(10, 0.3, seed=0, stream=1)
    assert a.sum() == 3 and np.array_equal(a, regimes.chosen(10, 0.3, seed=0, stream=1))
    assert not np.array_equal(a, regimes.chosen(10, 0.3, seed=1, stream=1))
    assert regimes.chosen(10, 0.01, 0, 1).sum() == 1  # at least one keeps its labels
    assert regimes.chosen(4, 1.0, 0, 1).all()


def _split(level):
    t = 4 if level == "frame" else 3
    feats = {m: [np.full((t, 2), i + 1.0, np.float32) for i in range(4)] for m in MODALITIES}
    valid = {m: [np.ones(t, bool) for _ in range(4)] for m in MODALITIES}
    return loading.SplitData(names=[f"r{i}" for i in range(4)], features=feats, valid=valid,
                             regression=[np.zeros((t, 2), np.float32)] * 4, categories=[0, 1, 1, 0],
                             extra={}, nonfinite_frames={})


@pytest.mark.parametrize("level", ["frame", "utterance"])
def test_drop_auxiliary_removes_exactly_the_unchosen_auxiliaries(level):
    data = _split(level)
    dropped = regimes.drop_auxiliary(data, TARGET, 0.5, seed=3, level=level)
    keep = regimes.chosen(4, 0.5, 3, regimes._AUXILIARY)
    assert dropped == 2
    for i in range(4):
        assert data.valid[TARGET][i].all() and len(data.features[TARGET][i])  # never the target
        for m in MODALITIES[1:]:
            if keep[i]:
                assert data.valid[m][i].all() and (data.features[m][i] == i + 1).all()
            elif level == "frame":  # frames kept, every one masked, as a sensor not worn
                assert data.features[m][i].shape == (4, 2) and not data.valid[m][i].any()
                assert not data.features[m][i].any()
            else:
                assert data.features[m][i].shape == (0, 2) and data.valid[m][i].shape == (0,)


def test_unlabel_withholds_targets_and_class_counts_see_labelled_examples_only():
    data = _split("utterance")
    examples = batching.prepare_examples(data, "utterance", "category", MODALITIES, np.zeros(2))
    assert regimes.unlabel(examples, 0.5, seed=0) == 2
    keep = regimes.chosen(4, 0.5, 0, regimes._LABELS)
    assert examples.labelled == keep.tolist()
    assert examples.target_valid == keep.tolist()
    info = dataclasses.replace(_info(), class_names=("a", "b"))
    counts = pipeline.Data(info=info, splits={"train": examples}, delays=np.zeros(2),
                           stats=None).class_counts()
    np.testing.assert_array_equal(counts, np.bincount(np.asarray([0, 1, 1, 0])[keep],
                                                      minlength=2))
    batch = next(batching.eval_batches(examples, 4, "category"))
    np.testing.assert_array_equal(batch["labelled"], keep.astype(np.float32))


def _info():
    return loading.DatasetInfo(name="d", level="utterance", modalities=MODALITIES,
                               feature_dims={m: 2 for m in MODALITIES}, class_names=None,
                               splits=("train",), metadata={})


def test_instance_pairs():
    pos, neg = agreement.pairs_from_instances(3)
    np.testing.assert_array_equal(pos, np.eye(3, dtype=bool))
    np.testing.assert_array_equal(neg, ~np.eye(3, dtype=bool))


@pytest.mark.parametrize("align", ["triplet", "supcon"])
def test_instance_alignment_uses_unlabelled_utterances(align):
    """Utterance 5 has no label (target_mask 0): label agreement leaves it out, instance
    positives take it in, each utterance positive only with itself in the other modality."""
    emb, outputs, batch = utterance_batch("regression")
    obj = dataclasses.replace(make_objective("crossmodal", align, "utterance"),
                              positives="instance")
    _, metrics = run(obj, emb, outputs, batch)
    present = {m: batch["lengths"][m] > 0 for m in MODALITIES}
    assert present[TARGET][5] and batch["target_mask"][5] == 0
    expected = ref_align(align, emb, present, np.arange(6))
    assert metrics["align"] == pytest.approx(expected, abs=1e-5)
    without_unlabelled = {m: p & (batch["target_mask"] > 0) for m, p in present.items()}
    assert abs(expected - ref_align(align, emb, without_unlabelled, np.arange(6))) > 1e-3


def test_regimes_in_the_pipeline(tiny_config):
    config = tiny_config(**{"data.label_fraction": 0.25, "data.aux_fraction": 0.5,
                            "loss.positives": "instance"})
    data = pipeline.load(config)
    train = data.splits["train"]
    assert sum(train.labelled) == 2  # of the 8 tiny training recordings
    for i, ok in enumerate(train.labelled):
        assert bool(np.any(train.target_valid[i])) == ok
    without = [i for i in range(8) if not train.data.valid["video"][i].any()]
    assert len(without) == 4 and all(train.data.valid["audio"][i].all() for i in without)
    for split in ("validation", "test"):  # never changed
        assert all(v.any() for v in data.splits[split].data.valid["video"])
        assert all(data.splits[split].labelled)


def test_training_with_few_labels_and_instance_positives(tiny_config):
    """EmoBed with 2 of 8 training recordings labelled: the alignment (instance positives) runs
    on every recording, the task losses on the labelled ones only."""
    import jax

    from conftest import run_steps

    config = tiny_config(method="emobed", **{"data.label_fraction": 0.25,
                                             "loss.positives": "instance"})
    _, history = run_steps(config, jax.devices()[:1], 3)
    assert all(np.isfinite(h["loss"]) and h["align"] > 0 for h in history)
