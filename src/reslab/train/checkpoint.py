"""Checkpoints: plain tensors and builtins only, written atomically, read with weights_only."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ReslabError
from ..utils import atomic_save_torch


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(path: Path, model: nn.Module, **state) -> None:
    atomic_save_torch({"model": unwrap(model).state_dict(), **state}, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ReslabError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or pickled code we refuse to run
        raise ReslabError(f"checkpoint {path} could not be read safely: "
                          f"{str(err).splitlines()[0]}") from None


def load_weights(model: nn.Module, state: dict, path: str | Path) -> None:
    """Load a state dict, turning an architecture mismatch into a one-line error."""
    own = unwrap(model).state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing keys, {len(unexpected)} unexpected keys, "
                  f"{len(wrong)} shape mismatches"
                  + (f" (e.g. {wrong[0]}: checkpoint {tuple(state[wrong[0]].shape)} vs model "
                     f"{tuple(own[wrong[0]].shape)})" if wrong else ""))
        raise ReslabError(f"checkpoint {path} does not fit the configured model: {detail}; "
                          "was it saved for another architecture or width?")
    unwrap(model).load_state_dict(state)
