"""The result of a batch: its items, how it ended, lookup by seed, grids, and refine, vary and verify.

`run_batch` runs jobs through the engine and wraps what was made; `refine` and `vary`
go through it too, so every way of making images keeps finished images on failure and
raises `BatchError` (holding them) when a batch fails.
"""

from __future__ import annotations

import base64
import difflib
import html
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbbatch.core.attention import check_prompt
from nbbatch.core.axes import axis_label
from nbbatch.core.engine import CancelFlag, Runner, Status
from nbbatch.core.errors import SettingError, first_line
from nbbatch.core.grid import (
    Group,
    encode_preview,
    grid_figure,
    make_grid,
    make_table,
    placeholder,
    preview_cell,
    stack,
)
from nbbatch.core.history import record
from nbbatch.core.item import Item
from nbbatch.core.masks import make_mask
from nbbatch.core.observer import QUIET, Observer
from nbbatch.core.spec import UPSCALERS, Job, Settings, choose_seeds
from nbbatch.settings import SETTINGS

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

    from nbbatch.core.engine import Preview


PREVIEW_LIMIT = 256
"""The most images the inline preview draws: past that it says how many it leaves out."""


class BatchError(RuntimeError):
    """A batch stopped on an error; `result` holds every image finished before it."""

    def __init__(self, message: str, result: BatchResult) -> None:
        super().__init__(message)
        self.result = result


def run_batch(
    settings: Settings,
    jobs: Sequence[Job],
    *,
    runner: Runner,
    parent: BatchResult | None = None,
    observer: Observer = QUIET,
    cancel: CancelFlag | None = None,
    raise_on_failure: bool = True,
) -> BatchResult:
    """Run `jobs` with `settings` on `runner` and wrap what was made (see `nbbatch.core.engine.execute`).

    `runner` runs them (a session's, `nbbatch.session.Session.runner`): in this process or on a pool of
    Ray workers (`nbbatch.scale.workers.RayRunner`); the result keeps it for its refinements.
    `observer` watches the run (see `nbbatch.core.observer`).
    A failed batch raises `BatchError` with the finished images in its ``result``, unless
    `raise_on_failure` is False (the front ends, which show the result either way).
    """
    run = runner(settings, jobs, observer=observer, cancel=cancel)
    result = BatchResult(
        run.items,
        settings,
        total=len(jobs),
        status=run.status,
        error=run.error,
        elapsed=run.elapsed,
        placement=run.placement,
        batch_size=run.batch_size,
        parent=parent,
        planned=jobs,
        positions=run.positions,
        runner=runner,
    )
    record(result)
    if raise_on_failure and result.status == "failed":
        raise BatchError(result.summary(), result) from result.error  # its traceback, as the cause
    return result


class BatchResult(Sequence[Item]):
    """The images of one batch, in order (grouped by prompt), and how the batch ended.

    A result that was cancelled, interrupted or failed still holds every finished image;
    `complete` says whether all were made. `positions` are the items' places among the
    `planned` jobs (a stopped run on several workers can leave gaps); by default the first ones.
    `runner` makes its refinements and variations (see `run_batch`); a result without one cannot make images.
    """

    def __init__(
        self,
        items: Sequence[Item],
        settings: Settings,
        *,
        total: int,
        status: Status = "complete",
        error: BaseException | None = None,
        elapsed: float = 0.0,
        placement: str = "",
        batch_size: int | None = None,
        parent: BatchResult | None = None,
        planned: Sequence[Job] = (),
        positions: Sequence[int] | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.items = list(items)
        self.settings = settings
        self.total = total
        self.status = status
        self.error = error
        self.elapsed = elapsed
        self.placement = placement
        self.batch_size = batch_size
        self.parent = parent
        self.planned = tuple(planned)
        self.positions = tuple(range(len(self.items)) if positions is None else positions)
        self.runner = runner
        self.compared = False
        """Set by `compare`: its images show as one row, captioned by their differences from the first."""

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __getitem__(self, index: int | slice) -> Item | list[Item]:  # type: ignore[override]
        return self.items[index]

    @property
    def complete(self) -> bool:
        """True when every image of the batch was made."""
        return self.status == "complete" and len(self.items) == self.total

    @property
    def images(self) -> list[Image.Image]:
        """The PIL images, in order."""
        return [item.image for item in self.items]

    @property
    def seeds(self) -> list[int]:
        """The distinct seeds, in order of first appearance."""
        return list(dict.fromkeys(item.seed for item in self.items))

    @property
    def broken(self) -> list[Item]:
        """Items whose image came out NaN or all black."""
        return [item for item in self.items if item.broken]

    def by_seed(self, seed: int, prompt_index: int | None = None, origin: str | None = None) -> Item:
        """The item made with `seed` (and `prompt_index` when several prompts share the seed).

        `origin` (``"batch"``, ``"refine"``, ``"vary"``) tells a batch image from its
        refinements where a loaded folder holds both; `by_file` picks a loaded image by name.
        """
        matches = [item for item in self.items if item.seed == seed]
        if prompt_index is not None:
            matches = [item for item in matches if item.prompt_index == prompt_index]
        if origin is not None:
            matches = [item for item in matches if item.origin == origin]
        if not matches:
            where = "" if prompt_index is None else f" for prompt {prompt_index}"
            where += "" if origin is None else f" as a {origin} image"
            raise ValueError(f"seed {seed}{where} is not in this result; its seeds are {_seed_list(self.seeds)}")
        if len(matches) > 1:
            origins = {item.origin for item in matches}
            if len(origins) > 1:
                raise ValueError(
                    f"seed {seed} has {len(matches)} images here ({', '.join(sorted(origins))}): "
                    "say which with origin, or pick one by file name with by_file"
                )
            if any(item.cell for item in matches):
                shown = ", ".join(f"{letter}={value!r}" for letter, (_, value) in matches[0].cell.items())
                raise ValueError(
                    f"seed {seed} is in {len(matches)} cells of this grid: pick a cell first, e.g. result.cell({shown})"
                )
            indices = [item.prompt_index for item in matches]
            if len(set(indices)) < len(matches):
                names = ", ".join(str(item.file or "?") for item in matches)
                raise ValueError(f"seed {seed} has {len(matches)} images here ({names}): pick one with by_file")
            shown = ", ".join(map(str, indices))
            raise SettingError("prompt_index", f"is needed: seed {seed} was used with prompts {shown}")
        return matches[0]

    def cell(self, x: Any = None, y: Any = None, z: Any = None) -> BatchResult:
        """The images of one X/Y/Z grid cell (or row, or column) as a result of their own.

        Give the axis values: ``grid.cell(x=20, y=5.5)``. The result refines, verifies and
        saves as any other: ``grid.cell(x=20, y=5.5).refine(3, "a new prompt")``.
        """
        wanted = {letter: value for letter, value in zip("xyz", (x, y, z)) if value is not None}
        if not wanted:
            raise ValueError("give the cell's axis values: cell(x=..., y=..., z=...)")
        items = [item for item in self.items if all(_cell_value(item, k) == _plain(v) for k, v in wanted.items())]
        if not items:
            values = {k: list(dict.fromkeys(_cell_value(i, k) for i in self.items)) for k in wanted}
            shown = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in values.items())
            raise ValueError(f"no cell of this result has {wanted}; its values are {shown}")
        return BatchResult(
            items, items[0].settings, total=len(items), placement=self.placement, parent=self.parent, runner=self.runner
        )

    def by_file(self, name: str) -> Item:
        """The loaded item read from the file `name` (e.g. ``p00-s5-refine.png``)."""
        for item in self.items:
            if item.file == os.path.basename(name):
                return item
        raise ValueError(f"no image here was loaded from {name!r}")

    def lineage(self, seed: int, prompt_index: int | None = None) -> BatchResult:
        """The story of the image of `seed`: a result holding its chain, the first image first.

        It shows as one row, each image captioned by what changed from the one before it.
        """
        chain = self.by_seed(seed, prompt_index).lineage()
        return BatchResult(chain, chain[-1].settings, total=len(chain), placement=self.placement, runner=self.runner)

    def compare(self, *picks: int | Item) -> BatchResult:
        """Images side by side, each captioned by how its settings and prompt differ from the first's.

        Give seeds of this result (or items, from any result): ``result.compare(3, 5)``.
        """
        if len(picks) < 2:
            raise ValueError("compare needs two images or more: give their seeds or items")
        items = [pick if isinstance(pick, Item) else self.by_seed(pick) for pick in picks]
        compared = BatchResult(items, items[0].settings, total=len(items), placement=self.placement, runner=self.runner)
        compared.compared = True
        return compared

    def refine(
        self,
        seed: int,
        prompt: str | Sequence[str],
        *,
        prompt_index: int | None = None,
        negative_prompt: str | None = None,
        observer: Observer = QUIET,
        cancel: CancelFlag | None = None,
        allow_download: bool = False,
        **overrides: Any,
    ) -> BatchResult:
        """Make the image of `seed` again from the same starting noise with a new prompt (or several).

        The generator is restored to the image's saved initial state, so composition
        carries over; `overrides` change settings (steps, guidance, scheduler, ...),
        but not the size, which would change the starting noise. A loaded picture's
        model, LoRAs and embeddings load only from its folder or the download cache,
        unless `allow_download` (see `nbbatch.formats.trust`).
        """
        item = self.by_seed(seed, prompt_index)
        settings, jobs = refine_jobs(item, prompt, negative_prompt, overrides, allow_download)
        return run_batch(settings, jobs, runner=self._runner(), parent=self, observer=observer, cancel=cancel)

    def _runner(self) -> Runner:
        if self.runner is None:
            raise ValueError(
                "this result has no runner to make images with: pass runner=nbbatch.default_session().runner()"
            )
        return self.runner

    def code(self, seed: int, prompt_index: int | None = None) -> str:
        """Python that makes the image of `seed` again with diffusers alone (no nbbatch), ending in ``image``.

        Pipeline class, dtype and variant, the exact scheduler and its config, the
        generator and every call argument, as `nbbatch.formats.code` writes them; what
        diffusers alone cannot repeat (weighted prompts, clip skip) is a one-line ValueError.
        """
        return self.by_seed(seed, prompt_index).code()

    def verify(self, seed: int, prompt_index: int | None = None) -> int:
        """Make the image of `seed` again alone and return the largest pixel difference (0 to 255).

        Batched arithmetic is not bit-identical to a single image's: expect 0 or 1 on the
        CPU; float16 on GPUs can drift a little more.
        """
        import numpy as np

        item = self.by_seed(seed, prompt_index)
        again = self.refine(seed, item.prompt, prompt_index=prompt_index)[0].image
        return int(np.abs(np.asarray(again, np.int16) - np.asarray(item.image, np.int16)).max())

    def vary(
        self,
        seed: int,
        prompt: str | None = None,
        strength: float = 0.3,
        seeds: str | Sequence[int] | None = None,
        *,
        prompt_index: int | None = None,
        observer: Observer = QUIET,
        cancel: CancelFlag | None = None,
        allow_download: bool = False,
        **overrides: Any,
    ) -> BatchResult:
        """Variations of the picture of `seed`: image-to-image from it with new seeds (4 random by default).

        A low `strength` keeps the picture and changes details; `prompt` defaults to the item's.
        `allow_download` as for `refine`.
        """
        item = self.by_seed(seed, prompt_index)
        seeds = choose_seeds(seeds, None, default=None)
        settings, jobs = vary_jobs(item, prompt, seeds, None, {"strength": strength, **overrides}, allow_download)
        return run_batch(settings, jobs, runner=self._runner(), parent=self, observer=observer, cancel=cancel)

    def upscale(
        self,
        seed: int,
        scale: float = 2.0,
        strength: float = 0.45,
        prompt: str | None = None,
        steps: int | None = None,
        upscaler: str = "lanczos",
        *,
        prompt_index: int | None = None,
        observer: Observer = QUIET,
        cancel: CancelFlag | None = None,
        allow_download: bool = False,
        **overrides: Any,
    ) -> BatchResult:
        """A hires fix of the image of `seed`: upscaled by `scale`, then denoised by `strength` from its own noise.

        A1111's two passes (see `hires_jobs`): ``upscaler="lanczos"`` upscales its pixels
        (every family with image-to-image), ``"latent"`` its latents (SD 1.x/2.x and SDXL).
        `steps` default to the image's; the original stays in this result and heads the new
        one's story row. `allow_download` as for `refine`.
        """
        item = self.by_seed(seed, prompt_index)
        if steps is not None:
            overrides["steps"] = steps
        settings, jobs = hires_jobs(item, scale, strength, prompt, upscaler, overrides, allow_download)
        return run_batch(settings, jobs, runner=self._runner(), parent=self, observer=observer, cancel=cancel)

    def inpaint(
        self,
        seed: int,
        mask: Any,
        prompt: str | Sequence[str] | None = None,
        strength: float = 0.75,
        *,
        prompt_index: int | None = None,
        negative_prompt: str | None = None,
        observer: Observer = QUIET,
        cancel: CancelFlag | None = None,
        allow_download: bool = False,
        **overrides: Any,
    ) -> BatchResult:
        """Repaint the `mask` region of the image of `seed` with `prompt` (default: its own), from its own noise.

        `mask` is a picture (white: repaint), an array, a file, or ``"box:x0,y0,x1,y1"`` /
        ``"ellipse:x0,y0,x1,y1"`` in pixels. The family's inpaint pipeline makes it; outside
        the mask the original's pixels are pasted back (diffusers' ``apply_overlay``).
        `allow_download` as for `refine`.
        """
        item = self.by_seed(seed, prompt_index)
        settings, jobs = inpaint_jobs(
            item, mask, prompt, negative_prompt, {"strength": strength, **overrides}, allow_download
        )
        return run_batch(settings, jobs, runner=self._runner(), parent=self, observer=observer, cancel=cancel)

    def edit(
        self,
        seed: int,
        instruction: str | Sequence[str],
        model: str | None = None,
        seeds: str | Sequence[int] | None = None,
        *,
        prompt_index: int | None = None,
        observer: Observer = QUIET,
        cancel: CancelFlag | None = None,
        allow_download: bool = False,
        **overrides: Any,
    ) -> BatchResult:
        """Edit the picture of `seed` by an instruction (or several) with an editing `model` (FLUX.1 Kontext).

        Each instruction is a prompt to the editing pipeline, which is given the picture; it
        starts from this seed's own noise (its saved generator state) unless `seeds` are given,
        then from each of theirs: instructions x seeds, each image the same as made alone. The
        picture keeps its size. `model` defaults to the image's own, which must then be an
        editing model. `allow_download` as for `refine`.
        """
        item = self.by_seed(seed, prompt_index)
        chosen = None if seeds is None else choose_seeds(seeds, None, default=None)
        settings, jobs = edit_jobs(item, instruction, model, chosen, overrides, allow_download)
        return run_batch(settings, jobs, runner=self._runner(), parent=self, observer=observer, cancel=cancel)

    def save(self, folder: str | os.PathLike, grid: bool = True) -> list[Path]:
        """Save every image as a PNG with its parameters (and the grid) into `folder`, never overwriting.

        See `nbbatch.formats.png`: each PNG carries an A1111-style ``parameters`` chunk and the
        exact nbbatch record; the folder's ``index.jsonl`` gains one line per image.
        """
        from nbbatch.formats.png import Saver

        saver = Saver(folder)
        paths = saver.add(self.items)
        if grid and self.items:
            saver.add_grid(self.grid(), self.items)
        return paths

    def groups(self) -> list[Group]:
        """Grid rows: one group per prompt (and input picture file), titled with them (and what it refines)."""
        groups: dict[tuple[str | None, int, str], list[int]] = {}
        for position, item in enumerate(self.items):
            groups.setdefault((item.provenance.picture, item.prompt_index, item.prompt), []).append(position)
        return [Group(_title(self.items[positions[0]]), tuple(positions)) for positions in groups.values()]

    def grid(self, columns: int = 8, cell: int = 256, limit: int | None = None) -> Image.Image:
        """All images (or the first `limit`) in one PIL image.

        A batch: seed-labelled, one row (or more) per prompt. An X/Y/Z grid: one table per
        prompt and seed (and Z value), the X values over its columns and the Y values
        beside its rows.
        """
        shown = self.items if limit is None else self.items[:limit]
        if any(item.cell for item in shown):
            return stack([make_table(*table, cell=cell) for table in _tables(shown)])
        if self.compared or self.is_story:
            images, labels, groups = self._story(shown)
            return make_grid(images, labels, groups, cell=cell, columns=columns)
        missing = self.not_made()
        if missing and (limit is None or self.total <= limit):
            labels = {n: item.label for n, item in zip(self.positions, self.items)}
            labels.update({n: cell_label(job, "not made") for n, job in missing})
            return plan_grid(self.planned, dict(zip(self.positions, self.images)), labels, cell=cell, columns=columns)
        groups = [Group(g.title, tuple(i for i in g.indices if i < len(shown))) for g in self.groups()]
        groups = [g for g in groups if g.indices]
        return make_grid(
            [item.image for item in shown], [item.label for item in shown], groups, cell=cell, columns=columns
        )

    def _story(self, shown: Sequence[Item]) -> tuple[list[Image.Image], list[str], list[Group]]:
        """The story rows: each image that came from another after its whole chain, the first image first.

        Images of one first image share a row (its refinements and variations in order);
        each caption says what changed from the image before it in the chain. A comparison
        is one row, each caption against the first image.
        """
        if self.compared:
            first = shown[0]
            labels = [first.label, *(_caption(item, first) for item in shown[1:])]
            return [item.image for item in shown], labels, [Group("compared with the first", tuple(range(len(shown))))]
        images: list[Image.Image] = []
        labels: list[str] = []
        groups = []
        for title, row in self.story_rows(shown):
            start = len(images)
            images.extend(item.image for item in row)
            labels.extend(item.label if item.parent is None else _caption(item, item.parent) for item in row)
            groups.append(Group(title, tuple(range(start, len(images)))))
        return images, labels, groups

    def story_rows(self, items: Sequence[Item] | None = None) -> list[tuple[str, list[Item]]]:
        """The story rows of `items` (default: all): each first image, then every image that came from it, in order.

        A row holds each image once, ancestors included; its title names the first image.
        """
        rows: dict[int, list[Item]] = {}
        for item in self.items if items is None else items:
            chain = item.lineage()
            row = rows.setdefault(id(chain[0]), [])
            row.extend(step for step in chain if all(step is not kept for kept in row))
        return [(f"the story of seed {row[0].seed}: {row[0].prompt}", row) for row in rows.values()]

    @property
    def is_story(self) -> bool:
        """Whether this result shows as story rows: images made from others (refine, vary, hires, inpaint, edit)."""
        return not any(item.cell for item in self.items) and any(item.parent is not None for item in self.items)

    def not_made(self) -> list[tuple[int, Job]]:
        """The planned jobs of a stopped batch that made no image, with their positions; none when complete."""
        if self.complete or len(self.planned) != self.total:
            return []
        made = set(self.positions)
        return [(position, job) for position, job in enumerate(self.planned) if position not in made]

    def figure(self, columns: int = 8) -> Figure:
        """The grid as a matplotlib figure, one titled axes per image."""
        return grid_figure(self.images, [item.label for item in self.items], self.groups(), columns=columns)

    def preview(self, columns: int = 8) -> bytes:
        """The grid at display size as JPEG bytes: what the notebook shows and stores.

        At most `PREVIEW_LIMIT` images are drawn; `grid()` draws them all.
        """
        shown = min(self.total if self.not_made() else len(self.items), PREVIEW_LIMIT)  # not-made cells drawn too
        if any(item.cell for item in self.items):
            columns = max(len(table[1]) + bool(table[2]) for table in _tables(self.items[:shown]))
        return encode_preview(self.grid(columns, preview_cell(columns), limit=shown))

    @property
    def count(self) -> str:
        """How many images were made, in words: ``8 images``, or ``2 of 6 images`` when incomplete."""
        made = len(self.items)
        return f"{made} of {self.total} images" if not self.complete else f"{made} image{'s' * (made != 1)}"

    def summary(self) -> str:
        """One line: how many images, a variation seed, how the batch ended, where it ran and how long it took."""
        text = f"{self.count} · {self.settings.model}"
        blends = {
            (i.call.variation_seed, i.call.variation_strength)
            for i in self
            if i.call is not None and i.call.variation_seed is not None
        }
        if blends:  # its images are their seeds' noise blended towards another seed's
            seeds, strengths = sorted({seed for seed, _ in blends}), {strength for _, strength in blends}
            at = f"{next(iter(strengths)):g}" if len(strengths) == 1 else "several strengths"
            text += f" · variation seed{'s' * (len(seeds) > 1)} {_seed_list(seeds)} at {at}"
        text += f" · {self.placement} · {self.elapsed:.1f} s"
        if self.settings.batch_size == "auto":
            text += f" · batch size {self.batch_size} (auto)"
        if not self.complete:
            text += f" · {self.status}, incomplete"
        if self.error is not None:
            text += f": {first_line(self.error)}"
        if self.broken:
            text += f" · broken (NaN or black): seeds {_seed_list([item.seed for item in self.broken])}"
        return text

    def _repr_html_(self) -> str:
        if not self.items:
            return f"<div class='nbbatch-result'>{html.escape(self.summary())}</div>"
        data = base64.b64encode(self.preview()).decode("ascii")
        shown = self.items[:PREVIEW_LIMIT]
        note = ""
        if len(self.items) > len(shown):
            note = (
                f"<div style='font-size:90%;opacity:.8'>the first {len(shown)} images are shown; "
                f"{len(self.items) - len(shown)} more are not: result.grid() draws them all</div>"
            )
        return (
            "<div class='nbbatch-result'>"
            f"<div style='font-size:90%;opacity:.8'>{html.escape(self.summary())}</div>"
            f"<img src='data:image/jpeg;base64,{data}' style='max-width:100%' "
            f"alt='{html.escape(', '.join(item.label for item in shown))}'/>{note}</div>"
        )

    def __repr__(self) -> str:
        return f"<BatchResult {self.summary()}; seeds {_seed_list(self.seeds)}>"


def plan_grid(
    jobs: Sequence[Job],
    pictures: Mapping[int, Image.Image],
    labels: Mapping[int, str],
    *,
    cell: int = 256,
    columns: int = 8,
) -> Image.Image:
    """The grid of a batch still running or stopped early: `pictures` by job position, grey cells elsewhere.

    One row (or more) per prompt, as the finished grid; a cell's caption is its entry in
    `labels`, else ``seed N``.
    """
    size = next(iter(pictures.values())).size if pictures else (cell, cell)
    blank = placeholder(size)
    rows: dict[int, list[int]] = {}
    for position, job in enumerate(jobs):
        rows.setdefault(job.prompt_index, []).append(position)
    return make_grid(
        [pictures.get(n, blank) for n in range(len(jobs))],
        [labels.get(n, cell_label(job)) for n, job in enumerate(jobs)],
        [Group(jobs[positions[0]].prompt, tuple(positions)) for positions in rows.values()],
        cell=cell,
        columns=columns,
    )


def cell_label(job: Job, note: str = "") -> str:
    """The caption of a cell with no finished image: ``seed 5``, ``seed 5 · step 12/30``, ``seed 5 · not made``."""
    return f"seed {job.seed} · {note}" if note else f"seed {job.seed}"


class Filling:
    """Which picture each cell of a running batch shows: finished images in job order, step previews of the rest.

    The magic's live grid and the panel's thumbnails draw what it hands back: (position,
    picture, caption) for each cell to change.
    """

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = tuple(jobs)
        self.done: set[int] = set()

    @property
    def made(self) -> int:
        """How many images are finished."""
        return len(self.done)

    def finished(self, items: Sequence[Item], start: int) -> list[tuple[int, Image.Image, str]]:
        """The cells of a finished chunk's images, the first at position `start` (workers finish out of order)."""
        positions = range(start, start + len(items))
        self.done.update(positions)
        return [(position, item.image, item.label) for position, item in zip(positions, items)]

    def previewed(self, shown: Preview) -> list[tuple[int, Image.Image, str]]:
        """The cells of the images in flight that `shown` pictures (none already finished)."""
        return [
            (position, picture, cell_label(self.jobs[position], f"step {shown.step}/{shown.steps}"))
            for position, picture in zip(shown.positions, shown.images)
            if position not in self.done
        ]


def refine_jobs(
    item: Item,
    prompt: str | Sequence[str],
    negative_prompt: str | None,
    overrides: dict[str, Any],
    allow_download: bool = False,
) -> tuple[Settings, tuple[Job, ...]]:
    """The settings and jobs that refine `item`: its saved generator state, one job per new prompt.

    A loaded item loads only what its file may name (`nbbatch.formats.trust`), unless `allow_download`.
    """
    if item.foreign:
        raise ValueError(
            f"this picture was made by {_tool(item)}: its starting noise came from that "
            "tool's generator, so nbbatch cannot make it again or refine it; vary it instead"
        )
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("a refinement's prompts must be text")
    prompts = [p.strip() for p in prompts if p.strip()]
    if not prompts:
        raise ValueError("no prompt given for the refinement")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise ValueError(f"the negative prompt must be text, not {type(negative_prompt).__name__}")
    for text in [*prompts, negative_prompt or ""]:
        check_prompt(text)
    width, height = item.image.size
    for name, value in (("width", width), ("height", height)):
        if overrides.get(name) not in (None, value):
            raise ValueError(
                f"a refinement keeps the starting noise of seed {item.seed}, so its size stays "
                f"{width}x{height}: {name} {overrides[name]} would change it"
            )
    if overrides.get("generator_device") not in (None, item.settings.generator_device):
        raise SettingError("generator_device", "cannot change in a refinement: it restores the saved generator state")
    if item.init_image is None:
        overrides = {**overrides, "width": width, "height": height}
    settings = item.settings_to_remake(overrides, allow_download)
    negative = item.negative_prompt if negative_prompt is None else negative_prompt
    step = f"r{item.depth + 1}"
    letters = [chr(ord("a") + n % 26) * (1 + n // 26) for n in range(len(prompts))] if len(prompts) > 1 else [""]
    jobs = tuple(
        Job(
            text,
            item.seed,
            index,
            negative,
            item.init_image,
            item.state,
            item,
            "refine",
            provenance={"step": step + mark},
        )
        for index, (text, mark) in enumerate(zip(prompts, letters))
    )
    return settings, jobs


def vary_jobs(
    item: Item,
    prompt: str | None,
    seeds: Sequence[int],
    negative_prompt: str | None,
    overrides: dict[str, Any],
    allow_download: bool = False,
) -> tuple[Settings, tuple[Job, ...]]:
    """The settings and jobs for variations of `item`'s picture: image-to-image from it, one job per seed.

    A loaded item loads only what its file may name (`nbbatch.formats.trust`), unless `allow_download`.
    """
    if not seeds:
        raise ValueError("no seeds given for the variations")
    if item.foreign and "model" not in overrides and not loadable(item.settings.model):
        raise ValueError(
            f"{item.settings.model!r} is {_tool(item)}'s name for its checkpoint, not a "
            "model nbbatch can load: pass model= a hub id or a diffusers folder"
        )
    reset = {"strength": 0.3, "width": None, "height": None, "variation_seed": None, "variation_strength": 0.0}
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"the prompt must be text, not {type(prompt).__name__}")
    for text in (prompt or "", negative_prompt or ""):
        check_prompt(text)
    settings = item.settings_to_remake({**reset, **overrides}, allow_download)
    settings.image_to_image_steps()
    negative = item.negative_prompt if negative_prompt is None else negative_prompt
    jobs = tuple(Job(prompt or item.prompt, seed, 0, negative, item.image, None, item, "vary") for seed in seeds)
    return settings, jobs


def hires_jobs(
    item: Item,
    scale: float,
    strength: float,
    prompt: str | None,
    upscaler: str,
    overrides: dict[str, Any],
    allow_download: bool = False,
) -> tuple[Settings, tuple[Job, ...]]:
    """The settings and job of a hires fix of `item`: its picture upscaled by `scale`, then image-to-image.

    As A1111's two passes: the first pass is the item itself; the second starts from its
    picture upscaled (``lanczos``: the pixels; ``latent``: its latents, bilinear, on
    SD-style models) and denoises it by `strength` with the item's own generator state,
    so the seed's noise carries over. The size is the item's times `scale`, to a multiple of 8.
    """
    if not _is_number(scale) or not 1 < scale <= 4:
        raise SettingError("scale", f"must be a number above 1 and at most 4, not {scale!r}")
    if upscaler not in UPSCALERS:
        raise ValueError(f"unknown hires upscaler {upscaler!r}: choose {' or '.join(UPSCALERS)}")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"the prompt must be text, not {type(prompt).__name__}")
    check_prompt(prompt or "")
    if "width" in overrides or "height" in overrides:
        raise ValueError("a hires fix's size is the picture's times the scale: give scale, not width or height")
    width, height = (max(8, round(side * scale / 8) * 8) for side in item.image.size)
    fixed = {"variation_seed": None, "variation_strength": 0.0}
    settings = item.settings_to_remake(
        {**fixed, **overrides, "width": width, "height": height, "strength": strength}, allow_download
    )
    settings.image_to_image_steps()
    from PIL import Image as PILImage

    picture = item.image if upscaler == "latent" else item.image.resize((width, height), PILImage.Resampling.LANCZOS)
    hires = {"scale": float(scale), "upscaler": upscaler, "width": item.image.width, "height": item.image.height}
    job = Job(
        prompt or item.prompt,
        item.seed,
        0,
        item.negative_prompt,
        picture,
        item.state,
        item,
        "hires",
        provenance={"hires": hires},
    )
    return settings, (job,)


def inpaint_jobs(
    item: Item,
    mask: Any,
    prompt: str | Sequence[str] | None,
    negative_prompt: str | None,
    overrides: dict[str, Any],
    allow_download: bool = False,
) -> tuple[Settings, tuple[Job, ...]]:
    """The settings and jobs that repaint the `mask` region of `item`'s picture, one job per prompt.

    Each starts from the item's picture and its own saved generator state (this seed's
    noise, as diffusers' inpaint pipelines draw it); outside the mask the original's pixels
    are pasted back (see `nbbatch.models.backend`). `mask` is anything `make_mask` takes.
    """
    picture = make_mask(mask, item.image.size)
    prompts = [item.prompt] if prompt is None else [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError("an inpaint's prompts must be text: one or more, or none to keep the image's own")
    for text in [*prompts, negative_prompt or ""]:
        check_prompt(text)
    if "width" in overrides or "height" in overrides:
        raise ValueError("an inpaint keeps the picture's size: width and height do not apply")
    width, height = item.image.size
    reset = {"variation_seed": None, "variation_strength": 0.0, "width": width, "height": height}
    settings = item.settings_to_remake({**reset, **overrides}, allow_download)
    settings.image_to_image_steps()
    negative = item.negative_prompt if negative_prompt is None else negative_prompt
    jobs = tuple(
        Job(text.strip(), item.seed, index, negative, item.image, item.state, item, "inpaint", mask=picture)
        for index, text in enumerate(prompts)
    )
    return settings, jobs


EDIT_RESET = {
    "scheduler": None,
    "guidance": None,
    "true_cfg": None,
    "clip_skip": None,
    "max_sequence_length": None,
    "variant": None,
    "loras": (),
    "embeddings": (),
    "variation_seed": None,
    "variation_strength": 0.0,
}
"""What an edit on another model does not carry over from the picture's settings: those were its model's."""


def edit_jobs(
    item: Item,
    instruction: str | Sequence[str],
    model: str | None,
    seeds: Sequence[int] | None,
    overrides: dict[str, Any],
    allow_download: bool = False,
) -> tuple[Settings, tuple[Job, ...]]:
    """The settings and jobs that edit `item`'s picture: instructions x seeds, the picture given to each.

    Without `seeds`, each job restores the item's saved generator state (this seed's noise,
    as an editing pipeline that encodes the picture without drawing, such as FLUX.1 Kontext,
    then draws it). On another `model` the picture's scheduler, guidance, LoRAs and the like
    are left behind (`EDIT_RESET`); `overrides` set any of them. The size stays the picture's.
    Whether `model` edits at all is the backend's to say (a one-line refusal before any image).
    """
    instructions = [instruction] if isinstance(instruction, str) else list(instruction)
    if not instructions or not all(isinstance(text, str) and text.strip() for text in instructions):
        raise ValueError('an edit needs an instruction: text, one or more ("make the circle green")')
    for text in instructions:
        check_prompt(text)
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ValueError("the editing model must be a model id or a folder")
    if "width" in overrides or "height" in overrides:
        raise ValueError("an edit keeps the picture's size: width and height do not apply")
    if seeds is not None and not seeds:
        raise ValueError("no seeds given for the edit")
    width, height = item.image.size
    changes = {"strength": 0.8, "width": width, "height": height}
    if model is not None and model != item.settings.model:
        changes.update(EDIT_RESET, model=model)
    settings = item.settings_to_remake({**changes, **overrides}, allow_download)
    starts = [(item.seed, item.state)] if seeds is None else [(seed, None) for seed in seeds]
    step = f"e{sum(step.origin == 'edit' for step in item.lineage()) + 1}"
    letters = [chr(ord("a") + n % 26) * (1 + n // 26) for n in range(len(instructions))]
    jobs = tuple(
        Job(
            text.strip(), seed, index, "", item.image, start, item, "edit",
            provenance={"step": step + (letters[index] if len(instructions) > 1 else "")},
        )
        for index, text in enumerate(instructions)
        for seed, start in starts
    )  # fmt: skip
    return settings, jobs


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def loadable(model: str) -> bool:
    """Whether `model` names something nbbatch loads (a built-in, a folder, an ``org/name`` hub id), not a file name.

    Other tools write their checkpoint's file name (``v1-5-pruned-emaonly.ckpt``,
    ``juggernautXL_v8``), which would only send a doomed request to the hub.
    """
    if model.startswith("nbbatch:") or os.path.isdir(os.path.expanduser(model)):
        return True
    return re.fullmatch(r"[\w.-]+/[\w.-]+", model) is not None and not model.endswith((".ckpt", ".safetensors"))


def _tables(items: Sequence[Item]) -> list[tuple[list[list[Image.Image | None]], list[str], list[str], str]]:
    """The X/Y tables of grid items: (images by row, column headers, row headers, title) for each.

    One table per Z value, prompt and seed (the seed only when no axis varies it), in order.
    """
    tables: dict[tuple, list[Item]] = {}
    for item in items:
        cell = item.cell
        seed = None if any(name == "seed" for name, _ in cell.values()) else item.seed
        tables.setdefault((repr(cell.get("z")), item.prompt_index, seed), []).append(item)
    made = []
    for (_, prompt_index, seed), members in tables.items():
        columns, lines = _firsts(members, "x"), _firsts(members, "y")
        xs, ys = [repr(m.cell.get("x")) for m in columns], [repr(m.cell.get("y")) for m in lines]
        rows: list[list[Image.Image | None]] = [[None] * len(xs) for _ in ys]
        for m in members:
            rows[ys.index(repr(m.cell.get("y")))][xs.index(repr(m.cell.get("x")))] = m.image
        first = members[0]
        column_headers = [_header(m.cell.get("x")) for m in columns]
        row_headers = [_header(m.cell.get("y")) for m in lines] if "y" in first.cell else []
        title = [f"prompt {prompt_index}: {first.prompt}"]
        if seed is not None:
            title.append(f"seed {seed}")
        if "z" in first.cell:
            title.append(_header(first.cell["z"]))
        made.append((rows, column_headers, row_headers, " · ".join(title)))
    return made


def _plain(value: Any) -> Any:
    """An axis value as cells compare it: sizes as tuples."""
    return tuple(value) if isinstance(value, list) else value


def _cell_value(item: Item, letter: str) -> Any:
    cell = item.cell.get(letter)
    return None if cell is None else _plain(cell[1])


def _firsts(items: Sequence[Item], letter: str) -> list[Item]:
    """The first item of each distinct value on one axis, in order."""
    seen: dict[str, Item] = {}
    for item in items:
        seen.setdefault(repr(item.cell.get(letter)), item)
    return list(seen.values())


def _header(cell: tuple[str, Any] | None) -> str:
    return "" if cell is None else axis_label(*cell)


def changes(before: Item, after: Item) -> str:
    """What differs from `before` to `after`, shortly: ``+green -red``, ``steps 20->40``, ``vary``."""
    parts = []
    if after.origin == "vary" and after.parent is before:
        parts.append("vary")
    if after.origin == "inpaint" and after.parent is before:
        parts.append("inpaint")
    if after.origin == "edit" and after.parent is before:
        parts.append(f'"{after.prompt}"')
    if after.origin == "hires" and after.parent is before and after.provenance.hires is not None:
        parts.append(f"hires x{after.provenance.hires.scale:g} {after.provenance.hires.upscaler}")
    if after.prompt != before.prompt and after.origin != "edit":  # an instruction is not a changed prompt
        old, new = before.prompt.split(), after.prompt.split()
        marks = difflib.ndiff(old, new)
        words = [f"{mark[0]}{mark[2:]}" for mark in marks if mark[0] in "+-"]  # ASCII: the grid's font has it
        parts.append(" ".join(words) if words and len(words) <= 6 else f"prompt: {after.prompt}")
    for setting in SETTINGS:
        was, now = getattr(before.settings, setting.name), getattr(after.settings, setting.name)
        hires = after.origin == "hires" and setting.name == "strength"  # its denoising strength is in "hires"
        if was != now and setting.name not in ("width", "height") and now is not None and not hires:
            parts.append(f"{setting.name.replace('_', ' ')} {_short(was)}->{_short(now)}")
    if before.image.size != after.image.size and after.origin != "hires":
        parts.append("{}x{}->{}x{}".format(*before.image.size, *after.image.size))
    return ", ".join(parts) or "same settings"


def _caption(item: Item, before: Item) -> str:
    return f"{item.label}: {changes(before, item)}"


def _short(value: Any) -> str:
    return "default" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _title(item: Item) -> str:
    if item.origin == "refine" and item.parent is not None:
        return f"refine of {item.parent.label}: {item.prompt}"
    if item.origin == "vary" and item.parent is not None:
        return f"variations of {item.parent.label}: {item.prompt}"
    if item.origin == "edit" and item.parent is not None:
        return f"edits of {item.parent.label}: {item.prompt}"
    picture = f"{item.provenance.picture} · " if item.provenance.picture else ""
    return f"{picture}prompt {item.prompt_index}: {item.prompt}"


def _seed_list(seeds: Sequence[int]) -> str:
    shown = ", ".join(str(seed) for seed in seeds[:20])
    return shown + (f", ... ({len(seeds)} in all)" if len(seeds) > 20 else "")


def _tool(item: Item) -> str:
    """The name of the tool that made a picture read from its file ("another tool" when it did not say)."""
    return item.found.tool if item.found is not None else "another tool"
