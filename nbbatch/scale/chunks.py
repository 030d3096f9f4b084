"""Splitting a batch into chunks for several workers, and keeping account of them: pure, no Ray.

A chunk is a run of consecutive jobs that share their settings, at most the batch size
long: one pipeline call, as the single-process engine would make it. The `Ledger` hands
chunks out, takes them back when a worker fails or dies (so another runs them) and
says when one has failed too often; every chunk is finished once, never twice.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from nbbatch.core.spec import BatchSize, Job, Settings

MAX_CHUNK = 16
"""The largest chunk made when no batch size is given: results come back at least this often."""


@dataclass(frozen=True)
class Chunk:
    """Jobs ``start`` to ``start + len(jobs) - 1`` of a batch, run by one worker in one call."""

    start: int
    jobs: tuple[Job, ...]

    def describe(self) -> str:
        """``images 5-8`` (counted from 1, as the progress bar counts)."""
        first, last = self.start + 1, self.start + len(self.jobs)
        return f"image {first}" if first == last else f"images {first}-{last}"


def chunk_size(batch_size: BatchSize, total: int, workers: int) -> int:
    """Images per chunk: the batch size when given, else an even share (two chunks per worker, at most 16)."""
    if isinstance(batch_size, int):
        return batch_size
    return max(1, min(MAX_CHUNK, math.ceil(total / (2 * workers))))


def plan_chunks(settings: Settings, jobs: Sequence[Job], size: int) -> list[Chunk]:
    """`jobs` cut into chunks of at most `size`, and wherever a job's own settings (a grid cell) change."""
    chunks: list[Chunk] = []
    run: list[Job] = []
    start = 0
    for position, job in enumerate(jobs):
        if run and (len(run) == size or (job.settings or settings) != (run[-1].settings or settings)):
            chunks.append(Chunk(start, tuple(run)))
            run, start = [], position
        run.append(job)
    if run:
        chunks.append(Chunk(start, tuple(run)))
    return chunks


class Ledger:
    """Which chunks wait, which are out with a worker and which are done; a failed chunk waits again.

    A chunk may be tried `tries` times (a worker that died counts as a try); after that,
    `failed` says why the run must stop.
    """

    def __init__(self, chunks: Sequence[Chunk], tries: int = 3) -> None:
        if tries < 1:
            raise ValueError(f"tries must be at least 1, not {tries}")
        self.waiting: deque[Chunk] = deque(chunks)
        self.out: set[int] = set()
        self.done: set[int] = set()
        self.tries = tries
        self._failures: dict[int, int] = {}
        self._total = len(chunks)

    @property
    def finished(self) -> bool:
        """True when every chunk is done."""
        return len(self.done) == self._total

    def take(self) -> Chunk | None:
        """The next chunk to hand to a worker, or None when none waits."""
        if not self.waiting:
            return None
        chunk = self.waiting.popleft()
        self.out.add(chunk.start)
        return chunk

    def complete(self, chunk: Chunk) -> bool:
        """Mark `chunk` done; False if it was not out (done already: its images must not be kept twice)."""
        if chunk.start not in self.out:
            return False
        self.out.discard(chunk.start)
        self.done.add(chunk.start)
        return True

    def failed(self, chunk: Chunk, why: str, retry: bool = True) -> str | None:
        """Take `chunk` back after a failure; None if it waits for another try, else the reason the run stops."""
        self.out.discard(chunk.start)
        failures = self._failures[chunk.start] = self._failures.get(chunk.start, 0) + 1
        if retry and failures < self.tries:
            self.waiting.appendleft(chunk)  # first in line: the images come back in order as far as possible
            return None
        tried = f" on {failures} tries" if failures > 1 else ""
        return f"{chunk.describe()} failed{tried}: {why}"
