"""Seed-labelled grids: one row (or more, wrapped) per prompt, a caption under every image.

Pure PIL. The inline preview is the grid at display size, compressed as JPEG, so a
notebook holds kilobytes per image rather than full-size PNGs; the full images stay
in the result. A matplotlib figure is offered for people who annotate.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (90, 90, 90)
PREVIEW_WIDTH = 1024
"""The width the inline preview aims at, in pixels: about a notebook's output area."""


@dataclass(frozen=True)
class Group:
    """A run of images that share a row heading, such as one prompt's seeds."""

    title: str
    indices: tuple[int, ...]


def make_grid(
    images: Sequence[Image.Image],
    labels: Sequence[str],
    groups: Sequence[Group] | None = None,
    *,
    cell: int = 256,
    columns: int = 8,
) -> Image.Image:
    """Draw `images` in cells of `cell` pixels, `labels` under them, each group under its title.

    A group with more images than `columns` wraps onto further rows. Images keep their
    aspect ratio inside the cell.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if groups is None:
        groups = [Group("", tuple(range(len(images))))]
    if not images:
        return Image.new("RGB", (cell, cell // 4), BACKGROUND)
    columns = max(1, min(columns, max(len(g.indices) for g in groups)))
    font_size = max(10, cell // 12)
    font = ImageFont.load_default(size=font_size)
    caption = font_size + 8
    title_band = font_size + 10 if any(g.title for g in groups) else 0
    pad = 4
    titles = math.ceil(max((_text_width(g.title, font) for g in groups), default=0))
    width = max(columns * (cell + pad) + pad, min(titles + 3 * pad, 4 * (cell + pad)))
    height = pad
    for group in groups:
        rows = -(-len(group.indices) // columns)
        height += title_band + rows * (cell + caption + pad)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = pad
    for group in groups:
        if title_band:
            draw.text((pad + 2, y + 4), _fit(group.title, font, width - 2 * pad), fill=INK, font=font)
            y += title_band
        for position, index in enumerate(group.indices):
            row, column = divmod(position, columns)
            x0 = pad + column * (cell + pad)
            y0 = y + row * (cell + caption + pad)
            thumb = thumbnail(images[index], cell)
            canvas.paste(thumb, (x0 + (cell - thumb.width) // 2, y0 + (cell - thumb.height) // 2))
            text = _fit(labels[index], font, cell)
            text_width = _text_width(text, font)
            draw.text((x0 + (cell - text_width) / 2, y0 + cell + 3), text, fill=MUTED, font=font)
        y += -(-len(group.indices) // columns) * (cell + caption + pad)
    return canvas


def _text_width(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> float:
    """The width of `text` in `font`, in pixels."""
    return font.getlength(" ".join(text.split()))


def thumbnail(image: Image.Image, size: int) -> Image.Image:
    """`image` scaled to fit a `size` square, as RGB; small images are enlarged with sharp pixels."""
    scale = min(size / image.width, size / image.height)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
    return image.convert("RGB").resize(target, resample, reducing_gap=2.0 if scale < 1 else None)


def preview_cell(count: int, columns: int = 8, width: int = PREVIEW_WIDTH) -> int:
    """The cell size that fits `count` images, `columns` to a row, into `width` pixels (96 to 256)."""
    shown = max(1, min(count, columns))
    return max(96, min(256, width // shown - 4))


def encode_preview(grid: Image.Image, quality: int = 80) -> bytes:
    """The grid as JPEG bytes: small enough to keep in a notebook."""
    buffer = io.BytesIO()
    grid.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def grid_figure(
    images: Sequence[Image.Image],
    labels: Sequence[str],
    groups: Sequence[Group] | None = None,
    *,
    columns: int = 8,
    size: float = 2.0,
) -> Figure:
    """The same grid as a matplotlib figure: one axes per image, titled with its label, ready to annotate."""
    from matplotlib.figure import Figure

    if groups is None:
        groups = [Group("", tuple(range(len(images))))]
    columns = max(1, min(columns, max((len(g.indices) for g in groups), default=1)))
    layout = [(g, i) for g in groups for i in range(0, max(len(g.indices), 1), columns)]
    figure = Figure(figsize=(columns * size, len(layout) * (size + 0.3)), layout="constrained")
    axes = figure.subplots(len(layout), columns, squeeze=False)
    for row, (group, offset) in enumerate(layout):
        for column in range(columns):
            ax = axes[row][column]
            ax.set_axis_off()
            if offset + column < len(group.indices):
                index = group.indices[offset + column]
                ax.imshow(images[index])
                ax.set_title(labels[index], fontsize=9)
        if group.title and offset == 0:  # above the group's first row, cut to the row's width
            title = group.title if len(group.title) <= columns * 14 else group.title[: columns * 14 - 1] + "…"
            axes[row][0].text(0, 1.25, title, transform=axes[row][0].transAxes, fontsize=9, va="bottom", clip_on=False)
    return figure


def _fit(text: str, font: ImageFont.FreeTypeFont, width: float) -> str:
    """`text` cut with an ellipsis to fit `width` pixels."""
    text = " ".join(text.split())
    if _text_width(text, font) <= width - 4:
        return text
    while text and _text_width(text + "…", font) > width - 4:
        text = text[:-1]
    return text + "…"
