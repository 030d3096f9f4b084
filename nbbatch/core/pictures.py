"""Input pictures: one file, a folder, a glob or a list, read safely, each with the file name it came from.

A folder (or a glob such as ``"shots/*.png"``) is every picture in it, sorted by name, not
descending into sub-folders nor reading hidden (dot) files; each keeps its file name, which
the record and the label carry (a name a record cannot hold, with unprintable characters,
a backslash or a leading dot, is left out of both).
Damaged files, files that are no picture and bombs (Pillow's pixel and text limits) are one
ValueError line naming the file.
"""

from __future__ import annotations

import glob
import os
import struct
import zlib
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from nbbatch.core.errors import first_line
from nbbatch.core.seeds import MAX_IMAGES

if TYPE_CHECKING:
    from PIL import Image

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
"""The files a folder or a glob contributes (by their suffix, in any case)."""


@dataclass(frozen=True)
class Picture:
    """An input picture and the file name it was read from (None: it was given as a picture)."""

    image: Any
    name: str | None = None


def read_picture(
    source: str | os.PathLike | IO[bytes], name: str | None = None
) -> tuple[Image.Image, dict[str, str], str | None]:
    """The picture in a file (or an open binary file, called `name`) as RGB, its text chunks and its format.

    Any failure is one line: ``cannot read 'x.png' as an image: ...``.
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    errors = (
        UnidentifiedImageError,
        PILImage.DecompressionBombError,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        struct.error,
        zlib.error,
    )  # what Pillow raises for a file that is no picture, a damaged one, a bomb (pixels or text chunks)
    try:
        with PILImage.open(source) as opened:
            opened.load()
            text = {key: value for key, value in dict(getattr(opened, "text", {})).items() if isinstance(value, str)}
            return opened.convert("RGB"), text, opened.format
    except errors as error:
        shown = name if name is not None else os.fspath(source)  # type: ignore[arg-type]
        raise ValueError(f"cannot read {shown!r} as an image: {first_line(error)}") from None


def open_picture(source: str | os.PathLike | IO[bytes], name: str | None = None) -> Image.Image:
    """The picture in a file (or an open binary file, called `name`) as RGB; any failure is a one-line ValueError."""
    return read_picture(source, name)[0]


def plain_name(name: str) -> str | None:
    """A picture file's `name` as a record may hold it, or None (unprintable, a backslash, a leading dot, too long)."""
    plain = name.isprintable() and "\\" not in name and not name.startswith(".") and len(name) <= 255
    return name if plain else None


def gather_pictures(source: Any, what: str = "images") -> list[Picture]:
    """Every picture `source` names, in order: a picture, a file, a folder, a glob, or a list of any of these.

    A `Picture` passes as it is, with its name (an upload's file name).

    Pictures (PIL images, arrays, tensors) pass as they are, for `nbbatch.core.spec.as_image`
    to check; files are read here. An empty folder, a glob matching nothing, a path that is
    none of these, or more than a batch may hold, is a one-line ValueError naming `what`.
    """
    entries = list(source) if isinstance(source, (list, tuple)) else [source]
    pictures: list[Picture] = []
    for entry in entries:
        if not isinstance(entry, (str, os.PathLike)):
            pictures.append(entry if isinstance(entry, Picture) else Picture(entry))
            continue
        for path in _paths(os.fspath(entry), what):
            pictures.append(Picture(open_picture(path), plain_name(os.path.basename(path))))
            if len(pictures) > MAX_IMAGES:
                break
        if len(pictures) > MAX_IMAGES:
            raise ValueError(f"{what}: more than {MAX_IMAGES} pictures, the most one batch may hold")
    return pictures


def _paths(text: str, what: str) -> list[str]:
    """The picture files a path names: itself, a folder's pictures or a glob's, sorted by name."""
    path = os.path.expanduser(text)
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        found = [os.path.join(path, name) for name in os.listdir(path)]
        where = f"the folder {text!r}"
    elif any(mark in path for mark in "*?["):
        found = glob.glob(path)
        where = f"the glob {text!r}"
    else:
        raise ValueError(f"{what}: {text!r} is no picture file, folder or glob")
    pictures = sorted(
        (
            name
            for name in found
            if name.lower().endswith(SUFFIXES) and not os.path.basename(name).startswith(".") and os.path.isfile(name)
        ),
        key=os.path.basename,
    )
    if not pictures:
        raise ValueError(f"{what}: {where} holds no pictures ({', '.join(SUFFIXES)})")
    return pictures
