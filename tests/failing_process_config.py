"""Test-only config (tests/test_workdir_lock.py): configs/synthetic.py, where one process of a
multi-process run fails at its first checkpoint, to show the others do not hang.

`EMOBED_TEST_FAIL_PROCESS=I` names the failing process (`--process_id=I` on its command line) and
`EMOBED_TEST_FAIL_HOW` how it fails: `raise` (a Python exception), `kill` (SIGKILL: a crashed
process, whose sockets the kernel closes) or `stop` (SIGSTOP: a frozen or unreachable host, noticed
only by its missing heartbeats). The failure is patched into the training module from here, so no production code carries
a test hook; this file is the only reader of those variables.
"""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import synthetic  # noqa: E402


def _break_this_process(how: str) -> None:
    from emobed_jax.training import train

    def failing_checkpoint(self, step, state, metrics):
        if how in ("kill", "stop"):
            os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        raise RuntimeError(f"injected failure at step {step}")

    train._Checkpoint.__call__ = failing_checkpoint


def get_config(arg=None):
    """configs/synthetic.py's config; breaks this process if the environment names it."""
    index = os.environ.get("EMOBED_TEST_FAIL_PROCESS")
    if index is not None and f"--process_id={index}" in sys.argv:
        _break_this_process(os.environ.get("EMOBED_TEST_FAIL_HOW", "raise"))
    return synthetic.get_config(arg) if arg else synthetic.get_config()
