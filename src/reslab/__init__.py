"""reslab: train, sweep, compare and report ResNet image classifiers from one config."""
from __future__ import annotations

__version__ = "0.1.0"


def train(config=None, out=None, resume=None, overrides=None, on_epoch=None, quiet=False) -> dict:
    """Train from a config (YAML path, mapping or Config) into a run directory.

    Returns the contents of result.json. See `reslab.train.loop.train` for details.
    """
    from .train.loop import train as _train

    return _train(config, out=out, resume=resume, overrides=overrides, on_epoch=on_epoch,
                  quiet=quiet)


def load_config(source=None, overrides=None):
    from .config import load_config as _load

    return _load(source, overrides)


__all__ = ["train", "load_config", "__version__"]
