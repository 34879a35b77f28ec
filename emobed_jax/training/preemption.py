"""Graceful preemption: SIGTERM/SIGINT finish the current step, checkpoint, and stop.

Preemptible GPUs and TPU VMs send SIGTERM before they are reclaimed; Ctrl-C sends SIGINT. The
training loop polls `StopOnSignal.signum` after every step, saves the latest checkpoint and raises
`Preempted`, which the CLI turns into one line and the shell's status for the signal, 128 + its
number: 143 for SIGTERM, 130 for SIGINT (a scheduler that restarts the same command resumes it).
"""
from __future__ import annotations

import signal
import threading


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, signum: int, step: int, directory: str):
        self.signum, self.step, self.directory = signum, step, directory
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} after step {step}; checkpoint saved in {directory}. "
                         f"Rerun the same command to resume.")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


class StopOnSignal:
    """Context manager that records SIGTERM/SIGINT instead of dying, then restores handlers.

    Only installs handlers in the main thread (signal handlers cannot be set elsewhere); in other
    threads it is a no-op and `signum` stays None. A second signal of the same kind while one is
    pending restores the default behaviour, so a stuck run can still be interrupted.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        self.signum = signum

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
