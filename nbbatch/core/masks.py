"""Inpainting masks: what the user gives (a picture, an array, a file, a box or an ellipse) as one grey picture.

White is repainted, black kept, as diffusers' inpaint pipelines take a mask. A box or an
ellipse is written ``box:x0,y0,x1,y1`` or ``ellipse:x0,y0,x1,y1`` in pixels of the picture
(the right and bottom edges excluded), so a magic option can carry it.
"""

from __future__ import annotations

import os
import re
from typing import Any

from PIL import Image, ImageDraw

SHAPES = ("box", "ellipse")
_SHAPE = re.compile(r"^\s*(box|ellipse)\s*:\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*$")


def make_mask(mask: Any, size: tuple[int, int]) -> Image.Image:
    """`mask` as an ``L`` picture of `size` (width, height): 255 where the picture is repainted.

    Takes a PIL image (its grey levels; one with transparency uses its alpha), a NumPy array
    (HxW booleans, 0-1 floats or 0-255 integers), a file path, or ``box:...``/``ellipse:...``
    text. Raises ValueError, in one line, for anything else, a size that differs from the
    picture's, or a mask with nothing to repaint.
    """
    if isinstance(mask, str) and _SHAPE.match(mask):
        picture = _drawn(mask, size)
    elif isinstance(mask, str | os.PathLike):
        picture = _opened(mask)
    elif isinstance(mask, Image.Image):
        picture = mask.getchannel("A") if mask.mode in ("RGBA", "LA") else mask.convert("L")
    elif hasattr(mask, "shape") and hasattr(mask, "dtype"):
        picture = _from_array(mask)
    else:
        raise ValueError(
            f"a mask is a picture, an array, a file or 'box:x0,y0,x1,y1' / 'ellipse:x0,y0,x1,y1', "
            f"not {type(mask).__name__}"
        )
    if picture.size != size:
        raise ValueError(f"the mask is {picture.width}x{picture.height} but the picture is {size[0]}x{size[1]}")
    if picture.getextrema()[1] < 128:
        raise ValueError("the mask is empty: paint white (or give a box) where the picture should change")
    return picture


def _drawn(text: str, size: tuple[int, int]) -> Image.Image:
    found = _SHAPE.match(text)
    assert found is not None  # make_mask matched it
    kind, *numbers = found.groups()
    x0, y0, x1, y1 = (int(n) for n in numbers)
    if not (0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]):
        raise ValueError(
            f"the {kind} {x0},{y0},{x1},{y1} is not inside the {size[0]}x{size[1]} picture with x0 < x1 and y0 < y1"
        )
    picture = Image.new("L", size, 0)
    draw = ImageDraw.Draw(picture)
    if kind == "box":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
    else:
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    return picture


def _opened(path: str | os.PathLike) -> Image.Image:
    from nbbatch.core.attention import check_text

    if isinstance(path, str):
        check_text(path)
    if not os.path.isfile(path):
        raise ValueError(f"the mask {str(path)!r} is neither a file nor 'box:x0,y0,x1,y1' / 'ellipse:x0,y0,x1,y1'")
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.getchannel("A") if opened.mode in ("RGBA", "LA") else opened.convert("L")
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"the mask {str(path)!r} is not a picture Pillow can read: {error}") from None


def _from_array(array: Any) -> Image.Image:
    import numpy as np

    values = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array)
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 2:
        raise ValueError(f"a mask array is HxW, not of shape {tuple(values.shape)}")
    if values.dtype == bool:
        values = values.astype(np.uint8) * 255
    elif np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise ValueError("a float mask array holds 0 (keep) to 1 (repaint)")
        values = np.round(values * 255).astype(np.uint8)
    elif np.issubdtype(values.dtype, np.integer):
        if values.min() < 0 or values.max() > 255:
            raise ValueError("an integer mask array holds 0 (keep) to 255 (repaint)")
        values = values.astype(np.uint8)
    else:
        raise ValueError(f"a mask array holds booleans or numbers, not {values.dtype}")
    return Image.fromarray(values, mode="L")
