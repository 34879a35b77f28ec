"""Runs `experiments/main.py` as N cooperating processes on this machine (jax.distributed).

    python experiments/launch_local.py --num_processes=2 --devices_per_process=1 -- \
        --config=configs/synthetic.py --workdir=/tmp/emobed_mp

Everything after `--` goes to every `main.py` process unchanged; the launcher adds
`--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=i` (PORT: a free port, or
`--port`). On CPU each process gets `--devices_per_process` host devices (via XLA_FLAGS) and JAX's
gloo CPU collectives connect them, so this reproduces a multi-host run on one machine: each process
feeds its own rows of every batch into one global array, and only process 0 writes logs and
results. It is how the tests check that 2 processes x 1 device train exactly like 1 process x 2
devices; on real hardware start one `main.py` per host instead (README "Several processes").

Output lines are forwarded prefixed with `[i]`. If any process fails, the launcher names it
(`[launcher] process I failed first (exit status S); stopping the others`), stops the others (they
would otherwise wait in a collective until the coordination service's timeouts) and exits with
that status; SIGINT/SIGTERM are passed on to every process.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "main.py")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(devices_per_process: int, base: dict | None = None) -> dict:
    """The environment of one worker: CPU platform with `devices_per_process` host devices.

    Any `--xla_force_host_platform_device_count` already in XLA_FLAGS is replaced, since a
    test runner's own setting (e.g. 2 devices) must not leak into the workers.
    """
    env = dict(os.environ if base is None else base)
    kept = [f for f in env.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(kept + [f"--xla_force_host_platform_device_count={devices_per_process}"])
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def worker_command(main_args: list, num_processes: int, process_id: int, port: int) -> list:
    """The command line of worker `process_id`."""
    return [sys.executable, _MAIN, *main_args, f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={num_processes}", f"--process_id={process_id}"]


def _forward(index: int, stream, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            sys.stdout.write(f"[{index}] {line}")
            sys.stdout.flush()
    stream.close()


def launch(main_args: list, num_processes: int, devices_per_process: int = 1,
           port: int | None = None, timeout_s: float | None = None) -> int:
    """Starts the workers, forwards their output and waits for all of them.

    Args:
      main_args: arguments for `main.py` (config, workdir, overrides).
      num_processes: number of processes.
      devices_per_process: CPU devices per process.
      port: coordinator port (default: a free one).
      timeout_s: stop every worker after this many seconds (default: no limit).

    Returns:
      0 if every worker succeeded, else the first nonzero exit status seen (124 on timeout).
    """
    if num_processes < 1 or devices_per_process < 1:
        raise ValueError(f"--num_processes={num_processes} and --devices_per_process="
                         f"{devices_per_process}: expected positive integers")
    port = port or free_port()
    env = process_env(devices_per_process)
    lock = threading.Lock()
    procs, threads = [], []
    for i in range(num_processes):
        # Own session: a terminal's Ctrl-C reaches the launcher only, which passes it on once.
        proc = subprocess.Popen(worker_command(main_args, num_processes, i, port), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        procs.append(proc)
        thread = threading.Thread(target=_forward, args=(i, proc.stdout, lock), daemon=True)
        thread.start()
        threads.append(thread)

    def pass_on(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, pass_on) for s in (signal.SIGINT, signal.SIGTERM)}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    status = 0
    try:
        # Poll every process each round (`any` over a generator would stop at the first running
        # one and never see a later process fail); every 0.1 s, so the first failure seen is
        # the first to happen, to within that.
        while [p.poll() for p in procs].count(None):
            failed = [(i, p.returncode) for i, p in enumerate(procs)
                      if p.returncode not in (None, 0)]
            timed_out = deadline is not None and time.monotonic() > deadline
            if (failed or timed_out) and not status:
                status = failed[0][1] if failed else 124
                reason = (f"process {failed[0][0]} failed first (exit status {status})"
                          if failed else f"timeout after {timeout_s} s")
                with lock:
                    print(f"[launcher] {reason}; stopping the others", file=sys.stderr, flush=True)
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                grace = time.monotonic() + 10
                while any(p.poll() is None for p in procs) and time.monotonic() < grace:
                    time.sleep(0.1)
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for p in procs:
            p.wait()
        for t in threads:
            t.join(timeout=5)
    status = status or next((p.returncode for p in procs if p.returncode), 0)
    return status if status >= 0 else 128 - status  # killed by signal N: 128 + N, as a shell does


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, main_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s [options] -- MAIN_PY_ARGS")
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=1)
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: free)")
    parser.add_argument("--timeout_s", type=float, default=None)
    args = parser.parse_args(own)
    if not main_args:
        parser.error("expected the main.py arguments after '--' (at least --config and --workdir)")
    return launch(main_args, args.num_processes, args.devices_per_process, args.port, args.timeout_s)


if __name__ == "__main__":
    sys.exit(main())
