"""Captioned pictures of one coloured shape on a plain background, and the judge that reads them back.

The built-in model ``nbbatch:shapes`` is trained on these pictures, and its evaluation
and tests judge its images with the same rules: the background colour is read on the
border, the shape's colour on the pixels that differ from the background, and the shape
by how much of its bounding box it fills (a square fills all of it, a circle pi/4, the
upright triangle half).

Everything is deterministic from a seed and vectorised in torch, so the training
script can draw a fresh batch at every step in a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: The named colours and their RGB values (the model's whole palette).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZE = 64  # pixels a side
MIN_HALF, MAX_HALF = 9, 22  # half the shape's width, in pixels
_SUPERSAMPLE = 4
_PALETTE = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
_NAMES = list(COLOURS)


def caption(shape: str, colour: str, background: str) -> str:
    """The caption of a picture, e.g. ``a red circle on a blue background``."""
    return f"a {colour} {shape} on a {background} background"


@dataclass(frozen=True)
class Batch:
    """A batch of pictures with what is in them: indices into `SHAPES` and `COLOURS`, centres and half sizes."""

    images: torch.Tensor  # (n, 3, 64, 64) float in [0, 1]
    masks: torch.Tensor  # (n, 1, 64, 64) float in [0, 1]: how much of each pixel the shape covers
    shape: torch.Tensor  # (n,) long
    colour: torch.Tensor  # (n,) long
    background: torch.Tensor  # (n,) long
    centre: torch.Tensor  # (n, 2) float, pixels (x, y)
    half: torch.Tensor  # (n,) float, pixels

    def captions(self) -> list[str]:
        """The captions of the pictures, in order."""
        return [
            caption(SHAPES[s], _NAMES[c], _NAMES[b])
            for s, c, b in zip(self.shape.tolist(), self.colour.tolist(), self.background.tolist())
        ]


def sample(n: int, generator: torch.Generator) -> Batch:
    """Draw `n` random pictures: shape, colours (shape and background differ), place and size."""
    shape = torch.randint(len(SHAPES), (n,), generator=generator)
    colour = torch.randint(len(COLOURS), (n,), generator=generator)
    background = (colour + torch.randint(1, len(COLOURS), (n,), generator=generator)) % len(COLOURS)
    half = MIN_HALF + (MAX_HALF - MIN_HALF) * torch.rand(n, generator=generator)
    margin = half + 1.0
    centre = margin[:, None] + (SIZE - 2 * margin[:, None]) * torch.rand(n, 2, generator=generator)
    return render(shape, colour, background, centre, half)


def render(
    shape: torch.Tensor, colour: torch.Tensor, background: torch.Tensor, centre: torch.Tensor, half: torch.Tensor
) -> Batch:
    """Draw the described pictures, anti-aliased by supersampling."""
    fine = SIZE * _SUPERSAMPLE
    axis = (torch.arange(fine, dtype=torch.float32) + 0.5) / _SUPERSAMPLE
    x = axis[None, None, :]
    y = axis[None, :, None]
    dx = x - centre[:, 0, None, None]
    dy = y - centre[:, 1, None, None]
    h = half[:, None, None]
    circle = dx**2 + dy**2 <= h**2
    square = (dx.abs() <= h) & (dy.abs() <= h)
    # upright triangle: apex at the top of the box, base along its bottom edge
    triangle = (dy <= h) & (dx.abs() <= (dy + h) / 2)
    kind = shape[:, None, None]
    inside = torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle)).float()
    masks = torch.nn.functional.avg_pool2d(inside[:, None], _SUPERSAMPLE)
    fg = (_PALETTE[colour] / 255)[:, :, None, None]
    bg = (_PALETTE[background] / 255)[:, :, None, None]
    images = bg + (fg - bg) * masks
    return Batch(images, masks, shape, colour, background, centre, half)


def nearest_colour(rgb: np.ndarray) -> str:
    """The name of the palette colour nearest to an RGB triple (0-255)."""
    distances = ((_PALETTE.numpy() - np.asarray(rgb, dtype=np.float32)) ** 2).sum(axis=1)
    return _NAMES[int(distances.argmin())]


@dataclass(frozen=True)
class Judgement:
    """What the judge reads in one picture."""

    background: str
    colour: str | None  # None when no pixel differs from the background
    shape: str | None
    mask: np.ndarray  # (64, 64) bool: the pixels that differ from the background
    fill: float  # the share of the shape's bounding box that the shape covers


def judge(image: np.ndarray | object) -> Judgement:
    """Read background colour, shape colour and shape from a picture (PIL image or HxWx3 uint8 array).

    The background is the median of the border pixels; the shape is every pixel farther
    than 60 levels from it; its colour is the median of its pixels well inside (their
    distance from the background above 120), and the shape is named by its fill ratio:
    above 0.89 a square, above 0.64 a circle, else a triangle.
    """
    pixels = np.asarray(image, dtype=np.float32)[..., :3]
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    bg = np.median(border, axis=0)
    distance = np.sqrt(((pixels - bg) ** 2).sum(axis=-1))
    mask = distance > 60
    background = nearest_colour(bg)
    if mask.sum() < 4:
        return Judgement(background, None, None, mask, 0.0)
    core = distance > max(120.0, 0.6 * float(distance.max()))
    colour = nearest_colour(np.median(pixels[core if core.sum() >= 4 else mask], axis=0))
    ys, xs = np.nonzero(mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = float(mask.sum() / box)
    shape = "square" if fill > 0.89 else "circle" if fill > 0.64 else "triangle"
    return Judgement(background, colour, shape, mask, fill)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) floats in [0, 1] as (n, H, W, 3) uint8 arrays."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
