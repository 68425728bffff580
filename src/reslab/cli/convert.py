"""`reslab convert SRC DST --to ENCODING`: re-encode an image tree, keeping its class folders."""
from __future__ import annotations

import argparse

from ..data.convert import TARGETS, convert_tree
from ..data.imageio import DEFAULT_MAX_PIXELS, LOG_EPS

DESCRIPTION = f"""Convert every image under SRC into DST with the same folder layout.
Sources are read by type: 8-bit JPEG/PNG/TIFF as sRGB, 16-bit PNG/TIFF and float TIFF as linear
light, EXR as log (ln(linear + {LOG_EPS:g}), as this command writes it).
Targets: srgb-png (8-bit sRGB PNG), linear-tiff (16-bit linear TIFF), log-exr (float32 log EXR)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("convert", help="convert an image tree between sRGB PNG, "
                                   "linear TIFF and log EXR", description=DESCRIPTION)
    parser.add_argument("src", metavar="SRC", help="folder of images (class sub-folders kept)")
    parser.add_argument("dst", metavar="DST", help="output folder (must be empty or missing)")
    parser.add_argument("--to", required=True, choices=list(TARGETS), help="output encoding")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse images over N pixels (width x height), checked from the "
                        f"header before decoding (default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty DST, overwriting files of the same name")
    return parser


def run(args: argparse.Namespace) -> int:
    count = convert_tree(args.src, args.dst, args.to, force=args.force,
                         max_pixels=args.max_pixels)
    print(f"converted {count} images to {args.to} in {args.dst}")
    return 0
