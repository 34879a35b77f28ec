"""Every config file loads and validates; invalid values fail with the valid ones listed."""
import glob
import importlib.util
import os

import pytest

from emobed_jax import config as config_lib

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
    for method in config_lib.METHODS:
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
    ("model.encoder", "transformer", "expected one of ['lstm', 'gru', 'conv']"),
    ("batch_size", 7, "not divisible by the 2 devices"),
    ("loss.mining", "random", "expected one of ['batch_hard', 'semi_hard']"),
])
def test_invalid_values_name_key_and_valid_ones(key, value, needle):
    config = config_lib.get_base_config()
    config.update_from_flattened_dict({key: value})
    with pytest.raises(ValueError) as e:
        config_lib.validate_config(config, num_devices=2)
    assert needle in str(e.value)


def test_config_argument_sets_method_target_task():
    config = config_lib.apply_arg(config_lib.get_base_config(), "joint,video")
    assert (config.method, config.target_modality) == ("joint", "video")
    with pytest.raises(ValueError, match="at most METHOD,TARGET,TASK"):
        config_lib.apply_arg(config_lib.get_base_config(), "a,b,c,d")
