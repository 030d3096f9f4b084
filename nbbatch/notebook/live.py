"""What a running batch shows in a notebook: a progress line and a grid that fills, updated in place.

In a Jupyter kernel both are one display (``display_id``) updated in place and emptied at
the end, so a saved notebook keeps no stale "loading" line and no frames of the grid: the
final grid comes after it as the result's own output. The live grid has a grey cell per
image to make, shows step previews of the images in flight and puts each image in as soon
as its chunk is finished. In a terminal IPython it is a tqdm bar alone.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from IPython import get_ipython
from IPython.display import display

from nbbatch.core.grid import encode_preview, preview_cell, thumbnail
from nbbatch.core.observer import Observer
from nbbatch.core.result import Filling, plan_grid

if TYPE_CHECKING:
    from PIL import Image

    from nbbatch.core.engine import Preview, Progress
    from nbbatch.core.item import Item
    from nbbatch.core.spec import Job

LOADING = "loading the pipeline…"


class ProgressDisplay(Observer):
    """The magic's view of a run: one bar for the whole batch (images, step, time left), ten redraws a second at most.

    Given the batch's `jobs`, a grid of them fills under the bar (in a Jupyter kernel): step
    previews (`preview`) and finished images (`made`), redrawn at most once a second (and when a
    chunk finishes). Pictures are kept at cell size, so a redraw costs the same for any image size.
    Without jobs it is the bar alone, and wants no previews.
    """

    refresh_every = 0.1
    grid_every = 1.0

    def __init__(self, jobs: Sequence[Job] = ()) -> None:
        super().__init__()
        self.jobs = tuple(jobs)
        self._filling = Filling(self.jobs)
        self._cell = preview_cell()
        self._pictures: dict[int, Image.Image] = {}
        self._labels: dict[int, str] = {}
        self._grid_handle: Any = None
        self._grid_drawn = float("-inf")
        self._fraction, self._text = 0.0, LOADING

    def __enter__(self) -> ProgressDisplay:
        self._last = 0.0
        self._handle: Any = None
        self._bar: Any = None
        if getattr(get_ipython(), "kernel", None) is not None:
            self._handle = display(self._bundle(), raw=True, display_id=True)
            if self.jobs:  # a display of its own: a bar redraw does not resend the grid
                self._grid_handle = display({"text/plain": ""}, raw=True, display_id=True)
        else:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=1000,
                bar_format="{percentage:3.0f}%|{bar}| {desc}",
                desc=LOADING,
                leave=False,
                mininterval=self.refresh_every,
            )
        return self

    def progress(self, progress: Progress) -> None:
        """Show `progress`; redraws closer together than `refresh_every` are skipped, the last one never."""
        now = time.monotonic()
        if now - self._last < self.refresh_every and progress.chunk:
            return
        self._last = now
        self._fraction, self._text = progress.fraction, progress.describe()
        if self._handle is not None:
            self._handle.update(self._bundle(), raw=True)
        else:
            self._bar.set_description_str(progress.describe(), refresh=False)
            self._bar.update(round(progress.fraction * 1000) - self._bar.n)

    def made(self, items: list[Item], start: int) -> None:
        """Put a finished chunk's images in, the first at position `start` among the jobs."""
        self._put(self._filling.finished(items, start))
        self._draw(force=True)

    def preview(self, preview: Preview) -> None:
        """Show step previews of the images in flight."""
        self._put(self._filling.previewed(preview))
        self._draw()

    @property
    def wants_previews(self) -> bool:
        """Previews for the grid, when there is one."""
        return bool(self.jobs)

    def _put(self, cells: list[tuple[int, Image.Image, str]]) -> None:
        for position, picture, label in cells:
            self._pictures[position] = thumbnail(picture, self._cell)
            self._labels[position] = label

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._grid_handle is None or (not force and now - self._grid_drawn < self.grid_every):
            return
        self._grid_drawn = now
        grid = plan_grid(self.jobs, self._pictures, self._labels, cell=self._cell)
        data = base64.b64encode(encode_preview(grid, quality=70)).decode("ascii")
        made = f"{self._filling.made} of {len(self.jobs)} images"
        self._grid_handle.update(
            {
                "text/plain": made,
                "text/html": f"<img class='nbbatch-live' src='data:image/jpeg;base64,{data}' "
                f"style='max-width:100%' alt='{made}'/>",
            },
            raw=True,
        )

    def _bundle(self) -> dict[str, str]:
        percent = f"{100 * self._fraction:3.0f}%"
        return {
            "text/plain": f"{percent} {self._text}",
            "text/html": f"<progress value='{self._fraction:.3f}' max='1' style='width:40%;vertical-align:middle'>"
            f"</progress> <span style='font-size:90%'>{percent} {html.escape(self._text)}</span>",
        }

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.update({"text/plain": ""}, raw=True)  # the saved notebook keeps no progress line
            if self._grid_handle is not None:
                self._grid_handle.update({"text/plain": ""}, raw=True)  # nor frames of the grid
        else:
            self._bar.close()
