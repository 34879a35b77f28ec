"""tfds builders: importing this package registers every builder module in it.

Modules are discovered with `pkgutil`, so adding a builder needs no edit here.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
