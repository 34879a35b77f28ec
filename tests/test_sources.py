"""No stale datasets: a prepared manual-dir dataset stops the run when its sources change, and
`data.rebuild` prepares it again."""
import json
import os

import pytest

from configs import omg_emotion
from emobed_jax.data import loading, sources
from omg_fixtures import write_omg_manual_dir


def _config(manual, data_dir, rebuild=False):
    config = omg_emotion.get_config("monomodal,audio,category")
    config.data.manual_dir = str(manual)
    config.data.data_dir = str(data_dir)
    config.data.rebuild = rebuild
    return config


def _num_train(builder) -> int:
    return builder.info.splits["train"].num_examples


def test_changed_sources_stop_the_run_and_rebuild_prepares_again(tmp_path):
    manual, data_dir = tmp_path / "manual", tmp_path / "tfds"
    write_omg_manual_dir(manual)
    builder = loading.get_builder(_config(manual, data_dir))
    record = json.loads(open(os.path.join(builder.data_dir, sources.FILE)).read())
    assert "omg_TrainVideos.csv" in record["files"] and record["builder"] == "omg_emotion"
    before = _num_train(builder)
    assert loading.get_builder(_config(manual, data_dir)).data_dir == builder.data_dir  # reused

    # One training wav disappears: the prepared copy no longer matches its sources.
    wavs = sorted(p for p in (manual / "audio").rglob("*.wav"))
    removed = wavs[0]
    os.remove(removed)
    with pytest.raises(sources.StaleDatasetError) as e:
        loading.get_builder(_config(manual, data_dir))
    message = str(e.value)
    assert f"removed {os.path.relpath(removed, manual)}" in message
    assert "--config.data.rebuild=True" in message and builder.data_dir in message

    rebuilt = loading.get_builder(_config(manual, data_dir, rebuild=True))
    assert rebuilt.info.metadata["missing"] != builder.info.metadata["missing"] or \
        _num_train(rebuilt) != before
    # Recorded anew: the next ordinary run reuses the rebuilt copy.
    assert loading.get_builder(_config(manual, data_dir)).data_dir == rebuilt.data_dir


def test_fingerprint_differences_are_named():
    old = {"builder": "b", "version": "1", "settings": "s", "files": {"a": [1, 1], "b": [2, 2]}}
    new = {"builder": "b", "version": "1", "settings": "t", "files": {"a": [1, 5], "c": [3, 3]}}
    assert sources.differences(old, new) == [
        "builder settings: 's' -> 't'", "removed b", "added c",
        "changed a (size or modification time)"]
