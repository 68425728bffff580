"""Locating and reading weights: library caches, state-dict files, key mapping, the load report.

`model.pretrained`:
- `true`: the library's default weights for a `tv:`/`timm:` arch, read only from its local cache
  (torchvision: `$TORCH_HOME/hub/checkpoints/<file>`; timm: the Hugging Face cache), never
  downloaded;
- a path: a .pt/.pth/.safetensors state dict, or a reslab checkpoint (`best.pt`/`last.pt`, a
  dict with a `model` key), read with `weights_only=True`, for every architecture.

Key mapping: a reslab file (any model) is used as it is, minus the `module.`/`_orig_mod.`
prefixes of DDP and torch.compile. For a `tv:`/`timm:` model a file in the library's own layout
(no `backbone.` keys) is moved under `backbone.` and its classifier dropped: the head is new.

First conv: when only the input channels differ, pretrained RGB filters are adapted as timm
does: summed over RGB for 1 channel (a grey image then gives the response the RGB filter gives
to that grey), else tiled over the channels and scaled by 3/in_chans.

`model.pretrained_strict` (default true): the file must fit exactly, apart from a classifier it
lacks (library weights: the head is new). A classifier of another size, tensors of the model
missing from the file, or tensors of the file the model cannot use are one-line errors naming
the file. With false, what fits is loaded and the rest listed (stderr); a classifier of another
size keeps its fresh initialisation, and the report says so. A file none of whose backbone
tensors fit (another architecture) is an error either way.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ReslabError
from ..output import note, warn
from .classifier import classifier_name

CHECKPOINT_KEYS = ("model", "state_dict")


# --- library caches ----------------------------------------------------------------------

def torchvision_weights_path(name: str) -> tuple[Path, str]:
    """(where torchvision's default weights for `name` must lie, the URL they come from)."""
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    # torch.hub.get_dir() reads TORCH_HOME on every call, as load_state_dict_from_url does.
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def torchvision_cached_weights(name: str) -> Path:
    path, url = torchvision_weights_path(name)
    if not path.is_file():
        raise ReslabError(f"model.pretrained: torchvision weights for {name} not found at "
                          f"{path} (reslab never downloads); place that file there (from {url}) "
                          "or set model.pretrained to a local .pth/.safetensors file")
    return path


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved now (huggingface_hub fixes it at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "huggingface" / "hub"


def timm_cached_weights(name: str) -> Path:
    """The cached weight file timm would load for `name`; a one-line error when absent."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name) if ":" not in name else None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ReslabError(f"model.pretrained: timm has no pretrained weights for {name!r}")
    if not cfg.hf_hub_id:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if path.is_file():
            return path
        raise ReslabError(f"model.pretrained: timm weights for {name} not found at {path} "
                          f"(reslab never downloads); place that file there (from {cfg.url}) "
                          "or set model.pretrained to a local .pth/.safetensors file")
    repo, _, revision = cfg.hf_hub_id.partition("@")
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors",
                                                                "pytorch_model.bin"]
    cache = hf_cache_dir()
    for file in files:
        found = try_to_load_from_cache(repo, file, cache_dir=cache, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    folder = cache / ("models--" + repo.replace("/", "--"))
    raise ReslabError(f"model.pretrained: timm weights for {name} not in the Hugging Face cache: "
                      f"looked for {folder}/snapshots/<revision>/{' or '.join(files)} "
                      "(reslab never downloads); fill it where there is network (`hf download "
                      f"{repo}`, then copy {folder} or point HF_HOME at that cache) or set "
                      "model.pretrained to a local .safetensors/.pth file")


# --- state-dict files --------------------------------------------------------------------

def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors/.pt/.pth file, unwrapped from {"model": ...} checkpoints."""
    if not path.is_file():
        raise ReslabError(f"model.pretrained = '{path}': file not found (expected a "
                          ".pt/.pth/.safetensors state dict, or true for default weights)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or pickled code that weights_only refuses
        raise ReslabError(f"model.pretrained = '{path}': could not be read safely: "
                          f"{first_line(err)}") from None
    while isinstance(state, dict) and any(isinstance(state.get(k), dict) for k in CHECKPOINT_KEYS):
        state = next(state[k] for k in CHECKPOINT_KEYS if isinstance(state.get(k), dict))
    if not isinstance(state, dict):
        raise ReslabError(f"model.pretrained = '{path}': not a state dict")
    return {strip_wrappers(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err).strip() else type(err).__name__


def strip_wrappers(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile
        key = key.removeprefix(prefix)
    return key


# --- mapping a file onto a model ---------------------------------------------------------

def to_model_keys(state: dict, model: nn.Module) -> tuple[dict, list[str]]:
    """(state in the model's keys, library classifier keys dropped). Only a `tv:`/`timm:`
    model (which names its library classifier) maps a file in the library's layout."""
    library_classifier = getattr(model, "source_classifier", None)
    # Only `backbone.` marks reslab's layout: timm's own keys may start with `head.`.
    if library_classifier is None or any(k.startswith("backbone.") for k in state):
        return state, []
    prefixes = tuple(c + "." for c in library_classifier)
    dropped = [k for k in state if k.startswith(prefixes)]
    return {"backbone." + k: v for k, v in state.items() if k not in dropped}, dropped


def first_conv_key(model: nn.Module) -> str | None:
    """The state-dict key of the first convolution's weight (the one the input meets)."""
    source = getattr(model, "source_first_conv", None)
    if source:
        return f"backbone.{source}.weight"
    return next((f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)),
                None)


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """RGB filters -> `in_chans` filters (see the module docstring)."""
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    reps = math.ceil(in_chans / weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def adapt_input_channels(state: dict, own: dict, key: str | None) -> str | None:
    """Adapt the file's first conv in place when only its input channels differ."""
    if key is None or key not in state or key not in own:
        return None
    theirs, mine = state[key].shape, own[key].shape
    if len(theirs) != 4 or theirs[1] == mine[1] or (theirs[0], *theirs[2:]) != (mine[0], *mine[2:]):
        return None
    state[key] = adapt_first_conv(state[key], mine[1])
    return f"{key} adapted from {theirs[1]} to {mine[1]} input channels"


def head_mismatch(state: dict, own: dict, prefix: str | None) -> str | None:
    """How the file's classifier differs from the model's, or None (same, or none in file)."""
    if prefix is None:
        return None
    theirs = sorted(k for k in state if k.startswith(prefix + "."))
    mine = sorted(k for k in own if k.startswith(prefix + "."))
    if not theirs:
        return None
    if theirs != mine:
        return f"file {', '.join(theirs[:3])} vs model {', '.join(mine[:3])}"
    # The weight first: its shape shows the class count.
    wrong = sorted((k for k in theirs if state[k].shape != own[k].shape),
                   key=lambda k: not k.endswith("weight"))
    if not wrong:
        return None
    k = wrong[0]
    return f"{k}: file {list(state[k].shape)}, model {list(own[k].shape)}"


def is_counter(key: str) -> bool:
    """BatchNorm's step counter: absent from older files, a scalar that fits any model."""
    return key.endswith("num_batches_tracked")


# --- loading -----------------------------------------------------------------------------

class LoadPlan:
    """What of a file fits a model: computed first, then checked (strict) and reported."""

    def __init__(self, model: nn.Module, path: Path):
        self.path = path
        state, self.dropped = to_model_keys(read_state_dict(path), model)
        self.own = model.state_dict()
        self.adapted = adapt_input_channels(state, self.own, first_conv_key(model))
        self.head = classifier_name(model)
        self.head_diff = head_mismatch(state, self.own, self.head)
        self.state = state
        self.file_has_head = any(self.is_head(k) for k in state)
        self.fits = {k: v for k, v in state.items() if k in self.own and not self.is_new_head(k)
                     and v.shape == self.own[k].shape}

    def is_head(self, key: str) -> bool:
        return self.head is not None and key.startswith(self.head + ".")

    def is_new_head(self, key: str) -> bool:
        """A classifier key the model keeps fresh: the file has none, or one of another size."""
        return self.is_head(key) and (self.head_diff is not None or not self.file_has_head)

    def missing(self) -> list[str]:
        return [k for k in self.own
                if k not in self.fits and not self.is_new_head(k) and not is_counter(k)]

    def unused(self) -> list[str]:
        return [k for k in self.state if k not in self.fits and not self.is_new_head(k)]


def load_weights_file(model: nn.Module, path: Path, strict: bool = True) -> None:
    """Load the state-dict file `path` into `model` (see the module docstring) and report it."""
    plan = LoadPlan(model, path)
    where = f"model.pretrained = '{path}'"
    if not any(not plan.is_head(k) and not is_counter(k) for k in plan.fits):
        raise ReslabError(f"{where}: none of its {len(plan.state)} tensors fits this model; "
                          "was it saved for another architecture?")
    if strict and plan.head_diff:
        raise ReslabError(f"{where}: its classifier does not fit this model's ({plan.head_diff}"
                          "; another class count?); set model.pretrained_strict: false to load "
                          "the rest and re-initialise the classifier")
    missing, unused = plan.missing(), plan.unused()
    if strict and (missing or unused):
        raise ReslabError(f"{where}: does not fit this model exactly ({len(missing)} tensors of "
                          f"the model missing from it{listed(missing)}, {len(unused)} of its "
                          f"tensors unused{listed(unused)}); set model.pretrained_strict: false "
                          f"to load the {len(plan.fits)} that fit")
    if any(t.is_meta for t in plan.own.values()):
        return  # a shapes-only build (budget checks): the file was checked, nothing to copy
    model.load_state_dict(plan.fits, strict=False)
    report_load(plan, missing, unused)


def listed(keys: list[str], most: int = 4) -> str:
    if not keys:
        return ""
    return ": " + ", ".join(keys[:most]) + (f", ... ({len(keys)} in all)" if len(keys) > most
                                             else "")


def report_load(plan: LoadPlan, missing: list[str], unused: list[str]) -> None:
    def say(msg: str, warning: bool = False) -> None:
        (warn if warning else note)(f"model.pretrained: {msg}")

    say(f"loaded {len(plan.fits)} of {len(plan.own)} tensors from {plan.path}")
    if plan.adapted:
        say(plan.adapted)
    if plan.dropped:
        say(f"dropped classifier keys (new head for this data){listed(plan.dropped)}")
    elif plan.head and not plan.file_has_head:
        say(f"{plan.path} has no classifier ({plan.head}.*): it keeps its fresh initialisation")
    if plan.head_diff:
        heads = [k for k in plan.state if plan.is_head(k)]
        say(f"dropped classifier keys of another size ({plan.head_diff}); the classifier is "
            f"re-initialised for this data{listed(heads)}")
    if missing:
        say(f"{len(missing)} tensors missing from {plan.path} (left at random init)"
            f"{listed(missing)}", warning=True)
    if unused:
        say(f"{len(unused)} tensors of {plan.path} unused (unknown key or other shape)"
            f"{listed(unused)}", warning=True)
