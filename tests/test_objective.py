"""Tests of the objective's composition (emobed_jax.losses.objective.total_loss) and its config checks.

Every term is recomputed here in numpy float64 from first principles (CCC from its formula, weighted
cross-entropy from torch's definition, batch-hard triplet and supervised-contrastive losses by
explicit loops over anchors) on hand-made batches with padded frames, auxiliary modalities missing
in some examples and target_mask zeros. Padding and missing positions hold NaN, so a mask that
lets them through makes the value NaN. The project computes in float32, hence TOL.
"""
from __future__ import annotations

import dataclasses
import itertools

import jax
import numpy as np
import pytest

from emobed_jax import config as config_lib
from emobed_jax.losses import objective

TOL = 1e-5  # float32 sums over a few dozen terms of size ~1 (measured differences are ~1e-7)
TARGET, MODALITIES = "audio", ("audio", "text", "video")
EDGES = ((-0.1, 0.2), (0.0, 0.25))  # 3 quantile bins per dimension
W_AUX, W_ALIGN, MARGIN, TEMPERATURE = 0.7, 0.3, 0.6, 0.5
CLASS_WEIGHTS, SMOOTHING = (1.2, 0.5, 1.3), 0.1
# (method, align): the align loss only matters where the method has an alignment term.
CASES = [("monomodal", "triplet"), ("joint", "triplet"), ("crossmodal", "triplet"),
         ("crossmodal", "supcon"), ("emobed", "triplet"), ("emobed", "supcon")]


# ----------------------------------------------------------------------------- float64 references


def ref_ccc(x, y):
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    return 2 * cov / (np.mean((x - mx) ** 2) + np.mean((y - my) ** 2) + (mx - my) ** 2)


def ref_regression(kind, pred, gold, valid):
    """Mean over label dims of 1 - CCC (global or per sequence) or of the MSE, valid elements."""
    per_dim = []
    for k in range(pred.shape[-1]):
        p, g = pred[..., k], gold[..., k]
        if kind == "ccc":
            per_dim.append(1 - ref_ccc(p[valid], g[valid]))
        elif kind == "mse":
            per_dim.append(np.mean((p[valid] - g[valid]) ** 2))
        else:
            per_dim.append(np.mean([1 - ref_ccc(p[b][valid[b]], g[b][valid[b]])
                                    for b in range(p.shape[0]) if valid[b].any()]))
    return float(np.mean(per_dim))


def ref_weighted_ce(logits, labels, valid):
    """torch cross_entropy(weight=CLASS_WEIGHTS, label_smoothing=SMOOTHING, reduction='mean')."""
    w = np.asarray(CLASS_WEIGHTS)
    nll = smooth = total_w = 0.0
    for z, y in zip(logits[valid], labels[valid]):
        log_p = z - np.log(np.sum(np.exp(z)))
        nll += w[y] * -log_p[y]
        smooth += np.sum(w * -log_p)
        total_w += w[y]
    return ((1 - SMOOTHING) * nll + SMOOTHING / len(w) * smooth) / total_w


def ref_bin(label):
    """Joint quantile bin: per dimension the number of edges <= the value, dimension 0 fastest."""
    return sum(sum(v >= e for e in edges) * 3 ** k for k, (v, edges) in enumerate(zip(label, EDGES)))


def _unit(v):
    return v / np.linalg.norm(v)


def ref_triplet(anchors, cands, same):
    """Batch-hard: per anchor the farthest positive and the closest negative candidate."""
    losses = []
    for i, a in enumerate(anchors):
        d = [np.linalg.norm(_unit(a) - _unit(c)) for c in cands]
        pos = [d[j] for j in range(len(cands)) if same[i][j]]
        neg = [d[j] for j in range(len(cands)) if not same[i][j]]
        if pos and neg:
            losses.append(max(0.0, max(pos) - min(neg) + MARGIN))
    return (float(np.mean(losses)), True) if losses else (0.0, False)


def ref_supcon(anchors, cands, same):
    """Per anchor: mean over its positives of -log softmax(cos / T) over all candidates."""
    losses = []
    for i, a in enumerate(anchors):
        logits = np.array([_unit(a) @ _unit(c) / TEMPERATURE for c in cands])
        log_p = logits - np.log(np.sum(np.exp(logits)))
        pos = [log_p[j] for j in range(len(cands)) if same[i][j]]
        if pos:
            losses.append(-np.mean(pos))
    return (float(np.mean(losses)), True) if losses else (0.0, False)


def ref_align(align, emb, present, labels):
    """Mean over the active (target->aux, aux->target) terms; rows = the compared frames/utterances.

    emb: modality -> [N, E]; present: modality -> bool [N]; labels: [N] class or bin ids.
    """
    term = ref_triplet if align == "triplet" else ref_supcon
    values = []
    for aux in sorted(m for m in MODALITIES if m != TARGET):
        for a_mod, c_mod in ((TARGET, aux), (aux, TARGET)):
            rows_a, rows_c = np.flatnonzero(present[a_mod]), np.flatnonzero(present[c_mod])
            same = labels[rows_a][:, None] == labels[rows_c][None, :]
            value, active = term(emb[a_mod][rows_a], emb[c_mod][rows_c], same)
            if active:
                values.append(value)
    return float(np.mean(values)) if values else 0.0


def ref_total(method, task_terms, align):
    """The composition of README's method table."""
    aux = sum(v for m, v in task_terms.items() if m != TARGET)
    uses_aux, uses_align = method in ("joint", "emobed"), method in ("crossmodal", "emobed")
    return task_terms[TARGET] + W_AUX * aux * uses_aux + W_ALIGN * align * uses_align


# ----------------------------------------------------------------------------- hand-made batches


def frame_batch(seed=0):
    """B=4 sequences of T=5 frames; video missing in example 2, text in example 3."""
    rng = np.random.default_rng(seed)
    lengths = {"audio": np.array([5, 3, 4, 2]), "video": np.array([5, 3, 0, 2]),
               "text": np.array([4, 3, 4, 0])}
    masks = {m: (np.arange(5)[None, :] < n[:, None]).astype(np.float32) for m, n in lengths.items()}
    target_mask = masks[TARGET].copy()
    target_mask[0, 1] = 0.0  # a frame without a label
    targets = rng.uniform(-0.5, 0.6, size=(4, 5, 2))
    targets[target_mask == 0] = np.nan
    outputs = {m: np.where(masks[m][..., None] > 0, rng.normal(size=(4, 5, 2)), np.nan)
               for m in MODALITIES}
    emb = {m: np.where(masks[m][..., None] > 0, rng.normal(size=(4, 5, 3)), np.nan)
           for m in MODALITIES}
    batch = {"targets": targets, "target_mask": target_mask, "masks": masks, "lengths": lengths}
    return emb, outputs, batch


def utterance_batch(task, seed=1):
    """B=6 utterances; video missing in example 2, text in example 4, no label in example 5."""
    rng = np.random.default_rng(seed)
    lengths = {"audio": np.full(6, 7), "video": np.array([7, 7, 0, 7, 7, 7]),
               "text": np.array([7, 7, 7, 7, 0, 7])}
    target_mask = np.array([1, 1, 1, 1, 1, 0], np.float32)
    if task == "category":
        targets = np.array([0, 1, 2, 1, 0, 2])
        width = 3
    else:
        targets = rng.uniform(-0.5, 0.6, size=(6, 2))
        targets[5] = np.nan
        width = 2
    outputs = {m: np.where(lengths[m][:, None] > 0, rng.normal(size=(6, width)), np.nan)
               for m in MODALITIES}
    emb = {m: np.where(lengths[m][:, None] > 0, rng.normal(size=(6, 3)), np.nan)
           for m in MODALITIES}
    batch = {"targets": targets, "target_mask": target_mask, "lengths": lengths,
             "masks": {m: np.ones((6, 1), np.float32) for m in MODALITIES}}
    return emb, outputs, batch


def make_objective(method, align, level, task="regression", regression="ccc", w_aux=W_AUX):
    return objective.Objective(
        method=method, target=TARGET, modalities=(TARGET,) if method == "monomodal" else MODALITIES,
        task=task, level=level, regression=regression,
        class_weights=CLASS_WEIGHTS if task == "category" else None,
        label_smoothing=SMOOTHING if task == "category" else 0.0, w_aux=w_aux, w_align=W_ALIGN,
        align=align, margin=MARGIN, mining="batch_hard", direction="both",
        positives="class" if task == "category" else "bins", temperature=TEMPERATURE,
        align_frames=32, bin_edges=EDGES)  # 32 >= B*T: every valid frame takes part


def run(obj, emb, outputs, batch):
    to_jax = lambda tree: jax.tree.map(jax.numpy.asarray, tree)  # noqa: E731
    fn = jax.jit(lambda e, o, b, r: objective.total_loss(obj, e, o, b, r))
    loss, metrics = fn(to_jax(emb), to_jax(outputs), to_jax(batch), jax.random.key(0))
    return float(loss), {k: float(v) for k, v in metrics.items()}


def check(method, obj, emb, outputs, batch, task_terms, align):
    """Asserts every logged term and the total against the float64 references."""
    loss, metrics = run(obj, emb, outputs, batch)
    used = [TARGET] + ([m for m in MODALITIES if m != TARGET] if obj.uses_aux_task else [])
    assert sorted(k for k in metrics if k.startswith("task_")) == sorted(f"task_{m}" for m in used)
    for m in used:
        assert metrics[f"task_{m}"] == pytest.approx(task_terms[m], abs=TOL)
    assert ("align" in metrics) == obj.uses_align == ("align_active_terms" in metrics)
    if obj.uses_align:
        assert metrics["align"] == pytest.approx(align, abs=TOL)
        assert align > 0.05  # the alignment term is really exercised
    expected = ref_total(method, task_terms, align)
    assert loss == pytest.approx(expected, abs=TOL) and metrics["loss"] == loss
    # The check can fail: a composition with another w_aux / w_align is far outside TOL.
    if obj.uses_aux_task:
        assert abs(loss - (expected + 0.1 * sum(task_terms[m] for m in used[1:]))) > 100 * TOL
    if obj.uses_align:
        assert abs(loss - (expected + 0.1 * align)) > 100 * TOL
    return metrics


# ----------------------------------------------------------------------------- composition


@pytest.mark.parametrize("method, align", CASES)
def test_total_at_frame_level(method, align):
    emb, outputs, batch = frame_batch()
    valid_t = batch["target_mask"] > 0
    task_terms = {TARGET: ref_regression("ccc", outputs[TARGET], batch["targets"], valid_t)}
    for m in MODALITIES[1:]:
        task_terms[m] = ref_regression("ccc", outputs[m], batch["targets"],
                                       valid_t & (batch["masks"][m] > 0))
    # The compared frames: labelled target frames; a modality is present where its mask is on.
    frames = valid_t & (batch["masks"][TARGET] > 0)
    labels = np.array([ref_bin(v) for v in batch["targets"][frames]])
    assert len(set(labels.tolist())) >= 3  # positives and negatives exist
    present = {m: batch["masks"][m][frames] > 0 for m in MODALITIES}
    align_ref = ref_align(align, {m: emb[m][frames] for m in MODALITIES}, present, labels)
    metrics = check(method, make_objective(method, align, "frame"), emb, outputs, batch,
                    task_terms, align_ref)
    if method in ("crossmodal", "emobed"):
        assert metrics["align_active_terms"] == 4.0  # 2 auxiliaries x 2 directions


@pytest.mark.parametrize("method, align", CASES)
def test_total_at_utterance_level(method, align):
    emb, outputs, batch = utterance_batch("regression")
    here = {m: (batch["target_mask"] > 0) & (batch["lengths"][m] > 0) for m in MODALITIES}
    task_terms = {m: ref_regression("ccc", outputs[m], batch["targets"], here[m])
                  for m in MODALITIES}
    labels = np.array([ref_bin(v) if here[TARGET][i] else -1
                       for i, v in enumerate(batch["targets"])])
    align_ref = ref_align(align, emb, here, labels)
    check(method, make_objective(method, align, "utterance"), emb, outputs, batch, task_terms,
          align_ref)


@pytest.mark.parametrize("method, align", CASES)
def test_total_for_categories(method, align):
    emb, outputs, batch = utterance_batch("category")
    here = {m: (batch["target_mask"] > 0) & (batch["lengths"][m] > 0) for m in MODALITIES}
    task_terms = {m: ref_weighted_ce(outputs[m], batch["targets"], here[m]) for m in MODALITIES}
    align_ref = ref_align(align, emb, here, batch["targets"])
    check(method, make_objective(method, align, "utterance", task="category"), emb, outputs,
          batch, task_terms, align_ref)


@pytest.mark.parametrize("regression", ["ccc", "sequence_ccc", "mse"])
def test_regression_losses_at_frame_level(regression):
    emb, outputs, batch = frame_batch(seed=3)
    valid = batch["target_mask"] > 0
    task_terms = {m: ref_regression(regression, outputs[m], batch["targets"],
                                    valid & (batch["masks"][m] > 0)) for m in MODALITIES}
    task_terms[TARGET] = ref_regression(regression, outputs[TARGET], batch["targets"], valid)
    check("joint", make_objective("joint", "triplet", "frame", regression=regression), emb,
          outputs, batch, task_terms, 0.0)
    others = [r for r in ("ccc", "sequence_ccc", "mse") if r != regression]
    for other in others:  # the three losses really differ on this batch
        assert abs(ref_regression(other, outputs[TARGET], batch["targets"], valid)
                   - task_terms[TARGET]) > 100 * TOL


def test_w_aux_scales_the_auxiliary_terms():
    emb, outputs, batch = utterance_batch("regression")
    low, m_low = run(make_objective("joint", "triplet", "utterance", w_aux=0.2), emb, outputs,
                     batch)
    high, _ = run(make_objective("joint", "triplet", "utterance", w_aux=1.2), emb, outputs, batch)
    aux = m_low["task_text"] + m_low["task_video"]
    assert aux > 0.1 and high - low == pytest.approx(1.0 * aux, abs=TOL)


# ----------------------------------------------------------------------------- config checks


def _config(**loss):
    config = config_lib.get_base_config()
    for key, value in loss.items():
        config.loss[key] = value
    return config


def test_valid_defaults_pass_and_tables_are_the_dispatch_keys():
    for level in (None, "frame", "utterance"):
        objective.validate_config(_config(), level)
    assert objective.METHODS == ("monomodal", "joint", "crossmodal", "emobed", "distill")
    assert set(objective.METHOD_TERMS) == set(objective.METHODS)


@pytest.mark.parametrize("key, value, match", [
    ("num_bins", 1, r"config\.loss\.num_bins=1 .*an integer >= 2"),
    ("temperature", 0.0, r"config\.loss\.temperature=0\.0 .*> 0"),
    ("pos_threshold", -0.1, r"config\.loss\.pos_threshold=-0\.1 .*>= 0"),
    ("neg_threshold", 0.05, r"config\.loss\.neg_threshold=0\.05 .*>= config\.loss\.pos_threshold"),
    ("align_frames", 0, r"config\.loss\.align_frames=0 .*a positive integer"),
    ("mining", "hardest", r"config\.loss\.mining='hardest' .*\['batch_hard', 'semi_hard'\]"),
    ("label_smoothing", 1.5, r"config\.loss\.label_smoothing=1\.5"),
])
def test_validate_config_rejects(key, value, match):
    with pytest.raises(ValueError, match=match):
        objective.validate_config(_config(**{key: value}))


def test_sequence_ccc_needs_frame_level():
    config = _config(regression="sequence_ccc")
    objective.validate_config(config)  # fine without a dataset
    objective.validate_config(config, "frame")
    with pytest.raises(ValueError, match=r"config\.loss\.regression='sequence_ccc' .*utterance"):
        objective.validate_config(config, "utterance")
    with pytest.raises(ValueError, match=r"config\.loss\.regression"):
        objective.objective_from_config(config, "utterance")
    config.task = "category"  # the regression loss is unused for categories
    objective.validate_config(config, "utterance")


def test_objective_from_config_matches_the_hand_built_objective():
    config = config_lib.get_base_config()
    config.modalities, config.target_modality = MODALITIES, TARGET
    for key, value in dict(w_aux=W_AUX, w_align=W_ALIGN, margin=MARGIN, temperature=TEMPERATURE,
                           align_frames=32).items():
        config.loss[key] = value
    train = np.array(list(itertools.product([-0.4, 0.1, 0.5], [-0.3, 0.1, 0.5])))
    obj = objective.objective_from_config(config, "frame", train_targets=train)
    expected = dataclasses.replace(make_objective("emobed", "triplet", "frame"),
                                   bin_edges=obj.bin_edges)
    assert obj == expected
    np.testing.assert_allclose(obj.bin_edges, np.quantile(train, [1 / 3, 2 / 3], axis=0).T,
                               rtol=1e-6)
