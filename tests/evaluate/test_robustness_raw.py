"""`robustness --raw`: the seed amounts in each stored format's own units (8-bit: +50 of 255,
saturating; 16-bit linear TIFF: +50 of 65535; float/log EXR: +50 on the stored value), and a
cached result made in another mode recomputed, never mixed in."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import reslab
from reslab.config import DataConfig
from reslab.data import ImageSet, load_data
from reslab.data.convert import convert_tree
from reslab.data.imageio import write_image
from reslab.errors import ReslabError
from reslab.evaluate.perturb import SEED_SUITE
from reslab.evaluate.robustness import (
    raw_seed_fn,
    raw_stored,
    source_full_scale,
    through_display,
)
from reslab.execute import ensure_robustness
from reslab.runs.rundir import RunDir

CLASSES = ("a", "b", "c")


def write_tree(root: Path, per_class: int = 6, size: int = 12, ext: str = ".png") -> Path:
    """8-bit images whose colour depends on the class, each with a white and a black pixel."""
    rng = np.random.default_rng(0)
    for ci, name in enumerate(CLASSES):
        base = np.array([(ci * 97) % 256, (ci * 57 + 80) % 256, (ci * 31 + 160) % 256])
        for i in range(per_class):
            img = np.clip(base + rng.integers(-20, 21, (size, size, 3)), 0, 255)
            img[0, 0], img[0, 1] = 255, 0
            write_image(root / name / f"{i}{ext}", img.astype(np.uint8))
    return root


def stored_set(root: Path) -> ImageSet:
    """The tree decoded as training decodes it (through the cache)."""
    cfg = DataConfig(source="folder", root=str(root), val_fraction=0.0, augment="none")
    return load_data(cfg, progress=False).train


def shifted(data: ImageSet, name: str, full_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(stored values as floats, raw-perturbed values) in [0,1]-of-stored-scale units."""
    scale = 255.0 if data.images.dtype == torch.uint8 else 1.0
    out = raw_stored(data.images, raw_seed_fn(name, full_scale), scale)
    return data.images.float(), out.float()


RGB_BALANCE = torch.tensor([30.0, 20.0, 10.0]).view(1, 3, 1, 1)


# ----------------------------------------------------------------------------- stored batches
def test_8bit_jpeg_moves_stored_values_by_50_saturating_at_255(tmp_path):
    data = stored_set(write_tree(tmp_path / "jpeg", ext=".jpg"))
    assert data.images.dtype == torch.uint8 and data.sources == ("uint8",)
    assert source_full_scale(data) == 255.0
    before, after = shifted(data, "intensity_plus50", 255.0)
    assert (before + 50 > 255).any()  # the saturation is exercised
    assert torch.equal(after, (before + 50).clamp(max=255))
    before, after = shifted(data, "color_balance_b10_g20_r30", 255.0)
    assert torch.equal(after, (before + RGB_BALANCE).clamp(max=255))
    # On 8-bit sRGB data raw mode is display mode, level for level.
    for name, fn in SEED_SUITE.items():
        assert torch.equal(raw_stored(data.images, raw_seed_fn(name, 255.0), 255.0),
                           through_display(data.images, fn, "srgb", 255.0)), name


def test_16bit_linear_tiff_moves_values_by_50_of_65535(tmp_path):
    tree = tmp_path / "linear"
    convert_tree(write_tree(tmp_path / "png"), tree, "linear-tiff", progress=False)
    data = stored_set(tree)
    # The cache holds float16 in [0,1], as for float TIFFs: only `sources` tells them apart.
    assert data.images.dtype == torch.float16 and data.sources == ("uint16",)
    assert source_full_scale(data) == 65535.0
    before, after = shifted(data, "intensity_plus50", 65535.0)
    assert after.dtype == torch.float32  # float16 would round the small step away
    assert (before == 1.0).any()  # white stays white: 16-bit values saturate at 65535
    torch.testing.assert_close(after, (before + 50 / 65535).clamp(max=1.0), rtol=0, atol=1e-7)
    moved = (after - before)[before < 0.99] * 65535
    torch.testing.assert_close(moved, torch.full_like(moved, 50.0), rtol=0, atol=1e-2)
    before, after = shifted(data, "color_balance_b10_g20_r30", 65535.0)
    torch.testing.assert_close(after, (before + RGB_BALANCE / 65535).clamp(max=1.0), rtol=0,
                               atol=1e-7)


def test_log_exr_moves_stored_values_by_50(tmp_path):
    tree = tmp_path / "log"
    convert_tree(write_tree(tmp_path / "png", size=13), tree, "log-exr", progress=False)
    data = stored_set(tree)
    assert data.sources == ("float32",) and source_full_scale(data) == 1.0
    before, after = shifted(data, "intensity_plus50", 1.0)
    assert before.min() < -9  # log black, ln(1e-4): stored units, not linear or display
    torch.testing.assert_close(after, before + 50, rtol=0, atol=1e-5)
    before, after = shifted(data, "combined", 1.0)
    centre = (slice(None), slice(None), 6, 6)  # 13x13: the rotation keeps the centre pixel
    torch.testing.assert_close(after[centre], (before + 50 + RGB_BALANCE)[centre], rtol=0,
                               atol=1e-5)


def test_grey_float_data_gets_the_mean_colour_balance_unclamped():
    grey = torch.full((2, 1, 4, 4), 1.5, dtype=torch.float16)
    out = raw_stored(grey, raw_seed_fn("color_balance_b10_g20_r30", 1.0), 1.0)
    torch.testing.assert_close(out, torch.full_like(grey, 21.5, dtype=torch.float32))


def test_unknown_or_mixed_source_units_are_an_error(tmp_path):
    with pytest.raises(ReslabError, match="no recorded source sample type"):
        source_full_scale(ImageSet(torch.zeros(1, 3, 2, 2), torch.zeros(1)))
    mixed = tmp_path / "mixed"  # 16-bit and float TIFFs: one float16 cache, two units
    for ci, name in enumerate(CLASSES):
        write_image(mixed / name / "0.tiff", np.full((4, 4, 3), 1000 * ci, np.uint16))
        write_image(mixed / name / "1.tiff", np.full((4, 4, 3), 0.1 * ci, np.float32))
    data = stored_set(mixed)
    assert data.sources == ("float32", "uint16")
    with pytest.raises(ReslabError, match=r"different sample types \(float32, uint16\)"):
        source_full_scale(data)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def exr_run(tmp_path_factory):
    """A tiny run trained on a log EXR tree (its own test split is evaluated)."""
    root = tmp_path_factory.mktemp("raw-exr")
    tree = root / "log"
    convert_tree(write_tree(root / "png", per_class=8), tree, "log-exr", progress=False)
    cfg = {"data": {"source": "folder", "root": str(tree), "val_fraction": 0.25,
                    "test_fraction": 0.25, "augment": "none"},
           "model": {"arch": "resnet20", "width": 8},
           "train": {"epochs": 1, "batch_size": 16, "lr": 0.05, "tensorboard": False,
                     "report": False, "device": "cpu", "progress": False}}
    reslab.train(cfg, out=root / "run", quiet=True)
    return root / "run"


def modes(run: Path, name: str = "robustness.csv") -> set[str]:
    with open(run / name, newline="") as f:
        return {row["mode"] for row in csv.DictReader(f)}


def test_cli_raw_on_a_log_exr_run(exr_run, cli):
    code, out, err = cli("robustness", exr_run, "--raw")
    assert code == 0, err
    assert "intensity_plus50" in out and modes(exr_run, "robustness-raw.csv") == {"raw"}
    assert out.strip().endswith(f"robustness: {exr_run / 'robustness-raw.csv'}, "
                                f"robustness-raw.md; report {exr_run / 'report.html'}")
    assert (exr_run / "plots" / "robustness-raw.png").stat().st_size > 0  # drawn by the report
    md = (exr_run / "robustness-raw.md").read_text()
    assert "float files, so +50 on the stored value itself, unclamped." in md


def test_each_mode_keeps_its_own_files_never_a_silent_replacement(exr_run, cli):
    """`--suite all` then `--raw`: robustness.md and robustness-raw.md side by side, the
    display files byte for byte as written; the report shows both modes."""
    from reslab.report import write_report

    assert cli("robustness", exr_run)[0] == 0
    display = {n: (exr_run / n).read_bytes() for n in ("robustness.csv", "robustness.md")}
    assert cli("robustness", exr_run, "--raw")[0] == 0
    assert {n: (exr_run / n).read_bytes() for n in display} == display
    assert modes(exr_run) == {"display"} and modes(exr_run, "robustness-raw.csv") == {"raw"}
    assert (exr_run / "plots" / "robustness.png").is_file()
    assert (exr_run / "plots" / "robustness-raw.png").is_file()
    run = RunDir(exr_run)
    assert run.robustness_modes() == ["display", "raw"]
    assert {r["mode"] for r in run.read_robustness("display")} == {"display"}
    assert {r["mode"] for r in run.read_robustness("raw")} == {"raw"}
    _, md = write_report(exr_run)
    text = md.read_text()
    assert "(display mode; perturbed in display space)" in text
    assert "(raw mode; amounts added to the stored values" in text


def test_a_cached_result_made_in_another_mode_is_recomputed_never_mixed_in(exr_run):
    from reslab.evaluate.robustness import run_robustness

    run, logged = RunDir(exr_run), []
    run_robustness(exr_run, raw=True)
    raw_rows = run.read_robustness()
    ensure_robustness(run, "seed", log=logged.append)        # display wanted: recomputed
    assert len(logged) == 1 and modes(exr_run) == {"display"}
    display_rows = run.read_robustness()
    assert len(display_rows) == len(raw_rows) == 1 + len(SEED_SUITE)
    ensure_robustness(run, "seed", log=logged.append)        # up to date: kept
    assert len(logged) == 1 and run.read_robustness() == display_rows
    ensure_robustness(run, "seed", True, logged.append)      # raw wanted again: recomputed
    assert len(logged) == 2 and run.read_robustness() == raw_rows


def test_mixed_units_data_root_is_one_line_exit_2(exr_run, tmp_path, cli):
    mixed = tmp_path / "mixed"
    for ci, name in enumerate(CLASSES):
        write_image(mixed / name / "0.tiff", np.full((12, 12, 3), 1000 * ci, np.uint16))
        write_image(mixed / name / "1.exr", np.full((12, 12, 3), -ci, np.float32))
    code, out, err = cli("robustness", exr_run, "--data-root", mixed, "--raw")
    assert code == 2 and err.count("\n") == 1
    assert "float32, uint16" in err and "reslab convert" in err
