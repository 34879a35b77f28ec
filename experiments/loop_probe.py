"""What limits the fused LSTM's loops: `benchmark.py --loop_probe=true` times them in isolation.

The probe runs the recurrence of one LSTM layer (`emobed_jax.models.fast_lstm`) with the streams
one device of the benchmark's data mesh runs (2 directions per modality, batch / devices
sequences, 64 units) as one loop, on one XLA device and, where Linux allows it, pinned to one
core. (Training runs each modality's 2 streams as a loop of its own, `lstm.LSTMStack`: shared
loops were measured not to pay; with 2 modalities the probe's 4-stream loop is the kernel at
twice the streams, kept so that its numbers stay comparable with docs/benchmark.md's.)

* `forward_ms`: the forward loop storing every quantity the backward pass reads (h, c and the
  four gates of every step), as in training;
* `forward_output_only_ms`: the same loop when only h is kept (XLA drops the other stores), as
  in evaluation;
* `step_matmuls_ms`: a loop of the per-step matmuls alone;
* `backward_ms`: the backward loop (which also sums the bias gradient) with the kernel gradients
  after it.

The difference between the first two, over the bytes the extra stores write, is the rate at which
the loop stores its states (`store_gb_per_s`); docs/benchmark.md explains what it shows. The
probe calls `fast_lstm`'s private loop functions: it measures that module's internals and
changes with them.
"""
from __future__ import annotations

import contextlib
import os

HIDDEN = 64


@contextlib.contextmanager
def pinned_to_one_core():
    """Pins every thread of this process to its first allowed core (Linux), then restores."""
    tasks = f"/proc/{os.getpid()}/task"
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir(tasks):
        yield False
        return
    before = {}
    for tid in os.listdir(tasks):
        try:
            before[int(tid)] = os.sched_getaffinity(int(tid))
            os.sched_setaffinity(int(tid), {min(before[int(tid)])})
        except OSError:  # a thread that ended meanwhile
            pass
    try:
        yield True
    finally:
        for tid, cores in before.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cores)


def probe(num_modalities: int, batch: int, length: int, devices: int, median_seconds) -> dict:
    """Times one layer's loops for the streams of one device.

    Args:
      num_modalities: modalities whose streams the probed loop holds (1: `recola_blstm`, 2:
        `crossmodal`).
      batch, length: the benchmark's global batch and sequence length.
      devices: devices of the data mesh (each runs batch / devices sequences).
      median_seconds: `f(call) -> seconds`, the benchmark's median time of a call after a
        warm-up.

    Returns:
      A dict of the shape, the times in ms, the bytes stored per step and the store rate.
    """
    import jax
    import jax.numpy as jnp

    from emobed_jax.models import fast_lstm

    streams, rows = 2 * num_modalities, max(1, batch // devices)
    keys = jax.random.split(jax.random.key(0), 4)
    device = jax.devices()[0]
    gx = jax.device_put(jax.random.normal(keys[0], (streams, length, rows, 4 * HIDDEN)), device)
    w_h = jax.device_put(0.05 * jax.random.normal(keys[1], (streams, HIDDEN, 4 * HIDDEN)), device)
    bias = jax.device_put(jnp.zeros((streams, 4 * HIDDEN)), device)
    hold = jax.device_put(jnp.zeros((streams, length, rows, 1)), device)
    dy = jax.device_put(jax.random.normal(keys[2], (streams, length, rows, HIDDEN)), device)
    forward_all = jax.jit(fast_lstm._forward)
    forward_out = jax.jit(lambda *a: fast_lstm._forward(*a)[0])
    residuals = jax.jit(fast_lstm._recurrence_fwd)(gx, w_h, bias, hold)[1]
    backward = jax.jit(fast_lstm._recurrence_bwd)

    def matmuls_only(w):
        def step(_, h):  # the tanh keeps the loop a recurrence XLA cannot hoist
            return jnp.tanh(jnp.einsum("nbh,nhg->nbg", h, w)[..., :HIDDEN])
        return jax.lax.fori_loop(0, length, step, jnp.zeros((streams, rows, HIDDEN), w.dtype))

    matmuls = jax.jit(matmuls_only)

    def ms(fn, *args):
        return 1000 * median_seconds(lambda: jax.block_until_ready(fn(*args)))

    with pinned_to_one_core() as pinned:
        result = {
            "streams": streams, "rows_per_device": rows, "length": length, "hidden": HIDDEN,
            "pinned_to_one_core": pinned,
            "forward_ms": ms(forward_all, gx, w_h, bias, hold),
            "forward_output_only_ms": ms(forward_out, gx, w_h, bias, hold),
            "step_matmuls_ms": ms(matmuls, w_h),
            "backward_ms": ms(backward, residuals, dy),
        }
    # The stores that training adds to the output's: c and the four gates, 4 bytes each.
    extra = 5 * streams * rows * HIDDEN * 4
    result["extra_store_bytes_per_step"] = extra
    added_s = (result["forward_ms"] - result["forward_output_only_ms"]) / 1000
    result["store_gb_per_s"] = extra * length / added_s / 1e9 if added_s > 0 else None
    return result


def format_probe(p: dict) -> str:
    """Two lines for the benchmark's table."""
    rate = f"{p['store_gb_per_s']:.1f} GB/s" if p["store_gb_per_s"] else "n/a"
    return (f"loop probe ({p['streams']} streams x {p['rows_per_device']} rows, T={p['length']}, "
            f"one device{', one core' if p['pinned_to_one_core'] else ''}): forward "
            f"{p['forward_ms']:.2f} ms, output only {p['forward_output_only_ms']:.2f} ms, "
            f"step matmuls {p['step_matmuls_ms']:.2f} ms, backward {p['backward_ms']:.2f} ms\n"
            f"loop probe: the states stored for the backward pass "
            f"({p['extra_store_bytes_per_step'] // 1024} KiB per step) at {rate}")
