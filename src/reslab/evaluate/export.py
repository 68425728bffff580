"""`reslab export`: a run's model as ONNX, TorchScript or safetensors, checked after writing.

ONNX and TorchScript files hold the model with its input normalisation folded in
(`NormalizedModel`): they take images as the run's cache stores them, NCHW, uint8 0..255 for
8-bit data (float32 in the data's own units for HDR data: the float16 cache, upcast) and
compute `(x / scale - mean) / std` themselves, in float32, exactly as training's `Normalizer`
does, then return the logits. The batch axis is dynamic; the image size is the run's.
safetensors holds the bare model's state dict, with everything needed to use it recorded in
the file's metadata (classes, mean/std/scale/fmt, arch, the resolved config, the input);
`load_safetensors_export` rebuilds the normalised model from it.

Everything exports in float32: a run that trained or evaluated under bf16/fp16 autocast gets
its fp32 weights exported as they are. Test-time augmentation is not part of any export.

ONNX: torch.export-based exporter (`torch.onnx.export(dynamo=True)`, needs onnx + onnxscript,
runs offline) at opset 18 (ONNX_OPSET: torchlib's native opset, so no version conversion;
onnxruntime >= 1.14 runs it). TorchScript: `torch.jit.trace` (user models need not be
scriptable). After writing, the file is run (onnxruntime, `torch.jit.load`, rebuild + load)
on a batch of the run's images, or a seeded random batch when its data is unavailable, and
must match the PyTorch model within TOLERANCE on every logit; a file that fails is not kept.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from ..config import load_config
from ..data import load_data
from ..data.loader import Normalizer
from ..errors import ReslabError
from ..models import build_model
from ..output import note
from ..runs.checkpoint import first_line
from ..runs.rundir import EXPORT_SUFFIXES, RunDir
from ..utils import atomic_path
from .loaded import LoadedRun, load_run

FORMATS = tuple(EXPORT_SUFFIXES)        # onnx, torchscript, safetensors
ONNX_OPSET = 18
TOLERANCE = 1e-4                        # max |logit difference| allowed by the check
CHECK_IMAGES = 32                       # images in the check batch
EXAMPLE_BATCH = 2                       # traced batch size (2: a batch of 1 would specialise)
INSTALL = "pip install 'reslab[export]'"
CHECKPOINTS = ("best", "last")


class NormalizedModel(nn.Module):
    """`model` behind the run's input normalisation: stored images in, logits out."""

    def __init__(self, model: nn.Module, norm: dict):
        super().__init__()
        self.model = model
        # The same constants and fused multiply-add as data.loader.Normalizer.
        std = torch.tensor(norm["std"], dtype=torch.float32).view(1, -1, 1, 1)
        mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mul", 1.0 / (norm["scale"] * std))
        self.register_buffer("shift", -(mean / std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(torch.addcmul(self.shift, images.float(), self.mul))


@dataclass
class CheckBatch:
    images: torch.Tensor    # as stored: uint8, or float32 for HDR data
    source: str             # what the images are, for the summary line


def export_run(path: str | Path, fmt: str, out: str | Path | None = None,
               checkpoint: str | None = None, force: bool = False, check: bool = True) -> dict:
    """Export a run's weights (`checkpoint`: best or last; default the run's final weights)
    to `out` (default RUN/export/<weights><suffix>) and check the file -> a summary dict."""
    require_format(fmt, checkpoint, check)
    lr = load_run(path, checkpoint, device="cpu")
    dest = output_path(lr.run, fmt, lr.weights.stem, out, force)
    batch = check_batch(lr)
    model = NormalizedModel(lr.model, lr.norm).eval()
    example = batch.images[:EXAMPLE_BATCH].expand(EXAMPLE_BATCH, *batch.images.shape[1:])
    meta = export_metadata(lr, batch.images, fmt)
    diff = None
    with atomic_path(dest) as tmp:  # a file that fails its check is never left behind
        EXPORTERS[fmt](model, example.contiguous(), meta, tmp)
        if check:
            diff = compare(RUNNERS[fmt](tmp, batch.images), reference_logits(lr, batch.images),
                           fmt)
    return {"path": str(dest), "format": fmt, "weights": lr.weights.name,
            "input": json.loads(meta["reslab.input"]), "max_abs_diff": diff,
            "checked_on": batch.source if check else None,
            **({"opset": ONNX_OPSET} if fmt == "onnx" else {})}


def require_format(fmt: str, checkpoint: str | None, check: bool) -> None:
    """Bad arguments and missing optional packages, before any work."""
    if fmt not in FORMATS:
        raise ReslabError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise ReslabError(f"--checkpoint {checkpoint!r}: expected best or last")
    if fmt != "onnx":
        return
    try:
        import onnx  # noqa: F401  (torch.onnx's exporter writes through onnx + onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ReslabError(f"ONNX export needs onnx and onnxscript ({err.name} is missing): "
                          f"{INSTALL}") from None
    if check:
        onnxruntime()


def onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError:
        raise ReslabError(f"checking the ONNX export needs onnxruntime, which is not "
                          f"installed: {INSTALL} (or pip install onnxruntime), or pass "
                          "--no-check") from None
    return ort


def output_path(run: RunDir, fmt: str, weights: str, out: str | Path | None,
                force: bool) -> Path:
    """The run's own export/ folder (re-exporting replaces its file), or a user's file path,
    which is never overwritten without --force."""
    if out is None:
        return run.export_file(fmt, weights)
    dest = Path(out)
    if dest.is_dir():
        raise ReslabError(f"--out {dest} is a directory; expected a file path, e.g. "
                          f"{dest / (weights + EXPORT_SUFFIXES[fmt])}")
    if dest.exists() and not force:
        raise ReslabError(f"--out {dest} already exists; pass --force to overwrite it")
    return dest


# ---------------------------------------------------------------------------- the check batch
def check_batch(lr: LoadedRun) -> CheckBatch:
    """The first images of the run's test split (else val, else train), as stored; a seeded
    random batch of the same dtype and shape when the data cannot be loaded."""
    try:
        data = load_data(lr.cfg.data, progress=False)
    except (ReslabError, OSError) as err:
        note(f"note: the run's data is unavailable ({first_line(err)}); checking the export "
             "on a seeded random batch")
        return random_batch(lr)
    split = next(s for s in ("test", "val", "train") if getattr(data, s) is not None)
    images = getattr(data, split).images[:CHECK_IMAGES]
    if images.dtype != torch.uint8:
        images = images.float()  # the float16 HDR cache, upcast: HDR exports take float32
    return CheckBatch(images.contiguous(), f"{len(images)} {split} images of the run's data")


def random_batch(lr: LoadedRun) -> CheckBatch:
    size = lr.cfg.data.image_size or lr.cfg.data.center_crop or misclassified_size(lr.run)
    if size is None:
        raise ReslabError(f"{lr.run.path}: the run's data is unavailable and its config names "
                          "no data.image_size; make the data available to export this run")
    h, w = size if isinstance(size, tuple) else (size, size)
    shape = (CHECK_IMAGES, lr.in_chans, h, w)
    gen = torch.Generator().manual_seed(0)
    if lr.norm["scale"] == 255.0:
        images = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    else:
        images = torch.rand(shape, generator=gen)
    return CheckBatch(images, f"a seeded random {tuple(shape)} {images.dtype} batch "
                      "(the run's data is unavailable)")


def misclassified_size(run: RunDir) -> tuple[int, int] | None:
    """(H, W) of the run's evaluation images, from misclassified.npz (N,H,W,3)."""
    if not run.misclassified.is_file():
        return None
    h, w = run.read_misclassified()["images"].shape[1:3]
    return int(h), int(w)


# ---------------------------------------------------------------------------- metadata
def export_metadata(lr: LoadedRun, images: torch.Tensor, fmt: str) -> dict[str, str]:
    """What a user of the file needs, as strings (safetensors and ONNX metadata are str->str)."""
    dtype = "uint8" if images.dtype == torch.uint8 else "float32"
    recipe = "(x / scale - mean) / std"
    spec = {"name": "images", "dtype": dtype, "layout": "NCHW",
            "shape": ["N", *images.shape[1:]],
            "normalization": f"apply {recipe} with reslab.norm first (load_safetensors_export "
            "does)" if fmt == "safetensors" else f"folded in: {recipe}",
            "output": "logits (N, classes)"}
    return {"reslab.classes": json.dumps(lr.classes), "reslab.norm": json.dumps(lr.norm),
            "reslab.arch": lr.cfg.model.arch, "reslab.config": json.dumps(lr.cfg.to_dict()),
            "reslab.input": json.dumps(spec), "reslab.weights": lr.weights.name}


# ---------------------------------------------------------------------------- writers
def write_onnx(model: NormalizedModel, example: torch.Tensor, meta: dict, dest: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter; failures raise
            program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                        opset_version=ONNX_OPSET, input_names=["images"],
                                        output_names=["logits"],
                                        dynamic_shapes=({0: batch},))
    except Exception as err:  # noqa: BLE001  (a model torch.export cannot capture)
        raise ReslabError(f"ONNX export of {meta['reslab.arch']} failed: "
                          f"{first_line(err)}") from None
    program.model.metadata_props.update(meta)
    program.save(dest, external_data=False)


def write_torchscript(model: NormalizedModel, example: torch.Tensor, meta: dict,
                      dest: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        try:
            traced = torch.jit.trace(model, example, check_trace=False)
        except Exception as err:  # noqa: BLE001  (a model tracing cannot follow)
            raise ReslabError(f"TorchScript export of {meta['reslab.arch']} failed: "
                              f"{first_line(err)}") from None
        torch.jit.save(traced, str(dest), _extra_files={"reslab.json": json.dumps(meta)})


def write_safetensors(model: NormalizedModel, example: torch.Tensor, meta: dict,
                      dest: Path) -> None:
    # save_model (not save_file) stores tied weights once instead of refusing them.
    save_model(model.model, str(dest), metadata={"format": "pt", **meta})


EXPORTERS: dict[str, Callable] = {"onnx": write_onnx, "torchscript": write_torchscript,
                                  "safetensors": write_safetensors}


# ---------------------------------------------------------------------------- readers (check)
def run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    ort = onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    try:
        return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])
    finally:
        del session  # release its thread pool now, not at interpreter exit


def run_torchscript(path: Path, images: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")(images)


def run_safetensors(path: Path, images: torch.Tensor) -> torch.Tensor:
    model, _ = load_safetensors_export(path)
    with torch.inference_mode():
        return model(images)


RUNNERS: dict[str, Callable] = {"onnx": run_onnx, "torchscript": run_torchscript,
                                "safetensors": run_safetensors}


def load_safetensors_export(path: str | Path) -> tuple[NormalizedModel, dict]:
    """Rebuild a safetensors export -> (model taking stored images, metadata decoded). A user
    model (`file.py:Class`) needs its file where the run's config names it."""
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    if "reslab.config" not in raw:
        raise ReslabError(f"{path}: not a reslab safetensors export (no reslab.config metadata)")
    meta = {k.removeprefix("reslab."): v if k == "reslab.arch" else json.loads(v)
            for k, v in raw.items() if k.startswith("reslab.") and k != "reslab.weights"}
    cfg = load_config(meta["config"])
    model = build_model(cfg.model.model_copy(update={"pretrained": False}),
                        cfg.model.num_classes or len(meta["classes"]), len(meta["norm"]["mean"]))
    load_model(model, str(path))
    return NormalizedModel(model, meta["norm"]).eval(), meta


# ---------------------------------------------------------------------------- comparison
@torch.inference_mode()
def reference_logits(lr: LoadedRun, images: torch.Tensor) -> torch.Tensor:
    """The PyTorch model in float32 on the normalised batch, as evaluation feeds it."""
    norm = Normalizer(lr.norm["mean"], lr.norm["std"], lr.norm["scale"], torch.device("cpu"))
    return lr.model.eval()(norm(images)).float()


def compare(exported: torch.Tensor, reference: torch.Tensor, fmt: str) -> float:
    if exported.shape != reference.shape:
        raise ReslabError(f"{fmt} export check failed: logits of shape {tuple(exported.shape)}, "
                          f"expected {tuple(reference.shape)}")
    diff = float((exported.float() - reference).abs().max())
    if not np.isfinite(diff) or diff > TOLERANCE:
        raise ReslabError(f"{fmt} export check failed: max |logit difference| {diff:.3g} vs "
                          f"PyTorch is over {TOLERANCE:g}; the file was not written")
    return diff
