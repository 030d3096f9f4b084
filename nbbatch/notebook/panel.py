"""The nbbatch panel: an ipywidgets UI over the same core as the magic (`nbbatch.panel()`).

Prompts and settings, Generate, a progress bar with the time left, Cancel, a grid of
seed-labelled thumbnails to pick from, and Refine. Batches run on a worker thread so
the widgets stay live (Cancel is received while a batch runs); every error is shown
as one line inside the panel, which stays usable.
"""

from __future__ import annotations

import html
import io
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from nbbatch.core.engine import Runner
from nbbatch.core.errors import first_line
from nbbatch.core.grid import placeholder, thumbnail
from nbbatch.core.notices import notices_to
from nbbatch.core.pictures import open_picture
from nbbatch.core.result import (
    BatchResult,
    Filling,
    cell_label,
    changes,
    hires_jobs,
    inpaint_jobs,
    refine_jobs,
    run_batch,
)
from nbbatch.core.spec import Settings, default_model, make_jobs, parse_prompt_lines
from nbbatch.core.templates import expand
from nbbatch.formats.png import Saver
from nbbatch.models.backend import execute
from nbbatch.models.pipelines import SAMPLER_VARIANTS, SCHEDULERS
from nbbatch.notebook.maskpad import MaskPad
from nbbatch.scale.workers import RayRunner

if TYPE_CHECKING:
    from PIL import Image

    from nbbatch.core.engine import Preview, Progress
    from nbbatch.core.item import Item
    from nbbatch.core.spec import Job

    Work = Callable[[Callable[[Progress], None], threading.Event], None]
    """What a worker thread runs: it gets the progress callback and the cancel flag."""

THUMBNAIL = 128
STYLE = """<style>
.nbbatch-panel .nbbatch-thumbs { display: flex; flex-wrap: wrap; gap: 6px; }
.nbbatch-panel .nbbatch-thumb { border: 3px solid transparent; border-radius: 4px; padding: 2px 2px 30px;
  position: relative; cursor: pointer; }
/* the seed label is a button stretched over the whole thumbnail: a click anywhere on it selects it */
.nbbatch-panel .nbbatch-thumb .nbbatch-thumb-label { position: absolute; inset: 0; width: auto; height: auto;
  margin: 0; background: transparent; display: flex; align-items: flex-end; justify-content: center;
  padding-bottom: 6px; }
.nbbatch-panel .nbbatch-thumb.nbbatch-selected .nbbatch-thumb-label { color: var(--jp-brand-color1, #1976d2);
  font-weight: bold; }
.nbbatch-panel .nbbatch-thumb:hover { border-color: var(--jp-border-color1, #bdbdbd); }
.nbbatch-panel .nbbatch-thumb.nbbatch-selected { border-color: var(--jp-brand-color1, #1976d2); }
.nbbatch-panel .nbbatch-error { color: var(--jp-error-color1, #d32f2f); }
.nbbatch-panel .nbbatch-notice { color: var(--jp-warn-color1, #f57c00); }
.nbbatch-panel .nbbatch-row-title { color: var(--jp-ui-font-color1, inherit); font-weight: 600; }
.nbbatch-panel .nbbatch-origin-title { color: var(--jp-ui-font-color2, #616161); font-size: 110%; }
</style>"""


def _widgets() -> ModuleType:
    try:
        import ipywidgets
    except ImportError:  # pragma: no cover - ipywidgets is a dependency; this guards broken installs
        raise ImportError("the nbbatch panel needs ipywidgets: pip install ipywidgets") from None
    return ipywidgets


class Panel:
    """Widgets for the whole loop: batch, watch, pick, refine. Show it by leaving it last in a cell.

    `results` lists this panel's batches (refinements included), each a `BatchResult`.
    """

    def __init__(self, model: str | None = None, prompts: str = "", seeds: str = "0-3", steps: int = 30) -> None:
        w = _widgets()
        self.results: list[BatchResult] = []
        self.selected: Item | None = None
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._last_draw = 0.0
        self._thumbs: list = []
        wide = w.Layout(width="100%")
        self.prompts = w.Textarea(prompts, placeholder="one prompt per line", rows=3, layout=wide)
        self.negative = w.Text(placeholder="negative prompt (optional)", layout=wide)
        self.seeds = w.Text(seeds, description="seeds", placeholder="0-7, 3,17 or 0-3,10")
        self.random = w.BoundedIntText(0, min=0, max=4096, description="or random")
        self.steps = w.BoundedIntText(steps, min=1, max=1000, description="steps")
        self.guidance = w.Text(description="guidance", placeholder="model default")
        self.true_cfg = w.Text(description="true CFG", placeholder="off (FLUX.1)")
        self.max_sequence_length = w.Text(description="max tokens", placeholder="model default")
        self.width = w.Text(description="width", placeholder="model default")
        self.height = w.Text(description="height", placeholder="model default")
        self.batch_size = w.Text(description="batch size", placeholder="all, auto or N")
        self.workers = w.BoundedIntText(
            0, min=0, max=4096, description="Ray workers", tooltip="0: this kernel; N: a pool of N Ray workers"
        )
        self.scheduler = w.Combobox(
            options=[*SCHEDULERS, *SAMPLER_VARIANTS, "dpm++2m-karras", "euler-karras", "dpm++2m-sde-karras"],
            description="scheduler",
            placeholder="model default",
            ensure_option=False,
        )
        self.clip_skip = w.BoundedIntText(1, min=1, max=12, description="clip skip")
        self.lora = w.Text(description="LoRA", placeholder="file or hub id (optional)")
        self.lora_weight = w.FloatText(1.0, step=0.05, description="weight")
        self.model = w.Text(model or default_model(), description="model", layout=w.Layout(width="min(100%, 40em)"))
        self.upload = w.FileUpload(
            accept="image/*", multiple=True, description="image-to-image", layout=w.Layout(width="auto")
        )
        self.strength = w.FloatSlider(0.8, min=0.05, max=1.0, step=0.05, description="strength")
        label = {"description_width": "initial"}  # the whole label, never cut to "variation …"
        self.variation_seed = w.Text(description="variation seed", placeholder="none", style=label)
        self.variation_strength = w.FloatSlider(
            0.0, min=0.0, max=1.0, step=0.05, description="variation strength", style=label
        )
        self.save_to = w.Text(description="save to", placeholder="folder (optional)")
        self.wildcards = w.Text(description="wildcards", placeholder="folder of name.txt (optional)")
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play")
        self.cancel_button = w.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = w.IntProgress(0, min=0, max=1000, layout=w.Layout(width="min(100%, 30em)"))
        self.status = w.Label("")
        self.message = w.HTML("")
        self.batches = w.Dropdown(options=[], description="batch", layout=w.Layout(width="min(100%, 40em)"))
        self.grid = w.VBox()
        self.origin = w.VBox()
        self.refine_title = w.Label("")
        self.refine_prompts = w.Textarea(rows=2, placeholder="follow-up prompt(s), one per line", layout=wide)
        self.refine_button = w.Button(description="Refine", button_style="info", icon="magic")
        self.code_button = w.Button(description="Code", icon="code", tooltip="diffusers code that makes it again")
        self.hires_button = w.Button(
            description="Hires fix", icon="search-plus", tooltip="2x larger: upscaled, then denoised again (0.45)"
        )
        self.maskpad = MaskPad()
        self.mask = w.Text(
            placeholder="or box:x0,y0,x1,y1 / ellipse:x0,y0,x1,y1 (pixels)", description="mask", layout=wide
        )
        self.inpaint_button = w.Button(
            description="Inpaint", icon="paint-brush", tooltip="repaint the mask's region with the prompt above (0.75)"
        )
        self.favourite = w.ToggleButton(
            False, description="Favourite", icon="star", tooltip="mark it: nbbatch.favourites() gathers them"
        )
        self.code = w.Textarea(rows=14, layout=w.Layout(width="min(100%, 60em)", display="none"))
        self.refine_area = w.VBox(
            [
                self.refine_title,
                self.refine_prompts,
                self.maskpad,
                self.mask,
                w.HBox([self.refine_button, self.inpaint_button, self.hires_button, self.code_button, self.favourite]),
                self.code,
            ],
            layout=w.Layout(display="none"),
        )
        for widget, name in [
            (self.prompts, "prompts"),
            (self.seeds, "seeds"),
            (self.generate_button, "generate"),
            (self.cancel_button, "cancel"),
            (self.progress, "progress"),
            (self.status, "status"),
            (self.message, "message"),
            (self.grid, "grid"),
            (self.origin, "origin"),
            (self.refine_area, "refine-area"),
            (self.refine_prompts, "refine-prompts"),
            (self.refine_button, "refine"),
            (self.code_button, "code-button"),
            (self.hires_button, "hires"),
            (self.favourite, "favourite"),
            (self.mask, "mask"),
            (self.maskpad, "maskpad"),
            (self.inpaint_button, "inpaint"),
            (self.code, "code"),
            (self.batches, "batches"),
            (self.upload, "upload"),
            (self.random, "random"),
            (self.steps, "steps"),
            (self.variation_seed, "variation-seed"),
            (self.variation_strength, "variation-strength"),
            (self.wildcards, "wildcards"),
            (self.scheduler, "scheduler"),
            (self.clip_skip, "clip-skip"),
            (self.true_cfg, "true-cfg"),
            (self.max_sequence_length, "max-sequence-length"),
            (self.lora, "lora"),
            (self.lora_weight, "lora-weight"),
            (self.batch_size, "batch-size"),
            (self.workers, "workers"),
        ]:
            widget.add_class(f"nbbatch-{name}")
        self.generate_button.on_click(lambda _: self.generate())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.refine_button.on_click(lambda _: self.refine())
        self.code_button.on_click(lambda _: self.show_code())
        self.hires_button.on_click(lambda _: self.hires())
        self.inpaint_button.on_click(lambda _: self.inpaint())
        self.batches.observe(lambda change: self._show(change["new"]), names="value")
        self.favourite.observe(self._mark, names="value")
        flow = w.Layout(flex_flow="row wrap")
        self.widget = w.VBox(
            [
                w.HTML(STYLE),
                self.prompts,
                self.negative,
                w.HBox([self.seeds, self.random, self.steps, self.guidance], layout=flow),
                w.HBox([self.width, self.height, self.batch_size, self.save_to], layout=flow),
                w.HBox([self.model, self.scheduler, self.clip_skip, self.workers], layout=flow),
                w.HBox([self.true_cfg, self.max_sequence_length], layout=flow),
                w.HBox([self.lora, self.lora_weight], layout=flow),
                w.HBox([self.upload, self.strength], layout=flow),
                w.HBox([self.variation_seed, self.variation_strength, self.wildcards], layout=flow),
                w.HBox([self.generate_button, self.cancel_button, self.progress, self.status], layout=flow),
                self.message,
                self.batches,
                self.grid,
                self.refine_area,
                self.origin,
            ],
            layout=w.Layout(max_width="100%"),
        )
        self.widget.add_class("nbbatch-panel")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def running(self) -> bool:
        """True while a batch runs."""
        return self._thread is not None and self._thread.is_alive()

    def generate(self) -> None:
        """Validate the inputs and start the batch on a worker thread (refused while one runs)."""
        if self.running:
            self._error("a batch is already running: wait for it, or Cancel it")
            return
        try:
            settings = self._settings()
            images = self._uploaded_images()
            prompts = parse_prompt_lines(self.prompts.value)
            seeds = None if self.random.value else self.seeds.value
            wildcards = self.wildcards.value.strip() or None
            jobs = make_jobs(
                prompts, seeds, self.random.value or None, self.negative.value, images, settings, wildcards=wildcards
            )
            saver = self._saver()
            runner = RayRunner(self.workers.value) if self.workers.value else execute
        except ValueError as error:
            self._error(str(error))
            return
        self._start(lambda progress, cancel: self._execute(settings, jobs, progress, cancel, saver, runner=runner))

    def refine(self) -> None:
        """Refine the selected image with the follow-up prompt(s), from its saved generator state."""

        def plan(item: Item) -> tuple[Settings, tuple[Job, ...]]:
            lines = parse_prompt_lines(self.refine_prompts.value)
            prompts = [prompt.text for prompt in expand(lines, wildcards=self.wildcards.value.strip() or None)]
            return refine_jobs(item, prompts, None, {})

        self._from_selected(plan)

    def inpaint(self) -> None:
        """Repaint the region drawn on the pad (or the mask field's box) of the selected image, from its own noise."""

        def plan(item: Item) -> tuple[Settings, tuple[Job, ...]]:
            mask = self.mask.value.strip() or self.maskpad.mask_image()
            if mask is None:
                raise ValueError(
                    "draw the region to repaint on the picture, or give mask box:x0,y0,x1,y1 or ellipse:x0,y0,x1,y1"
                )
            prompts = parse_prompt_lines(self.refine_prompts.value) or None
            return inpaint_jobs(item, mask, prompts, None, {"strength": 0.75})

        self._from_selected(plan)

    def hires(self) -> None:
        """A hires fix of the selected image: twice as large, from its own noise (A1111's defaults, lanczos)."""
        self._from_selected(lambda item: hires_jobs(item, 2.0, 0.45, None, "lanczos", {}))

    def _from_selected(self, plan: Callable[[Item], tuple[Settings, tuple[Job, ...]]]) -> None:
        """Run what `plan` makes of the selected image, as a child of the batch shown; errors in the status."""
        if self.running:
            self._error("a batch is already running: wait for it, or Cancel it")
            return
        item = self.selected
        if item is None:
            self._error("select an image first: click its seed")
            return
        try:
            settings, jobs = plan(item)
        except ValueError as error:
            self._error(str(error))
            return
        parent = self._current()
        self._start(lambda progress, cancel: self._execute(settings, jobs, progress, cancel, None, parent))

    def show_code(self) -> None:
        """Show the Python (diffusers alone) that makes the selected image again, to copy into a notebook or script."""
        item = self.selected
        if item is None:
            self._error("select an image first: click its seed")
            return
        try:
            self.code.value = item.code()
        except ValueError as error:
            self._error(str(error))
            return
        self.code.layout.display = "flex"

    def cancel(self) -> None:
        """Stop at the next step; every image already finished is kept."""
        self._cancel.set()
        self.status.value = "cancelling…"

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running batch ends (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def select(self, item: Item) -> None:
        """Select `item`: highlight its thumbnail and open Refine with its prompt."""
        self.selected = item
        for box in self._thumbs:
            (box.add_class if box.item is item else box.remove_class)("nbbatch-selected")
        self.refine_title.value = f"Refine {item.label} (prompt {item.prompt_index}): same starting noise, new prompt"
        self.refine_prompts.value = item.prompt
        self.favourite.value = item.is_favourite
        self.maskpad.show(item.image)
        self.code.value, self.code.layout.display = "", "none"  # the code shown was another image's
        self.refine_area.layout.display = "flex"

    def _mark(self, change: dict[str, Any]) -> None:
        """The star: mark or unmark the selected image as a favourite."""
        if self.selected is not None and self.selected.is_favourite != change["new"]:
            self.selected.favourite(change["new"])

    # -- running ---------------------------------------------------------------------------------------

    def _start(self, work: Work) -> None:
        self._cancel.clear()
        self.message.value = ""
        self._busy(True)
        self.cancel_button.disabled = False
        self.progress.value = 0
        self.status.value = "loading the pipeline…"
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True, name="nbbatch-panel")
        self._thread.start()

    def _busy(self, running: bool) -> None:
        """While a batch runs, the buttons that start one are off."""
        for button in (self.generate_button, self.refine_button, self.hires_button, self.inpaint_button):
            button.disabled = running

    def _run(self, work: Work) -> None:
        """The batch, in the panel's thread: its notices (a prompt cut off, ...) shown under the error, if any."""
        notes: list[str] = []
        try:
            with notices_to(notes.append):
                work(self._progress, self._cancel)
        except Exception as error:  # shown in the panel as one line, never as a traceback
            self._show(self.batches.value)  # the batch shown before, as it was (not the live grid's placeholders)
            self._error(str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {first_line(error)}")
        finally:
            self._busy(False)
            self.cancel_button.disabled = True
            shown = "".join(f"<div class='nbbatch-notice'>{html.escape(note)}</div>" for note in dict.fromkeys(notes))
            self.message.value += shown

    def _execute(
        self,
        settings: Settings,
        jobs: tuple[Job, ...],
        progress: Callable[[Progress], None],
        cancel: threading.Event,
        saver: Saver | None,
        parent: BatchResult | None = None,
        runner: Runner = execute,
    ) -> None:
        live = _LiveGrid(jobs)
        self._thumbs, self.selected = [], None
        self.refine_area.layout.display = "none"
        self.grid.children = live.rows
        self._show_origin(parent)  # a refinement runs under the batch it comes from

        def finished(items: list[Item], start: int) -> None:
            live.add(items, start)
            if saver is not None:
                saver.add(items)

        result = run_batch(
            settings,
            jobs,
            parent=parent,
            on_progress=progress,
            cancel=cancel,
            on_chunk=finished,
            on_preview=live.preview,
            raise_on_failure=False,
            runner=runner,
        )
        if not result.items:  # nothing made: the batches shown stay as they were
            why = f": {first_line(result.error)}" if result.error is not None else ""
            self._show(self.batches.value)
            self._error(f"the batch {result.status} before any image was made{why}")
            return
        if saver is not None:
            saver.add_grid(result.grid(), result.items)
        self.results.append(result)
        self.batches.options = [(f"{n + 1}: {_describe(r)}", n) for n, r in enumerate(self.results)]
        self.batches.value = len(self.results) - 1  # shows it, with how it ended

    def _progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last_draw < 0.1 and progress.chunk:  # at most ten redraws a second
            return
        self._last_draw = now
        self.progress.value = round(progress.fraction * 1000)
        self.status.value = progress.describe()

    # -- display ---------------------------------------------------------------------------------------

    def _current(self) -> BatchResult | None:
        value = self.batches.value
        return self.results[value] if value is not None and value < len(self.results) else None

    def _show(self, index: int | None) -> None:
        w = _widgets()
        self._thumbs = []
        self.message.value = ""  # it spoke of another batch, or of a run that has ended
        if index is not None and self.results[index].status == "failed":
            failed = self.results[index]
            self._error(f"the batch stopped: {first_line(failed.error)}; its {len(failed)} finished images are kept")
        elif index is not None and not self.results[index].complete:
            stopped = self.results[index]
            self.message.value = f"{stopped.status} after {len(stopped)} of {stopped.total} images; they are kept"
        if index is None:
            self.grid.children = ()
            self.status.value, self.progress.value = "", 0
            return
        result = self.results[index]
        self.status.value = f"{result.count} in {result.elapsed:.1f} s"  # the batch shown
        self.progress.value = round(1000 * len(result) / max(result.total, 1))
        rows: dict[int, tuple[str, list]] = {}  # by prompt (or story row): the row's title and its cells
        if result.is_story:  # the original first, then what came from it, each selectable
            grouped = result.story_rows()
        else:
            grouped = [(group.title, [result[position] for position in group.indices]) for group in result.groups()]
        for row_index, (title, members) in enumerate(grouped):
            for item in members:
                rows.setdefault(row_index, (title, []))[1].append(self._thumb(item, story=result.is_story))
        blank = _jpeg(placeholder((THUMBNAIL, THUMBNAIL)))
        for _, job in result.not_made():  # a stopped batch: the rest, greyed
            label = w.Label(cell_label(job, "not made"), layout=w.Layout(width=f"{THUMBNAIL + 8}px"))
            box = w.VBox([w.Image(value=blank, format="jpeg", width=THUMBNAIL), label])
            box.add_class("nbbatch-thumb")
            box.add_class("nbbatch-not-made")
            rows.setdefault(job.prompt_index, (job.prompt, []))[1].append(box)
        self.grid.children = [_row(title, cells) for title, cells in rows.values()]
        self._show_origin(result.parent if result.is_story else None)
        self.selected = None
        self.refine_area.layout.display = "none"

    def _show_origin(self, origin: BatchResult | None) -> None:
        """Below the story rows, the batch they came from, still selectable (nothing for a batch of its own)."""
        w = _widgets()
        while origin is not None and origin.is_story:  # a refinement of a refinement: the batch it all began in
            origin = origin.parent
        if origin is None:
            self.origin.children = ()
            return
        kept = [(group.title, [origin[p] for p in group.indices]) for group in origin.groups()]
        heading = w.HTML("<span class='nbbatch-origin-title'>the batch it came from</span>")
        self.origin.children = [heading, *(_row(title, [self._thumb(i) for i in items]) for title, items in kept)]

    def _thumb(self, item: Item, story: bool = False) -> Any:
        """A selectable thumbnail of `item`, labelled by it; in a story row its tooltip says what changed."""
        w = _widgets()
        changed = f" ({changes(item.parent, item)})" if item.parent is not None and story else ""
        label = w.Button(
            description=item.label,
            layout=w.Layout(width=f"{THUMBNAIL + 8}px"),
            tooltip=f"select {item.label}: {item.prompt}{changed}",
        )
        label.add_class("nbbatch-thumb-label")
        picture = w.Image(value=_jpeg(thumbnail(item.image, THUMBNAIL)), format="jpeg", width=THUMBNAIL)
        box = w.VBox([picture, label])
        box.add_class("nbbatch-thumb")
        box.item = item
        label.on_click(lambda _: self.select(item))
        self._thumbs.append(box)
        return box

    def _error(self, text: str) -> None:
        self.message.value = f"<span class='nbbatch-error'>{html.escape(text)}</span>"

    # -- inputs ----------------------------------------------------------------------------------------

    def _settings(self) -> Settings:
        given: dict[str, Any] = {
            "model": self.model.value.strip(),
            "steps": self.steps.value,
            "strength": self.strength.value,
        }
        for name, widget, kind in (
            ("guidance", self.guidance, float),
            ("true_cfg", self.true_cfg, float),
            ("width", self.width, int),
            ("height", self.height, int),
            ("max_sequence_length", self.max_sequence_length, int),
        ):
            text = widget.value.strip()
            if text:
                given[name] = _number(name.replace("_", " "), text, kind)
        size = self.batch_size.value.strip().lower()
        if size and size != "all":
            given["batch_size"] = "auto" if size == "auto" else _number("batch size", size, int)
        scheduler = self.scheduler.value.strip()
        if scheduler:
            given["scheduler"] = scheduler
        if self.clip_skip.value > 1:
            given["clip_skip"] = self.clip_skip.value
        lora = self.lora.value.strip()
        if lora:
            given["loras"] = [(lora, self.lora_weight.value)]
        variation = self.variation_seed.value.strip()
        if variation:
            given["variation_seed"] = _number("variation seed", variation, int)
        if self.variation_strength.value:
            given["variation_strength"] = self.variation_strength.value
        return Settings(**given)

    def _uploaded_images(self) -> list:
        return [open_picture(io.BytesIO(bytes(upload["content"])), upload["name"]) for upload in self.upload.value]

    def _saver(self) -> Saver | None:
        folder = self.save_to.value.strip()
        return Saver(folder) if folder else None


class _LiveGrid:
    """The thumbnails of a batch while it runs: grey, then step previews, then the finished images.

    Rows by prompt as in the finished grid; the cells are not selectable until the batch
    ends and the finished grid replaces them.
    """

    def __init__(self, jobs: tuple[Job, ...]) -> None:
        w = _widgets()
        self.filling = Filling(jobs)
        blank = _jpeg(placeholder((THUMBNAIL, THUMBNAIL)))
        self.cells = []
        rows: dict[int, list[int]] = {}
        for position, job in enumerate(jobs):
            picture = w.Image(value=blank, format="jpeg", width=THUMBNAIL)
            label = w.Label(cell_label(job), layout=w.Layout(width=f"{THUMBNAIL + 8}px"))
            cell = w.VBox([picture, label])
            cell.add_class("nbbatch-thumb")
            cell.add_class("nbbatch-live")
            cell.add_class("nbbatch-pending")
            self.cells.append(cell)
            rows.setdefault(job.prompt_index, []).append(position)
        self.rows = []
        for positions in rows.values():
            title = w.HTML(f"<span class='nbbatch-row-title'>{html.escape(jobs[positions[0]].prompt)}</span>")
            row = w.Box([self.cells[p] for p in positions])
            row.add_class("nbbatch-thumbs")
            self.rows.append(w.VBox([title, row]))

    def preview(self, shown: Preview) -> None:
        """Show step previews in the cells of the images in flight."""
        for position, picture, label in self.filling.previewed(shown):
            self._put(position, picture, label)
            self.cells[position].add_class("nbbatch-preview")

    def add(self, items: list[Item], start: int) -> None:
        """Put a finished chunk's images in, the first at position `start` among the jobs."""
        for position, picture, label in self.filling.finished(items, start):
            self._put(position, picture, label)
            self.cells[position].remove_class("nbbatch-preview")
            self.cells[position].add_class("nbbatch-done")

    def _put(self, position: int, picture: Image.Image, label: str) -> None:
        cell = self.cells[position]
        cell.remove_class("nbbatch-pending")
        cell.children[0].value = _jpeg(thumbnail(picture, THUMBNAIL))
        cell.children[1].value = label


def _jpeg(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _number(name: str, text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} must be a {'number' if kind is float else 'whole number'}, not {text!r}") from None


def _row(title: str, cells: list[Any]) -> Any:
    """A titled row of thumbnails (it wraps in a narrow window)."""
    w = _widgets()
    row = w.Box(cells)
    row.add_class("nbbatch-thumbs")
    return w.VBox([w.HTML(f"<span class='nbbatch-row-title'>{html.escape(title)}</span>"), row])


def _describe(result: BatchResult) -> str:
    """A batch in the panel's list: what made it, its first prompt and how many images."""
    first = result[0] if len(result) else None
    kind = first.origin if first is not None and first.origin != "batch" else "batch"
    prompt = f"{first.prompt[:40]!r}{'…' if len(first.prompt) > 40 else ''} · " if first is not None else ""
    return f"{kind} · {prompt}{result.count}"
