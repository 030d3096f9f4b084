"""What watches a batch while it runs: the magic's live grid, the panel's thumbnails, the command line's bar.

A run tells its `Observer` of its progress at every step, shows it step previews of the
images in flight (when the observer wants them: they cost a decode), and hands it each
chunk's finished items as soon as they are made (autosave). Subclass it and override what
you watch, or pass functions: ``Observer(progress=print)``. `Observers` makes several one.
Every call comes from the thread that runs the batch; an observer that raises ends the run,
keeping the images already finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbbatch.core.engine import Preview, Progress
    from nbbatch.core.item import Item


class Observer:
    """Watches one run: `progress` at each step, `preview` of the images in flight, `made` for each finished chunk.

    Each does nothing unless overridden or given as a function. `wants_previews` is True
    when `preview` is overridden or given: a run makes previews only for an observer that
    shows them.
    """

    _on_progress: Callable[[Progress], None] | None = None
    _on_preview: Callable[[Preview], None] | None = None
    _on_made: Callable[[list[Item], int], None] | None = None

    def __init__(
        self,
        *,
        progress: Callable[[Progress], None] | None = None,
        preview: Callable[[Preview], None] | None = None,
        made: Callable[[list[Item], int], None] | None = None,
    ) -> None:
        self._on_progress, self._on_preview, self._on_made = progress, preview, made

    def progress(self, progress: Progress) -> None:
        """The run's progress: images done of the total, the step of the chunk in flight, the time left."""
        if self._on_progress is not None:
            self._on_progress(progress)

    def preview(self, preview: Preview) -> None:
        """Pictures of the images in flight (their positions in the batch, the step): four a second at most."""
        if self._on_preview is not None:
            self._on_preview(preview)

    def made(self, items: list[Item], start: int) -> None:
        """A chunk's finished `items`, the first at position `start` of the batch (job order)."""
        if self._on_made is not None:
            self._on_made(items, start)

    @property
    def wants_previews(self) -> bool:
        """Whether the run should make step previews for this observer."""
        return self._on_preview is not None or type(self).preview is not Observer.preview


class Observers(Observer):
    """Several observers as one: each call goes to every one, in order."""

    def __init__(self, observers: Sequence[Observer | None]) -> None:
        super().__init__()
        self.observers = [observer for observer in observers if observer is not None]

    def progress(self, progress: Progress) -> None:
        """Tell every observer."""
        for observer in self.observers:
            observer.progress(progress)

    def preview(self, preview: Preview) -> None:
        """Show the observers that want previews."""
        for observer in self.observers:
            if observer.wants_previews:
                observer.preview(preview)

    def made(self, items: list[Item], start: int) -> None:
        """Hand every observer the chunk."""
        for observer in self.observers:
            observer.made(items, start)

    @property
    def wants_previews(self) -> bool:
        """Whether any of them does."""
        return any(observer.wants_previews for observer in self.observers)


QUIET = Observer()
"""The observer of a run nobody watches."""
