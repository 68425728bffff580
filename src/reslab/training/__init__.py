"""Training: `train()` runs a config into a run directory (see `loop`)."""
from .loop import run_training, train

__all__ = ["run_training", "train"]
