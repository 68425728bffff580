"""Checkpoints: plain tensors and builtins only, written durably, read with weights_only."""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReslabError
from ..models.classifier import unwrap
from ..utils import atomic_write_bytes


def save_checkpoint(path: Path, model: nn.Module, **state: Any) -> None:
    # Serialised in memory first: torch.save's own writer turns a full disk into a
    # RuntimeError ("unexpected pos"); a plain file write raises the OSError (ENOSPC) that
    # the CLI reports in one line.
    buffer = io.BytesIO()
    torch.save({"model": unwrap(model).state_dict(), **state}, buffer)
    atomic_write_bytes(Path(path), buffer.getbuffer())


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ReslabError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, i.e. running the file's code: never.
        raise ReslabError(f"checkpoint {path} holds objects other than tensors and plain data; "
                          "refused, since loading them would run code from the file") from None
    except Exception as err:  # truncated or corrupt file
        raise ReslabError(f"checkpoint {path} could not be read (corrupt or truncated?): "
                          f"{first_line(err)}") from None


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
