"""Checkpoints: plain tensors and builtins only, written durably, read with weights_only.

Every checkpoint carries a sha256 of its content (`DIGEST_KEY`), checked on every load:
torch's zip reader does not check its entries' CRCs, so a flipped byte in a tensor would
otherwise load as silently different weights. Checkpoints written before the digest existed
load unchecked (they still get the non-finite-weights check)."""
from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReslabError
from ..models.classifier import unwrap
from ..utils import atomic_write_bytes

DIGEST_KEY = "sha256"


def save_checkpoint(path: Path, model: nn.Module, **state: Any) -> None:
    # Serialised in memory first: torch.save's own writer turns a full disk into a
    # RuntimeError ("unexpected pos"); a plain file write raises the OSError (ENOSPC) that
    # the CLI reports in one line.
    payload = {"model": unwrap(model).state_dict(), **state}
    payload[DIGEST_KEY] = content_digest(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getbuffer())


def content_digest(payload: dict) -> str:
    """sha256 over every value of the checkpoint but the digest itself: tensors by key path,
    dtype, shape and bytes; other values by key path and repr (exact for the plain data a
    checkpoint holds, and the same after a save/load round trip)."""
    h = hashlib.sha256()
    for key, value in payload.items():
        if key != DIGEST_KEY:
            _hash_value(h, str(key), value)
    return h.hexdigest()


def _hash_value(h: Any, where: str, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"{where}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(f"{where}|dict{len(value)}|".encode())
        for k, v in value.items():
            _hash_value(h, f"{where}.{k!r}", v)
    elif isinstance(value, (list, tuple)):
        h.update(f"{where}|{type(value).__name__}{len(value)}|".encode())
        for i, v in enumerate(value):
            _hash_value(h, f"{where}[{i}]", v)
    else:
        h.update(f"{where}|{value!r}|".encode())


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ReslabError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, i.e. running the file's code: never.
        raise ReslabError(f"checkpoint {path} holds objects other than tensors and plain data; "
                          "refused, since loading them would run code from the file") from None
    except Exception as err:  # truncated or corrupt file
        raise ReslabError(f"checkpoint {path} could not be read (corrupt or truncated?): "
                          f"{first_line(err)}") from None
    verify_checkpoint(path, ckpt)
    return ckpt


def verify_checkpoint(path: Path, ckpt: Any) -> None:
    """The digest written at save time matches the content, and the weights are finite."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ReslabError(f"checkpoint {path} holds no model weights (not a reslab checkpoint)")
    stored = ckpt.get(DIGEST_KEY)
    if stored is not None and stored != content_digest(ckpt):
        raise ReslabError(f"checkpoint {path} is corrupt: its content does not match the sha256 "
                          "written when it was saved; nothing was changed")
    bad = next((k for k, t in ckpt["model"].items() if isinstance(t, torch.Tensor)
                and t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise ReslabError(f"checkpoint {path} holds non-finite weights (NaN or inf in {bad}); "
                          "nothing was changed")


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
