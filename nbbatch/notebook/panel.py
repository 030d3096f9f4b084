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
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from nbbatch.api import plan
from nbbatch.core.engine import Runner
from nbbatch.core.errors import SettingError, first_line, raised_by_nbbatch
from nbbatch.core.grid import placeholder, thumbnail
from nbbatch.core.notices import notices_to
from nbbatch.core.observer import Observer, Observers
from nbbatch.core.pictures import Picture, open_picture, plain_name
from nbbatch.core.result import (
    BatchResult,
    Filling,
    cell_label,
    changes,
    edit_jobs,
    hires_jobs,
    inpaint_jobs,
    refine_jobs,
    run_batch,
    vary_jobs,
)
from nbbatch.core.spec import UPSCALERS, Settings, choose_seeds, parse_prompt_lines
from nbbatch.core.templates import expand
from nbbatch.formats.png import Saver
from nbbatch.notebook.controls import Controls
from nbbatch.notebook.maskpad import MaskPad
from nbbatch.session import default_session
from nbbatch.settings import SECTIONS, SETTINGS

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
.nbbatch-panel .nbbatch-thumb { border: 3px solid transparent; border-radius: 4px; padding: 2px 2px 34px;
  position: relative; cursor: pointer; }
/* the seed label is a button stretched over the whole thumbnail: a click anywhere on it selects it */
.nbbatch-panel .nbbatch-thumb .nbbatch-thumb-label { position: absolute; inset: 0; width: auto; height: auto;
  margin: 0; background: transparent; display: flex; align-items: flex-end; justify-content: center;
  padding-bottom: 4px; white-space: normal; line-height: 1.15; text-align: center; }
.nbbatch-panel .nbbatch-thumb.nbbatch-selected .nbbatch-thumb-label { color: var(--jp-brand-color1, #1976d2);
  font-weight: bold; }
.nbbatch-panel .nbbatch-thumb:hover { border-color: var(--jp-border-color1, #bdbdbd); }
.nbbatch-panel .nbbatch-thumb.nbbatch-selected { border-color: var(--jp-brand-color1, #1976d2); }
.nbbatch-panel .nbbatch-error { color: var(--jp-error-color1, #d32f2f); }
.nbbatch-panel .nbbatch-notice { color: var(--jp-warn-color1, #f57c00); }
.nbbatch-panel .nbbatch-row-title { color: var(--jp-ui-font-color1, inherit); font-weight: 600; }
.nbbatch-panel .nbbatch-more .jupyter-widget-Collapse-header { padding: 3px 10px; }
.nbbatch-panel .nbbatch-more .jupyter-widget-Collapse-contents { padding: 6px 10px; }
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
    Keywords are the first prompts, the seeds and any setting of `nbbatch.settings.SETTINGS`
    (``Panel(steps=20, model="nbbatch:tiny-flux")``); `controls` holds each setting's widget
    by name and `set` fills them later.
    """

    def __init__(self, prompts: str = "", seeds: str = "0-3", **settings: Any) -> None:
        w = _widgets()
        self.results: list[BatchResult] = []
        self.selected: Item | None = None
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._last_draw = 0.0
        self._thumbs: list = []
        wide = w.Layout(width="auto")  # across the panel; "100%" adds the margins and overflows
        label = {"description_width": "initial"}  # whole labels, never cut to "variation …"
        self.controls = Controls(settings)
        self.prompts = w.Textarea(prompts, placeholder="one prompt per line", rows=3, layout=wide)
        self.negative = w.Text(placeholder="negative prompt (optional)", layout=wide)
        self.seeds = w.Text(seeds, description="seeds", placeholder="0-7, 3,17 or 0-3,10", style=label)
        self.num = w.BoundedIntText(0, min=0, max=4096, description="or random", style=label)
        self.upload = w.FileUpload(
            accept="image/*", multiple=True, description="image-to-image", layout=w.Layout(width="auto")
        )
        self.image_mask = w.FileUpload(
            accept="image/*", description="mask (inpaint)", layout=w.Layout(width="auto"), icon="paint-brush"
        )
        self.axes = [
            w.Text(description=f"{letter} axis", placeholder=example, style=label)
            for letter, example in (("X", "steps=10,20,30"), ("Y", "guidance=3-8 [3]"), ("Z", "prompt=red,blue"))
        ]
        self.wildcards = w.Text(description="wildcards", placeholder="folder of name.txt (optional)", style=label)
        self.draws = w.BoundedIntText(
            0, min=0, max=4096, description="random prompts", style=label, tooltip="0: every combination of a template"
        )
        self.draw_seed = w.Text(description="draw seed", placeholder="random, kept", style=label)
        self.save_to = w.Text(description="save to", placeholder="folder (optional)", style=label)
        self.workers = w.BoundedIntText(
            0, min=0, max=4096, description="Ray workers", style=label, tooltip="0: this kernel; N: N Ray workers"
        )
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play")
        self.cancel_button = w.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = w.IntProgress(0, min=0, max=1000, layout=w.Layout(width="min(100%, 30em)"))
        self.status = w.Label("", tooltip="")
        self.message = w.HTML("")
        self.batches = w.Dropdown(options=[], description="batch", layout=w.Layout(width="min(100%, 40em)"))
        self.grid = w.VBox()
        self.origin = w.VBox()
        self.refine_title = w.Label("", tooltip="")
        self.refine_prompts = w.Textarea(rows=2, placeholder="follow-up prompt(s), one per line", layout=wide)
        self.refine_button = w.Button(description="Refine", button_style="info", icon="magic")
        self.show_code_button = w.Button(description="Code", icon="code", tooltip="diffusers code that makes it again")
        self.vary_button = w.Button(
            description="Vary", icon="random", tooltip="variations of its picture: image-to-image at the vary strength"
        )
        self.vary_seeds = w.Text(description="vary seeds", placeholder="4 random", style=label)
        self.vary_strength = w.FloatSlider(0.3, min=0.05, max=1.0, step=0.05, description="vary strength", style=label)
        self.hires_button = w.Button(
            description="Hires fix", icon="search-plus", tooltip="larger: upscaled, then denoised again"
        )
        self.hires_scale = w.BoundedFloatText(2.0, min=1.05, max=4.0, step=0.25, description="scale", style=label)
        self.hires_strength = w.FloatSlider(
            0.45, min=0.05, max=1.0, step=0.05, description="hires strength", style=label
        )
        self.hires_upscaler = w.Dropdown(options=tuple(UPSCALERS), value="lanczos", description="upscaler", style=label)
        self.maskpad = MaskPad()
        self.mask = w.Text(
            placeholder="or box:x0,y0,x1,y1 / ellipse:x0,y0,x1,y1 (pixels)", description="mask", layout=wide
        )
        self.inpaint_button = w.Button(
            description="Inpaint", icon="paint-brush", tooltip="repaint the mask's region with the prompt above (0.75)"
        )
        self.edit_button = w.Button(
            description="Edit", icon="edit", tooltip="edit its picture by the instructions above with the edit model"
        )
        self.edit_model = w.Text(
            description="edit model", placeholder="an editing model (FLUX.1 Kontext)", style=label, layout=wide
        )
        self.favourite = w.ToggleButton(
            False, description="Favourite", icon="star", tooltip="mark it: nbbatch.favourites() gathers them"
        )
        self.code = w.Textarea(rows=14, layout=w.Layout(width="min(100%, 60em)", display="none"))
        flow = w.Layout(flex_flow="row wrap")
        self.refine_area = w.VBox(
            [
                self.refine_title,
                self.refine_prompts,
                self.maskpad,
                self.mask,
                w.HBox(
                    [self.refine_button, self.inpaint_button, self.hires_button, self.show_code_button, self.favourite],
                    layout=flow,
                ),
                w.HBox([self.hires_scale, self.hires_strength, self.hires_upscaler], layout=flow),
                w.HBox([self.vary_button, self.vary_seeds, self.vary_strength], layout=flow),
                w.HBox([self.edit_button, self.edit_model], layout=flow),
                self.code,
            ],
            layout=w.Layout(display="none"),
        )
        for name, widget in vars(self).items():  # class nbbatch-refine-prompts for self.refine_prompts, ...
            if isinstance(widget, w.DOMWidget):
                widget.add_class(f"nbbatch-{name.removesuffix('_button').replace('_', '-')}")
        for letter, axis in zip("xyz", self.axes):
            axis.add_class(f"nbbatch-{letter}-axis")
        self.generate_button.on_click(lambda _: self.generate())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.refine_button.on_click(lambda _: self.refine())
        self.show_code_button.on_click(lambda _: self.show_code())
        self.hires_button.on_click(lambda _: self.hires())
        self.inpaint_button.on_click(lambda _: self.inpaint())
        self.vary_button.on_click(lambda _: self.vary())
        self.edit_button.on_click(lambda _: self.edit())
        self.batches.observe(lambda change: self._show(change["new"]), names="value")
        self.favourite.observe(self._mark, names="value")
        more = {  # the table's sections, with the inputs of a batch that are not settings beside them
            **{section: self.controls.section(section) for section in SECTIONS if section},
            "image-to-image": [self.upload, self.image_mask, *self.controls.section("image-to-image")],
            "X/Y/Z grid and templates": [*self.axes, self.wildcards, self.draws, self.draw_seed],
            "saving and workers": [self.save_to, self.workers],
        }
        self.more = w.Accordion(
            children=[w.HBox(widgets, layout=flow) for widgets in more.values()], titles=tuple(more)
        )
        self.more.add_class("nbbatch-more")
        self.widget = w.VBox(
            [
                w.HTML(STYLE),
                self.prompts,
                self.negative,
                w.HBox([self.seeds, self.num, *self.controls.section("")], layout=flow),
                self.more,
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
        _tooltips(self.widget)

    def set(self, **settings: Any) -> None:
        """Fill the settings' controls from Python values: ``panel.set(steps=20, guidance=7)`` (`Controls.set`)."""
        self.controls.set(**settings)

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
            settings, jobs = plan(
                parse_prompt_lines(self.prompts.value),
                None if self.num.value else self.seeds.value,
                num=self.num.value or None,
                negative_prompt=self.negative.value,
                images=self._uploaded(self.upload),
                mask=next((mask.image for mask in self._uploaded(self.image_mask)), None),
                x=self.axes[0].value.strip() or None,
                y=self.axes[1].value.strip() or None,
                z=self.axes[2].value.strip() or None,
                wildcards=self.wildcards.value.strip() or None,
                random=self.draws.value or None,
                random_seed=_whole("draw seed", self.draw_seed.value),
                **self.controls.given(),
            )
            saver = self._saver()
            runner = default_session().runner(self.workers.value or None)
        except ValueError as error:
            self._error(_said(error), error)
            return
        self._start(lambda progress, cancel: self._run_live(settings, jobs, progress, cancel, saver, runner))

    def refine(self) -> None:
        """Refine the selected image with the follow-up prompt(s), from its saved generator state."""
        self._from_selected(lambda item: refine_jobs(item, self._follow_ups(), None, {}))

    def vary(self) -> None:
        """Variations of the selected image's picture: image-to-image at the vary strength, one per vary seed."""

        def jobs_for(item: Item) -> tuple[Settings, tuple[Job, ...]]:
            prompts = self._follow_ups()
            if len(prompts) > 1:
                raise ValueError("Vary takes one prompt (or the picture's own): leave one line")
            seeds = choose_seeds(self.vary_seeds.value.strip() or None, None, default=None)
            return vary_jobs(item, prompts[0] if prompts else None, seeds, None, {"strength": self.vary_strength.value})

        self._from_selected(jobs_for)

    def edit(self) -> None:
        """Edit the selected image's picture by each instruction line with the edit model, from its own noise."""

        def jobs_for(item: Item) -> tuple[Settings, tuple[Job, ...]]:
            model = self.edit_model.value.strip()
            if not model:
                raise ValueError("give the edit model: an editing model such as FLUX.1 Kontext")
            return edit_jobs(item, self._follow_ups(), model, None, {})

        self._from_selected(jobs_for)

    def inpaint(self) -> None:
        """Repaint the region drawn on the pad (or the mask field's box) of the selected image, from its own noise."""

        def jobs_for(item: Item) -> tuple[Settings, tuple[Job, ...]]:
            mask = self.mask.value.strip() or self.maskpad.mask_image()
            if mask is None:
                raise ValueError(
                    "draw the region to repaint on the picture, or give mask box:x0,y0,x1,y1 or ellipse:x0,y0,x1,y1"
                )
            prompts = parse_prompt_lines(self.refine_prompts.value) or None
            return inpaint_jobs(item, mask, prompts, None, {"strength": 0.75})

        self._from_selected(jobs_for)

    def hires(self) -> None:
        """A hires fix of the selected image at the hires scale and strength (A1111's 2, 0.45), from its own noise."""
        scale, strength, upscaler = self.hires_scale.value, self.hires_strength.value, self.hires_upscaler.value
        self._from_selected(lambda item: hires_jobs(item, scale, strength, None, upscaler, {}))

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
            self._error(_said(error), error)
            return
        parent = self._current()
        runner = parent.runner if parent is not None and parent.runner is not None else default_session().runner()
        self._start(lambda progress, cancel: self._run_live(settings, jobs, progress, cancel, None, runner, parent))

    def show_code(self) -> None:
        """Show the Python (diffusers alone) that makes the selected image again, to copy into a notebook or script."""
        item = self.selected
        if item is None:
            self._error("select an image first: click its seed")
            return
        try:
            self.code.value = item.code()
        except ValueError as error:
            self._error(_said(error), error)
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
            said = _said(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {_said(error)}"
            self._error(said, error)
        finally:
            self._busy(False)
            self.cancel_button.disabled = True
            shown = "".join(f"<div class='nbbatch-notice'>{html.escape(note)}</div>" for note in dict.fromkeys(notes))
            self.message.value += shown

    def _run_live(
        self,
        settings: Settings,
        jobs: tuple[Job, ...],
        progress: Callable[[Progress], None],
        cancel: threading.Event,
        saver: Saver | None,
        runner: Runner,
        parent: BatchResult | None = None,
    ) -> None:
        """Run `jobs` on `runner` in the panel's thread, its thumbnails filling in as chunks finish, then show it."""
        live = _LiveGrid(jobs, progress)
        self._thumbs, self.selected = [], None
        self.refine_area.layout.display = "none"
        self.grid.children = live.rows
        _tooltips(self.grid)
        self._show_origin(parent)  # a refinement runs under the batch it comes from

        result = run_batch(
            settings,
            jobs,
            parent=parent,
            observer=Observers([live, saver]),
            cancel=cancel,
            raise_on_failure=False,
            runner=runner,
        )
        if not result.items:  # nothing made: the batches shown stay as they were
            why = f": {_said(result.error)}" if result.error is not None else ""
            self._show(self.batches.value)
            self._error(f"the batch {result.status} before any image was made{why}", result.error)
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
            kept = f"its {len(failed)} finished images are kept"
            self._error(f"the batch stopped: {_said(failed.error)}; {kept}", failed.error)
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
        _tooltips(self.grid)
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
        _tooltips(self.origin)

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

    def _error(self, text: str, error: BaseException | None = None) -> None:
        """Say `text` in the status line; a library's `error` (not one of nbbatch's refusals) keeps its traceback.

        The traceback is folded under the line (a ``<details>`` to open), as the magic lets
        a library's error raise with its traceback: where it came from is worth keeping.
        """
        shown = f"<span class='nbbatch-error'>{html.escape(text)}</span>"
        if error is not None and not raised_by_nbbatch(error):
            trace = "".join(traceback.format_exception(error))
            shown += (
                "<details class='nbbatch-traceback'><summary>traceback</summary>"
                f"<pre>{html.escape(trace)}</pre></details>"
            )
        self.message.value = shown

    # -- inputs ----------------------------------------------------------------------------------------

    def _settings(self) -> Settings:
        """The settings the controls hold (what is left empty is the model's or `Settings`' default)."""
        return Settings(**self.controls.given())

    def _follow_ups(self) -> list[str]:
        """The refine box's lines, templates expanded (``{red|green}`` refines twice)."""
        lines = parse_prompt_lines(self.refine_prompts.value)
        return [prompt.text for prompt in expand(lines, wildcards=self.wildcards.value.strip() or None)]

    @staticmethod
    def _uploaded(upload: Any) -> list[Picture]:
        """An upload's pictures, each with its file name (the label's ``seed 3 · cat.png``)."""
        return [
            Picture(open_picture(io.BytesIO(bytes(file["content"])), file["name"]), plain_name(file["name"]))
            for file in upload.value
        ]

    def _saver(self) -> Saver | None:
        folder = self.save_to.value.strip()
        return Saver(folder) if folder else None


class _LiveGrid(Observer):
    """The panel's view of a run: thumbnails, grey, then step previews, then the finished images; and its bar.

    Rows by prompt as in the finished grid; the cells are not selectable until the batch
    ends and the finished grid replaces them. The progress goes to the panel's bar.
    """

    def __init__(self, jobs: tuple[Job, ...], progress: Callable[[Progress], None]) -> None:
        super().__init__(progress=progress)
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

    def preview(self, preview: Preview) -> None:
        """Show step previews in the cells of the images in flight."""
        for position, picture, label in self.filling.previewed(preview):
            self._put(position, picture, label)
            self.cells[position].add_class("nbbatch-preview")

    def made(self, items: list[Item], start: int) -> None:
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


def _whole(name: str, text: str) -> int | None:
    """A whole number typed in a text box (None when it is left empty), or a one-line error naming the box."""
    try:
        return int(text) if text.strip() else None
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text.strip()!r}") from None


def _tooltips(widget: Any) -> None:
    """Give `widget` and those inside it a tooltip where they have none: their label, else no tooltip at all.

    ipywidgets writes a missing tooltip into the page as the text "null" (``title="null"``).
    """
    if getattr(widget, "tooltip", "") is None:
        widget.tooltip = getattr(widget, "description", "")
    for child in getattr(widget, "children", ()):
        _tooltips(child)


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


def _said(error: BaseException | None) -> str:
    """An error's first line as the panel says it: a `SettingError` names its control ("true cfg")."""
    if isinstance(error, SettingError):
        titles = {setting.name: setting.title for setting in SETTINGS}
        needs = titles.get(error.needs, error.needs) if error.needs else None
        return first_line(error.said_as(titles.get(error.field, error.field.replace("_", " ")), needs))
    return first_line(error)
