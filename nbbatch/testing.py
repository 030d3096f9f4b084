"""Stand-ins for measuring the display without a model: photo-like pictures and a result that holds them.

Used by the tests and the benchmarks, which measure the inline preview of large images
(1024x1024) that the tiny pipelines are too slow to make.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from nbbatch.core.item import Item
from nbbatch.core.result import BatchResult
from nbbatch.core.spec import Settings
from nbbatch.session import default_session


def synthetic_picture(index: int, size: int = 1024) -> Image.Image:
    """A photo-like picture: smooth gradients with some grain, different for every index, the same every time."""
    rng = np.random.default_rng(index)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    pixels = np.stack(
        [
            np.add.outer(ramp, ramp * (index % 3)) * 120,
            np.add.outer(ramp * 0, ramp) * 255,
            np.full((size, size), (index * 37) % 256, np.float32),
        ],
        axis=-1,
    )
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def picture_result(images: Sequence[Image.Image], prompt: str = "a synthetic picture") -> BatchResult:
    """A result holding `images` as seeds 0, 1, ... of one prompt, as if a batch had made them."""
    settings = Settings()
    items = [Item(image, seed, prompt, "", 0, settings, None, b"") for seed, image in enumerate(images)]
    return BatchResult(items, settings, total=len(items), runner=default_session().runner())
