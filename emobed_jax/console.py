"""What the programs print on the console, and how.

* `setup(main_process)`: our own lines (logger `emobed_jax`) as plain `message` lines on stderr,
  INFO on process 0 and WARNING elsewhere; libraries that log through absl (orbax, tfds) at
  WARNING, and JAX's note that no TPU backend exists on a CPU machine silenced (it says nothing
  about the run).
* `beside_progress_bar()`: while a tqdm progress bar is drawn, each line is written above the
  bar (`tqdm.write`) instead of being glued to it.
* `summary_table(results)`: the final metrics as a small table, one row per metric and one
  column per split.
"""
from __future__ import annotations

import contextlib
import logging
import sys

LOGGER = "emobed_jax"
# Loggers whose INFO lines are noise for our users (their warnings still show).
QUIET = ("absl", "jax._src.xla_bridge", "orbax", "tensorflow_datasets")


class _Plain(logging.StreamHandler):
    """`message` only (warnings prefixed), on stderr."""

    def __init__(self):
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def format(self, record):
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def setup(main_process: bool = True) -> None:
    """Routes the package's log lines to stderr as plain lines; quiets the libraries'."""
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    ours = logging.getLogger(LOGGER)
    ours.setLevel(logging.INFO if main_process else logging.WARNING)
    if not any(isinstance(h, _Plain) for h in ours.handlers):
        ours.addHandler(_Plain())
    ours.propagate = False  # not again through absl's handler, with its prefix


class _AboveBar(_Plain):
    """The same lines, written through `tqdm.write` (above a progress bar being drawn)."""

    def emit(self, record):
        import tqdm

        try:
            tqdm.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never fail the run
            self.handleError(record)


@contextlib.contextmanager
def beside_progress_bar():
    """Within the block, the package's log lines are written above the progress bar."""
    logger = logging.getLogger(LOGGER)
    plain = [h for h in logger.handlers if isinstance(h, _Plain)]
    if not plain:  # not set up (a library user's own logging): leave it alone
        yield
        return
    above = _AboveBar()
    for h in plain:
        logger.removeHandler(h)
    logger.addHandler(above)
    try:
        yield
    finally:
        logger.removeHandler(above)
        for h in plain:
            logger.addHandler(h)


def summary_table(results: dict) -> str:
    """`{split: {metric: value}}` as an aligned text table of its float metrics (4 decimals)."""
    splits = list(results)
    names = []
    for split in splits:
        names += [k for k, v in results[split].items()
                  if isinstance(v, float) and k not in names]
    if not names:
        return ""
    width = max(len(n) for n in names)
    cols = [max(len(s), 8) for s in splits]
    lines = [" " * width + "".join(f"  {s:>{c}}" for s, c in zip(splits, cols))]
    for name in names:
        cells = []
        for split, c in zip(splits, cols):
            value = results[split].get(name)
            cells.append(f"  {value:>{c}.4f}" if isinstance(value, float) else "  " + " " * c)
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)
