"""TrivialAugmentWide / RandAugment: each op against torchvision's on single images (exact for
the uint8 ops and the geometry, within 1 for the rounded blends), per-image randomness, seeds,
dtypes, grey batches."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from reslab.data.augment_policies import (
    OPS,
    AugmentPolicy,
    PolicyDraw,
    build_policy,
    equalize,
)

NEAREST = InterpolationMode.NEAREST


def batch(n=6, c=3, h=20, w=24, seed=0) -> torch.Tensor:
    x = torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed),
                      dtype=torch.uint8)
    x[1] = x[1] // 3 + 40   # a low-contrast image
    x[2] = 77               # a flat one
    return x


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def forced(x: torch.Tensor, op: str, value: float) -> torch.Tensor:
    """Every image of x through one op with one parameter."""
    d = PolicyDraw(torch.full((1, len(x)), OPS.index(op)),
                   torch.full((1, len(x)), float(value), dtype=torch.float64))
    return AugmentPolicy("trivialaugment").apply(x, d)


def per_image(fn, x):
    return torch.stack([fn(im) for im in x])


EXACT = {
    "posterize": (3, lambda im: TF.posterize(im, 3)),
    "solarize": (0.4, lambda im: TF.solarize(im, 255 * 0.4)),
    "autocontrast": (0, TF.autocontrast),
    "equalize": (0, TF.equalize),
    "translate_x": (5, lambda im: TF.affine(im, angle=0.0, translate=[5, 0], scale=1.0,
                                            shear=[0.0, 0.0], interpolation=NEAREST)),
    "translate_y": (-3, lambda im: TF.affine(im, angle=0.0, translate=[0, -3], scale=1.0,
                                             shear=[0.0, 0.0], interpolation=NEAREST)),
}
GEOMETRY = {
    "shear_x": (0.3, lambda im: TF.affine(im, angle=0.0, translate=[0, 0], scale=1.0,
                                          shear=[math.degrees(math.atan(0.3)), 0.0],
                                          interpolation=NEAREST, center=[0, 0])),
    "shear_y": (-0.3, lambda im: TF.affine(im, angle=0.0, translate=[0, 0], scale=1.0,
                                           shear=[0.0, math.degrees(math.atan(-0.3))],
                                           interpolation=NEAREST, center=[0, 0])),
    "rotate": (30, lambda im: TF.rotate(im, 30.0, interpolation=NEAREST)),
}
BLENDS = {
    "brightness": (0.4, lambda im: TF.adjust_brightness(im, 1.4)),
    "color": (-0.5, lambda im: TF.adjust_saturation(im, 0.5)),
    "contrast": (0.6, lambda im: TF.adjust_contrast(im, 1.6)),
    "sharpness": (0.9, lambda im: TF.adjust_sharpness(im, 1.9)),
}


@pytest.mark.parametrize("op", EXACT)
def test_uint8_ops_equal_torchvision_exactly(op):
    x = batch()
    value, reference = EXACT[op]
    assert torch.equal(forced(x, op, value), per_image(reference, x))


@pytest.mark.parametrize("op", GEOMETRY)
def test_geometric_ops_match_torchvision(op):
    # Nearest-neighbour sampling: a pixel lying on a rounding boundary may go either way
    # under another CPU's arithmetic, so allow a handful of them.
    x = batch()
    value, reference = GEOMETRY[op]
    same = (forced(x, op, value) == per_image(reference, x)).float().mean()
    assert same > 0.99


@pytest.mark.parametrize("op", BLENDS)
def test_blends_match_torchvision_within_rounding(op):
    x = batch()
    value, reference = BLENDS[op]
    out = forced(x, op, value)
    assert (out.int() - per_image(reference, x).int()).abs().max() <= 1
    assert not torch.equal(out, x)


def test_quarter_turn_is_exact():
    x = batch(h=16, w=16)
    y = forced(x, "rotate", 90)
    assert torch.equal(y, x.rot90(1, (2, 3))) or torch.equal(y, x.rot90(3, (2, 3)))


def test_equalize_on_float_moves_values_by_their_uint8_level_change():
    x = batch()
    xf = x.float() / 255
    assert torch.allclose(equalize(xf), equalize(x).float() / 255, atol=1e-6)


@pytest.mark.parametrize("name", ["trivialaugment", "randaugment"])
def test_each_image_draws_its_own_ops_and_magnitudes(name):
    policy = build_policy(name)
    d = policy.draw(256, 32, 32, gen())
    assert d.ops.unique().numel() == len(OPS)           # every op shows up in a big batch
    rotations = d.values[d.ops == OPS.index("rotate")]
    assert (rotations > 0).any() and (rotations < 0).any()  # signs drawn per image
    one = batch(n=3, h=32, w=32, seed=3)[:1].repeat(16, 1, 1, 1)
    out = policy(one, gen(1))
    assert len({o.numpy().tobytes() for o in out}) > 8  # same image, different results


def test_trivialaugment_draws_magnitude_bins_and_randaugment_fixes_them():
    ta = build_policy("trivialaugment").draw(512, 32, 32, gen())
    rotate = ta.values[ta.ops == OPS.index("rotate")].abs()
    assert rotate.unique().numel() > 10 and rotate.max() <= 135
    ra = build_policy("randaugment", n=3, m=9).draw(512, 32, 32, gen())
    assert ra.ops.shape == (3, 512)
    assert torch.allclose(ra.values[ra.ops == OPS.index("rotate")].abs(),
                          torch.tensor(30 * 9 / 30, dtype=torch.float64))
    assert set(ra.values[ra.ops == OPS.index("posterize")].tolist()) == {7.0}


@pytest.mark.parametrize("name", ["trivialaugment", "randaugment"])
def test_same_seed_same_output_and_uint8_stays_uint8(name):
    x = batch(n=32)
    policy = build_policy(name)
    a, b, c = policy(x, gen(5)), policy(x, gen(5)), policy(x, gen(6))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("op", [op for op in OPS if op != "posterize"])
def test_float_batches_give_the_uint8_pictures(op):
    # White is 1.0 for floats; blends do not clip floats (HDR), so compare clipped values.
    x = batch()
    value = {"solarize": 0.4, "translate_x": 5, "translate_y": 3, "rotate": 30}.get(op, 0.3)
    as_float = forced(x.float() / 255, op, value).clamp(0, 1) * 255
    assert (as_float - forced(x, op, value).float()).abs().max() <= 1.01


def test_float_posterize_keeps_2_to_the_bits_levels():
    x = batch().float() / 255
    y = forced(x, "posterize", 2)
    assert torch.equal(y, (x * 4).floor().clamp(max=3) / 4)


@pytest.mark.parametrize("name", ["trivialaugment", "randaugment"])
def test_float_grey_and_channels_last_batches(name):
    policy = build_policy(name)
    x = batch(n=32)
    xf = policy(x.float() / 255, gen(2))
    assert xf.dtype == torch.float32 and torch.isfinite(xf).all()
    assert policy(x.half() / 255, gen(2)).dtype == torch.float16
    grey = policy(x[:, :1], gen(2))
    assert grey.shape == x[:, :1].shape and grey.dtype == torch.uint8
    assert not torch.equal(grey, x[:, :1])
    cl = policy(x.contiguous(memory_format=torch.channels_last), gen(2))
    assert torch.equal(cl, policy(x, gen(2)))


def test_input_batch_is_not_modified():
    x = batch(n=16)
    before = x.clone()
    build_policy("randaugment")(x, gen())
    assert torch.equal(x, before)
