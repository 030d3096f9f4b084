"""The kernel's history: every result made in this process, and the images marked as favourites.

`nbbatch.core.result.run_batch` records each result that made an image (the magic, the
panel and the Python API all make theirs there), in order, with the time it finished.
The history keeps those results alive, as the kernel's variables would: ``clear()`` lets
them go. Favourites are images marked with `Item.favourite`; `favourites` gathers them
into one result, which shows, compares and saves as any other.
"""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbbatch.core.item import Item
    from nbbatch.core.result import BatchResult

_lock = threading.Lock()  # the panel makes its results in a thread
_entries: list[Entry] = []
_favourites: list[Item] = []


@dataclass(frozen=True)
class Entry:
    """One result of the history and when it finished."""

    result: BatchResult
    finished: datetime

    @property
    def title(self) -> str:
        """What the result is, in one line: its first prompt, how many images and the model."""
        first = self.result[0]
        more = len({item.prompt for item in self.result}) - 1
        prompts = f"{first.prompt[:60]!r}" + (f" and {more} more" if more else "")
        return f"{self.finished:%H:%M:%S} · {prompts} · {self.result.count} · {first.settings.model}"


class History(Sequence[Entry]):
    """The results made in this kernel so far, oldest first (a snapshot: later results are not added to it)."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> Entry:  # type: ignore[override]
        return self.entries[index]

    @property
    def results(self) -> list[BatchResult]:
        """The results themselves, oldest first."""
        return [entry.result for entry in self.entries]

    def clear(self) -> None:
        """Forget every result of the kernel's history (this snapshot empties too); favourites stay."""
        with _lock:
            _entries.clear()
        self.entries.clear()

    def save(self, folder: str | os.PathLike, grid: bool = False) -> list[Path]:
        """Save every image of every result into `folder` (PNG with parameters, never overwriting); the paths."""
        return [path for entry in self.entries for path in entry.result.save(folder, grid=grid)]

    def __repr__(self) -> str:
        lines = [f"{n}: {entry.title}" for n, entry in enumerate(self.entries)]
        return "\n".join([f"nbbatch history: {len(self)} results", *lines])

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{n}</td><td style='text-align:left'>{html.escape(entry.title)}</td>"
            f"<td><img src='data:image/jpeg;base64,{_thumbnail(entry.result)}' style='height:48px'/></td></tr>"
            for n, entry in enumerate(self.entries)
        )
        head = f"<div>nbbatch history: {len(self)} results (<code>nbbatch.history()[n].result</code>)</div>"
        return f"<div class='nbbatch-history'>{head}<table>{rows}</table></div>"


def record(result: BatchResult) -> None:
    """Add `result` to the kernel's history, if it made any image."""
    if len(result):
        with _lock:
            _entries.append(Entry(result, datetime.now()))


def history() -> History:
    """Every result made in this kernel (magic, panel, Python API), oldest first, with when it finished."""
    with _lock:
        return History(_entries)


def mark(item: Item, favourite: bool = True) -> None:
    """Mark `item` as a favourite (or unmark it)."""
    with _lock:
        kept = [other for other in _favourites if other is not item]
        _favourites[:] = [*kept, item] if favourite else kept


def is_marked(item: Item) -> bool:
    """Whether `item` is marked as a favourite."""
    with _lock:
        return any(other is item for other in _favourites)


def favourites() -> BatchResult:
    """The images marked as favourites, in the order they were marked, as one result (empty if none).

    It refines, varies and hires-fixes with the runner of the result each favourite came from.
    """
    from nbbatch.core.result import BatchResult
    from nbbatch.core.spec import Settings

    with _lock:
        items, entries = list(_favourites), list(_entries)
    runner = next((entry.result.runner for entry in entries for item in items if item in entry.result.items), None)
    settings = items[0].settings if items else Settings()
    return BatchResult(items, settings, total=len(items), runner=runner)


def _thumbnail(result: BatchResult) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    grid = result.grid(cell=48, limit=8)
    grid.thumbnail((8 * 48, 48 * 2))
    grid.save(buffer, format="JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode()
