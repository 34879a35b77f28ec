"""Helpers for tests that run experiments/main.py as a subprocess."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_flags(data_dir, workdir, **extra):
    """CLI flags equal to conftest.make_tiny_config (conv encoder for speed)."""
    overrides = {
        "data.config": "tiny", "data.data_dir": data_dir, "data.window_frames": 50,
        "data.window_hop_frames": 25, "data.prefetch_threads": 1, "batch_size": 8,
        "eval_batch_size": 4, "num_train_steps": 8, "eval_every_steps": 4,
        "checkpoint_every_steps": 4, "log_every_steps": 2, "model.hidden": 16,
        "model.num_layers": 1, "model.embedding_dim": 16, "model.head_hidden": "(16,)",
        "model.encoder": "conv", "optimizer.warmup_steps": 2, "loss.align_frames": 64,
    }
    overrides.update(extra)
    return ["--config=" + os.path.join(ROOT, "configs", "synthetic.py"), f"--workdir={workdir}"] + [
        f"--config.{k}={v}" for k, v in overrides.items()]


def run_main(args, expect_ok=True):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "main.py")] + args,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
