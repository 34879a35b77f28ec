"""Cross-modal distillation and modality dropout: exact term values, masks, frozen teacher, runs.

Each distillation term is recomputed in numpy float64 from its formula on hand-made batches whose
masked positions hold NaN (a mask that lets them through makes the value NaN). Modality dropout's
keep mask is checked exactly on a fixed key. Two tiny end-to-end runs on the synthetic `tiny`
dataset train a student with a teacher trained first by the same program, and with that teacher
loaded from its workdir.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax.losses import distill, objective
from emobed_jax.training import modality_dropout

TOL = 1e-5
T = 1.7  # KL temperature


def _pairs(seed, shape):
    """Student, teacher values and a mask; masked positions of both hold NaN."""
    rng = np.random.default_rng(seed)
    s, t = rng.normal(size=shape), rng.normal(size=shape)
    mask = rng.uniform(size=shape[:-1]) > 0.35
    mask.flat[0] = True
    s[~mask], t[~mask] = np.nan, np.nan
    return s, t, mask


def ref_ccc(x, y):
    mx, my = x.mean(), y.mean()
    return 2 * np.mean((x - mx) * (y - my)) / (x.var() + y.var() + (mx - my) ** 2)


def ref_output_mse(s, t, m):
    return np.mean([np.mean((s[..., k][m] - t[..., k][m]) ** 2) for k in range(s.shape[-1])])


def ref_output_ccc(s, t, m):
    return np.mean([1 - ref_ccc(s[..., k][m], t[..., k][m]) for k in range(s.shape[-1])])


def ref_kl(s, t, m):
    values = []
    for zs, zt in zip(s[m], t[m]):
        ps = np.exp(zs / T) / np.sum(np.exp(zs / T))
        pt = np.exp(zt / T) / np.sum(np.exp(zt / T))
        values.append(np.sum(pt * np.log(pt / ps)))
    return T ** 2 * np.mean(values)


def ref_embedding_mse(s, t, m):
    return np.mean([np.mean((a - b) ** 2) for a, b in zip(s[m], t[m])])


def ref_embedding_cosine(s, t, m):
    return np.mean([1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(s[m], t[m])])


TERMS = [(distill.output_mse, ref_output_mse), (distill.output_ccc, ref_output_ccc),
         (lambda s, t, m: distill.logits_kl(s, t, m, temperature=T), ref_kl),
         (distill.embedding_mse, ref_embedding_mse),
         (distill.embedding_cosine, ref_embedding_cosine)]


@pytest.mark.parametrize("fn, ref", TERMS, ids=["output_mse", "output_ccc", "logits_kl",
                                                 "embedding_mse", "embedding_cosine"])
@pytest.mark.parametrize("shape", [(3, 6, 4), (7, 3)], ids=["frames", "utterances"])
def test_term_exact_value_mask_and_frozen_teacher(fn, ref, shape):
    s, t, m = _pairs(sum(shape), shape)
    value = float(jax.jit(fn)(s.astype(np.float32), t.astype(np.float32), m))
    assert value == pytest.approx(ref(s, t, m), abs=TOL)
    assert value > 0.05  # really exercised
    # The mask matters: all elements valid would see other (finite) values.
    s2, t2 = np.nan_to_num(s, nan=3.0), np.nan_to_num(t, nan=-2.0)
    assert abs(float(fn(s2, t2, np.ones_like(m))) - value) > 100 * TOL
    # No gradient reaches the teacher; the student's gradient is finite and 0 at masked elements.
    g_s, g_t = jax.grad(lambda a, b: fn(a, b, m), argnums=(0, 1))(jnp.asarray(s), jnp.asarray(t))
    assert np.all(np.asarray(g_t) == 0)
    g_s = np.asarray(g_s)
    assert np.all(np.isfinite(g_s)) and np.all(g_s[~m] == 0) and np.any(g_s[m] != 0)
    # Nothing valid: 0.
    assert float(fn(s2, t2, np.zeros_like(m))) == 0.0


def test_objective_composes_the_distillation_term_on_the_teacher_mask():
    """total = task(target) + w_distill * term over labelled target frames where the teacher's
    auxiliary modality is present (frame level, regression outputs and embeddings)."""
    rng = np.random.default_rng(5)
    b, t = 3, 6
    lengths = {"audio": np.array([6, 4, 5]), "video": np.array([6, 4, 0])}
    masks = {m: (np.arange(t)[None] < n[:, None]).astype(np.float32) for m, n in lengths.items()}
    masks["video"][0, 2] = 0.0  # a frame without a face
    target_mask = masks["audio"].copy()
    target_mask[1, 0] = 0.0
    targets = rng.uniform(-0.5, 0.5, size=(b, t, 2))
    out = {"audio": rng.normal(size=(b, t, 2))}
    emb = {"audio": rng.normal(size=(b, t, 5))}
    teacher = {"outputs": rng.normal(size=(b, t, 2)), "embeddings": rng.normal(size=(b, t, 5)),
               "present": masks["video"]}
    batch = {"targets": targets, "target_mask": target_mask, "masks": masks, "lengths": lengths}
    valid = (target_mask * masks["video"]) > 0
    tv = target_mask > 0
    task = np.mean([1 - ref_ccc(out["audio"][..., k][tv], targets[..., k][tv]) for k in range(2)])
    for target, kind, ref in (("outputs", "mse", ref_output_mse), ("outputs", "ccc", ref_output_ccc),
                              ("embeddings", "mse", ref_embedding_mse),
                              ("embeddings", "cosine", ref_embedding_cosine)):
        obj = objective.Objective(method="distill", target="audio", modalities=("audio",),
                                  task="regression", level="frame", w_distill=0.4,
                                  distill_target=target, distill_regression=kind,
                                  distill_embedding=kind)
        loss, metrics = jax.jit(lambda e, o, bt, tt: objective.total_loss(
            obj, e, o, bt, jax.random.key(0), teacher=tt))(emb, out, batch, teacher)
        src = out if target == "outputs" else emb
        term = ref(src["audio"], teacher[target], valid)
        assert float(metrics["distill"]) == pytest.approx(term, abs=TOL)
        assert float(metrics["distill_frames"]) == valid.sum() == 8
        assert float(metrics["task_audio"]) == pytest.approx(task, abs=TOL)
        assert float(loss) == pytest.approx(task + 0.4 * term, abs=TOL)


def test_categories_distil_class_logits_with_temperature():
    rng = np.random.default_rng(2)
    logits, teacher = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    present = np.array([1, 0, 1, 1, 1], np.float32)
    batch = {"targets": np.array([0, 1, 2, 1, 0]), "target_mask": np.array([1, 1, 1, 0, 1.0]),
             "lengths": {"audio": np.full(5, 4), "video": np.array([4, 0, 4, 4, 4])},
             "masks": {"audio": np.ones((5, 4)), "video": np.ones((5, 4))}}
    obj = objective.Objective(method="distill", target="audio", modalities=("audio",),
                              task="category", level="utterance", distill_temperature=T)
    _, metrics = objective.total_loss(obj, {"audio": np.zeros((5, 2))}, {"audio": logits}, batch,
                                      jax.random.key(0), teacher={"outputs": teacher,
                                                                  "embeddings": None,
                                                                  "present": present})
    valid = np.array([True, False, True, False, True])
    assert float(metrics["distill"]) == pytest.approx(ref_kl(logits, teacher, valid), abs=TOL)


def test_modality_dropout_masks_are_a_function_of_the_key_and_never_drop_the_target():
    key = jax.random.key(7)
    keep = modality_dropout.keep_mask(key, 8, ("audio", "text", "video"), "audio", 0.5)
    expected = np.asarray(jax.random.bernoulli(key, 0.5, (8, 2)))  # columns: text, video
    np.testing.assert_array_equal(keep["text"], expected[:, 0])
    np.testing.assert_array_equal(keep["video"], expected[:, 1])
    # The exact draw of this key (a change in the draw would change every run's results).
    np.testing.assert_array_equal(np.asarray(keep["text"]).astype(int), [0, 1, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(keep["video"]).astype(int), [0, 1, 0, 1, 1, 0, 1, 1])
    assert np.all(keep["audio"])
    again = modality_dropout.keep_mask(key, 8, ("audio", "text", "video"), "audio", 0.5)
    assert all(np.array_equal(keep[m], again[m]) for m in keep)
    other = modality_dropout.keep_mask(jax.random.key(8), 8, ("audio", "text", "video"), "audio",
                                       0.5)
    assert any(not np.array_equal(keep[m], other[m]) for m in keep)
    # Over many examples the drop rate is p, and p = 0 keeps everything.
    many = modality_dropout.keep_mask(key, 4000, ("audio", "video"), "audio", 0.3)
    assert abs(1 - float(np.mean(many["video"])) - 0.3) < 0.03
    assert np.all(modality_dropout.keep_mask(key, 50, ("audio", "video"), "audio", 0.0)["video"])
    # A target that is not first in the order is kept too.
    assert np.all(modality_dropout.keep_mask(key, 50, ("audio", "video"), "video", 0.9)["video"])


def test_modality_dropout_makes_dropped_modalities_missing():
    rng = np.random.default_rng(0)
    batch = {"features": {m: rng.normal(size=(4, 3, 2)).astype(np.float32) for m in ("audio", "video")},
             "lengths": {m: np.full(4, 3, np.int32) for m in ("audio", "video")},
             "masks": {m: np.ones((4, 3), np.float32) for m in ("audio", "video")},
             "target_mask": np.ones((4, 3), np.float32)}
    keep = {"audio": np.ones(4, bool), "video": np.array([True, False, True, False])}
    out = modality_dropout.apply(batch, keep)
    np.testing.assert_array_equal(out["features"]["audio"], batch["features"]["audio"])
    np.testing.assert_array_equal(out["lengths"]["video"], [3, 0, 3, 0])
    np.testing.assert_array_equal(out["masks"]["video"][:, 0], [1, 0, 1, 0])
    assert np.all(np.asarray(out["features"]["video"])[[1, 3]] == 0)
    np.testing.assert_array_equal(out["features"]["video"][0], batch["features"]["video"][0])
    # pmap devices take their rows of the one global draw: the same as jit.
    key = jax.random.key(3)
    whole = modality_dropout.drop(batch, key, "audio", 0.5)
    shards = jax.tree.map(lambda x: x.reshape((2, 2) + x.shape[1:]), batch)
    per_device = jax.pmap(lambda b: modality_dropout.drop(b, key, "audio", 0.5, "d"),
                          axis_name="d", devices=jax.devices()[:2])(shards)
    np.testing.assert_array_equal(np.asarray(per_device["lengths"]["video"]).reshape(-1),
                                  whole["lengths"]["video"])


def test_config_checks():
    from emobed_jax import config as config_lib

    for key, value, match in (("loss.modality_dropout", 1.0, "a probability in"),
                              ("loss.distill_target", "logits", "'outputs', 'embeddings'"),
                              ("loss.distill_regression", "l1", "'mse', 'ccc'"),
                              ("loss.distill_temperature", 0.0, "> 0"),
                              ("distill.teacher_modalities", "some", "'auxiliary', 'all'")):
        config = config_lib.get_base_config()
        config.method = "distill"
        config.update_from_flattened_dict({key: value})
        with pytest.raises(ValueError, match=match):
            config_lib.validate_config(config)
    config = config_lib.get_base_config()
    config.method = "distill"
    config.distill.teacher_modalities, config.distill.teacher_method = "all", "monomodal"
    with pytest.raises(ValueError, match="teacher on the target 'audio' alone"):
        config_lib.validate_config(config)


# ----------------------------------------------------------------------------- end to end


def _tiny(tiny_config, **kw):
    return tiny_config(method="distill", **{
        "model.encoder": "conv", "num_train_steps": 4, "eval_every_steps": 4,
        "checkpoint_every_steps": 4, "eval_splits": ("validation",), **kw})


def test_distill_run_with_a_teacher_of_the_same_program_then_loaded(tiny_config, tmp_path):
    from emobed_jax import run_dir
    from emobed_jax.inference import recognizer
    from emobed_jax.training import checkpoints, experiment, state as ts, teacher, train

    config = _tiny(tiny_config, **{"loss.modality_dropout": 0.5})
    work = str(tmp_path / "student")
    results = train.train_and_evaluate(config, work)
    assert results["step"] == 4 and np.isfinite(results["metrics"]["validation"]["ccc_mean"])
    tdir = os.path.join(work, teacher.TEACHER_DIR)
    tcfg = run_dir.read(tdir)["config"]
    assert (tcfg.method, tuple(tcfg.modalities), tcfg.target_modality) == (
        "monomodal", ("video",), "video")
    # The student stands alone: its checkpoint holds the target's parameters only, and a
    # recogniser loads it without the teacher.
    saved = checkpoints.Checkpointer(os.path.join(work, "checkpoints", "best"))
    params = saved.restore_arrays()["params"]
    saved.close()
    assert sorted(params) == ["encoder_audio", "projector_audio", "shared_head"]
    rec = recognizer.Recognizer.from_workdir(work)
    assert rec.predict_features(np.zeros((30, rec.input_dim), np.float32)).outputs.shape == (30, 2)

    # The same teacher loaded from its workdir, embeddings matched: a few steps through the loop;
    # the teacher's arrays never change and no gradient reaches them.
    loaded = _tiny(tiny_config, **{"distill.teacher_workdir": tdir,
                                   "loss.distill_target": "embeddings"})
    exp = experiment.build(loaded)
    t = teacher.prepare(loaded, str(tmp_path / "unused"), exp.data)
    assert t.modalities == ("video",) and not os.path.exists(tmp_path / "unused")
    for m in t.modalities:  # same training split: the normalisations agree exactly
        np.testing.assert_array_equal(t.tree["scale"][m], 1.0)
        np.testing.assert_array_equal(t.tree["shift"][m], 0.0)
    state, rng = exp.init_state(teacher=t)
    batch = exp.par.put_batch(exp.example_batch())
    g = jax.grad(lambda tt: ts._loss_fn(state.params, state.replace(teacher=tt), exp.objective,
                                        batch, rng, None)[0])(state.teacher)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree_util.tree_leaves(g))
    before = jax.device_get(state.teacher)
    step = exp.compile_train_step()
    for _ in range(2):
        state, metrics = step(state, batch, rng)
    assert float(metrics["distill"]) > 0 and float(metrics["distill_frames"]) > 0
    jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.teacher))


def test_distill_replicas_learn_from_the_teacher_of_their_own_seed(tiny_config, tmp_path):
    """Two seeds in one program: teacher replicas trained first (one per seed), and student
    replica k's state holds exactly teacher k's parameters."""
    from emobed_jax.training import experiment, replicas, teacher

    config = _tiny(tiny_config)
    config.num_seeds = 2
    work = str(tmp_path / "student")
    results = replicas.train_replicas(config, work)
    assert results["seeds"] == [0, 1]
    assert all(np.isfinite(m["ccc_mean"]) for m in results["metrics"]["validation"])
    tdir = os.path.join(work, teacher.TEACHER_DIR)
    exp = experiment.build(config, jax.devices()[:1])
    teachers = teacher.prepare_replicas(config, work, exp.data, [0, 1])  # finished: loaded
    states, _ = replicas.init_replicas(exp, [0, 1], teachers)
    for k in range(2):
        expected = replicas.load_best_params(tdir, k)
        got = jax.tree_util.tree_map(lambda x: x[k], states.teacher["params"])
        jax.tree_util.tree_map(np.testing.assert_array_equal, got, expected)
    first = jax.tree_util.tree_leaves(replicas.load_best_params(tdir, 0))
    second = jax.tree_util.tree_leaves(replicas.load_best_params(tdir, 1))
    assert any(not np.array_equal(a, b) for a, b in zip(first, second))
