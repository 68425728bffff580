"""reslab: train, sweep, compare and report ResNet image classifiers from one config.

    import reslab
    result = reslab.train("examples/demo.yaml", out="runs/demo")   # -> result.json contents
    summary = reslab.train("examples/demo.yaml", out="runs/demo-x3", repeats=3)  # summary.json
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["train", "train_repeats", "load_config", "__version__"]


# Thin wrappers, imported on first use: `import reslab` (and so `reslab --help`) stays light,
# without torch.
def train(*args, **kwargs) -> dict:
    """See `reslab.api.train`."""
    from .api import train as _train

    return _train(*args, **kwargs)


def train_repeats(*args, **kwargs) -> dict:
    """See `reslab.api.train_repeats`."""
    from .api import train_repeats as _train_repeats

    return _train_repeats(*args, **kwargs)


def load_config(source=None, overrides=None):
    """A YAML path, mapping or Config plus `section.key=value` overrides -> validated Config."""
    from .config import load_config as _load

    return _load(source, overrides)
