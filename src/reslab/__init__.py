"""reslab: train, sweep, compare and report ResNet image classifiers from one config.

    import reslab
    result = reslab.train("examples/demo.yaml", out="runs/demo")   # -> result.json contents
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["train", "load_config", "__version__"]


def load_config(source=None, overrides=None):
    """A YAML path, mapping or Config plus `section.key=value` overrides -> validated Config."""
    from .config import load_config as _load

    return _load(source, overrides)


def __getattr__(name: str):
    # `reslab.train` is the (callable) training package, imported on first use so that
    # `import reslab` stays light.
    if name == "train":
        return importlib.import_module(".train", __name__)
    raise AttributeError(f"module 'reslab' has no attribute {name!r}")
