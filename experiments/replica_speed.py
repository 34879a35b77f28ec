"""Speed of training K seeds as replicas in one program, for `experiments/benchmark.py --num_seeds=K`.

Two measurements, each side by side in one run (docs/benchmark.md "Seeds as replicas"):

* end to end, as a user runs it: `experiments/main.py --config=configs/synthetic.py
  --config.method=emobed --config.num_train_steps=N` for seeds 0..K-1 one program after another,
  against one program with `--config.num_seeds=K` (start-up, dataset reading, compile, training,
  validation and the final evaluation all count; the dataset is prepared once before timing).
  Each program runs with main.py's defaults: one CPU device for one seed, one CPU device per
  replica for K seeds (`training.replicas.claim_cpu_devices`). The per-seed validation metrics of
  both sides are reported too: replica k is the same computation as the run with seed k.
* the training step alone, per benchmark shape (`benchmark.SHAPES`): one seed's jitted step on one
  device, against K replicas vmapped and split over K CPU devices, in child processes (the device
  count is fixed when JAX starts). Reported as milliseconds per step and per replica.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)


def _clean_env() -> dict:
    """The environment main.py sees when a user starts it: no device count forced by the
    benchmark's own XLA_FLAGS."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    env.pop("JAX_PLATFORMS", None)
    return env


def _main_py(workdir: str, data_dir: str, steps: int, extra: list) -> tuple[float, dict]:
    """Runs experiments/main.py once; returns (wall seconds, results.json)."""
    cmd = [sys.executable, os.path.join(_HERE, "main.py"), "--config=configs/synthetic.py",
           "--config.method=emobed", f"--config.num_train_steps={steps}",
           f"--config.data.data_dir={data_dir}", f"--workdir={workdir}"] + extra
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=_ROOT, env=_clean_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    with open(os.path.join(workdir, "results.json")) as f:
        return seconds, json.load(f)


def end_to_end(num_seeds: int, steps: int) -> dict:
    """Seeds 0..K-1 as K programs one after another, and as one program with K replicas."""
    with tempfile.TemporaryDirectory(prefix="replica_speed_") as tmp:
        data_dir = os.path.join(tmp, "data")
        _main_py(os.path.join(tmp, "warmup"), data_dir, 1, [])  # prepares the dataset once
        sequential, seq_val = [], []
        for seed in range(num_seeds):
            seconds, res = _main_py(os.path.join(tmp, f"seed{seed}"), data_dir, steps,
                                    [f"--config.seed={seed}"])
            sequential.append(seconds)
            seq_val.append(res["metrics"]["validation"]["ccc_mean"])
        together, res = _main_py(os.path.join(tmp, "replicas"), data_dir, steps,
                                 [f"--config.num_seeds={num_seeds}"])
        rep_val = [m["ccc_mean"] for m in res["metrics"]["validation"]]
    total = sum(sequential)
    return {"num_seeds": num_seeds, "steps": steps, "sequential_s": sequential,
            "sequential_total_s": total, "replicas_s": together, "speedup": total / together,
            "validation_ccc_mean": {"sequential": seq_val, "replicas": rep_val}}


def _child(shape: str, num_seeds: int, steps: int, batch: int, length: int) -> dict:
    """In a fresh process: ms per step of one seed on one device and of K replicas on K devices."""
    import jax

    jax.config.update("jax_num_cpu_devices", num_seeds)
    import benchmark
    from emobed_jax.data import loading
    from emobed_jax.training import experiment, replicas, state as ts

    dims = benchmark.SHAPES[shape]
    example = benchmark.synthetic_batch(dims, batch, length)
    config = benchmark.benchmark_config(dims, "fused")
    info = loading.DatasetInfo(name="benchmark", level="frame", modalities=config.modalities,
                               feature_dims=dict(dims), class_names=None, splits=("train",),
                               metadata={}, label_names=("arousal", "valence"))
    model, obj = experiment.model_and_objective(config, info,
                                                train_targets=example["targets"].reshape(-1, 2))
    init = ts.params_initializer(model, example)
    tx = ts.make_optimizer(config)
    states = [ts.create_state(model, config, example, jax.random.key(k), tx=tx, init=init)
              for k in range(num_seeds)]
    keys = [jax.random.key(100 + k) for k in range(num_seeds)]

    def timed(fn, state, batch, key) -> float:
        state, metrics = fn(state, batch, key)  # compile
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = fn(state, batch, key)
        jax.block_until_ready(metrics)
        return 1000 * (time.perf_counter() - start) / steps

    stacked = replicas._stack(states)  # a host copy: the single-seed timing donates states[0]
    one_device = jax.devices()[0]
    single = jax.jit(ts.bind_train_step(obj), donate_argnums=(0,))
    one = timed(single, jax.device_put(states[0], one_device),
                jax.device_put(example, one_device), jax.device_put(keys[0], one_device))
    step_fn, split = replicas.compile_replica_step(
        obj, replicas.replica_devices(num_seeds, jax.devices()))
    many = timed(step_fn, jax.device_put(stacked, split),
                 jax.device_put(replicas._stack([example] * num_seeds), split),
                 jax.device_put(jax.numpy.stack(keys), split))
    return {"shape": shape, "one_seed_ms": one, "replicas_ms": many,
            "replicas_ms_per_seed": many / num_seeds, "step_speedup": one * num_seeds / many}


def step_throughput(shape: str, num_seeds: int, steps: int, batch: int, length: int) -> dict:
    """`_child` in a fresh process (JAX fixes its CPU device count when it starts)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", shape, str(num_seeds), str(steps),
           str(batch), str(length)]
    out = subprocess.run(cmd, cwd=_ROOT, env=_clean_env(), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"replica step timing for {shape} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(num_seeds: int, steps: int, shapes, step_steps: int, batch: int, length: int) -> dict:
    """Both measurements; `steps`: training steps of the end-to-end runs."""
    return {"end_to_end": end_to_end(num_seeds, steps),
            "step": [step_throughput(s, num_seeds, step_steps, batch, length) for s in shapes]}


def format_result(result: dict) -> str:
    """The measurements as a few lines of text."""
    e = result["end_to_end"]
    lines = [f"seeds as replicas ({e['num_seeds']} seeds, {e['steps']} steps, main.py defaults): "
             f"one after another {e['sequential_total_s']:.1f} s "
             f"({', '.join(f'{s:.1f}' for s in e['sequential_s'])}), one program "
             f"{e['replicas_s']:.1f} s: {e['speedup']:.2f}x"]
    for s in result["step"]:
        lines.append(f"  step, {s['shape']}: one seed {s['one_seed_ms']:.1f} ms; {e['num_seeds']} "
                     f"replicas {s['replicas_ms']:.1f} ms ({s['replicas_ms_per_seed']:.1f} ms per "
                     f"seed): {s['step_speedup']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.path.insert(0, _ROOT)
    sys.path.insert(0, _HERE)
    shape_, k_, steps_, batch_, length_ = sys.argv[2:7]
    print(json.dumps(_child(shape_, int(k_), int(steps_), int(batch_), int(length_))))
