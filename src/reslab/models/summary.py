"""`reslab summary`: layer table (torchinfo), parameter counts and FLOPs per image.

Everything here runs on the model's own device, the meta device included: there a forward
pass computes shapes only, so a summary of a `model.width: 4096` network allocates nothing.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def device_of(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def flops_per_image(model: nn.Module, in_chans: int, size: int) -> int:
    """Forward FLOPs (multiply-add = 2 FLOPs) of one image, by torch's flop counter."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, in_chans, size, size, device=device_of(model)))
    model.train(was_training)
    return counter.get_total_flops()


def layer_table(model: nn.Module, in_chans: int, size: int, depth: int = 3) -> str:
    import torchinfo

    stats = torchinfo.summary(model, input_size=(1, in_chans, size, size), depth=depth,
                              col_names=("output_size", "num_params"), verbose=0,
                              row_settings=("var_names",), device=device_of(model))
    return str(stats)


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"
