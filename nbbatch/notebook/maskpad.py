"""The panel's mask pad: draw the region to inpaint over the selected picture, with the mouse or a pen.

An anywidget (`anywidget.AnyWidget`, its front end in ``maskpad.js``): the picture is shown at
256 px with a round brush over it; the mask is drawn at the picture's own size and comes back
when a stroke ends, as a PNG, white where the picture is repainted.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING

import anywidget
import traitlets

if TYPE_CHECKING:
    from PIL import Image

PREFIX = "data:image/png;base64,"


class MaskPad(anywidget.AnyWidget):
    """A picture to draw a mask on; `mask_image()` is what was drawn (None until a stroke)."""

    _esm = Path(__file__).with_name("maskpad.js")
    picture = traitlets.Unicode("").tag(sync=True)
    """The picture drawn on, as a PNG data URL."""
    width = traitlets.Int(64).tag(sync=True)
    height = traitlets.Int(64).tag(sync=True)
    brush = traitlets.Float(12.0).tag(sync=True)
    """The brush's radius in pixels of the 256 px pad."""
    mask = traitlets.Unicode("").tag(sync=True)
    """The mask drawn, as a PNG data URL ("" when none)."""

    def show(self, image: Image.Image) -> None:
        """Draw on `image` from now on (the last mask is cleared)."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        self.mask = ""
        self.width, self.height = image.size
        self.picture = PREFIX + base64.b64encode(buffer.getvalue()).decode()

    def mask_image(self) -> Image.Image | None:
        """The mask drawn, as an ``L`` picture of the picture's size; None when nothing was drawn."""
        from PIL import Image as PILImage

        if not self.mask.startswith(PREFIX):
            return None
        with PILImage.open(io.BytesIO(base64.b64decode(self.mask[len(PREFIX) :]))) as drawn:
            return drawn.convert("L").resize((self.width, self.height))
