"""Every config file loads and validates; invalid values fail with the valid ones listed."""
import glob
import importlib.util
import os
import re

import pytest

from emobed_jax import config as config_lib
from emobed_jax.losses import objective

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(f for f in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if not f.endswith("__init__.py"))


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_config_files():
    assert any(f.endswith("synthetic.py") for f in CONFIG_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_file_loads_and_validates(path):
    module = _load(path)
    assert module.__doc__ and "experiments/main.py" in module.__doc__, "docstring must give the command"
    config = module.get_config()
    config_lib.validate_config(config)
    for method in objective.METHODS:
        config_lib.validate_config(module.get_config(method))


def test_config_keys_match_base():
    """Experiment configs only set keys the base config defines (no key nobody reads)."""
    base = config_lib.get_base_config().to_dict()
    for path in CONFIG_FILES:
        config = _load(path).get_config().to_dict()

        def walk(d, ref, prefix=""):
            for k, v in d.items():
                assert k in ref, f"{path}: key {prefix}{k} is not in the base config"
                if isinstance(v, dict) and k not in ("label_delay_s",):
                    walk(v, ref[k], prefix + k + ".")
        walk(config, base)


@pytest.mark.parametrize("key,value,needle", [
    ("method", "foo", "config.method='foo' is not valid; expected one of ['monomodal', 'joint'"),
    ("target_modality", "ecg", "expected one of config.modalities=['audio', 'video']"),
    ("parallelism", "gspmd", "expected one of ['jit', 'pmap']"),
    ("model.encoder", "transformer", "expected one of ['lstm', 'conv', 'pooled']"),
    ("model.rnn_impl", "flax", "expected one of ['auto', 'fused', 'cudnn', 'scan']"),
    ("batch_size", 7, "not divisible by the 2 devices"),
    ("loss.mining", "random", "expected one of ['batch_hard', 'semi_hard']"),
    ("best_metric", "uar", "config.best_metric='uar' is not a validation metric of "
                           "task='regression'"),
    ("best_metric", "ccc_mean_per_video", None),  # a per-group name is valid before the dataset
    ("loss.num_bins", 1, "config.loss.num_bins=1"),
    ("loss.temperature", 0.0, "config.loss.temperature=0.0"),
    ("loss.pos_threshold", 0.5, "config.loss.pos_threshold=0.5"),
    ("postprocess.bias_scale", "both", "expected one of ['none', 'center_scale', 'center', "
                                       "'scale']"),
    ("data.nonfinite", "zero", "expected one of ['mask', 'raise']"),
    ("model.hidden", 0, "config.model.hidden=0: expected a positive integer"),
    ("data.frame_rate_hz", 0.0, "config.data.frame_rate_hz=0.0: expected > 0"),
])
def test_invalid_values_name_key_and_valid_ones(key, value, needle):
    config = config_lib.get_base_config()
    config.update_from_flattened_dict({key: value})
    if needle is None:
        config_lib.validate_config(config, num_devices=2)
        return
    with pytest.raises(ValueError) as e:
        config_lib.validate_config(config, num_devices=2)
    assert needle in str(e.value)


def _info(level, group_key=None, rate=25.0):
    from emobed_jax.data import loading
    from emobed_jax.datasets import conventions

    return loading.DatasetInfo(name="corpus", level=level, modalities=("audio", "video"),
                               feature_dims={"audio": 3, "video": 2}, class_names=None,
                               splits=("train",), metadata={},
                               conventions=conventions.Conventions(group_key=group_key,
                                                                   frame_rate_hz=rate),
                               label_names=("arousal", "valence"))


@pytest.mark.parametrize("key,value,info,needle", [
    ("data.frame_rate_hz", 30.0, _info("frame"), "config.data.frame_rate_hz=30.0 does not match "
                                                 "dataset 'corpus', whose labels are at 25.0 Hz"),
    ("loss.regression", "sequence_ccc", _info("utterance"), "config.loss.regression"),
    ("best_metric", "ccc_mean_per_video", _info("frame"), "config.best_metric"),
    ("best_metric", "ccc_mean_per_video", _info("utterance", "video_id"), None),
    ("best_metric", "ccc_mean_per_recording", _info("frame"), None),
])
def test_checks_against_the_dataset(key, value, info, needle):
    config = config_lib.get_base_config()
    config.update_from_flattened_dict({key: value})
    if needle is None:
        config_lib.validate_against_dataset(config, info)
        return
    with pytest.raises(ValueError, match=re.escape(needle)):
        config_lib.validate_against_dataset(config, info)


def test_a_bad_config_is_refused_before_any_data_is_read(tmp_path):
    from emobed_jax.training import experiment

    config = config_lib.get_base_config()
    config.method = "foo"
    config.data.data_dir = str(tmp_path / "tfds")
    with pytest.raises(ValueError, match="config.method='foo'"):
        experiment.build(config)
    assert not (tmp_path / "tfds").exists()


def test_config_argument_sets_method_target_task():
    config = config_lib.apply_arg(config_lib.get_base_config(), "joint,video")
    assert (config.method, config.target_modality) == ("joint", "video")
    with pytest.raises(ValueError, match="at most METHOD,TARGET,TASK"):
        config_lib.apply_arg(config_lib.get_base_config(), "a,b,c,d")
