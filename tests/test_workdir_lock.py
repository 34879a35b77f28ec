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


def _launch_local():
    sys.path.insert(0, os.path.join(REPO, "experiments"))
    try:
        import launch_local
    finally:
        sys.path.remove(os.path.join(REPO, "experiments"))
    return launch_local


def test_one_failing_process_stops_both_within_seconds(synthetic_data_dir, tmp_path):
    # The two workers of `launch_local.py`, started here without the launcher (which would stop
    # the survivor itself): the processes must stop each other, as on separate hosts.
    launch_local = _launch_local()
    from cli_helpers import tiny_flags

    flags = tiny_flags(synthetic_data_dir, str(tmp_path / "w"), num_train_steps=4,
                       checkpoint_every_steps=2, eval_every_steps=4)
    flags[0] = "--config=" + os.path.join(REPO, "tests", "failing_process_config.py")
    env = launch_local.process_env(1)
    env.update(EMOBED_TEST_FAIL_PROCESS="1", EMOBED_TEST_FAIL_HOW="raise")
    port = launch_local.free_port()
    logs = [open(tmp_path / f"{i}.log", "w+") for i in (0, 1)]
    procs = [subprocess.Popen(launch_local.worker_command(flags, 2, i, port), cwd=REPO, env=env,
                              stdout=logs[i], stderr=subprocess.STDOUT) for i in (0, 1)]
    ended = {}
    deadline = time.monotonic() + 150
    try:
        while len(ended) < 2 and time.monotonic() < deadline:
            for i, p in enumerate(procs):
                if i not in ended and p.poll() is not None:
                    ended[i] = time.monotonic()
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    output = [(tmp_path / f"{i}.log").read_text() for i in (0, 1)]
    assert len(ended) == 2, f"still running 150 s after the start:\n{output[0][-3000:]}"
    assert min(ended, key=ended.get) == 1, output[1][-3000:]  # the broken one ends first
    gap = ended[0] - ended[1]
    print(f"process 0 stopped {gap:.2f} s after process 1 failed")
    assert gap < 10, output[0][-3000:]
    assert [p.returncode for p in procs] == [1, 1]
    assert "RuntimeError: injected failure at step 2" in output[1]
    # Process 0 names the first error, whether its watcher saw it or its own collective failed.
    assert "error: process 1 failed first: RuntimeError: injected failure at step 2" in output[0], \
        output[0][-3000:]


def test_launcher_names_the_process_that_failed_first(monkeypatch, capsys):
    launch_local = _launch_local()
    # Stand-in workers (no jax): process 1 fails after a moment, process 0 would run for a minute.
    scripts = {0: "import time; time.sleep(60)",
               1: "import sys, time; time.sleep(0.5); print('broken', flush=True); sys.exit(3)"}
    monkeypatch.setattr(launch_local, "worker_command",
                        lambda args, n, i, port: [sys.executable, "-c", scripts[i]])
    start = time.monotonic()
    status = launch_local.launch(["--workdir=unused"], num_processes=2)
    assert status == 3 and time.monotonic() - start < 15
    captured = capsys.readouterr()
    assert "[1] broken" in captured.out
    assert "[launcher] process 1 failed first (exit status 3); stopping the others" in captured.err


def test_evaluation_needs_no_lock(synthetic_data_dir, tmp_path):
    # A workdir whose training run is still going (its lock held) can be evaluated.
    config = make_tiny_config(synthetic_data_dir, **{
        "model.encoder": "conv", "num_train_steps": 2, "eval_every_steps": 2,
        "checkpoint_every_steps": 2})
    train.train_and_evaluate(config, str(tmp_path))
    with workdir_lock.WorkdirLock(str(tmp_path)):
        metrics = train.evaluate_checkpoint(None, str(tmp_path), splits=["test"], plots=False)
    assert metrics["test"]["step"] == 2


def test_a_two_process_run_on_a_locked_workdir_stops_together(tmp_path):
    # Process 0 takes the lock for the run; both processes learn it is held and exit at once.
    launch_local = _launch_local()
    from cli_helpers import tiny_flags

    flags = tiny_flags(str(tmp_path / "data"), str(tmp_path / "w"))
    port = launch_local.free_port()
    with workdir_lock.WorkdirLock(str(tmp_path / "w")):
        procs = [subprocess.Popen(launch_local.worker_command(flags, 2, i, port), cwd=REPO,
                                  env=launch_local.process_env(1), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
        output = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [1, 1], output
    assert (f"error: WorkdirLockedError: --workdir={tmp_path / 'w'} is in use by another training "
            f"run (host {socket.gethostname()}, pid {os.getpid()}") in output[0]
    assert (f"error: WorkdirLockedError: process 0 could not lock --workdir={tmp_path / 'w'} (in "
            f"use by host {socket.gethostname()}, pid {os.getpid()}") in output[1]
    assert not (tmp_path / "data").exists()


def test_replica_runs_are_validated_for_one_data_device(tmp_path):
    """A replica run (num_seeds > 1) batches on one device and splits the seeds over the
    others, so batch sizes need not divide the device count; a single run's must."""
    from emobed_jax import config as config_lib

    @workdir_lock.holds_workdir
    def run(config, workdir, devices=None):
        return "ran"

    config = config_lib.get_base_config()
    config.batch_size, config.num_seeds = 32, 5
    assert run(config, str(tmp_path / "replicas"), devices=list(range(5))) == "ran"
    config.num_seeds = 1
    with pytest.raises(ValueError, match="not divisible by the 5 devices"):
        run(config, str(tmp_path / "single"), devices=list(range(5)))
