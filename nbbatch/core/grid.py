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

    A group with more images than `columns` wraps onto further rows; groups of a third of a
    row or less share a row, side by side, each under its own title (nine prompts of two
    seeds fill three rows, not nine). Images keep their aspect ratio inside the cell.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if groups is None:
        groups = [Group("", tuple(range(len(images))))]
    if not images:
        return Image.new("RGB", (cell, cell // 4), BACKGROUND)
    columns = max(1, columns)
    font_size = max(12, cell // 10)
    font = ImageFont.load_default(size=font_size)
    lines = [_wrap(label, font, cell, lines=2) for label in labels]  # "seed 4005471050 ·" over "vary of 4005471049"
    caption = max(len(label_lines) for label_lines in lines) * (font_size + 4) + 4
    title_band = font_size + 10 if any(g.title for g in groups) else 0
    pad = 4
    shelves = _shelves(groups, columns)
    span = max(min(sum(len(group.indices) for group in shelf), columns) for shelf in shelves)  # cells across
    alone = [shelf[0] for shelf in shelves if len(shelf) == 1]
    titles = math.ceil(max((_text_width(g.title, font) for g in alone), default=0))
    width = max(span * (cell + pad) + pad, min(titles + 3 * pad, 4 * (cell + pad)))
    height = pad
    for shelf in shelves:
        rows = max(-(-len(group.indices) // columns) for group in shelf)
        height += title_band + rows * (cell + caption + pad)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = pad
    for shelf in shelves:
        x = 0  # in cells, from the left: the groups of a shelf sit side by side
        for group in shelf:
            room = width - 2 * pad if len(shelf) == 1 else len(group.indices) * (cell + pad) - pad
            if title_band:
                draw.text((pad + x * (cell + pad) + 2, y + 4), _fit(group.title, font, room), fill=INK, font=font)
            for position, index in enumerate(group.indices):
                row, column = divmod(position, columns)
                x0 = pad + (x + column) * (cell + pad)
                y0 = y + title_band + row * (cell + caption + pad)
                thumb = thumbnail(images[index], cell)
                canvas.paste(thumb, (x0 + (cell - thumb.width) // 2, y0 + (cell - thumb.height) // 2))
                for line, text in enumerate(lines[index]):
                    left = x0 + (cell - _text_width(text, font)) / 2
                    draw.text((left, y0 + cell + 3 + line * (font_size + 4)), text, fill=MUTED, font=font)
            x += len(group.indices)
        rows = max(-(-len(group.indices) // columns) for group in shelf)
        y += title_band + rows * (cell + caption + pad)
    return canvas


def _shelves(groups: Sequence[Group], columns: int) -> list[list[Group]]:
    """The groups laid out in rows: each alone, except short ones (a third of a row or less) together while they fit."""
    shelves: list[list[Group]] = []
    used = columns  # cells taken in the last shelf: full, so the first group starts one
    for group in groups:
        size = len(group.indices)
        short = 3 * size <= columns
        if short and used + size <= columns and all(3 * len(g.indices) <= columns for g in shelves[-1]):
            shelves[-1].append(group)
            used += size
        else:
            shelves.append([group])
            used = size
    return shelves


def _text_width(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> float:
    """The width of `text` in `font`, in pixels."""
    return font.getlength(" ".join(text.split()))


def thumbnail(image: Image.Image, size: int) -> Image.Image:
    """`image` scaled to fit a `size` square, as RGB; small images are enlarged with sharp pixels."""
    scale = min(size / image.width, size / image.height)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
    return image.convert("RGB").resize(target, resample, reducing_gap=2.0 if scale < 1 else None)


def placeholder(size: tuple[int, int], shade: int = 232) -> Image.Image:
    """A plain grey picture of `size`: the cell of an image not made (yet)."""
    return Image.new("RGB", size, (shade, shade, shade))


def preview_cell(columns: int = 8, width: int = PREVIEW_WIDTH) -> int:
    """The cell size of the inline preview: `columns` to a row in `width` pixels (96 to 256), whatever the count.

    One size for every batch, so a lone image is not blown up beside a full row of small ones.
    """
    return max(96, min(256, width // max(1, columns) - 4))


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


def make_table(
    images: Sequence[Sequence[Image.Image | None]],
    column_headers: Sequence[str],
    row_headers: Sequence[str],
    title: str = "",
    *,
    cell: int = 256,
) -> Image.Image:
    """An X/Y table: `images` by row, the X values over the columns and the Y values left of the rows.

    `row_headers` may be empty (one row, no Y axis); a missing image leaves its cell blank.
    """
    font_size = max(10, cell // 12)
    font = ImageFont.load_default(size=font_size)
    pad = 4
    line = font_size + 4
    header_lines = max((len(_wrap(h, font, cell)) for h in column_headers), default=1)
    header_height = header_lines * line + pad
    widest = max((_text_width(h, font) for h in row_headers), default=0)
    row_width = math.ceil(min(widest + 4 + 3 * pad, 2 * cell)) if row_headers else 0
    title_band = font_size + 10 if title else 0
    width = row_width + len(column_headers) * (cell + pad) + pad
    height = title_band + header_height + len(images) * (cell + pad) + pad
    canvas = Image.new("RGB", (max(width, cell), height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad + 2, 4), _fit(title, font, canvas.width - 2 * pad), fill=INK, font=font)
    top = title_band + header_height
    for column, header in enumerate(column_headers):
        x0 = row_width + pad + column * (cell + pad)
        lines = _wrap(header, font, cell)
        for number, text in enumerate(lines):
            y = title_band + header_height - pad - (len(lines) - number) * line
            draw.text((x0 + (cell - _text_width(text, font)) / 2, y), text, fill=INK, font=font)
    for row, images_of_row in enumerate(images):
        y0 = top + row * (cell + pad)
        if row_headers:
            lines = _wrap(row_headers[row], font, row_width - 2 * pad)
            for number, text in enumerate(lines):
                y = y0 + (cell - len(lines) * line) / 2 + number * line
                draw.text((row_width - pad - _text_width(text, font), y), text, fill=INK, font=font)
        for column, image in enumerate(images_of_row):
            if image is None:
                continue
            x0 = row_width + pad + column * (cell + pad)
            thumb = thumbnail(image, cell)
            canvas.paste(thumb, (x0 + (cell - thumb.width) // 2, y0 + (cell - thumb.height) // 2))
    return canvas


def stack(images: Sequence[Image.Image], gap: int = 12) -> Image.Image:
    """`images` one above the other on the grid background, left-aligned."""
    width = max(image.width for image in images)
    height = sum(image.height for image in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height + gap
    return canvas


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float, lines: int = 3) -> list[str]:
    """`text` broken into at most `lines` lines that fit `width` pixels; the last is cut if need be.

    No line ends in a label's separator ``·``.
    """
    words = " ".join(text.split()).split(" ")
    wrapped: list[str] = []
    for word in words:
        if wrapped and _text_width(f"{wrapped[-1]} {word}", font) <= width - 4:
            wrapped[-1] = f"{wrapped[-1]} {word}"
        else:
            wrapped.append(word)
    if len(wrapped) > lines:
        wrapped = [*wrapped[: lines - 1], " ".join(wrapped[lines - 1 :])]
    return [_fit(text.removesuffix(" ·"), font, width) for text in wrapped]
