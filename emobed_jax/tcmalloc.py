"""Running the programs with tcmalloc preloaded, without a wrapper.

JAX on the CPU is 1.4-1.8x faster with tcmalloc than with glibc's malloc, which page-faults on
every training step (README "Speed"). The allocator must be loaded before the process starts
(`LD_PRELOAD`), so `reexec()` -- called first thing by the programs in `experiments/` --
re-executes the same command with the library preloaded when it is installed and not loaded yet.
Set `EMOBED_TCMALLOC=0` to turn this off (e.g. to compare allocators); `make` already preloads it.
"""
from __future__ import annotations

import os
import sys

ENV = "EMOBED_TCMALLOC"
# Where Debian/Ubuntu's libtcmalloc-minimal4 puts it.
LIBRARIES = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
             "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4")
_DONE = "EMOBED_TCMALLOC_REEXEC"  # set in the re-executed process: never loop


def library() -> str | None:
    """The installed tcmalloc library, or None."""
    return next((p for p in LIBRARIES if os.path.exists(p)), None)


def loaded() -> bool:
    """Whether this process runs with tcmalloc (it is mapped into its memory)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return "tcmalloc" in f.read()
    except OSError:
        return False


def reexec() -> None:
    """Re-executes this command with tcmalloc preloaded, when it is installed, not loaded and not
    turned off (`EMOBED_TCMALLOC=0`); otherwise returns at once. Call it before importing JAX."""
    if os.environ.get(ENV, "1") == "0" or os.environ.get(_DONE) or loaded():
        return
    path = library()
    if path is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(p for p in (path, env.get("LD_PRELOAD")) if p)
    env[_DONE] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
