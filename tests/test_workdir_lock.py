"""One training run per workdir (`training/workdir_lock.py`), and no hangs when one process of a
multi-process run fails: a second run on a locked workdir stops at once naming the holder; the
lock of a SIGKILLed run is taken over; evaluation needs no lock; when one of two `jax.distributed`
processes fails, both are gone within seconds with the first error reported."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import make_tiny_config
from emobed_jax.training import train, workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A process that takes the lock the way a training run does, says so, and sleeps until killed.
_HOLDER = textwrap.dedent("""
    import sys, time
    from emobed_jax.training import workdir_lock
    workdir_lock.WorkdirLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def _start_holder(workdir) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workdir)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_in_the_same_process_is_refused_at_once(tmp_path):
    config = make_tiny_config(str(tmp_path / "data"))
    with workdir_lock.WorkdirLock(str(tmp_path)):
        holder = json.loads((tmp_path / ".lock").read_text())
        start = time.monotonic()
        with pytest.raises(workdir_lock.WorkdirLockedError) as info:
            train.train_and_evaluate(config, str(tmp_path))
        assert time.monotonic() - start < 2
    message = str(info.value)
    assert f"host {socket.gethostname()}, pid {os.getpid()}, started {holder['started']}" in message
    assert "another --workdir" in message and isinstance(info.value, OSError)
    # Nothing was written by the refused run, and the clean release emptied the record.
    assert sorted(os.listdir(tmp_path)) == [".lock"]
    assert (tmp_path / ".lock").read_text() == ""
    workdir_lock.WorkdirLock(str(tmp_path)).acquire().release()  # free again


def test_lock_of_a_live_process_refuses_and_of_a_killed_one_is_taken_over(tmp_path, caplog):
    holder = _start_holder(tmp_path)
    try:
        record = json.loads((tmp_path / ".lock").read_text())
        assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
        with pytest.raises(workdir_lock.WorkdirLockedError, match=re.escape(
                f"pid {holder.pid}, started {record['started']}")):
            workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with caplog.at_level(logging.WARNING, logger="emobed_jax.training.workdir_lock"):
        with workdir_lock.WorkdirLock(str(tmp_path)):
            assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert f"taking over the lock of {tmp_path}" in caplog.text
    assert f"pid {holder.pid}" in caplog.text and "no longer running" in caplog.text


def test_cli_refuses_a_locked_workdir_with_one_line(tmp_path):
    holder = _start_holder(tmp_path)
    try:
        from cli_helpers import tiny_flags

        start = time.monotonic()
        proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "main.py")] +
                              tiny_flags(str(tmp_path / "data"), str(tmp_path)), cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"error: WorkdirLockedError: --workdir={tmp_path} is in use "
                                  f"by another training run (host {socket.gethostname()}, pid "
                                  f"{holder.pid}, started "), proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()  # refused before preparing anything
    print(f"refused in {elapsed:.1f} s (including the interpreter and jax start)")
