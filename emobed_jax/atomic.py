"""Atomic file writes: a reader (or a crash) never sees a half-written output.

Every result file the project writes (results, metrics, prediction CSVs, plots, reports) goes
through `atomic_write`: the content goes to a temporary file in the destination's folder, which
is renamed over the destination only after it was written completely (`os.replace` is atomic
within one file system). On an error the temporary file is removed and the destination is left
as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", newline: str | None = None):
    """Opens a temporary file that replaces `path` when the `with` block ends without error.

    Args:
      path: the destination.
      mode: 'w' (text) or 'wb' (binary).
      newline: passed to `open` for text files (`''` for the csv module).

    Yields:
      The open temporary file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a result file is readable as usual
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Writes `obj` as indented JSON with sorted keys, atomically (numpy scalars as floats)."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=float)
