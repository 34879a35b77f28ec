"""Fail fast in a multi-process run: the first error ends every process within seconds.

Why: in a `jax.distributed` run every process waits for the others in each collective and in
orbax's checkpoint barriers. Measured with jax 0.10.2 on CPU (gloo), two processes, one raising at
its first checkpoint (tests/test_workdir_lock.py): the failing process printed its traceback and
then sat in jax's shutdown barrier, and the other one sat in orbax's save barrier, both until the
coordination service's timeouts (`heartbeat_timeout_seconds=100`, `shutdown_timeout_seconds=300`:
the 5-minute hang of the issue). A process that is SIGKILLed is noticed only by the missing
heartbeats.

What this module does instead:
- `initialize` starts jax.distributed with short heartbeat and shutdown timeouts, so a process
  that dies without a word (SIGKILL, a lost host) stops the others after `HEARTBEAT_TIMEOUT_S`.
- `fail` (called by `experiments/main.py` for any error) publishes the first error in the
  coordination service's key-value store and leaves at once with `os._exit`, skipping the
  shutdown barrier that would wait for processes which are themselves waiting. A process whose
  own error came second (gloo's "Connection closed by peer" once the first one has gone) names
  the first error too.
- a watcher thread in every process polls that key and, when another process failed, prints
  `error: process I failed first: ...` and exits the same way, whatever the main thread is
  blocked in.
In a single process all of this is inert (`fail` is `sys.exit`).
"""
from __future__ import annotations

import inspect
import os
import sys
import threading
import time

import jax

# A process that sends no heartbeat for this long is declared dead and the run stops. Heartbeats
# come from a C++ thread (not held up by Python or compilation), so this can be short.
HEARTBEAT_TIMEOUT_S = 10
# How long a process that finished waits at exit for the others to finish too (a success path:
# they finish the same last step), instead of jax's default of 5 minutes.
SHUTDOWN_TIMEOUT_S = 30
# How often the watcher asks whether another process failed.
POLL_S = 0.5
_KEY = "emobed_jax/first_failure"
_failing = threading.Event()


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def initialize(coordinator_address=None, num_processes=None, process_id=None) -> None:
    """`jax.distributed.initialize` with short timeouts, plus the failure watcher.

    Unset arguments are detected from the cluster environment, as by jax itself.
    """
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
    accepted = inspect.signature(jax.distributed.initialize).parameters
    if "heartbeat_timeout_seconds" in accepted:  # jax >= 0.4.36
        kwargs.update(heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
                      shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
    jax.distributed.initialize(**kwargs)
    if jax.process_count() > 1:
        threading.Thread(target=_watch, args=(_client(),), name="failfast-watcher",
                         daemon=True).start()


def _watch(client) -> None:
    while not _failing.is_set():
        try:
            message = client.key_value_try_get(_KEY)
        except Exception:  # noqa: BLE001 (not set yet: NOT_FOUND; or the service is gone)
            time.sleep(POLL_S)
            continue
        if _failing.is_set():
            return  # this process is the one failing; it says so itself
        _exit(1, f"error: {message}; stopping this process (process {jax.process_index()}) too\n")


def _exit(status: int, text: str) -> None:
    sys.stderr.write(text)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 (a closed pipe must not keep the process alive)
            pass
    os._exit(status)


def fail(message: str, status: int = 1) -> None:
    """Ends this process with `status` after `message` was printed (a line, or a traceback).

    In a multi-process run the message is first published to every process (the first failure
    is kept) and the process leaves at once with `os._exit`: normal interpreter exit would wait in
    jax's shutdown barrier for processes that are themselves waiting for this one. In a single
    process this is `sys.exit(status)`.
    """
    if _client() is None or jax.process_count() == 1:
        sys.exit(status)
    _failing.set()
    first = message.strip().splitlines()[-1] if message.strip() else f"exit status {status}"
    try:
        _client().key_value_set(_KEY, f"process {jax.process_index()} failed first: {first}")
        if jax.process_index() == 0:
            # Process 0 hosts the key-value store: stay until the others' watchers have read it.
            time.sleep(2 * POLL_S + 0.5)
        _exit(status, "")
    except Exception:  # noqa: BLE001 (ALREADY_EXISTS: another process failed first)
        pass
    # This process's error was most likely caused by the first one (e.g. gloo's "Connection closed
    # by peer" once the failed process has gone), which it names as well.
    try:
        earlier = _client().blocking_key_value_get(_KEY, 1000)
    except Exception:  # noqa: BLE001 (the service is gone too)
        _exit(status, "")
    _exit(status, f"error: {earlier}; the error above in this process (process "
                  f"{jax.process_index()}) followed from it\n")


def fail_unexpected(error: BaseException) -> None:
    """For an unexpected exception: in a multi-process run prints its traceback and `fail`s;
    in a single process returns, and the caller re-raises it as usual."""
    if not isinstance(error, Exception) or _client() is None or jax.process_count() == 1:
        return
    import traceback

    text = "".join(traceback.format_exception(error))
    sys.stderr.write(text)
    fail(text)
