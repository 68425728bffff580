"""reslab export RUN_DIR --format onnx|torchscript|safetensors [--out FILE] [--checkpoint ...]"""
from __future__ import annotations

import argparse
import json

# The process ends as soon as the file is written and checked: onnxruntime's and the
# exporter's native thread pools must not keep it alive (cli.exit_promptly).
EXIT_AT_ONCE = True


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a run's model to ONNX, TorchScript or safetensors",
                       description="Export a run's model. ONNX (opset 18) and TorchScript "
                       "files take images as the run stores them (NCHW uint8 0..255 for 8-bit "
                       "data, float32 for HDR) with the normalisation folded in, and return "
                       "logits; safetensors holds the state dict with classes, normalisation, "
                       "arch and config in its metadata. The file is checked against PyTorch "
                       "on the run's images before it is kept.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    # Checked by export_run rather than `choices`: a bad value is one line, not usage + error.
    p.add_argument("--format", required=True, metavar="FORMAT",
                   help="onnx, torchscript or safetensors")
    p.add_argument("--out", metavar="FILE",
                   help="output file (default: RUN_DIR/export/<checkpoint>.<format suffix>)")
    p.add_argument("--checkpoint", metavar="best|last",
                   help="weights to export (default: the run's train.final_weights)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out FILE")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip running the exported file against PyTorch (no onnxruntime needed)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    from ..evaluate.export import export_run

    res = export_run(args.run_dir, args.format, args.out, args.checkpoint, args.force,
                     args.check)
    if args.json:
        print(json.dumps(res))
        return 0
    spec = res["input"]
    shape = "x".join(str(d) for d in spec["shape"])
    opset = f", opset {res['opset']}" if "opset" in res else ""
    print(f"Exported {res['weights']} to {res['path']} ({res['format']}{opset}; input "
          f"{spec['dtype']} {spec['layout']} {shape}, normalisation "
          f"{'in metadata' if res['format'] == 'safetensors' else 'folded in'})")
    if res["max_abs_diff"] is None:
        print("Not checked (--no-check)")
    else:
        print(f"Checked: max |logit difference| vs PyTorch {res['max_abs_diff']:.2g} on "
              f"{res['checked_on']}")
    return 0
