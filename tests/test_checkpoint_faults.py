"""Damaged, deleted and half-written checkpoints: each is named and the run resumes from the newest
intact checkpoint to exactly the uninterrupted result; a soak test kills a run three times.

Every test compares with one uninterrupted in-process run on all (two) test devices, which is
the same computation as `experiments/main.py` in a subprocess (the soak test relies on that).
"""
import glob
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cli_helpers import ROOT, run_main, tiny_flags
from emobed_jax.training import checkpoints, experiment, train

# 24 steps: `latest` keeps steps 20 and 24; validation (and maybe `best`) at 8, 16 and 24.
STEPS = {"num_train_steps": 24, "checkpoint_every_steps": 4, "eval_every_steps": 8,
         "log_every_steps": 4}
LAST = STEPS["num_train_steps"]


def _config(data_dir):
    """The config `tiny_flags(data_dir, ..., **STEPS)` passes to experiments/main.py."""
    from configs import synthetic

    config = synthetic.get_config()
    flags = tiny_flags(data_dir, "unused", **STEPS)
    overrides = dict(f[len("--config."):].split("=", 1) for f in flags if f.startswith("--config."))
    config.update_from_flattened_dict({k: _typed(config, k, v) for k, v in overrides.items()})
    return config


def _typed(config, key, value: str):
    # Flags are strings; the config's own field types say how to read them, as the CLI does.
    node = config
    for part in key.split(".")[:-1]:
        node = node[part]
    current = node[key.split(".")[-1]]
    if current is None or isinstance(current, str):
        return value
    if isinstance(current, tuple):
        return tuple(int(x) for x in value.strip("()").split(",") if x.strip())
    return type(current)(value)


@pytest.fixture(scope="module")
def reference(synthetic_data_dir, tmp_path_factory):
    """(workdir, results) of the uninterrupted run."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    results = train.train_and_evaluate(_config(synthetic_data_dir), workdir)
    return workdir, results


@pytest.fixture(scope="module")
def template(synthetic_data_dir):
    """A freshly initialised train state of the config (the target restores need)."""
    return experiment.build(_config(synthetic_data_dir)).init_state()[0]


def _copy(reference, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir)
    os.remove(os.path.join(workdir, "results.json"))
    return workdir


def _arrays(workdir, step=LAST, kind="latest"):
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", kind))
    arrays = ckpt.restore_arrays(step)
    ckpt.close()
    return arrays


def _assert_same_run(workdir, reference):
    """The final parameters, optimiser state and results equal the uninterrupted run's."""
    a, b = _arrays(reference[0]), _arrays(workdir)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a["params"], b["params"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, a["opt_state"], b["opt_state"])
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["metrics"] == reference[1]["metrics"]
    assert results["best_step"] == reference[1]["best_step"]


def _truncate_data_file(step_dir):
    """Cuts the largest array data file to 100 bytes; returns its path in the checkpoint."""
    path = max(glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*")),
               key=os.path.getsize)
    os.truncate(path, 100)
    return os.path.relpath(path, step_dir)


def _delete(name):
    def damage(step_dir):
        os.remove(os.path.join(step_dir, name))
        return name
    return damage


def _truncate_without_list(step_dir):
    # As a step written by an older version, or killed between orbax's commit and the list.
    os.remove(os.path.join(step_dir, checkpoints.FILE_LIST))
    _truncate_data_file(step_dir)
    return None


# The rows 1 and 2: what was damaged -> what the message says about it.
DAMAGE = {
    "data file truncated": (_truncate_data_file, "{file} has 100 bytes, "),
    "state/_METADATA deleted": (_delete("state/_METADATA"), "{file} is missing"),
    "meta/metadata deleted": (_delete("meta/metadata"), "{file} is missing"),
    "orbax manifest deleted": (_delete("state/manifest.ocdbt"), "{file} is missing"),
    "truncated, no file list": (_truncate_without_list,
                                "reading it failed (Exception: Encountered error while reading"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_latest_is_named_and_the_newest_intact_step_restored(reference, template, tmp_path,
                                                                      caplog, case):
    workdir = _copy(reference, tmp_path)
    damage, message = DAMAGE[case]
    root = os.path.join(workdir, "checkpoints")
    name = damage(os.path.join(root, "latest", str(LAST)))
    latest = checkpoints.Checkpointer(os.path.join(root, "latest"))
    best = checkpoints.Checkpointer(os.path.join(root, "best"))
    with pytest.raises(checkpoints.DamagedCheckpointError) as info:
        latest.restore(template, LAST)
    assert f"checkpoint {root}/latest/{LAST} is damaged: " + message.format(file=name) in str(info.value)
    assert "\n" not in str(info.value)  # one line, no orbax traceback
    with caplog.at_level(logging.WARNING):
        state, meta, kind, step = checkpoints.restore_newest_intact(
            template, {"latest": latest, "best": best})
    latest.close(), best.close()
    # The newest intact checkpoint: `best` at the last step if validation improved there.
    expected = ("best", LAST) if reference[1]["best_step"] == LAST else ("latest", LAST - 4)
    assert (kind, step) == expected
    assert meta["best_step"] == (reference[1]["best_step"] if kind == "best" else meta["best_step"])
    saved = _arrays(reference[0], step, kind)
    jax.tree_util.tree_map(np.testing.assert_array_equal, saved["params"],
                           jax.device_get(state.params))
    log = caplog.text
    assert f"latest/{LAST} is damaged" in log and "trying the next older checkpoint" in log
    assert f"moved the damaged checkpoint latest/{LAST} to {root}/damaged/latest_{LAST}" in log
    assert f"resuming from the newest intact checkpoint: {kind} step {step}" in log
    assert os.path.isdir(os.path.join(root, "damaged", f"latest_{LAST}"))
    assert not os.path.exists(os.path.join(root, "latest", str(LAST)))


def test_damaged_latest_and_best_fall_back_and_resume_to_the_uninterrupted_run(reference, tmp_path,
                                                                               synthetic_data_dir,
                                                                               caplog):
    """Row 1 end to end: the newest checkpoints (of both kinds, when at the same step) are
    truncated; training replays from `latest/20`, rewrites those steps and ends as uninterrupted."""
    workdir = _copy(reference, tmp_path)
    root = os.path.join(workdir, "checkpoints")
    _truncate_data_file(os.path.join(root, "latest", str(LAST)))
    if reference[1]["best_step"] == LAST:
        _truncate_data_file(os.path.join(root, "best", str(LAST)))
    with caplog.at_level(logging.INFO):
        train.train_and_evaluate(_config(synthetic_data_dir), workdir)
    assert f"resuming from the newest intact checkpoint: latest step {LAST - 4}" in caplog.text
    _assert_same_run(workdir, reference)


def test_deleted_latest_resumes_from_best(reference, tmp_path, synthetic_data_dir, caplog,
                                          monkeypatch):
    """Row 3: a run stopped right after writing `best/8` (before `latest/8`), and the user
    deleted `checkpoints/latest/<step>` to recover: the run resumes from `best/8` (its meta
    carries the best value and step) instead of restarting from step 0 and colliding with it."""
    workdir = str(tmp_path / "run")
    original_save = checkpoints.Checkpointer.save

    def crash_after_best(self, state, meta):
        original_save(self, state, meta)
        if self.directory.endswith("best") and int(jax.device_get(state.step)) == 8:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(checkpoints.Checkpointer, "save", crash_after_best)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(_config(synthetic_data_dir), workdir)
    monkeypatch.setattr(checkpoints.Checkpointer, "save", original_save)
    latest = os.path.join(workdir, "checkpoints", "latest")
    assert os.listdir(latest) == ["4"]
    shutil.rmtree(os.path.join(latest, "4"))
    with caplog.at_level(logging.INFO):
        train.train_and_evaluate(_config(synthetic_data_dir), workdir)
    assert (f"resumed from step 8 in {os.path.join(workdir, 'checkpoints', 'best')}"
            in caplog.text)
    _assert_same_run(workdir, reference)


def test_nothing_intact_says_what_to_delete(reference, tmp_path, synthetic_data_dir):
    workdir = _copy(reference, tmp_path)
    root = os.path.join(workdir, "checkpoints")
    shutil.rmtree(os.path.join(root, "latest"))
    best_step = reference[1]["best_step"]
    name = _truncate_data_file(os.path.join(root, "best", str(best_step)))
    with pytest.raises(checkpoints.NoIntactCheckpointError,
                       match=rf"no intact checkpoint to resume from in {root} \(best/{best_step}: "
                             rf"{name} has 100 bytes, \d+ were written\)\. To start over from step "
                             rf"0, delete {root} \(or train into a new --workdir\)"):
        train.train_and_evaluate(_config(synthetic_data_dir), workdir)
    assert os.path.isdir(os.path.join(root, "best", str(best_step)))  # nothing moved or deleted


def test_a_step_written_again_replaces_the_old_one(template, tmp_path):
    """A step that exists already (from a trajectory a resume abandoned) is replaced rather than
    stopping the run with orbax's `StepAlreadyExistsError`."""
    ckpt = checkpoints.Checkpointer(str(tmp_path / "best"))
    ckpt.save(template, {"best_step": 0, "best_value": 0.1})
    ckpt.save(template, {"best_step": 0, "best_value": 0.2})
    assert ckpt.all_steps() == [0] and ckpt.verify(0)
    assert ckpt.read_meta(0)["best_value"] == 0.2
    ckpt.close()


def test_eval_names_a_damaged_best_checkpoint_and_what_to_do(reference, tmp_path):
    workdir = _copy(reference, tmp_path)
    best_step = reference[1]["best_step"]
    best_dir = os.path.join(workdir, "checkpoints", "best")
    name = _truncate_data_file(os.path.join(best_dir, str(best_step)))
    with pytest.raises(checkpoints.DamagedCheckpointError,
                       match=rf"checkpoint {best_dir}/{best_step} is damaged: {name} has 100 bytes, "
                             rf"\d+ were written\. Evaluate another checkpoint with "
                             rf"--checkpoint_step=N \(steps kept in .*latest: \[{LAST - 4}, {LAST}\]\)"):
        train.evaluate_checkpoint(None, workdir, plots=False)


def _wait(proc, condition, what, timeout=120.0):
    """Polls `condition` every millisecond until it holds; fails if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before {what}")
        time.sleep(0.001)
    raise AssertionError(f"timed out waiting for {what}")


def _tmp_dirs(root):
    return {os.path.join(kind, n) for kind in ("latest", "best")
            if os.path.isdir(os.path.join(root, kind))
            for n in os.listdir(os.path.join(root, kind)) if ".orbax-checkpoint-tmp" in n}


def test_soak_three_sigkills_then_resume_equal_an_uninterrupted_run(reference, synthetic_data_dir,
                                                                     tmp_path):
    """One run, SIGKILLed at three moments a seeded RNG picks, resumed each time, ends with the
    uninterrupted run's parameters and results.

    The moments are found by watching the workdir from the test (no hooks in the program):
    inside a checkpoint write is while orbax's `<step>.orbax-checkpoint-tmp*` folder exists (the
    RNG picks the first or second write the process starts); inside evaluation is the final
    evaluation, after the last `latest` step is committed and before `results.json` exists
    (periodic validation leaves no trace on disk to watch); between steps is a random delay
    after the process's first new checkpoint. The first two come in the RNG's order, evaluation
    last (only the end of the run evaluates without training afterwards).
    """
    rng = random.Random(20240611)
    # First a SIGTERM (the step finishes, `latest` is saved, status 143), then the SIGKILLs.
    moments = ["SIGTERM"] + rng.sample(["checkpoint write", "between steps"], 2) + ["evaluation"]
    workdir = str(tmp_path)
    root = os.path.join(workdir, "checkpoints")
    args = [sys.executable, os.path.join(ROOT, "experiments", "main.py")] + tiny_flags(
        synthetic_data_dir, workdir, **STEPS)
    for moment in moments:
        with open(tmp_path / "output.txt", "w") as out:  # a file: a full pipe would block the run
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            before = set(os.listdir(os.path.join(root, "latest"))) if os.path.isdir(
                os.path.join(root, "latest")) else set()
            if moment == "checkpoint write":
                seen, nth = set(), rng.choice([1, 2])

                def writing():
                    now = _tmp_dirs(root)
                    seen.update(now)
                    return len(seen) >= nth and bool(now)
                _wait(proc, writing, f"checkpoint write {nth}")
            elif moment in ("between steps", "SIGTERM"):
                _wait(proc, lambda: any(n.isdigit() for n in set(os.listdir(
                    os.path.join(root, "latest"))) - before) if os.path.isdir(
                    os.path.join(root, "latest")) else False, "a new checkpoint")
                time.sleep(rng.uniform(0.0, 0.1))
            else:
                _wait(proc, lambda: os.path.isdir(os.path.join(root, "latest", str(LAST))),
                      "the last checkpoint")
                time.sleep(rng.uniform(0.0, 0.05))
            assert proc.poll() is None, f"the run ended before the kill ({moment})"
            if moment == "SIGTERM":
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 143
                assert "stopped by SIGTERM after step" in (tmp_path / "output.txt").read_text()
                continue
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        if moment == "checkpoint write":
            assert _tmp_dirs(root), "the kill missed the checkpoint write"
        assert not os.path.exists(os.path.join(workdir, "results.json")), moment
    run_main(tiny_flags(synthetic_data_dir, workdir, **STEPS))
    assert not _tmp_dirs(root)  # the interrupted write's temporary folder was cleaned up
    _assert_same_run(workdir, reference)


def test_a_damaged_best_is_found_at_resume_not_at_the_end(reference, tmp_path, synthetic_data_dir,
                                                          caplog):
    """`best` damaged, the run resumed from `latest`: the damage is reported when resuming, the
    step set aside, and with no validation to come the final state gives the results."""
    workdir = _copy(reference, tmp_path)
    best_step = reference[1]["best_step"]
    _truncate_data_file(os.path.join(workdir, "checkpoints", "best", str(best_step)))
    with caplog.at_level(logging.INFO):
        results = train.train_and_evaluate(_config(synthetic_data_dir), workdir)
    assert f"checkpoint {os.path.join(workdir, 'checkpoints', 'best', str(best_step))}" \
           in caplog.text or f"best/{best_step}" in caplog.text
    assert "the best checkpoint is chosen again" in caplog.text.lower()
    assert results["best_step"] == LAST
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "damaged", f"best_{best_step}"))
