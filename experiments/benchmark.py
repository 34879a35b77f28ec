"""Speed of the training step against a plain PyTorch implementation of the same shapes.

    python experiments/benchmark.py --shape=recola_blstm|crossmodal [--batch=32 --length=300]
        [--steps=20] [--rnn_impl=fused,scan] [--devices=N] [--loop_probe=true]
        [--inference=true|only] [--num_seeds=K] --output=FILE.json

The shapes and every measured quantity are described in docs/benchmark.md (README "Speed").
JAX runs the project's own `train_step` under `jit` over a `--devices`-device data mesh (default:
one XLA host device per CPU core, set before jax is imported); PyTorch runs in child processes
(`torch_reference.TorchProcess`) in two variants: 'torch' computes the project's objective term for
term, 'torch_plain' a plainer one (no masks, one triplet direction); all repeats alternate. Preload tcmalloc where installed
(`LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4`); the output says whether it was.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import os
import platform
import statistics
import sys
import time

import loop_probe
from machine_load import BusyMeter, peak_rss_mb, tcmalloc_status, wait_until_idle

SHAPES = {"recola_blstm": {"audio": 88}, "crossmodal": {"audio": 88, "video": 40}}


def parse_args(argv=None) -> argparse.Namespace:
    """The command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="recola_blstm")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rnn_impl", default="fused",
                   help="comma-separated model.rnn_impl values: fused, scan, cudnn, auto")
    p.add_argument("--devices", type=int, default=0,
                   help="XLA host devices for the data mesh (0: one per CPU core)")
    p.add_argument("--torch", choices=("auto", "false"), default="auto",
                   help="compare with PyTorch when it is installed")
    p.add_argument("--torch_threads", type=int, default=0, help="0: one per CPU core")
    p.add_argument("--torch_fresh", choices=("true", "false"), default="true",
                   help="a fresh PyTorch process for every repeat: its step time differs between "
                        "processes (docs/benchmark.md), so the comparison sees several")
    p.add_argument("--scaling", choices=("true", "false"), default="true",
                   help="also time lengths 100/300/1000 and batches 8/32/128")
    p.add_argument("--scaling_steps", type=int, default=3)
    p.add_argument("--loop_probe", choices=("true", "false"), default="false",
                   help="also time the fused LSTM's loops of one device in isolation "
                        "(experiments/loop_probe.py)")
    p.add_argument("--inference", choices=("false", "true", "only"), default="false",
                   help="also (or only) time prediction, streaming and export of trained runs "
                        "(experiments/inference_speed.py)")
    p.add_argument("--num_seeds", type=int, default=1,
                   help="> 1: also time K seeds as replicas in one program against K programs, "
                        "end to end and per step (experiments/replica_speed.py)")
    p.add_argument("--seed_train_steps", type=int, default=200,
                   help="training steps of each end-to-end run of --num_seeds")
    p.add_argument("--pipeline_batches", type=int, default=20)
    p.add_argument("--wait_idle", type=float, default=0.0,
                   help="on a shared machine: before each timed block wait up to this many "
                        "seconds for the other cores to be idle")
    p.add_argument("--output", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    for key in ("batch", "length", "steps", "repeats", "scaling_steps", "pipeline_batches",
                "num_seeds", "seed_train_steps"):
        if getattr(args, key) <= 0:
            p.error(f"--{key}={getattr(args, key)}: expected a positive integer")
    return args


def synthetic_batch(dims: dict, batch: int, length: int, seed: int = 0) -> dict:
    """A full-length training batch in the project's batch layout (random frames and labels)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(length)[None, :, None]
    targets = np.tanh(np.sin(t / 25.0 + rng.uniform(0, 6, (batch, 1, 2))) +
                      0.1 * rng.standard_normal((batch, length, 2))).astype(np.float32)
    return {
        "features": {m: rng.standard_normal((batch, length, d)).astype(np.float32)
                     for m, d in dims.items()},
        "lengths": {m: np.full((batch,), length, np.int32) for m in dims},
        "masks": {m: np.ones((batch, length), np.float32) for m in dims},
        "targets": targets,
        "target_mask": np.ones((batch, length), np.float32),
        "index": np.arange(batch, dtype=np.int32),
        "labelled": np.ones((batch,), np.float32),
    }


def _median(values):
    return float(statistics.median(values)) if values else None


def benchmark_config(dims: dict, impl: str):
    """The base config for a shape: EmoBed (monomodal for one modality), audio target, the
    default 2-layer BLSTM, no dropout, `w_align=1` as in the PyTorch reference."""
    from emobed_jax import config as config_lib

    config = config_lib.get_base_config()
    mods = tuple(sorted(dims))
    config.modalities = mods
    config.method = "monomodal" if len(mods) == 1 else "emobed"
    config.target_modality = "audio"
    config.model.rnn_impl = impl
    config.model.dropout = 0.0
    config.loss.w_align = 1.0
    return config


class JaxRunner:
    """The project's model, objective and train step for one shape, built as training builds
    them (`experiment.model_and_objective`, `state.create_state`), compiled for the mesh and
    run by the training loop (`loop.run`)."""

    def __init__(self, dims: dict, batch: dict, impl: str):
        import jax
        import numpy as np

        from emobed_jax.data import loading
        from emobed_jax.training import experiment, loop, parallel, state as ts

        config = benchmark_config(dims, impl)
        info = loading.DatasetInfo(name="benchmark", level="frame", modalities=config.modalities,
                                   feature_dims=dict(dims), class_names=None, splits=("train",),
                                   metadata={}, label_names=("arousal", "valence"))
        self.model, obj = experiment.model_and_objective(
            config, info, train_targets=batch["targets"].reshape(-1, 2))
        self.edges = np.asarray(obj.bin_edges)
        par = parallel.Parallel("jit", parallel.make_mesh())
        self.state = par.put_state(ts.create_state(self.model, config, batch, jax.random.key(0)))
        self.batch = par.put_batch(batch)
        self.key = par.put_state(jax.random.key(1))
        step = par.compile_train_step(lambda axis: ts.bind_train_step(obj, axis_name=axis))
        start = time.perf_counter()
        self.step_fn = step.lower(self.state, self.batch, self.key).compile()
        self.compile_s = time.perf_counter() - start
        predict = jax.jit(functools.partial(ts.predict_step, apply_fn=self.model.apply,
                                            modalities=("audio",)))
        self.predict_fn = predict.lower(self.state.params, self.batch).compile()
        self._block = jax.block_until_ready
        self._loop = loop
        self._steps = 0
        self.loss = None

    def _record(self, step, state, metrics) -> None:
        self.loss = metrics["loss"]

    def step(self) -> None:
        """One training step through the loop, waiting for its metrics (as training does when
        an action is due)."""
        self.state = self._loop.run(
            self.state, self.step_fn, itertools.repeat(self.batch), self.key,
            start_step=self._steps, num_steps=self._steps + 1,
            hooks=[self._loop.Every(1, self._record)])
        self._steps += 1

    def predict_time(self, repeats: int = 5) -> float:
        """Median seconds of one monomodal forward pass over the batch."""
        def forward():
            self._block(self.predict_fn(self.state.params, self.batch))

        return _median(time_steps(forward, repeats + 1)[1:])


def time_steps(step, steps: int) -> list:
    """Seconds of each of `steps` calls of `step`."""
    times = [time.perf_counter()]
    for _ in range(steps):
        step()
        times.append(time.perf_counter())
    return [b - a for a, b in zip(times, times[1:])]


def pipeline_throughput(dims: dict, batch: int, length: int, num_batches: int) -> float:
    """Examples per second of the project's grain training pipeline for this batch shape."""
    import grain
    import numpy as np

    from emobed_jax.data import batching, loading

    rng = np.random.default_rng(0)
    recordings, frames = 16, 4 * length
    data = loading.SplitData(
        names=[f"train_{i}" for i in range(recordings)],
        features={m: [rng.standard_normal((frames, d)).astype(np.float32)
                      for _ in range(recordings)] for m, d in dims.items()},
        valid={m: [np.ones(frames, bool) for _ in range(recordings)] for m in dims},
        regression=[rng.uniform(-1, 1, (frames, 2)).astype(np.float32) for _ in range(recordings)],
        categories=None, extra={}, nonfinite_frames={m: 0 for m in dims})
    examples = batching.prepare_examples(data, "frame", "regression", tuple(sorted(dims)),
                                         np.zeros(2, np.int64))
    specs = batching.window_specs(examples, list(range(recordings)), length, max(length // 2, 1))
    ds = batching.train_dataset(examples, specs, batch, 0, "regression",
                                {m: length for m in dims})
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))
    next(it)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    return num_batches * batch / (time.perf_counter() - start)


# Result name -> torch_reference variant: the project's objective term for term, and a plainer one.
TORCH_VARIANTS = {"torch": "project", "torch_plain": "plain"}


def _torch_step(dims, batch, edges, threads, variant="project"):
    import tempfile

    import torch_reference

    with tempfile.TemporaryDirectory() as workdir:
        return torch_reference.TorchProcess(dims, batch, edges, threads, workdir, variant)


def measure(args) -> dict:
    """Runs every measurement of the benchmark; returns the JSON-ready results."""
    import jax

    import torch_reference

    dims = SHAPES[args.shape]
    impls = [i.strip() for i in args.rnn_impl.split(",") if i.strip()]
    use_torch = args.torch == "auto" and torch_reference.available()
    threads = args.torch_threads or os.cpu_count() or 1
    batch = synthetic_batch(dims, args.batch, args.length)
    result = {"shape": args.shape, "batch": args.batch, "length": args.length,
              "steps": args.steps, "repeats": args.repeats, "devices": jax.device_count(),
              "cpu_count": os.cpu_count(), "tcmalloc": tcmalloc_status(),
              "versions": {"jax": jax.__version__, "python": platform.python_version()}}
    runners = {impl: JaxRunner(dims, batch, impl) for impl in impls}
    for r in runners.values():
        time_steps(r.step, 2)
    result["jax_peak_rss_mb"] = peak_rss_mb()
    edges = runners[impls[0]].edges
    torch_runners = {}  # one PyTorch child alive at a time: an idle one's threads may spin

    def torch_runner(name):
        for other in [n for n, r in torch_runners.items() if n != name and r is not None]:
            torch_runners[other].close()
            torch_runners[other] = None
        if torch_runners.get(name) is None:
            torch_runners[name] = _torch_step(dims, batch, edges, threads, TORCH_VARIANTS[name])
            torch_runners[name].time_steps(2)
        return torch_runners[name]

    if use_torch:
        for name in TORCH_VARIANTS:
            torch_runners[name] = None
        result["versions"]["torch"] = torch_runner("torch").ready["torch"]
    elif args.torch == "auto":
        print("PyTorch is not installed: skipping the comparison "
              "(pip install torch==2.13.0 to compare).")
    per = {name: [] for name in list(runners) + list(torch_runners)}
    busy = []
    for _ in range(args.repeats):  # interleaved, so machine load hits every runner alike
        for name in per:
            if args.wait_idle > 0:
                wait_until_idle(args.wait_idle)
            with BusyMeter() as meter:
                if name in torch_runners:  # the child's own per-step times
                    if args.torch_fresh == "true" and per[name] and torch_runners[name]:
                        torch_runners[name].close()
                        torch_runners[name] = None
                    times, meter.exclude = torch_runner(name).time_steps(args.steps,
                                                                         with_cpu=True)
                    per[name].append(_median(times))
                else:
                    per[name].append(_median(time_steps(runners[name].step, args.steps)))
            busy.append(meter.other_cores)
    frames = args.batch * args.length
    result["jax"] = {}
    for name, r in runners.items():
        ms = 1000 * _median(per[name])
        result["jax"][name] = {"step_ms": ms, "step_ms_repeats": [1000 * v for v in per[name]],
                               "steps_per_s": 1000 / ms, "frames_per_s": frames * 1000 / ms,
                               "compile_s": r.compile_s, "final_loss": float(r.loss)}
    for name in TORCH_VARIANTS:
        result[name] = None
        if name not in torch_runners:
            continue
        ms = 1000 * _median(per[name])
        best = 1000 * min(per[name])
        result[name] = {"step_ms": ms, "step_ms_repeats": [1000 * v for v in per[name]],
                        "best_step_ms": best, "fresh_process_per_repeat":
                            args.torch_fresh == "true", "variant": TORCH_VARIANTS[name],
                        "steps_per_s": 1000 / ms, "frames_per_s": frames * 1000 / ms,
                        "threads": threads}
        result[f"speedup_vs_{name}"] = {n: ms / v["step_ms"] for n, v in result["jax"].items()}
        # Against PyTorch's fastest repeat: the conservative comparison.
        result[f"speedup_vs_{name}_best"] = {n: best / v["step_ms"]
                                             for n, v in result["jax"].items()}
    result["other_cores_busy"] = {"median": _median(busy), "max": max(busy)}
    first = runners[impls[0]]
    step_s = result["jax"][impls[0]]["step_ms"] / 1000
    pipe = pipeline_throughput(dims, args.batch, args.length, args.pipeline_batches)
    result["pipeline"] = {"examples_per_s": pipe, "step_examples_per_s": args.batch / step_s,
                          "ratio": pipe * step_s / args.batch}
    result["eval"] = {"jax_frames_per_s": frames / first.predict_time()}
    if torch_runners:
        result["eval"]["torch_frames_per_s"] = frames / torch_runner("torch").predict_time()
    result["scaling"] = []
    if args.scaling == "true":
        result["scaling"] = scaling(args, dims, impls[0], threads, result)
    result["loop_probe"] = None
    if args.loop_probe == "true":
        result["loop_probe"] = loop_probe.probe(
            len(dims), args.batch, args.length, jax.device_count(),
            median_seconds=lambda call: _median(time_steps(call, 11)[1:]))  # 1st: compile
    result["peak_rss_mb"] = peak_rss_mb()
    for name in list(torch_runners):
        result[name]["peak_rss_mb"] = torch_runner(name).peak_rss_mb()
    for runner in torch_runners.values():
        if runner is not None:
            runner.close()
    return result


def scaling(args, dims, impl, threads, result) -> list:
    """Step time for lengths 100/300/1000 (at --batch) and batches 8/32/128 (at --length)."""
    points = [(args.batch, t) for t in (100, 300, 1000)] + [(b, args.length) for b in (8, 32, 128)]
    rows = []
    for b, t in dict.fromkeys(points):
        if b % result["devices"]:
            continue
        row = {"batch": b, "length": t}
        batch = synthetic_batch(dims, b, t)
        runner = JaxRunner(dims, batch, impl)
        time_steps(runner.step, 1)
        if args.wait_idle > 0:
            wait_until_idle(args.wait_idle)
        row["jax_step_ms"] = 1000 * _median(time_steps(runner.step, args.scaling_steps))
        row["jax_compile_s"] = runner.compile_s
        if result["torch"]:
            torch_runner = _torch_step(dims, batch, runner.edges, threads)
            torch_runner.time_steps(1)
            if args.wait_idle > 0:
                wait_until_idle(args.wait_idle)
            row["torch_step_ms"] = 1000 * _median(torch_runner.time_steps(args.scaling_steps))
            torch_runner.close()
        rows.append(row)
        del runner
    return rows


def format_table(result: dict) -> str:
    """A plain-text summary of `measure`'s result."""
    tcmalloc = "yes" if result["tcmalloc"]["loaded"] else "no"
    lines = [f"shape={result['shape']} batch={result['batch']} length={result['length']} "
             f"devices={result['devices']} tcmalloc={tcmalloc} "
             f"other-cores-busy={result['other_cores_busy']['median']:.2f}",
             f"{'implementation':<16}{'ms/step':>10}{'steps/s':>10}{'frames/s':>12}"
             f"{'compile s':>11}{'vs torch':>10}{'vs best':>9}"]
    rows = [("jax-" + n, r, r["compile_s"], result.get("speedup_vs_torch", {}).get(n),
             result.get("speedup_vs_torch_best", {}).get(n)) for n, r in result["jax"].items()]
    rows += [("torch", result["torch"], None, 1.0, None)] if result["torch"] else []
    if result.get("torch_plain"):
        plain = result["torch_plain"]
        rows.append(("torch-plain", plain, None, result["torch"]["step_ms"] / plain["step_ms"],
                     None))
    for name, r, compile_s, speed, best in rows:
        lines.append(f"{name:<16}{r['step_ms']:>10.1f}{r['steps_per_s']:>10.2f}"
                     f"{r['frames_per_s']:>12.0f}{(f'{compile_s:.2f}' if compile_s else '-'):>11}"
                     f"{(f'{speed:.2f}x' if speed else '-'):>10}"
                     f"{(f'{best:.2f}x' if best else '-'):>9}")
    if result.get("torch_plain"):
        lines.append("vs torch-plain (its median / fastest): " + ", ".join(
            f"jax-{n} {v:.2f}x / {result['speedup_vs_torch_plain_best'][n]:.2f}x"
            for n, v in result["speedup_vs_torch_plain"].items()) + "; torch-plain repeats: " +
            " ".join(f"{v:.1f}" for v in result["torch_plain"]["step_ms_repeats"]))
    if result["torch"]:
        lines.append("torch repeats (ms/step): " + " ".join(
            f"{v:.1f}" for v in result["torch"]["step_ms_repeats"]) + "; 'vs best' compares "
            "with the fastest")
    p = result["pipeline"]
    lines.append(f"input pipeline: {p['examples_per_s']:.0f} examples/s, the step consumes "
                 f"{p['step_examples_per_s']:.0f} ({p['ratio']:.1f}x)")
    e = result["eval"]
    lines.append(f"evaluation (forward, target modality): jax {e['jax_frames_per_s']:.0f} frames/s"
                 + (f", torch {e['torch_frames_per_s']:.0f}" if "torch_frames_per_s" in e else ""))
    for row in result["scaling"]:
        torch_ms = f"  torch {row['torch_step_ms']:8.1f} ms" if "torch_step_ms" in row else ""
        lines.append(f"scaling B={row['batch']:<4} T={row['length']:<5} "
                     f"jax {row['jax_step_ms']:8.1f} ms{torch_ms}")
    if result.get("loop_probe"):
        lines.append(loop_probe.format_probe(result["loop_probe"]))
    torch_rss = (f", torch process {result['torch']['peak_rss_mb']:.0f} MiB"
                 if result["torch"] else "")
    lines.append(f"peak RSS: jax process {result['peak_rss_mb']:.0f} MiB{torch_rss}")
    return "\n".join(lines)


def main(args) -> int:
    """Runs the benchmark, prints the table and writes `args.output`."""
    tc = tcmalloc_status()
    if not tc["loaded"] and tc["installed"]:
        print(f"note: tcmalloc is installed but not preloaded; for representative numbers run "
              f"with LD_PRELOAD={tc['installed']}")
    result = measure(args) if args.inference != "only" else {}
    if result:
        print(format_table(result))
    if args.inference != "false":
        import inference_speed

        result["inference"] = inference_speed.measure()
        print(inference_speed.format_result(result["inference"]))
    if args.num_seeds > 1:
        import replica_speed

        result["replicas"] = replica_speed.measure(args.num_seeds, args.seed_train_steps,
                                                   sorted(SHAPES), args.steps, args.batch,
                                                   args.length)
        print(replica_speed.format_result(result["replicas"]))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    from emobed_jax import atomic

    atomic.write_json(args.output, result)
    return 0


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.devices == 0:
        ARGS.devices = os.cpu_count() or 1
    # Before jax is imported: one XLA host device per core lets the data mesh use every core.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={ARGS.devices}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(ARGS))
