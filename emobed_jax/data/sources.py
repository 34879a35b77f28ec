"""No stale datasets: a prepared dataset records a fingerprint of the sources it was built from.

tfds prepares a dataset once (into `<data_dir>/<name>/<config>/<version>`, by default under
`~/tensorflow_datasets`) and reuses it as is. For datasets built from files in
`config.data.manual_dir`, `record` writes `emobed_sources.json` next to the prepared files: every
source file's relative path, size and modification time, and the builder's settings. Before a
prepared dataset is used again, `check` compares the sources now with that record; when they
changed, the run stops with a message saying what changed and how to rebuild
(`--config.data.rebuild=True`, which deletes the prepared copy and prepares it again), instead of
training on a stale copy. To remove a prepared dataset, delete its `<data_dir>/<name>` folder.
"""
from __future__ import annotations

import json
import logging
import os
import shutil

from emobed_jax import atomic

FILE = "emobed_sources.json"

log = logging.getLogger(__name__)


class StaleDatasetError(ValueError):
    """The prepared dataset was built from other sources than `manual_dir` holds now."""


def fingerprint(builder, manual_dir: str | None) -> dict:
    """The sources of a build: the builder's name, version and settings, and per file under
    `manual_dir` (if any) its size and modification time."""
    files = {}
    if manual_dir:
        for root, _, names in os.walk(manual_dir):
            for name in names:
                path = os.path.join(root, name)
                st = os.stat(path)
                files[os.path.relpath(path, manual_dir)] = [st.st_size, st.st_mtime_ns]
    config = builder.builder_config
    return {"builder": builder.name, "version": str(builder.version),
            "settings": repr(config) if config is not None else None, "files": files}


def _path(builder) -> str:
    return os.path.join(builder.data_dir, FILE)


def _prepared(builder) -> bool:
    return os.path.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def differences(old: dict, new: dict, limit: int = 8) -> list[str]:
    """Human-readable differences between two fingerprints (at most `limit` file lines)."""
    out = [f"builder {k}: {old.get(k)!r} -> {new.get(k)!r}"
           for k in ("builder", "version", "settings") if old.get(k) != new.get(k)]
    a, b = old.get("files", {}), new.get("files", {})
    lines = ([f"removed {p}" for p in sorted(set(a) - set(b))]
             + [f"added {p}" for p in sorted(set(b) - set(a))]
             + [f"changed {p} (size or modification time)" for p in sorted(set(a) & set(b))
                if a[p] != b[p]])
    more = len(lines) - limit
    return out + lines[:limit] + ([f"... and {more} more"] if more > 0 else [])


def check(builder, manual_dir: str | None, rebuild: bool) -> bool:
    """Before a prepared dataset is reused: raises `StaleDatasetError` when its sources changed,
    or, with `rebuild`, deletes the prepared copy (returns True: make the builder anew).

    A prepared dataset without a record (prepared by an older version) gets one now.
    """
    if not _prepared(builder):
        return False
    if rebuild:
        log.warning("config.data.rebuild=True: deleting the prepared %s in %s and preparing it "
                    "again", builder.name, builder.data_dir)
        shutil.rmtree(builder.data_dir)
        return True
    now = fingerprint(builder, manual_dir)
    try:
        with open(_path(builder), encoding="utf-8") as f:
            before = json.load(f)
    except FileNotFoundError:
        log.warning("%s has no record of its sources; recording the current ones", builder.data_dir)
        atomic.write_json(_path(builder), now)
        return False
    except (OSError, json.JSONDecodeError) as e:
        raise StaleDatasetError(f"{_path(builder)} is unreadable ({e}); rebuild the dataset with "
                                f"--config.data.rebuild=True") from e
    changed = differences(before, now)
    if changed:
        raise StaleDatasetError(
            f"the prepared dataset {builder.name!r} in {builder.data_dir} was built from other "
            f"sources than {manual_dir or 'the builder settings'} now hold: {'; '.join(changed)}. "
            f"Rebuild it with --config.data.rebuild=True (or delete {builder.data_dir})")
    return False


def record(builder, manual_dir: str | None) -> None:
    """After a build: writes the fingerprint of the sources next to the prepared files."""
    if _prepared(builder) and not os.path.exists(_path(builder)):
        atomic.write_json(_path(builder), fingerprint(builder, manual_dir))
