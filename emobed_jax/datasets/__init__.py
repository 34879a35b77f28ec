"""tfds builders: importing this package registers every builder module in it.

Modules are discovered with `pkgutil`, so adding a builder needs no edit here. `BUILDER_NAMES`
holds the registered names of the builders found (what `config.data.name` may be).
"""
import importlib
import pkgutil

import tensorflow_datasets as tfds

BUILDER_NAMES = set()
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        _mod = importlib.import_module(f"{__name__}.{_module.name}")
        BUILDER_NAMES.update(
            obj.name for obj in vars(_mod).values()
            if isinstance(obj, type) and issubclass(obj, tfds.core.GeneratorBasedBuilder)
            and obj.__module__ == _mod.__name__)
