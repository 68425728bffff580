"""The train-time pipeline as the loop sees it: config -> build_train_augment -> BatchLoader.

Presets end to end, soft targets, alternating flips, progressive resizing, resume determinism,
config errors, and the preview grid."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.config import AUGMENT_PRESETS, DataConfig, load_config
from reslab.data import ImageSet
from reslab.data.augment import (
    ProgressiveResize,
    TrainAugment,
    build_augment,
    build_train_augment,
)
from reslab.data.augment_imagenet import ImagenetAugment
from reslab.data.loader import BatchLoader, Normalizer
from reslab.data.preview import augment_preview
from reslab.data.transforms import BatchContext, ColorJitter, Compose, alternating_flips
from reslab.errors import ReslabError

CPU = torch.device("cpu")
PRESETS = list(AUGMENT_PRESETS) + ["crop-flip+trivialaugment", "imagenet-phase2+randaugment"]


def images(n=24, c=3, size=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def loader(augment, n=24, c=3, size=16, batch=8, labels=None, shuffle=True,
           **kw) -> BatchLoader:
    data = ImageSet(images(n, c, size), torch.arange(n) % 4 if labels is None else labels)
    norm = Normalizer([0.5] * c, [0.25] * c, 255.0, CPU)
    return BatchLoader(data, batch, CPU, norm, augment, shuffle=shuffle, seed=3, **kw)


def data_cfg(**kw) -> DataConfig:
    return load_config({"data": kw}).data


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("channels", [3, 1])
def test_every_preset_runs_through_the_loader(preset, channels):
    aug = build_train_augment(data_cfg(augment=preset, erasing=0.5), 4, 0.1)
    batches = list(loader(aug, c=channels).epoch(1))
    assert len(batches) == 3
    for x, y, _ in batches:
        assert x.shape == (8, channels, 16, 16) and x.dtype == torch.float32
        assert torch.isfinite(x).all() and y.dtype == torch.int64
    if preset != "none":
        plain = torch.cat([x for x, _, _ in loader(None, c=channels).epoch(1)])
        assert not torch.equal(torch.cat([x for x, _, _ in batches]), plain)


def test_defaults_keep_the_crop_flip_preset_and_nothing_else():
    aug = build_train_augment(DataConfig(), 10)
    assert aug.resize is None and aug.erasing is None and aug.mixup is None
    assert not aug.soft_targets
    assert [type(s).__name__ for s in aug.pixels.steps] == ["RandomCrop", "RandomFlip"]
    assert build_augment("none") is None


def test_mixup_makes_the_loader_yield_soft_targets_that_sum_to_one():
    cfg = data_cfg(mixup={"alpha": 0.2, "cutmix_alpha": 1.0})
    aug = build_train_augment(cfg, 4, label_smoothing=0.1)
    assert aug.soft_targets
    for _, y, _ in loader(aug).epoch(1):
        assert y.shape == (8, 4) and y.dtype == torch.float32
        assert torch.allclose(y.sum(1), torch.ones(8))
        assert y.max() <= 0.9 + 0.1 / 4 + 1e-6      # label smoothing is in the targets
        assert (y.max(1).values < 0.9).any()         # and some images are mixed


def test_an_epoch_repeats_exactly_as_after_a_resume():
    cfg = data_cfg(augment="crop-flip+randaugment", erasing=0.5, mixup={"alpha": 0.2},
                   flip="alternate", progressive_resize={"start_size": 8})
    first = list(loader(build_train_augment(cfg, 4), epochs=4).epoch(2))
    again = list(loader(build_train_augment(cfg, 4), epochs=4).epoch(2))
    for (x, y, _), (x2, y2, _) in zip(first, again):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def flipped_by_epoch(flip_cfg: dict, world_size: int = 1) -> np.ndarray:
    """(epochs 1-4, images) bool: whether each dataset image came out flipped."""
    aug = build_train_augment(data_cfg(augment="flip", **flip_cfg), 4)
    plain = next(loader(None, batch=24, shuffle=False).epoch(0))[0]
    rows = []
    for epoch in range(1, 5):
        out = np.zeros(24, bool)
        for rank in range(world_size):
            # Labels are the dataset indices here, so each output finds its source image.
            ld = loader(aug, batch=24, labels=torch.arange(24), rank=rank,
                        world_size=world_size)
            for x, y, _ in ld.epoch(epoch):
                same, mirror = (x == plain[y]).flatten(1), (x == plain[y].flip(3)).flatten(1)
                assert (same.all(1) | mirror.all(1)).all()
                out[y.numpy()] = mirror.all(1).numpy()
        rows.append(out)
    return np.array(rows)


def test_alternating_flip_flips_each_image_in_exactly_every_other_epoch():
    f = flipped_by_epoch({"flip": "alternate"})
    assert 4 <= f[0].sum() <= 20                      # the first epoch: at random
    assert (f[1:] != f[:-1]).all()                     # then every image alternates
    assert np.array_equal(flipped_by_epoch({"flip": "alternate"}, world_size=2), f)
    r = flipped_by_epoch({})                           # random flips: no such pattern
    assert not (r[1:] != r[:-1]).all()


def test_alternating_flip_depends_on_the_run_seed_not_the_batching():
    cfg = data_cfg(augment="flip", flip="alternate")
    aug = build_train_augment(cfg, 4)
    x = images(16)
    ctx = BatchContext(epoch=1, index=torch.arange(16), seed=0)
    whole = alternating_flips(ctx)
    halves = torch.cat([alternating_flips(BatchContext(1, torch.arange(8), 0)),
                        alternating_flips(BatchContext(1, torch.arange(8, 16), 0))])
    assert torch.equal(whole, halves)
    assert not torch.equal(whole, alternating_flips(BatchContext(1, torch.arange(16), 1)))
    with pytest.raises(ReslabError, match="data.flip"):
        aug.pixels(x, torch.Generator())


def test_progressive_resize_follows_the_schedule_and_eval_stays_full_size():
    cfg = data_cfg(augment="none", progressive_resize={"start_size": 8,
                                                       "end_epoch_fraction": 0.5})
    aug = build_train_augment(cfg, 4)
    ld = loader(aug, size=16, epochs=10, first_epoch=1)
    sizes = [next(ld.epoch(e))[0].shape[-1] for e in range(1, 12)]
    assert sizes == [8, 8, 8, 12, 12, 16, 16, 16, 16, 16, 16]
    assert next(loader(aug, size=16).epoch(1))[0].shape[-1] == 16  # no schedule: full size
    assert next(loader(None, size=16).epoch(1))[0].shape[-1] == 16
    with pytest.raises(ReslabError, match="data.progressive_resize.start_size"):
        ProgressiveResize(32).size_at(0.0, 16)


def test_progressive_resize_antialiases_like_interpolate():
    x = torch.rand(2, 3, 16, 16)
    out = ProgressiveResize(8)(x, type("C", (), {"progress": 0.0})())
    ref = torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", antialias=True)
    assert torch.allclose(out, ref)


def test_strength_keys_reach_the_presets():
    phase1 = build_train_augment(data_cfg(augment="imagenet-phase1"), 4).pixels.steps[0]
    assert isinstance(phase1, ImagenetAugment) and phase1.hue == 0.1
    tuned = build_train_augment(data_cfg(augment="imagenet-phase1", flip_p=0.2,
                                         crop_scale=[0.3, 0.9], jitter={"hue": 0.2}), 4)
    step = tuned.pixels.steps[0]
    assert (step.hflip, step.scale, step.hue, step.brightness) == (0.2, (0.3, 0.9), 0.2, 0.1)
    cifar = build_train_augment(data_cfg(augment="crop-flip-gray", pad=2, gray_p=0.3,
                                         flip_p=0.7, jitter={"brightness": 0.4}), 4).pixels
    assert isinstance(cifar, Compose)
    crop, flip, jitter, gray = cifar.steps
    assert (crop.pad, flip.p, gray.p) == (2, 0.7, 0.3)
    assert jitter == ColorJitter(brightness=0.4)


@pytest.mark.parametrize("override, key", [
    ("data.mixup.prob=2", "data.mixup.prob = 2"),
    ("data.mixup.beta=1", "unknown key 'data.mixup.beta'"),
    ("data.crop_scale=[0.9,0.1]", "data.crop_scale = [0.9, 0.1]"),
    ("data.jitter.hue=0.7", "data.jitter.hue = 0.7"),
    ("data.augment=crop+magic", "data.augment = 'crop+magic'"),
    ("data.augment=trivialaugment+crop", "data.augment = 'trivialaugment+crop'"),
    ("data.flip=sometimes", "data.flip = 'sometimes'"),
    ("data.flip_p=-0.1", "data.flip_p = -0.1"),
    ("data.randaugment.m=31", "data.randaugment.m = 31"),
    ("data.erasing=1.5", "data.erasing = 1.5"),
    ("data.progressive_resize.end_epoch_fraction=0", "data.progressive_resize.end_epoch_fraction"),
])
def test_bad_augmentation_values_are_one_line_errors_naming_the_key(override, key):
    with pytest.raises(ReslabError) as err:
        load_config(None, [override])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_augment_accepts_base_plus_policy():
    assert load_config(None, ["data.augment=crop-flip+trivialaugment"]).data.augment
    assert load_config(None, ["data.augment=randaugment"]).data.augment == "randaugment"
    with pytest.raises(ReslabError, match="expected one of"):
        build_augment("crop-flop")


@pytest.mark.parametrize("preset", PRESETS[1:])
def test_preview_grid_per_preset_writes_a_png(tmp_path, preset):
    x = images(6, size=32, seed=1)
    aug = build_train_augment(data_cfg(augment=preset), 4)
    grid = augment_preview(x, aug, n=4, seed=0, columns=3)
    assert grid.dtype == np.uint8 and grid.shape == (4 * 34 - 2, 4 * 34 - 2, 3)
    path = tmp_path / f"{preset}.png"
    Image.fromarray(grid).save(path)
    back = np.asarray(Image.open(path))
    assert back.std() > 10                                       # not a constant image
    originals = back[:32, :32]
    assert np.array_equal(originals, x[0].permute(1, 2, 0).numpy())
    assert not np.array_equal(back[:32, 34:66], originals)       # the copy differs


def test_preview_accepts_bare_steps_and_grey_float_images():
    x = images(4, c=1, size=16).float() / 255
    grid = augment_preview(x, build_augment("crop-flip"), n=2, columns=2)
    assert grid.shape == (2 * 18 - 2, 3 * 18 - 2, 3) and grid.std() > 10
    assert augment_preview(x, TrainAugment(), n=2, columns=1).shape == (34, 34, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("preset", ["crop-flip+trivialaugment", "imagenet-phase2+randaugment"])
def test_same_seed_gives_the_same_batch_on_cpu_and_gpu(preset):
    cfg = data_cfg(augment=preset, erasing=0.5, mixup={"alpha": 0.2, "cutmix_alpha": 1.0},
                   flip="alternate")
    aug = build_train_augment(cfg, 4, 0.1)
    data = ImageSet(images(32, size=32), torch.arange(32) % 4)
    outs = []
    for dev in (CPU, torch.device("cuda")):
        norm = Normalizer([0.5] * 3, [0.25] * 3, 255.0, dev)
        ld = BatchLoader(data, 16, dev, norm, aug, shuffle=True, seed=1,
                         to_device_whole=False)
        outs.append([(x.cpu(), y.cpu()) for x, y, _ in ld.epoch(3)])
    for (x, y), (xg, yg) in zip(*outs):
        assert torch.allclose(y, yg, atol=1e-6)
        # Bilinear/nearest resampling may round a boundary pixel differently on the GPU.
        assert ((x - xg).abs() > 1e-3).float().mean() < 0.01
