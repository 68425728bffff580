"""Batched train-time augmentation: the config -> pipeline factory and the pipeline itself.

torchvision's transforms.v2 draw one set of random parameters per call, so on a batch every
image gets the same crop and flip; reslab's steps draw per-image parameters and apply them with
indexing, `torch.where` and one resample, with no per-sample Python, on any dtype and device
(see `transforms` for the call protocol). A `TrainAugment` runs, per batch:

  1. pixel steps on the stored uint8/float values: the `data.augment` base preset (crop / flip /
     grey, or an imagenet-* random resized crop), `data.jitter`, then the policy after `+`
     (trivialaugment / randaugment): `crop-flip+trivialaugment` is the common CIFAR recipe;
  2. normalisation (the loader's Normalizer);
  3. progressive resizing (`data.progressive_resize`), by the epoch's place in the schedule;
  4. random erasing (`data.erasing`), in the normalised space the model sees;
  5. Mixup/CutMix (`data.mixup`): labels become (B, num_classes) soft targets.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from ..config import DataConfig, split_augment
from ..errors import ReslabError
from .augment_imagenet import PRESETS as IMAGENET_PRESETS
from .augment_policies import build_policy
from .color import to_grayscale
from .erasing import RandomErasing
from .mixup import Mixup
from .transforms import (
    Augment,
    BatchContext,
    ColorJitter,
    Compose,
    RandomCrop,
    RandomFlip,
    RandomGrayscale,
    random_crop,
    random_flip,
    random_grayscale,
)

__all__ = ["Augment", "BatchContext", "ProgressiveResize", "TrainAugment", "build_augment",
           "build_pixel_augment", "build_train_augment", "random_crop", "random_flip",
           "random_grayscale", "to_grayscale"]


def jitter_of(cfg: DataConfig, preset: ColorJitter) -> ColorJitter:
    """The preset's jitter with every `data.jitter` key that is set replacing its value."""
    return replace(preset, **{k: v for k, v in cfg.jitter.model_dump().items() if v is not None})


def imagenet_step(base: str, cfg: DataConfig) -> Augment:
    preset = IMAGENET_PRESETS[base]
    jitter = jitter_of(cfg, ColorJitter(preset.brightness, preset.contrast, preset.saturation,
                                        preset.hue))
    return replace(preset, hflip=cfg.flip_p, alternate_flip=cfg.flip == "alternate",
                   scale=tuple(cfg.crop_scale or preset.scale), **asdict(jitter))


def base_steps(base: str, cfg: DataConfig) -> list[Augment]:
    """The steps of a base preset (its name's words, in a fixed order), plus data.jitter."""
    if base.startswith("imagenet"):
        return [imagenet_step(base, cfg)]
    words = base.split("-")
    steps: list[Augment] = []
    if "crop" in words:
        steps.append(RandomCrop(cfg.pad))
    if "flip" in words:
        steps.append(RandomFlip(cfg.flip_p, alternate=cfg.flip == "alternate"))
    jitter = jitter_of(cfg, ColorJitter())
    if jitter != ColorJitter():
        steps.append(jitter)
    if "gray" in words:
        steps.append(RandomGrayscale(cfg.gray_p))
    return steps


def build_pixel_augment(cfg: DataConfig, preset: str | None = None) -> Augment | None:
    """The pixel steps of `preset` (default `cfg.augment`, e.g. a phase's own) with the
    strengths in `cfg`; None when there are none."""
    name = preset or cfg.augment
    try:
        base, policy = split_augment(name)
    except ValueError as err:
        raise ReslabError(f"data.augment = {name!r}: {err}") from None
    steps = base_steps(base, cfg)
    if policy:
        steps.append(build_policy(policy, cfg.randaugment.n, cfg.randaugment.m))
    return Compose(tuple(steps)) if steps else None


def build_augment(preset: str, pad: int = 4, gray_p: float = 0.1) -> Augment | None:
    """The pixel steps of a `data.augment` preset at default strengths (None: no augmentation).
    Kept for callers that have no DataConfig; `build_train_augment` is the full pipeline."""
    return build_pixel_augment(DataConfig(pad=pad, gray_p=gray_p), preset)


@dataclass(frozen=True)
class ProgressiveResize:
    """Shorter side `start_size` at the start of training, rising linearly (in steps of
    `step` pixels, so a compiled model sees few shapes) to full size once `end_fraction` of the
    epochs are done. Unknown progress (a loader without `epochs`) means full size."""
    start_size: int
    end_fraction: float = 0.5
    step: int = 4

    def size_at(self, progress: float | None, full: int) -> int:
        if self.start_size > full:
            raise ReslabError(f"data.progressive_resize.start_size = {self.start_size}: expected "
                              f"at most the image size ({full} px)")
        if progress is None or progress >= self.end_fraction:
            return full
        grown = int((full - self.start_size) * max(progress, 0.0) / self.end_fraction)
        return min(full, self.start_size + grown // self.step * self.step)

    def __call__(self, x: torch.Tensor, ctx: BatchContext | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        size = self.size_at(ctx.progress if ctx else None, min(h, w))
        if size == min(h, w):
            return x
        out = (round(h * size / min(h, w)), round(w * size / min(h, w)))
        return F.interpolate(x, size=out, mode="bilinear", antialias=True, align_corners=False)


Normalize = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainAugment:
    """The whole train-time pipeline of one phase (see the module docstring for the order)."""
    pixels: Augment | None = None
    resize: ProgressiveResize | None = None
    erasing: RandomErasing | None = None
    mixup: Mixup | None = None

    @property
    def soft_targets(self) -> bool:
        """True: labels come out as (B, num_classes) float targets, label smoothing included."""
        return self.mixup is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                 ctx: BatchContext | None, normalize: Normalize) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
        if self.pixels is not None:
            x = self.pixels(x, gen, ctx)
        x = normalize(x)
        if self.resize is not None:
            x = self.resize(x, ctx)
        if self.erasing is not None:
            x = self.erasing(x, gen)
        if self.mixup is not None:
            x, y = self.mixup(x, y, gen)
        return x, y


def as_train_augment(augment: TrainAugment | Augment | None) -> TrainAugment | None:
    """What BatchLoader runs: a TrainAugment as is, pixel steps alone wrapped in one."""
    if augment is None or isinstance(augment, TrainAugment):
        return augment
    return TrainAugment(pixels=augment)


def build_train_augment(cfg: DataConfig, num_classes: int, label_smoothing: float = 0.0,
                        preset: str | None = None) -> TrainAugment:
    """The train-time pipeline for `cfg` (`preset`: a phase's `augment`, default cfg.augment).
    With Mixup/CutMix on, `label_smoothing` (train.label_smoothing) goes into the soft targets
    and the loss must not smooth again."""
    mix, resize = cfg.mixup, cfg.progressive_resize
    mixing = (mix.alpha > 0 or mix.cutmix_alpha > 0) and mix.prob > 0
    return TrainAugment(
        pixels=build_pixel_augment(cfg, preset),
        resize=(ProgressiveResize(resize.start_size, resize.end_epoch_fraction)
                if resize.start_size else None),
        erasing=RandomErasing(cfg.erasing) if cfg.erasing > 0 else None,
        mixup=Mixup(num_classes, mix.alpha, mix.cutmix_alpha, mix.prob, mix.switch_prob,
                    label_smoothing) if mixing else None)
