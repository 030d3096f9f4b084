"""What a running batch shows in a notebook: one progress line, updated in place, that leaves nothing behind.

In a Jupyter kernel the line is one display (``display_id``) updated in place and
emptied at the end, so a saved notebook keeps no stale "loading" line. In a terminal
IPython it is a tqdm bar.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

from IPython import get_ipython
from IPython.display import display

if TYPE_CHECKING:
    from nbbatch.core.engine import Progress

LOADING = "loading the pipeline…"


class ProgressDisplay:
    """One bar for the whole batch (images, step, time left), redrawn at most ten times a second."""

    refresh_every = 0.1

    def __enter__(self) -> ProgressDisplay:
        self._last = 0.0
        self._handle: Any = None
        self._bar: Any = None
        if getattr(get_ipython(), "kernel", None) is not None:
            self._handle = display(_bundle(0.0, LOADING), raw=True, display_id=True)
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

    def update(self, progress: Progress) -> None:
        """Show `progress`; redraws closer together than `refresh_every` are skipped, the last one never."""
        now = time.monotonic()
        if now - self._last < self.refresh_every and progress.chunk:
            return
        self._last = now
        if self._handle is not None:
            self._handle.update(_bundle(progress.fraction, progress.describe()), raw=True)
        else:
            self._bar.set_description_str(progress.describe(), refresh=False)
            self._bar.update(round(progress.fraction * 1000) - self._bar.n)

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.update({"text/plain": ""}, raw=True)  # the saved notebook keeps no progress line
        else:
            self._bar.close()


def _bundle(fraction: float, text: str) -> dict[str, str]:
    percent = f"{100 * fraction:3.0f}%"
    return {
        "text/plain": f"{percent} {text}",
        "text/html": f"<progress value='{fraction:.3f}' max='1' style='width:40%;vertical-align:middle'></progress> "
        f"<span style='font-size:90%'>{percent} {html.escape(text)}</span>",
    }
