"""experiments/benchmark.py runs end to end on tiny shapes; the PyTorch reference's losses agree."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_smoke_writes_every_key(tmp_path):
    out = tmp_path / "bench" / "result.json"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the benchmark sets its own device count
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "benchmark.py"), "--shape=recola_blstm",
         "--steps=2", "--length=20", "--batch=4", "--repeats=1", "--scaling=false",
         "--torch=false", "--devices=2", "--pipeline_batches=3", f"--output={out}"],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("shape", "batch", "length", "devices", "tcmalloc", "versions", "jax", "torch",
                "pipeline", "eval", "scaling", "loop_probe", "peak_rss_mb", "other_cores_busy"):
        assert key in result, key
    assert result["shape"] == "recola_blstm" and result["devices"] == 2
    fused = result["jax"]["fused"]
    for key in ("step_ms", "steps_per_s", "frames_per_s", "compile_s", "final_loss"):
        assert np.isfinite(fused[key]) and fused[key] > 0, key
    assert result["torch"] is None and result["scaling"] == [] and result["loop_probe"] is None
    assert result["pipeline"]["examples_per_s"] > 0 and result["pipeline"]["ratio"] > 0
    assert "jax-fused" in proc.stdout and "input pipeline" in proc.stdout


def test_benchmark_step_is_the_training_step():
    """The benchmark times the model, objective and step training builds: on a fixed batch its
    steps through the training loop lower the loss, and its parameters are those of
    `experiment.model_and_objective` for the base config."""
    import jax

    sys.path.insert(0, os.path.join(ROOT, "experiments"))
    import benchmark

    dims = {"audio": 6, "video": 3}
    runner = benchmark.JaxRunner(dims, benchmark.synthetic_batch(dims, 4, 16), "auto")
    losses = []
    for _ in range(12):
        runner.step()
        losses.append(float(runner.loss))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses
    assert int(jax.device_get(runner.state.step)) == 12
    params = runner.state.params
    assert sorted(params) == ["encoder_audio", "encoder_video", "projector_audio",
                              "projector_video", "shared_head"]
    assert runner.edges.shape == (2, 2)  # 3 quantile bins per dimension


def test_loop_probe_times_one_device_streams(tmp_path):
    out = tmp_path / "probe.json"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "benchmark.py"), "--shape=crossmodal",
         "--steps=1", "--length=12", "--batch=4", "--repeats=1", "--scaling=false",
         "--torch=false", "--devices=2", "--pipeline_batches=2", "--loop_probe=true",
         f"--output={out}"], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    p = json.loads(out.read_text())["loop_probe"]
    # crossmodal: 2 modalities x 2 directions; batch 4 over 2 devices: 2 rows per device.
    assert (p["streams"], p["rows_per_device"], p["length"], p["hidden"]) == (4, 2, 12, 64)
    assert p["extra_store_bytes_per_step"] == 5 * 4 * 2 * 64 * 4
    for key in ("forward_ms", "forward_output_only_ms", "step_matmuls_ms", "backward_ms"):
        assert np.isfinite(p[key]) and p[key] > 0, key
    assert "loop probe (4 streams x 2 rows, T=12" in proc.stdout


def test_benchmark_rejects_bad_flags(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "benchmark.py"), "--steps=0",
         f"--output={tmp_path / 'x.json'}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--steps=0: expected a positive integer" in proc.stderr


def test_torch_reference_ccc_and_triplet_match_the_project():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, os.path.join(ROOT, "experiments"))
    import torch_reference

    from emobed_jax.losses import crossmodal, task

    rng = np.random.default_rng(0)
    pred, gold = rng.normal(size=(3, 7, 2)), rng.normal(size=(3, 7, 2))
    mask = (rng.uniform(size=(3, 7)) > 0.3).astype(np.float32)
    ours = float(task.ccc_loss(pred, gold, mask > 0)[0])
    ref = float(torch_reference.ccc_loss(torch, torch.tensor(pred), torch.tensor(gold),
                                         torch.tensor(mask)))
    assert ref == pytest.approx(ours, abs=1e-6)
    a, c = rng.normal(size=(12, 5)), rng.normal(size=(12, 5))
    bins = rng.integers(0, 3, size=12)
    pos = bins[:, None] == bins[None, :]
    ours = float(crossmodal.triplet_loss(a, c, pos, ~pos, margin=0.2)[0])
    ref = float(torch_reference.triplet_loss(torch, torch.tensor(a), torch.tensor(c),
                                             torch.tensor(bins), 0.2))
    assert ref == pytest.approx(ours, abs=1e-5)


def test_replica_step_timing_runs_k_replicas_on_k_devices():
    """`benchmark.py --num_seeds=K`'s per-step part (experiments/replica_speed.py) in its own
    process: one seed on one device against K replicas on K CPU devices."""
    sys.path.insert(0, os.path.join(ROOT, "experiments"))
    import replica_speed

    result = replica_speed.step_throughput("crossmodal", 2, steps=2, batch=4, length=20)
    assert result["shape"] == "crossmodal"
    for key in ("one_seed_ms", "replicas_ms", "replicas_ms_per_seed", "step_speedup"):
        assert np.isfinite(result[key]) and result[key] > 0, key
    assert result["replicas_ms_per_seed"] == pytest.approx(result["replicas_ms"] / 2)
    assert result["step_speedup"] == pytest.approx(result["one_seed_ms"] / result["replicas_ms_per_seed"])
    text = replica_speed.format_result({
        "end_to_end": {"num_seeds": 2, "steps": 3, "sequential_s": [1.0, 2.0],
                       "sequential_total_s": 3.0, "replicas_s": 2.0, "speedup": 1.5},
        "step": [result]})
    assert "one after another 3.0 s (1.0, 2.0), one program 2.0 s: 1.50x" in text
