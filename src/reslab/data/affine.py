"""Per-image affine warps of a batch: one `affine_grid` + `grid_sample` for any composition.

Matrices map OUTPUT coordinates to INPUT coordinates (where each output pixel samples from).
`pixel_to_theta` converts (B,3,3) maps in pixel units (origin at the image's top-left corner,
x right, y down, pixel centres at +0.5) into the (B,2,3) normalised form `affine_grid` takes,
so geometric ops can be written and composed in pixels (matrix products, on the CPU in
float64) and resampled once. Areas coming from outside the image are filled with 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Resample a float batch through (B,2,3) normalised maps (zero fill)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def pixel_to_theta(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B,3,3) pixel-unit maps -> (B,2,3) float32 maps in affine_grid's [-1, 1] units."""
    to_norm = torch.tensor([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]], dtype=m.dtype)
    to_pixel = torch.linalg.inv(to_norm)
    return (to_norm @ m @ to_pixel)[:, :2].float()


def identity(b: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)


def shear_x(s: torch.Tensor) -> torch.Tensor:
    """Shear about the top-left corner (torchvision's autoaugment convention): input x =
    output x + s * y."""
    m = identity(len(s))
    m[:, 0, 1] = s
    return m


def shear_y(s: torch.Tensor) -> torch.Tensor:
    m = identity(len(s))
    m[:, 1, 0] = s
    return m


def translate(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Move the content by (dx, dy) pixels (right, down)."""
    m = identity(len(dx))
    m[:, 0, 2], m[:, 1, 2] = -dx, -dy
    return m


def rotate(degrees: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Rotate the content counter-clockwise on screen about the image centre (torchvision's
    sign convention)."""
    a = degrees * (math.pi / 180)
    cos, sin = a.cos(), a.sin()
    cx, cy = w / 2, h / 2
    m = identity(len(a))
    m[:, 0, 0], m[:, 0, 1] = cos, -sin
    m[:, 1, 0], m[:, 1, 1] = sin, cos
    m[:, 0, 2] = cx - cos * cx + sin * cy
    m[:, 1, 2] = cy - sin * cx - cos * cy
    return m
