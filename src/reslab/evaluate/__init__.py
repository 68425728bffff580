"""`eval` and `predict`: a trained run's model over a split of its data, a labeled folder or
loose images. Channels follow the model: grey and RGB images are converted to what it saw."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..data import ImageSet, check_split, decode_listing, load_data
from ..data.cache import resample
from ..data.display import match_channels
from ..data.sources import Listing, image_extensions, list_images, scan_class_tree
from ..engine.infer import confusion_matrix, loss_and_accuracy
from ..engine.metrics import classification_metrics
from ..errors import ReslabError
from ..output import warn
from ..utils import CallablePackage
from .loaded import LoadedRun, load_run


def labeled_tree(lr: LoadedRun, root: Path) -> ImageSet:
    """A class-folder tree evaluated whole; labels map by class *name* to the run's classes."""
    tree = scan_class_tree(root)
    unknown = [c for c in tree if c not in lr.classes]
    if unknown:
        raise ReslabError(f"--data-root {root}: class folder(s) {', '.join(unknown)} are not "
                          f"classes of this run ({', '.join(lr.classes)})")
    files = [p for paths in tree.values() for p in paths]
    labels = np.concatenate([np.full(len(p), lr.classes.index(c), np.int64)
                             for c, p in tree.items()])
    return decode_set(lr, Listing(lr.classes, labels, files=files, root=root))


def decode_set(lr: LoadedRun, listing: Listing, convert: bool = False) -> ImageSet:
    """The listing's images as the model takes them. Channels (grey <-> RGB) are converted;
    a size other than the training one is an error, or with `convert` (predict) resized to
    it with one warning line."""
    images, labels, _, paths, sources = decode_listing(listing, lr.cfg.data)
    if (images.dtype == np.uint8) != (lr.norm["scale"] == 255.0):
        raise ReslabError(f"{listing.root}: images are {images.dtype} but the model was trained "
                          f"on {'8-bit' if lr.norm['scale'] == 255.0 else 'HDR'} data")
    images = match_size(lr, np.asarray(images), str(listing.root), convert)
    if convert and images.shape[1] != lr.in_chans and not grey_as_rgb(images, lr.in_chans):
        how = "grey repeated to RGB" if lr.in_chans == 3 else "RGB to grey by luma"
        warn(f"{listing.root}: images have {images.shape[1]} channel(s), the model takes "
             f"{lr.in_chans}: converted ({how})")
    images = match_channels(torch.from_numpy(np.array(images)), lr.in_chans, str(listing.root))
    return ImageSet(images, torch.from_numpy(labels), paths, sources)


def grey_as_rgb(images: np.ndarray, channels: int) -> bool:
    """Grey images decoded as RGB (three equal channels) for a grey model: nothing is lost in
    the conversion, so it needs no warning."""
    return (channels == 1 and images.shape[1] == 3 and np.array_equal(images[:, 0], images[:, 1])
            and np.array_equal(images[:, 1], images[:, 2]))


def match_size(lr: LoadedRun, images: np.ndarray, source: str, convert: bool) -> np.ndarray:
    """Images at the (H, W) the checkpoint was trained at (`norm.size`; checkpoints from
    before it was stored are not checked)."""
    size = lr.norm.get("size")
    have = list(images.shape[-2:])
    if size is None or have == list(size):
        return images
    shown = f"{have[0]}x{have[1]}, the model was trained at {size[0]}x{size[1]}"
    if not convert:
        raise ReslabError(f"{source}: images are {shown}; its accuracy would not be the "
                          "model's (set data.image_size / data.center_crop in the run's "
                          "config, or evaluate images of the training size)")
    warn(f"{source}: images are {shown}: resized to {size[0]}x{size[1]} (antialiased "
         "bilinear) for prediction")
    return resample(images, int(size[0]), int(size[1]))


def run_split(lr: LoadedRun, split: str | None) -> tuple[ImageSet, str]:
    data = load_data(lr.cfg.data)
    check_split(lr.norm.get("split"), data, str(lr.run.path))
    split = split or ("test" if data.test is not None else "val")
    chosen = getattr(data, split)
    if chosen is None:
        raise ReslabError(f"--split {split}: this run's data has no {split} split")
    match_size(lr, chosen.images, f"{lr.run.path}: its {split} split", convert=False)
    return chosen, split


def evaluation_data(lr: LoadedRun, data_root: str | Path | None,
                    split: str | None) -> tuple[ImageSet, str]:
    """A --data-root labeled tree, else the run's own split (default: test, else val)."""
    if data_root is not None:
        return labeled_tree(lr, Path(data_root)), "data-root"
    return run_split(lr, split)


def evaluate_run(path: str | Path, data_root: str | Path | None = None, split: str | None = None,
                 tta: bool | None = None, write: bool = True) -> dict:
    """Accuracy and loss (computed as training computes them), engine/metrics.py's
    classification metrics (top5, per_class {precision, recall, f1, support}, macro_*, nll,
    ece, reliability, confused_pairs) and the confusion matrix. Writes confusion_matrix.csv
    and eval_metrics.json into the run when `write`."""
    lr = load_run(path)
    data, split = evaluation_data(lr, data_root, split)
    tta = lr.cfg.train.tta if tta is None else tta
    logits, labels = lr.predict(lr.loader(data), tta=tta)
    loss, acc = loss_and_accuracy(logits, labels)
    metrics = {**classification_metrics(logits, labels, lr.classes), "accuracy": acc,
               "loss": loss, "n": len(labels), "split": split, "tta": tta}
    matrix = confusion_matrix(labels, logits.argmax(1), len(lr.classes))
    if write:
        lr.run.write_evaluation(matrix, lr.classes, {
            **metrics, **({"data_root": str(data_root)} if data_root is not None else {})})
    return {**metrics, "weights": lr.weights.name, "confusion_matrix": matrix.tolist(),
            "classes": lr.classes}


def image_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ReslabError(f"IMAGES: {path} does not exist")
    files = list_images(path)  # the lister training uses: hidden files skipped, natural order
    if not files:
        raise ReslabError(f"IMAGES: no images under {path} (expected "
                          f"{', '.join(sorted(image_extensions()))})")
    return files


def predict_paths(path: str | Path, images: str | Path) -> list[dict]:
    """Predict every image under `images` (a folder, a labeled tree or one file) by class name."""
    lr = load_run(path)
    files = image_files(Path(images))
    listing = Listing(lr.classes, np.zeros(len(files), np.int64), files=files, root=Path(images))
    data = decode_set(lr, listing, convert=True)
    logits, _ = lr.predict(lr.loader(data), tta=lr.cfg.train.tta)
    conf, pred = logits.softmax(1).max(1)
    return [{"path": p, "label": lr.classes[i], "confidence": float(c)}
            for p, i, c in zip(data.paths, pred.tolist(), conf.tolist())]


PREDICTIONS_HEADER = "path,label,confidence"


def check_predictions_out(out: str | Path, run_dir: str | Path, images: str | Path) -> None:
    """`predict --out` may write a new file, or replace an earlier predictions CSV; never a
    run's file, an input image, or any other existing file."""
    out, run_path, inputs = Path(out).resolve(), Path(run_dir).resolve(), Path(images).resolve()
    if out.is_dir():
        raise ReslabError(f"--out {out} is a folder; expected the name of the CSV file to write")
    if out.is_relative_to(run_path) and out.exists():
        raise ReslabError(f"--out {out}: a file of the run {run_path}; predictions never "
                          "replace a run's files (choose another file)")
    if out == inputs or (inputs.is_dir() and out.is_relative_to(inputs)
                         and out.suffix.lower() in image_extensions()):
        raise ReslabError(f"--out {out}: one of the input images; choose another file")
    if out.exists() and not _is_predictions_csv(out):
        raise ReslabError(f"--out {out} exists and is not a predictions CSV (first line "
                          f"{PREDICTIONS_HEADER}); not replacing it (choose another file)")


def _is_predictions_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip() == PREDICTIONS_HEADER
    except (OSError, UnicodeDecodeError):
        return False


# `reslab.evaluate(...)` / `reslab.sweep(...)` keep working once this package is imported (it
# replaces the top-level function of the same name): the package calls through to it.
__call_target__ = evaluate_run
sys.modules[__name__].__class__ = CallablePackage
