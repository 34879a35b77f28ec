"""One training run per workdir: an exclusive lock on `WORKDIR/.lock`, taken when training starts.

Why: two runs training into one workdir write the same orbax checkpoint directories at the same
steps; orbax then fails with hundreds of tracebacks (a temporary `*.orbax-checkpoint-tmp` left
behind) or one run waits minutes for the other. The second run must instead stop at once and say
which run holds the workdir.

How: `fcntl.flock` on `WORKDIR/.lock`, whose content is JSON `{host, pid, started, command}` naming
the holder. The kernel releases a flock when its holder exits or is killed, so a lock left by a
killed run is simply taken over (and the takeover is logged with the old holder named: a clean
release empties the file, so content found on acquiring means the holder died). A flock belongs
to one open file, so a second lock attempt in the same process is refused as well.

In a run of several processes (`jax.distributed`) process 0 takes the lock for all of them and
every process learns the outcome through one collective, so all of them stop together. Evaluation
(`train.evaluate_checkpoint`) only reads the checkpoints and takes no lock: a workdir can be
evaluated while it trains.

On a network filesystem flock works where the filesystem forwards it (NFSv4, Linux clients);
where it does not, the lock still guards against two runs started on the same host.
"""
from __future__ import annotations

import datetime
import fcntl
import functools
import inspect
import json
import logging
import os
import socket
import sys

import jax

from emobed_jax.training import parallel

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class WorkdirLockedError(OSError):
    """Another training run holds the workdir's lock."""


def _describe(holder: dict) -> str:
    return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
            f"{holder.get('started', '?')}" + (f", command {holder['command']!r}"
                                               if holder.get("command") else ""))


def _read_holder(fd: int) -> dict:
    """The holder record in the lock file (empty dict if none or unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", "replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {"host": "?", "pid": "?", "started": "? (unreadable lock file)"}


def read_holder(workdir: str) -> dict:
    """The record of the run holding (or that last held without releasing) `workdir`'s lock."""
    try:
        fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return {}
    try:
        return _read_holder(fd)
    finally:
        os.close(fd)


class WorkdirLock:
    """An exclusive, non-blocking lock on one workdir for this process (a context manager).

    Args:
      workdir: the training workdir (created if missing).
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd = None

    def acquire(self) -> "WorkdirLock":
        """Takes the lock or raises `WorkdirLockedError` naming the holder; never waits."""
        try:
            os.makedirs(self.workdir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # the same message as train's own check of the workdir
            raise PermissionError(f"--workdir={self.workdir!r} is not writable ({e.strerror}); "
                                  f"expected a directory this user can write to") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: held by a live process (or by this one, elsewhere)
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkdirLockedError(
                f"--workdir={self.workdir} is in use by another training run ({_describe(holder)}; "
                f"lock file {self.path}). Wait for that run to finish or stop it, or train into "
                f"another --workdir. (Evaluating it with --mode=eval needs no lock.)") from None
        previous = _read_holder(fd)
        if previous:
            # Only a holder that died keeps its record there: a clean release empties the file.
            log.warning("taking over the lock of %s from a run that did not release it (%s); "
                        "it is no longer running", self.workdir, _describe(previous))
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empties the holder record (a clean end) and releases the lock; idempotent."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # a full or read-only disk must not hide the run's own outcome
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_for_run(workdir: str) -> WorkdirLock | None:
    """Takes `workdir`'s lock for this run: in a multi-process run process 0 takes it and every
    process learns the outcome (one collective), so either all go on or all raise
    `WorkdirLockedError`.

    Returns:
      The held lock on process 0 (None on the others); release it when the run ends.
    """
    if jax.process_count() == 1:
        return WorkdirLock(workdir).acquire()
    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(workdir).acquire()
        except OSError as e:
            error = e
    if int(parallel.agree_max([error is not None])[0]):
        if lock is not None:
            lock.release()
        if error is not None:
            raise error
        holder = read_holder(workdir)  # empty when process 0 failed otherwise (e.g. unwritable)
        raise WorkdirLockedError(
            f"process 0 could not lock --workdir={workdir} "
            f"({'in use by ' + _describe(holder) if holder else 'see its message'}); "
            f"stopping with it")
    return lock


def holds_workdir(fn):
    """Decorator: runs `fn(config, workdir, devices=None)` holding `workdir`'s lock
    (`acquire_for_run`). The config is validated first: taking the lock creates the workdir, and
    nothing may be created for a config that cannot run."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from emobed_jax import config as config_lib

        arguments = signature.bind(*args, **kwargs).arguments
        config = arguments["config"]
        # Replica runs (num_seeds > 1) batch on one device and split the seeds over the others.
        devices = 1 if config.num_seeds > 1 else len(arguments.get("devices") or jax.devices())
        config_lib.validate_config(config, num_devices=devices)
        lock = acquire_for_run(arguments["workdir"])
        try:
            return fn(*args, **kwargs)
        finally:
            if lock is not None:
                lock.release()

    return wrapper
