"""How experiments/main.py ends and what it prints: one line and 130/143 on a signal at start-up
or while a dataset is prepared (nothing half-written), nothing created for an invalid config,
quiet logs, the summary table, and the tcmalloc re-execution."""
import os
import signal
import subprocess
import sys
import time

import pytest

from cli_helpers import ROOT, run_main, tiny_flags
from emobed_jax import console, tcmalloc

MAIN = [sys.executable, os.path.join(ROOT, "experiments", "main.py")]


def _start(args, env=None):
    return subprocess.Popen(MAIN + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, **(env or {})})


def _wait_until_handled(pid: int, timeout: float = 60.0) -> None:
    """Until main.py's signal handlers are installed: it installs SIGTERM's last, and Python
    itself catches only SIGINT, so the SIGTERM bit of /proc/PID/status's SigCgt says so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as f:
            caught = next(int(x.split()[1], 16) for x in f if x.startswith("SigCgt:"))
        if caught >> (signal.SIGTERM - 1) & 1:
            return
        time.sleep(0.002)
    raise AssertionError("main.py installed no SIGTERM handler")


@pytest.mark.parametrize("signum,code,line,delay", [
    (signal.SIGINT, 130, "interrupted (Ctrl-C): stopped", 1.0),
    (signal.SIGTERM, 143, "terminated (SIGTERM): stopped", 1.0),
    # At once: inside the imports of absl / numpy / JAX (a signal there printed the interrupted
    # library's traceback, or escaped the handler before the flags existed).
    (signal.SIGINT, 130, "interrupted (Ctrl-C): stopped", 0.0),
    (signal.SIGTERM, 143, "terminated (SIGTERM): stopped", 0.0)])
def test_a_signal_at_start_up_gives_one_line(tmp_path, signum, code, line, delay):
    workdir = str(tmp_path / "run")
    # Without the tcmalloc re-execution: its new process has no handler for its first ~0.1 s.
    proc = _start(tiny_flags(str(tmp_path / "data"), workdir), env={"EMOBED_TCMALLOC": "0"})
    _wait_until_handled(proc.pid)
    time.sleep(delay)  # importing, parsing flags, initialising JAX
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(line), err[-2000:]


def test_sigterm_while_the_dataset_is_prepared_leaves_nothing_half_written(tmp_path):
    data_dir = tmp_path / "data"
    proc = _start(tiny_flags(str(data_dir), str(tmp_path / "run")))
    seen, deadline = "", time.monotonic() + 60
    while "preparing dataset" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    assert "preparing dataset synthetic_emotion/tiny/1.0.0" in seen, seen
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err, err[-2000:]
    written = [os.path.join(r, n) for r, dirs, files in os.walk(data_dir) for n in dirs + files]
    # tfds prepares into incomplete.* and renames when done: neither may be left behind.
    assert not [p for p in written if "incomplete" in p or p.endswith("dataset_info.json")], written


def test_invalid_config_creates_no_workdir(tmp_path):
    workdir = tmp_path / "never"
    proc = run_main(tiny_flags(str(tmp_path / "data"), str(workdir), method="foo"),
                    expect_ok=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: ValueError: config.method='foo' is not valid")
    assert not workdir.exists() and not (tmp_path / "data").exists()


def test_summary_table():
    table = console.summary_table({"validation": {"ccc_a": 0.5, "n": 3, "ccc_mean": -0.25},
                                   "test": {"ccc_a": 0.125}})
    assert table.splitlines() == [
        "          validation      test",
        "ccc_a         0.5000    0.1250",
        "ccc_mean     -0.2500          "]


@pytest.mark.skipif(tcmalloc.library() is None, reason="libtcmalloc-minimal4 not installed")
def test_programs_reexecute_with_tcmalloc():
    code = "from emobed_jax import tcmalloc; tcmalloc.reexec(); print(tcmalloc.loaded())"
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "EMOBED_TCMALLOC",
                                                             "EMOBED_TCMALLOC_REEXEC")}
    run = [sys.executable, "-c", code]
    on = subprocess.run(run, capture_output=True, text=True, env=env, check=True)
    off = subprocess.run(run, capture_output=True, text=True, check=True,
                         env={**env, "EMOBED_TCMALLOC": "0"})
    assert on.stdout.strip() == "True" and off.stdout.strip() == "False"
