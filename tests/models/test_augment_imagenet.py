"""imagenet-phase1/2 augmentation: deterministic, shape/dtype-preserving, per-sample, exact
at the identity and for flips (so the affine composition is right)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from reslab.data.augment import build_augment
from reslab.data.augment_imagenet import PRESETS, build_imagenet_augment
from reslab.errors import ReslabError

NAMES = ["imagenet-phase1", "imagenet-phase2"]
IDENTITY = replace(PRESETS["imagenet-phase2"], scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0,
                   vflip=0.0, degrees=0.0, translate=0.0, brightness=0.0, contrast=0.0,
                   saturation=0.0, hue=0.0)


def batch(dtype=torch.uint8, n=4, h=32, w=24) -> torch.Tensor:
    x = torch.randint(0, 256, (n, 3, h, w), generator=torch.Generator().manual_seed(0))
    return x.to(torch.uint8) if dtype == torch.uint8 else (x / 255).to(dtype)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16])
def test_deterministic_and_keeps_shape_and_dtype(name, dtype):
    aug, x = build_augment(name), batch(dtype)
    a, b, c = aug(x, gen(1)), aug(x, gen(1)), aug(x, gen(2))
    assert a.shape == x.shape and a.dtype == dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)


@pytest.mark.parametrize("name", NAMES)
def test_each_image_in_a_batch_gets_its_own_crop(name):
    one = batch(n=1)
    out = build_imagenet_augment(name)(one.repeat(2, 1, 1, 1), gen(3))
    assert not torch.equal(out[0], out[1])


def test_identity_parameters_give_the_input_back():
    x = batch()
    assert torch.equal(IDENTITY(x, gen()), x)


def test_flips_are_exact():
    x = batch()
    assert torch.equal(replace(IDENTITY, hflip=1.0)(x, gen()), x.flip(3))
    assert torch.equal(replace(IDENTITY, hflip=1.0, vflip=1.0)(x, gen()), x.flip(2, 3))


def test_quarter_turn_is_a_rotation_of_the_pixels():
    x = batch(h=16, w=16)
    r = torch.full((4, 9), 0.5, dtype=torch.float64)
    r[:, 6] = 1.0  # the top of [-degrees, degrees]
    theta = replace(IDENTITY, degrees=90.0).matrices(r, x.shape[-2:])
    from reslab.data.augment_imagenet import warp

    y = warp(x.float(), theta).round().to(torch.uint8)
    assert any(torch.equal(y, x.rot90(k, (2, 3))) for k in (1, 3))


def test_brightness_is_one_factor_per_image():
    x = (batch() // 4 + 100).to(torch.uint8)  # 100..163: no clipping at 1.5x
    y = replace(IDENTITY, brightness=0.5)(x, gen())
    ratio = (y.float() / x.float()).flatten(1)
    assert not torch.equal(y, x) and y.dtype == torch.uint8
    assert (ratio.std(1) < 0.01).all() and ratio[:, 0].unique().numel() == len(x)


def test_unknown_imagenet_preset_is_refused():
    with pytest.raises(ReslabError, match="imagenet-phase1"):
        build_imagenet_augment("imagenet-phase9")


def test_single_channel_images():
    x = batch()[:, :1]
    y = build_imagenet_augment("imagenet-phase2")(x, gen())
    assert y.shape == x.shape and y.dtype == x.dtype and not torch.equal(y, x)


def test_phase1_jitters_hue_by_default():
    assert PRESETS["imagenet-phase1"].hue == 0.1
    x = (batch() // 4 + 96).to(torch.uint8)  # 96..159: no clipping after a hue turn
    out = replace(IDENTITY, hue=0.1)(x, gen())
    assert not torch.equal(out, x)
    # A hue turn keeps each pixel's luma (up to uint8 rounding).
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    luma_in, luma_out = (x.float() * w).sum(1), (out.float() * w).sum(1)
    assert ((luma_in - luma_out).abs() <= 1.0).float().mean() > 0.99


def test_alternating_flip_follows_the_batch_context():
    from reslab.data.transforms import BatchContext, alternating_flips

    x = batch(n=8)
    aug = replace(IDENTITY, hflip=0.5, alternate_flip=True)
    for epoch in (1, 2, 3):
        ctx = BatchContext(epoch=epoch, index=torch.arange(8), seed=4)
        out = aug(x, gen(epoch), ctx)
        expected = torch.where(alternating_flips(ctx).view(-1, 1, 1, 1), x.flip(3), x)
        assert torch.equal(out, expected)
    with pytest.raises(ReslabError, match="data.flip"):
        aug(x, gen())
