"""reslab summary CONFIG [--set KEY=VALUE ...]"""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("summary", help="layer table, parameter count and FLOPs of a config",
                       description="Print the model's layers, parameters and FLOPs per image "
                       "without loading any data (unless model.num_classes is unset and the "
                       "source is a folder).")
    p.add_argument("config", nargs="?", metavar="CONFIG")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--depth", type=int, default=3, help="layer table depth (default 3)")
    return p


def data_shape(cfg) -> tuple[int, int, int]:
    """(classes, channels, size) from the config, looking at the data only when needed."""
    from ..data import load_data

    size = cfg.data.image_size or cfg.data.center_crop
    if cfg.data.source == "digits":
        return cfg.model.num_classes or 10, 1, size or 8
    if cfg.data.source == "cifar10" and cfg.model.num_classes:
        return cfg.model.num_classes, 3, size or 32
    if cfg.model.num_classes and size:
        return cfg.model.num_classes, 3, size
    if cfg.data.source in ("folder", "csv"):
        # List the tree and read one image header: no decoding of the whole dataset.
        from ..data.imageio import image_size
        from ..data.sources import load_listing

        listing = load_listing(cfg.data)
        return (cfg.model.num_classes or len(listing.classes), 3,
                size or cfg.data.resize or min(image_size(listing.files[0])))
    data = load_data(cfg.data)
    return cfg.model.num_classes or len(data.classes), data.in_chans, data.image_size


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..models import count_params
    from ..models.summary import flops_per_image, human, layer_table

    cfg = load_config(args.config, args.overrides)
    classes, chans, size = data_shape(cfg)
    model = summary_model(cfg.model, classes, chans)
    print(layer_table(model, chans, size, args.depth))
    total, trainable = count_params(model), count_params(model, trainable_only=True)
    flops = flops_per_image(model, chans, size)
    print(f"model {cfg.model.arch}, input {chans}x{size}x{size}, {classes} classes")
    print(f"total params: {total:,}")
    print(f"trainable params: {trainable:,}")
    print(f"FLOPs per image (forward): {flops:,} ({human(flops)})")
    if cfg.model.max_params is not None:
        verdict = "within" if total <= cfg.model.max_params else "OVER"
        print(f"budget: {verdict} model.max_params = {cfg.model.max_params:,}")
        return 0 if total <= cfg.model.max_params else 2
    return 0


def summary_model(model_cfg, classes: int, chans: int):
    """The model on the meta device (shapes only: nothing allocated, whatever its width), or
    for the few that cannot be built there, a real one without its pretrained weights."""
    from ..errors import ReslabError
    from ..models import build_model, build_on_meta

    model_cfg = model_cfg.model_copy(update={"max_params": None, "pretrained": False})
    model = build_on_meta(model_cfg, classes, chans)
    if model is not None:
        return model
    try:
        return build_model(model_cfg, classes, chans)
    except (MemoryError, RuntimeError) as err:
        if "alloc" not in str(err).lower() and not isinstance(err, MemoryError):
            raise
        raise ReslabError(f"model.arch = {model_cfg.arch!r}: cannot be built on the meta "
                          "device and is too large to allocate for a summary") from None
