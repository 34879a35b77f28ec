"""The one concordance correlation coefficient (CCC) of the project, in JAX.

Lin's CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2) with population moments (ddof 0).
`masked_ccc` is used by the training losses (`task.ccc_loss`, `task.sequence_ccc_loss`), by the
evaluation metrics (`evaluation.metrics.ccc`, `grouped_ccc`, `sequence_ccc`) and by the
OMG-Emotion scorer (`datasets.omg_export.official_ccc`), so the number optimised, logged and
reported is the same function.

Precision. Inputs keep their float dtype: float32 by default, float64 under `jax_enable_x64`.
float32 is made accurate by the shifted-data ("corrected two-pass") algorithm: a first pass finds
a shift m per slice (the float32 mean), a second sums d = x - m, d^2 and d_x d_y, and

    mean = m + sum(d)/n,   var = sum(d^2)/n - (sum(d)/n)^2,   cov = sum(d_x d_y)/n - ...

These identities hold for *any* m, so the rounding error of the first-pass mean cancels instead of
biasing var and (mean_x - mean_y)^2 (a plain E[x^2] - E[x]^2 loses all digits for values near 100
with variance 1e-4). With d of the size of the spread, the error is a few float32 ulps relative to
the spread, not to the offset; tests/test_metrics.py measures it against float64 references.

Constant slices are exact: where a slice's max equals its min, the shift is that value, so every d
is exactly 0 and var and cov are exactly 0 (the metric's degenerate cases rely on this). The shift
is a constant of the formula (stop_gradient), so gradients are those of the exact CCC, also for a
constant prediction (e.g. a freshly initialised head with zero weights).

`ccc_rows` is the host entry point of the metrics: numpy rows in, float64 CCCs out.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def masked_ccc(x, y, mask, axis=0, eps: float = 0.0, zero_denominator: float = 0.0,
               exact_constants: bool = True):
    """CCC of [..., K] arrays over `axis`, using only the elements where `mask` is True.

    Masked-out elements never influence the value or the gradient, even when they hold NaN or inf
    (`jnp.where`, not multiplication). A NaN at a valid element makes that CCC NaN.

    Args:
      x: [..., K] floats (predictions).
      y: [..., K] floats (gold labels), same shape and dtype.
      mask: bool [...] (x.shape[:-1]); True = valid element.
      axis: int or tuple of ints, axes of `mask` (leading axes of x) to reduce over.
      eps: added to the denominator (the losses use 1e-8 so constant inputs give 0, not NaN).
      zero_denominator: the CCC where the denominator (with eps) is exactly 0, which happens only
        for two identical constant series (the metrics use 1.0: perfect agreement).
      exact_constants: shift constant slices by their value (a max and a min per slice), so their
        moments are exactly 0 (the metrics' degenerate cases). The losses pass False: under a
        batch-sharded jit each of those reductions is one more cross-device collective per step
        (measured +1.5 ms on the `recola_blstm` step), and `eps` keeps constants finite anyway.

    Returns:
      (ccc, count), both with `axis` reduced ([..., K] and [..., 1] reduced); ccc is 0 where count
      is 0.
    """
    m = jnp.asarray(mask).astype(bool)[..., None]
    axes = tuple(a % m.ndim for a in (axis if isinstance(axis, tuple) else (axis,)))
    x = jnp.where(m, x, 0.0)
    y = jnp.where(m, y, 0.0)
    # The count is summed together with x and y. Summed alone it depends on the mask only, so
    # under a batch-sharded jit XLA:CPU schedules its cross-device sum first: one device's worker
    # thread then blocks in that rendezvous while the other runs its forward pass alone.
    # (A float32 sum of ones is exact below 2**24 elements.)
    stacked = jnp.stack([jnp.broadcast_to(m, x.shape).astype(x.dtype), x, y])
    sums = jnp.sum(stacked, axis=tuple(a + 1 for a in axes), keepdims=True)
    count, n = sums[0][..., :1], jnp.maximum(sums[0][..., :1], 1.0)

    def shift(v, total):
        if not exact_constants:
            return jax.lax.stop_gradient(total / n)
        hi = jnp.max(jnp.where(m, v, -jnp.inf), axis=axes, keepdims=True)
        lo = jnp.min(jnp.where(m, v, jnp.inf), axis=axes, keepdims=True)
        # A constant slice shifts by its value, so its deviations are exactly zero.
        return jax.lax.stop_gradient(jnp.where(hi == lo, hi, total / n))

    shift_x, shift_y = shift(x, sums[1]), shift(y, sums[2])
    dx = jnp.where(m, x - shift_x, 0.0)
    dy = jnp.where(m, y - shift_y, 0.0)
    moments = jnp.sum(jnp.stack([dx, dy, dx * dx, dy * dy, dx * dy]),
                      axis=tuple(a + 1 for a in axes), keepdims=True) / n
    mdx, mdy, sxx, syy, sxy = (moments[i] for i in range(5))
    var_x = jnp.maximum(sxx - mdx * mdx, 0.0)
    var_y = jnp.maximum(syy - mdy * mdy, 0.0)
    cov = sxy - mdx * mdy
    # Shifts first: for nearly equal means with a large offset they cancel exactly (Sterbenz).
    mean_diff = (shift_x - shift_y) + (mdx - mdy)
    denominator = var_x + var_y + mean_diff * mean_diff + eps
    safe = jnp.where(denominator == 0.0, 1.0, denominator)
    ccc = jnp.where(denominator == 0.0, zero_denominator, 2.0 * cov / safe)
    ccc = jnp.where(count > 0, ccc, 0.0)
    return jnp.squeeze(ccc, axes), jnp.squeeze(count, axes)


# eps 0 and CCC 1 for two identical constants: the metric's degenerate cases (module docstring).
_ccc_rows_jit = jax.jit(functools.partial(masked_ccc, axis=1, eps=0.0, zero_denominator=1.0))


def _bucket(n: int, smallest: int) -> int:
    """The next power of two >= n (and >= smallest): bounds how many shapes get compiled."""
    return max(smallest, 1 << max(n - 1, 0).bit_length())


def ccc_rows(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The metrics' CCC: `masked_ccc` of each row of host [G, L] arrays, jitted on the CPU device.

    Used by `evaluation.metrics` and the OMG scorer. Two identical constant rows give 1.0.

    Args:
        x, y: float [G, L] numpy arrays (float64 keeps the shift below exact).
        keep: bool [G, L]; True = valid element (others may hold anything, even NaN).

    Returns:
        float64 [G]; nan for a row without a valid element.
    """
    g, length = x.shape
    shape = (_bucket(g, 1), _bucket(length, 8))
    dtype = jax.dtypes.canonicalize_dtype(np.float64)  # float32 unless x64 is enabled
    # CCC does not change when both sides move by the same constant. Moving each row by its gold
    # mean (in float64, before the cast) keeps float32 from rounding away the spread of values
    # that sit on a large offset (e.g. 1e4 + N(0, 1) would keep only ~3 digits).
    counts = keep.sum(axis=1, keepdims=True)
    offset = np.where(keep, y, 0.0).sum(axis=1, keepdims=True) / np.maximum(counts, 1)
    padded = [np.zeros(shape, dtype), np.zeros(shape, dtype), np.zeros(shape, bool)]
    for out, values in zip(padded, (x - offset, y - offset, keep)):
        out[:g, :length] = values
    # This process's own CPU device: in a multi-process run device 0 may belong to another.
    cpu = jax.local_devices(backend="cpu")[0]
    xp, yp, kp = (jax.device_put(a, cpu) for a in padded)
    score, count = _ccc_rows_jit(xp[..., None], yp[..., None], kp)
    score = np.asarray(score, np.float64)[:g, 0]
    return np.where(np.asarray(count)[:g, 0] > 0, score, np.nan)
