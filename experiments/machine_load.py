"""How busy the machine is, and what the benchmark process uses: helpers of `benchmark.py`.

Timings on a shared machine are only comparable when nothing else ran; these measure the CPU
time the rest of the machine used during a timed block, wait for it to go idle, and report
whether tcmalloc is loaded and the process's peak resident memory (Linux `/proc`).
"""
from __future__ import annotations

import os
import time

TCMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
                  "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4")


def tcmalloc_status() -> dict:
    """Whether tcmalloc is installed and whether it is loaded into this process."""
    try:
        with open("/proc/self/maps") as f:
            loaded = "tcmalloc" in f.read()
    except OSError:
        loaded = "tcmalloc" in os.environ.get("LD_PRELOAD", "")
    installed = next((p for p in TCMALLOC_PATHS if os.path.exists(p)), None)
    return {"loaded": loaded, "installed": installed}


class BusyMeter:
    """CPU time the rest of the machine used while the block ran, in cores (Linux only).

    `exclude` seconds (CPU time of a child process the block waited for) count as own time.
    """

    def __enter__(self):
        self._t, self._all, self._own = time.perf_counter(), _machine_busy(), _own_cpu()
        self.exclude = 0.0
        return self

    def __exit__(self, *exc):
        elapsed = time.perf_counter() - self._t
        other = (_machine_busy() - self._all) - (_own_cpu() - self._own) - self.exclude
        self.other_cores = max(other, 0.0) / elapsed if elapsed > 0 else 0.0


def _machine_busy() -> float:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    return sum(os.times()[:2])


def wait_until_idle(max_s: float, threshold: float = 0.15) -> bool:
    """Polls until the machine used < `threshold` cores over 0.5 s; False on timeout.

    Counts this process too: its idle worker threads may still be spinning after the last step.
    """
    deadline = time.perf_counter() + max_s
    while True:
        start, busy = time.perf_counter(), _machine_busy()
        time.sleep(0.5)
        if (_machine_busy() - busy) / (time.perf_counter() - start) < threshold:
            return True
        if time.perf_counter() > deadline:
            return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (VmHWM, Linux), MiB."""
    with open("/proc/self/status") as f:
        return next(int(v.split()[1]) / 1024.0 for v in f if v.startswith("VmHWM:"))
