"""What a config's data looks like before any training (`reslab data`): images per class and
split, image sizes, file formats and bit depths, channel statistics, a grid of samples per
class and a grid of the configured train augmentation at work.

Counts, splits and pixels come from `load_data`, the decoded cache training uses, so they are
exactly what a run of this config trains and evaluates on (sizes after `resize`/`center_crop`/
`image_size`). The files' own sizes, formats and bit depths are read from an evenly spread
sample of them (headers for sizes, a few decoded for the bit depth): a tree of a million
images is summarised in seconds. Nothing is ever downloaded.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..config import Config
from ..formatting import markdown_table
from . import DataBundle, ImageSet, channel_stats, load_data
from .augment import build_train_augment
from .display import to_display, to_display_uint8
from .imageio import image_size, read_image
from .preview import augment_preview, grid
from .sources import SPLITS

SAMPLES_PER_CLASS = 8
MAX_CLASS_ROWS = 32       # rows of the samples grid: more classes would make a poster
AUGMENTED_ROWS = 8        # originals in the augmentation grid (one per class, first classes)
AUGMENTED_COPIES = 5      # augmented draws beside each original
HEADER_SAMPLE = 1000      # files whose header is read for their size
DECODE_SAMPLE = 24        # files decoded for their bit depth
TILE_MIN, TILE_MAX = 48, 160  # tiles are enlarged (nearest) / shrunk (antialiased) to this side
GAP = 2                   # pixels between tiles, before enlarging
LABEL_PAD = 6             # pixels around the class names left of the grids
SEED = 0                  # which train images are shown
# Sources decoded from arrays, not files: (what the values came from, bit depth, native size).
ARRAY_SOURCES = {
    "digits": ("scikit-learn digits (bundled arrays)", "17 grey levels (0..16), stored 8-bit",
               "8x8"),
    "cifar10": ("CIFAR-10 python pickles", "8-bit", "32x32"),
}
FILE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
                ".exr": "OpenEXR"}
BIT_DEPTHS = {"uint8": "8-bit", "uint16": "16-bit", "float16": "16-bit float",
              "float32": "32-bit float"}


@dataclass
class DataOverview:
    summary: dict            # the numbers, JSON-ready (data.json)
    samples: np.ndarray      # (H, W, 3) uint8: samples per class, one class per row
    augmented: np.ndarray    # (H, W, 3) uint8: originals, then augmented draws


def data_overview(cfg: Config, progress: bool = True) -> DataOverview:
    """The overview of `cfg.data` (and of the first phase's train augmentation)."""
    data_cfg = cfg.data.model_copy(update={"download": False})
    data = load_data(data_cfg, progress=progress)
    splits = {name: s for name in SPLITS if (s := getattr(data, name)) is not None}
    preset = (cfg.train.phases[0].augment if cfg.train.phases else None) or data_cfg.augment
    picks = sample_indices(data.train.labels.numpy(), len(data.classes))
    samples, sample_rows = samples_grid(data, picks)
    augmented, augmented_rows = augmented_grid(cfg, data, picks, preset)
    mean, std = channel_stats(data.train.images, data.scale)
    _, chans, height, width = data.train.images.shape
    summary = {
        "source": data_cfg.source, "root": str(data_cfg.root) if data_cfg.root else None,
        "classes": data.classes, "images": sum(len(s) for s in splits.values()),
        "counts": {name: np.bincount(s.labels.numpy(), minlength=len(data.classes)).tolist()
                   for name, s in splits.items()},
        "stored": {"channels": chans, "height": height, "width": width,
                   "dtype": str(data.train.images.dtype).removeprefix("torch."),
                   "format": data.fmt},
        "files": file_summary(data_cfg.source, splits, data_cfg.max_pixels),
        "train_mean": mean, "train_std": std, "normalize": data_cfg.normalize,
        "augment": preset,
        "preview": preview_info(data.classes, sample_rows, augmented_rows, preset)}
    return DataOverview(summary, samples, augmented)


def preview_info(classes: list[str], sample_rows: list[str], augmented_rows: list[str],
                 preset: str) -> dict:
    """What the two grids show, with their captions."""
    shown = "" if len(sample_rows) == len(classes) else \
        f" (the first {len(sample_rows)} of {len(classes)} classes)"
    return {"samples_rows": sample_rows, "samples_per_class": SAMPLES_PER_CLASS,
            "augmented_rows": augmented_rows, "augmented_copies": AUGMENTED_COPIES,
            "seed": SEED,
            "samples_caption": f"Up to {SAMPLES_PER_CLASS} random train images per class, one "
                               f"class per row{shown}, as stored for training",
            "augmented_caption": f"Left: a train image of each class; then {AUGMENTED_COPIES} "
                                 f"draws of the train augmentation '{preset}'"}


# --------------------------------------------------------------------------- files
def file_summary(source: str, splits: dict[str, ImageSet], max_pixels: int) -> dict:
    """{format, bit depth, size} rows of the source: from its description for array sources,
    else from an evenly spread sample of its files."""
    if source == "npz":  # arrays of any size: described from what was loaded
        _, _, height, width = next(iter(splits.values())).images.shape
        total = sum(len(s) for s in splits.values())
        return {"formats": [{"format": "NumPy .npz arrays", "bit_depth": "8-bit",
                             "files": total}],
                "sizes": [{"size": f"{width}x{height}", "files": total}], "sampled": None}
    if source in ARRAY_SOURCES:
        what, depth, size = ARRAY_SOURCES[source]
        total = sum(len(s) for s in splits.values())
        return {"formats": [{"format": what, "bit_depth": depth, "files": total}],
                "sizes": [{"size": size, "files": total}], "sampled": None}
    paths = sorted(Path(p) for s in splits.values() for p in s.paths or [])
    headers, decoded = spread(paths, HEADER_SAMPLE), spread(paths, DECODE_SAMPLE)
    sizes = Counter(f"{w}x{h}" for h, w in map(image_size, headers))
    kinds = Counter((FILE_FORMATS.get(p.suffix.lower(), p.suffix),
                     BIT_DEPTHS.get(read_image(p, max_pixels).dtype.name, "?")) for p in decoded)
    return {"formats": [{"format": f, "bit_depth": d, "files": n}
                        for (f, d), n in kinds.most_common()],
            "sizes": [{"size": s, "files": n} for s, n in sizes.most_common(10)],
            "distinct_sizes": len(sizes),
            "sampled": {"headers": len(headers), "decoded": len(decoded), "of": len(paths)}}


def spread(items: list, k: int) -> list:
    """At most k items, evenly spaced over the list (first and last included)."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


# --------------------------------------------------------------------------- grids
def sample_indices(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Per class (the first MAX_CLASS_ROWS), up to SAMPLES_PER_CLASS train indices, seeded."""
    rng = np.random.default_rng(SEED)
    picks = []
    for c in range(min(num_classes, MAX_CLASS_ROWS)):
        idx = np.flatnonzero(labels == c)
        picks.append(np.sort(rng.choice(idx, min(len(idx), SAMPLES_PER_CLASS), replace=False)))
    return picks


def samples_grid(data: DataBundle, picks: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """One row per class, its samples left to right (blank where a class has fewer), as shown
    in display sRGB; the class names to the left. -> (pixels, row labels)."""
    _, _, h, w = data.train.images.shape
    blank = np.full((SAMPLES_PER_CLASS, h, w, 3), 255, np.uint8)
    rows = []
    for pick in picks:
        tiles = blank.copy()
        tiles[: len(pick)] = to_display_uint8(data.train.images[torch.from_numpy(pick)],
                                              data.scale, data.fmt)
        rows.append(tiles)
    names = data.classes[: len(picks)]
    return labelled(grid(list(np.stack(rows).swapaxes(0, 1)), GAP), names, h), names


def augmented_grid(cfg: Config, data: DataBundle, picks: list[np.ndarray],
                   preset: str) -> tuple[np.ndarray, list[str]]:
    """`augment_preview` of one train image per class (the first AUGMENTED_ROWS classes): the
    original, then AUGMENTED_COPIES draws. It runs on display sRGB values, so linear and log
    data show as they look. -> (pixels, row labels)."""
    rows = [(c, pick[0]) for c, pick in enumerate(picks) if len(pick)][:AUGMENTED_ROWS]
    index = torch.tensor([i for _, i in rows], dtype=torch.long)
    images = to_display(data.train.images[index].float() / data.scale, data.fmt).clamp(0, 1)
    pipeline = build_train_augment(cfg.data, len(data.classes), cfg.train.label_smoothing,
                                   preset=preset)
    pixels = augment_preview(images, pipeline, n=len(rows), seed=SEED, columns=AUGMENTED_COPIES,
                             gap=GAP)
    names = [data.classes[c] for c, _ in rows]
    return labelled(pixels, names, data.train.images.shape[-2]), names


def labelled(pixels: np.ndarray, names: list[str], tile: int) -> np.ndarray:
    """A grid of rows `tile` pixels high (GAP apart) resized for the eye (`fit`), with each
    row's name written to its left."""
    pixels, factor = fit(pixels, tile)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max((probe.textbbox((0, 0), n, font=font)[2] for n in names), default=0)
    canvas = Image.new("RGB", (width + 2 * LABEL_PAD + pixels.shape[1], pixels.shape[0]),
                       "white")
    canvas.paste(Image.fromarray(pixels), (width + 2 * LABEL_PAD, 0))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(names):
        middle = (i * (tile + GAP) + tile / 2) * factor
        draw.text((LABEL_PAD, middle), name, fill=(31, 41, 51), font=font, anchor="lm")
    return np.asarray(canvas)


def fit(pixels: np.ndarray, tile: int) -> tuple[np.ndarray, float]:
    """Enlarge a grid of `tile`-pixel tiles by a whole factor (nearest: no made-up detail) to
    tiles of at least TILE_MIN pixels, or shrink it (antialiased) to tiles of TILE_MAX.
    -> (pixels, factor)."""
    if tile < TILE_MIN:
        zoom = -(-TILE_MIN // tile)
        return pixels.repeat(zoom, axis=0).repeat(zoom, axis=1), float(zoom)
    if tile <= TILE_MAX:
        return pixels, 1.0
    factor = TILE_MAX / tile
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float()
    size = (max(1, round(pixels.shape[0] * factor)), max(1, round(pixels.shape[1] * factor)))
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy(), factor


# --------------------------------------------------------------------------- text
def count_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): images per class and split, a total column and a total row."""
    splits = list(summary["counts"])
    columns = [summary["counts"][s] for s in splits]
    rows = [[name, *(str(col[i]) for col in columns), str(sum(col[i] for col in columns))]
            for i, name in enumerate(summary["classes"])]
    totals = [sum(col) for col in columns]
    rows.append(["total", *map(str, totals), str(sum(totals))])
    return ["class", *splits, "total"], rows


def summary_lines(summary: dict) -> list[str]:
    """The rest of the overview in a few lines: sizes, formats, bit depth, statistics."""
    st, files = summary["stored"], summary["files"]
    sampled = files.get("sampled") or {}
    of = sampled.get("of", 0)
    stats = ", ".join(f"{m:.4f}/{s:.4f}" for m, s in zip(summary["train_mean"],
                                                          summary["train_std"]))
    return [
        f"{summary['source']}: {len(summary['classes'])} classes, {summary['images']} images",
        f"stored for training: {st['channels']}x{st['height']}x{st['width']} {st['dtype']} "
        f"({st['format']})",
        "file sizes (w x h): " + ", ".join(f"{r['size']} ({r['files']})" for r in files["sizes"])
        + (f"; from the headers of {sampled['headers']} of {of} files"
           if sampled.get("headers", of) < of else ""),
        "formats: " + ", ".join(f"{r['format']} {r['bit_depth']} ({r['files']})"
                                for r in files["formats"])
        + (f"; {sampled['decoded']} of {of} files decoded" if sampled.get("decoded", of) < of
           else ""),
        f"train mean/std per channel: {stats} (stored values, 8/16-bit as [0, 1]); "
        f"normalize: {summary['normalize']}",
        f"train augmentation: {summary['augment']}"]


def overview_markdown(summary: dict, title: str, images: dict[str, str]) -> str:
    """data.md: the tables, the statistics and links to the grids ({caption: file name})."""
    headers, rows = count_table(summary)
    channels = ["grey"] if summary["stored"]["channels"] == 1 else ["R", "G", "B"]
    parts = [f"# Data: {title}", "\n\n".join(summary_lines(summary)),
             "## Images per class and split", markdown_table(headers, rows),
             "## Files", markdown_table(["format", "bit depth", "files"], [
                 [r["format"], r["bit_depth"], str(r["files"])]
                 for r in summary["files"]["formats"]]),
             markdown_table(["size (w x h)", "files"], [[r["size"], str(r["files"])]
                                                   for r in summary["files"]["sizes"]]),
             "## Channel statistics (train split)",
             markdown_table(["channel", "mean", "std"], [
                 [c, f"{m:.4f}", f"{s:.4f}"] for c, m, s in
                 zip(channels, summary["train_mean"], summary["train_std"])]),
             "## Pictures", *(f"![{caption}]({name})" for caption, name in images.items())]
    return "\n\n".join(parts) + "\n"


