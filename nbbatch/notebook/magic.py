"""The ``%%batchgen`` cell magic: arguments -> settings and jobs -> run -> result in the namespace and a grid.

Validation happens before anything runs; every ValueError nbbatch raises becomes a one-line
`UsageError`, so bad input leaves nothing made and nothing overwritten. An error from inside a
library (diffusers, torch) keeps its traceback.
"""

from __future__ import annotations

import builtins
import keyword
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from nbbatch.api import plan
from nbbatch.core.errors import SettingError, first_line, raised_by_nbbatch
from nbbatch.core.observer import Observers
from nbbatch.core.result import BatchResult, edit_jobs, hires_jobs, inpaint_jobs, refine_jobs, run_batch, vary_jobs
from nbbatch.core.spec import UPSCALERS, Settings, choose_seeds, parse_prompt_lines
from nbbatch.core.templates import expand
from nbbatch.formats.png import Saver
from nbbatch.notebook.live import ProgressDisplay
from nbbatch.session import default_session
from nbbatch.settings import SETTINGS

if TYPE_CHECKING:
    from argparse import Namespace

    from IPython.core.interactiveshell import InteractiveShell

    from nbbatch.core.spec import Job


def settings_arguments(magic: Any) -> Any:
    """The magic's options for every row of the settings table (`nbbatch.settings.SETTINGS`), in its order."""
    for setting in reversed(SETTINGS):
        magic = argument(*setting.option_strings, **setting.argparse_options())(magic)
    return magic


@magics_class
class BatchMagics(Magics):
    """``%%batchgen`` (also ``%batchgen``) and ``%batchgen_panel``; remembers the last result for ``--refine``."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self.last: BatchResult | None = None

    @magic_arguments()
    @settings_arguments
    @argument("--seeds", "-s", help="seeds: 0-7, 3,17,42 or 0-3,10 (default 0-3)")
    @argument("--num", "-n", type=int, help="draw this many random seeds instead (they are shown and kept)")
    @argument("--negative", help="negative prompt, for every image")
    @argument(
        "--image",
        help="image-to-image: a variable holding a picture or a list, a file, a folder or a glob; each picture is made "
        "with every prompt and seed",
    )
    @argument("--x", metavar="NAME=VALUES", help="X/Y/Z grid axis: steps=10,20,30, guidance=3-8 [3], prompt=red,blue")
    @argument("--y", metavar="NAME=VALUES", help="the grid's Y axis (rows)")
    @argument("--z", metavar="NAME=VALUES", help="the grid's Z axis (one table per value)")
    @argument("--wildcards", metavar="FOLDER", help="the folder of name.txt files that __name__ in a prompt reads")
    @argument("--random", type=int, metavar="N", help="draw N prompts from each template instead of every combination")
    @argument("--random-seed", type=int, metavar="S", help="the seed of --random's draw (default: random, kept)")
    @argument("--refine", type=int, metavar="SEED", help="refine this seed of --from: same starting noise, new prompt")
    @argument("--vary", type=int, metavar="SEED", help="variations of this seed's picture (image-to-image)")
    @argument("--hires", type=int, metavar="SEED", help="hires fix of this seed: upscaled, then denoised again")
    @argument("--inpaint", type=int, metavar="SEED", help="repaint the --mask region of this seed's picture")
    @argument(
        "--edit",
        type=int,
        metavar="SEED",
        help="edit this seed's picture by the cell's instructions with an editing --model (FLUX.1 Kontext)",
    )
    @argument(
        "--mask",
        metavar="MASK",
        help="--inpaint or --image: a variable (picture or array), a file, box:x0,y0,x1,y1, or (--image) a folder of "
        "masks named as the pictures",
    )
    @argument("--scale", type=float, metavar="X", help="--hires: how much larger (default 2)")
    @argument("--hires-strength", type=float, metavar="S", help="--hires: denoising strength (default 0.45)")
    @argument("--hires-upscaler", choices=tuple(UPSCALERS), help="--hires: lanczos (pixels; default) or latent (SD)")
    @argument("--from", dest="source", metavar="NAME", help="the result to refine or vary (default: the last one)")
    @argument("--prompt-index", type=int, help="which prompt's image, when several prompts share the seed")
    @argument(
        "--allow-download",
        action="store_true",
        help="refine or vary a loaded picture with the model, LoRAs and embeddings its file names, wherever they are "
        "(a download, a folder elsewhere); without it only the built-ins, the download cache and files beside it",
    )
    @argument(
        "--code",
        type=int,
        metavar="SEED",
        help="the Python (diffusers alone) that makes this seed's image of --from again, put into the next cell",
    )
    @argument("--save", metavar="FOLDER", help="save the images (PNG with parameters), the grid and an index there")
    @argument("--autosave", metavar="FOLDER", help="like --save, but each chunk as soon as it is finished")
    @argument(
        "--workers",
        type=int,
        metavar="N",
        help="spread the batch over N Ray workers (one GPU each where there are GPUs); needs nbbatch[ray]",
    )
    @argument(
        "--ray-address", metavar="ADDR", help="the Ray cluster for --workers (default: $RAY_ADDRESS, else a local one)"
    )
    @argument("--out", "-o", default="_batch", help="variable to store the result in (default _batch)")
    @argument("--no-display", action="store_true", help="do not show the grid")
    @argument(
        "--no-preview",
        action="store_true",
        help="no live grid with step previews while it runs: the progress bar alone",
    )
    @line_cell_magic
    def batchgen(self, line: str, cell: str | None = None) -> None:
        r"""Generate a batch: every prompt of the cell (one per line) with every seed.

        Each image gets its own generator, so any image can be made again alone; the
        result goes to ``_batch`` (or ``--out``) and a seed-labelled grid is shown.
        ``--refine SEED`` makes that image again from the same starting noise with the
        cell's prompt(s); ``--vary SEED`` makes variations of its picture; ``--hires SEED``
        a hires fix (``--scale 2``, ``--hires-strength 0.45``); ``--inpaint SEED --mask M``
        repaints the region a mask marks; ``--edit SEED --model M`` edits the picture by
        each line of the cell with an editing model (FLUX.1 Kontext). As a line
        magic (``%batchgen --vary 5``) the image's own prompt is kept. ``%batchgen --code SEED``
        puts the diffusers code that makes that image again into the next cell.
        ``{name}`` in a prompt is filled from the namespace; any other ``{...}`` is a
        template: ``{red|blue}`` makes every combination, ``__name__`` reads a wildcard
        file (``\{`` is a literal brace). ``--x steps=10,20 --y guidance=3,7`` makes an
        X/Y/Z grid. A line starting with ``#`` is a comment, and ``\#`` starts a prompt
        with a literal ``#``. Prompts take A1111's weights, ``(word:1.3)``, ``(word)``,
        ``[word]`` and ``BREAK``, and any length (``\(`` is a literal bracket).

        A batch that makes no image (an error, Cancel or Ctrl-C before the first chunk)
        leaves ``--out`` and the last result as they were. Ctrl-C keeps and stores the
        finished images, then stops the cell (and "Run All") with KeyboardInterrupt.
        """
        try:  # shell-style quoting, so that --negative "blurry, dark" loses its quotes
            argv = shlex.split(line)
        except ValueError as error:
            raise UsageError(f"cannot read the options: {error}") from None
        args = self.batchgen.parser.parse_args(argv)
        if args.code is not None:
            self._code(args, cell)
            return
        try:
            settings, jobs, parent = self._plan(args, cell or "")
            saver = Saver(args.save or args.autosave) if args.save or args.autosave else None
            if args.ray_address is not None and args.workers is None:
                raise ValueError("--ray-address goes with --workers")
            if args.workers is None and parent is not None and parent.runner is not None:
                runner = parent.runner  # a refinement runs where its batch ran (its workers, its session)
            else:
                runner = default_session().runner(args.workers, args.ray_address)
        except ValueError as error:
            if not raised_by_nbbatch(error):
                raise  # a library's error: its traceback says where
            raise UsageError(_said(error)) from None
        live = not (args.no_preview or args.no_display)
        with ProgressDisplay(jobs if live else ()) as progress:
            try:
                result = run_batch(
                    settings,
                    jobs,
                    parent=parent,
                    observer=Observers([progress, saver if args.autosave else None]),
                    raise_on_failure=False,
                    runner=runner,
                )
            except ValueError as error:
                if not raised_by_nbbatch(error):
                    raise
                raise UsageError(_said(error)) from None
        if not result.items:
            kept = f"{args.out} is unchanged" if args.out in self.shell.user_ns else f"{args.out} was not set"
            if result.status == "failed":
                _stop(f"the batch stopped before any image was made: {_said(result.error)}; {kept}", result.error)
            print(f"{result.status} before any image was made; {kept}")
            if result.status == "interrupted":
                raise KeyboardInterrupt
            return
        self.shell.user_ns[args.out] = result
        self.last = result
        if not args.no_display:
            display(result)
        if result.status in ("cancelled", "interrupted"):
            print(f"{result.status} after {len(result)} of {result.total} images; they are in {args.out}")
        if saver is not None:
            try:
                if args.save:
                    saver.add(result.items)
                saver.add_grid(result.grid(), result.items)
            except (OSError, ValueError) as error:
                raise UsageError(f"could not save to {saver.folder}: {error}; the images are in {args.out}") from None
            print(f"saved {len(saver.written)} images and the grid to {saver.folder}")
        if result.status == "failed":
            kept = f"its {len(result)} finished images are in {args.out}"
            _stop(f"the batch stopped: {_said(result.error)}; {kept}", result.error)
        if result.status == "interrupted":
            raise KeyboardInterrupt  # stop "Run All" here; the finished images are stored

    @line_magic
    def batchgen_panel(self, line: str) -> Any:
        """Show the nbbatch panel: prompts, settings, Generate, progress, Cancel, a seed grid and Refine."""
        from nbbatch.notebook.panel import Panel

        return Panel()

    def _plan(self, args: Namespace, cell: str) -> tuple[Settings, tuple[Job, ...], BatchResult | None]:
        """Turn the arguments and the cell into settings, jobs and the parent result, or raise ValueError."""
        if not args.out.isidentifier() or keyword.iskeyword(args.out):
            raise ValueError(f"--out needs a variable name, not {args.out!r}")
        if hasattr(builtins, args.out):
            print(f"note: --out {args.out} hides Python's built-in {args.out}() in this notebook")
        prompts = parse_prompt_lines(cell, self.shell.user_ns)
        given = {setting.name: getattr(args, setting.name) for setting in SETTINGS}
        given = {name: value for name, value in given.items() if value is not None}
        if args.save and args.autosave:
            raise ValueError("--save and --autosave do not go together: choose one")
        operations = [
            f"--{name}" for name in ("refine", "vary", "hires", "inpaint", "edit") if getattr(args, name) is not None
        ]
        if len(operations) > 1:
            raise ValueError(f"{operations[0]} and {operations[1]} do not go together: choose one")
        hires_options = [flag for flag, value in HIRES_OPTIONS.items() if getattr(args, value) is not None]
        if hires_options and args.hires is None:
            raise ValueError(f"{', '.join(hires_options)} go with --hires SEED")
        if args.mask is not None and args.inpaint is None and args.image is None:
            raise ValueError("--mask goes with --inpaint SEED or --image")
        if not operations:
            if args.source is not None or args.prompt_index is not None or args.allow_download:
                raise ValueError(
                    "--from, --prompt-index and --allow-download go with --refine, --vary, --hires, --inpaint or --edit"
                )
            if "strength" in given and args.image is None:
                raise ValueError("--strength is for image-to-image: give --image too")
            settings, jobs = plan(
                prompts,
                args.seeds,
                num=args.num,
                negative_prompt=args.negative or "",
                images=self._images(args.image) if args.image is not None else (),
                mask=self._mask(args.mask) if args.mask is not None else None,
                x=args.x,
                y=args.y,
                z=args.z,
                wildcards=args.wildcards,
                random=args.random,
                random_seed=args.random_seed,
                **given,
            )
            return settings, jobs, None
        if args.x or args.y or args.z or args.random is not None:
            raise ValueError(f"--x, --y, --z and --random make a new batch: they do not go with {operations[0]}")
        prompts = [prompt.text for prompt in expand(prompts, wildcards=args.wildcards)]
        parent = self._source(args.source)
        if args.image is not None:
            raise ValueError(f"--image does not go with {operations[0]}: it starts from the chosen image")
        if args.refine is not None:
            if args.seeds is not None or args.num is not None:
                raise ValueError("--refine reuses the saved generator state of its seed: --seeds and --num don't apply")
            item = parent.by_seed(args.refine, args.prompt_index)
            settings, jobs = refine_jobs(item, prompts or [item.prompt], args.negative, given, args.allow_download)
            return settings, jobs, parent
        if args.inpaint is not None:
            if args.mask is None:
                raise ValueError(
                    "--inpaint needs --mask: a variable holding a picture or array, a file, or box:x0,y0,x1,y1"
                )
            if args.seeds is not None or args.num is not None:
                raise ValueError(
                    "--inpaint reuses the saved generator state of its seed: --seeds and --num don't apply"
                )
            item = parent.by_seed(args.inpaint, args.prompt_index)
            mask = self._mask(args.mask)
            settings, jobs = inpaint_jobs(item, mask, prompts or None, args.negative, given, args.allow_download)
            return settings, jobs, parent
        if args.edit is not None:
            if not prompts:
                raise ValueError('--edit needs instructions: one per line of the cell ("make the circle green")')
            if args.negative is not None or "strength" in given:
                raise ValueError("--edit takes instructions, not --negative or --strength: the picture is given whole")
            item = parent.by_seed(args.edit, args.prompt_index)
            seeds = (
                None if args.seeds is None and args.num is None else choose_seeds(args.seeds, args.num, default=None)
            )
            model = given.pop("model", None)
            settings, jobs = edit_jobs(item, prompts, model, seeds, given, args.allow_download)
            return settings, jobs, parent
        if args.hires is not None:
            if args.seeds is not None or args.num is not None:
                raise ValueError("--hires reuses the saved generator state of its seed: --seeds and --num don't apply")
            if len(prompts) > 1 or "strength" in given:
                raise ValueError("--hires takes one prompt (or none) and --hires-strength, not --strength")
            item = parent.by_seed(args.hires, args.prompt_index)
            settings, jobs = hires_jobs(
                item,
                2.0 if args.scale is None else args.scale,
                0.45 if args.hires_strength is None else args.hires_strength,
                prompts[0] if prompts else None,
                args.hires_upscaler or "lanczos",
                given,
                args.allow_download,
            )
            return settings, jobs, parent
        item = parent.by_seed(args.vary, args.prompt_index)
        if len(prompts) > 1:
            raise ValueError("--vary takes one prompt (or none, to keep the image's prompt)")
        seeds = choose_seeds(args.seeds, args.num, default=None)
        settings, jobs = vary_jobs(
            item, prompts[0] if prompts else None, seeds, args.negative, given, args.allow_download
        )
        return settings, jobs, parent

    def _code(self, args: Namespace, cell: str | None) -> None:
        """``--code SEED``: the image's diffusers code into the next cell (`set_next_input`) and the output."""
        defaults = self.batchgen.parser.parse_args([])
        others = [
            f"--{name.replace('_', '-')}"
            for name, value in vars(args).items()
            if name not in ("code", "source", "prompt_index") and value != getattr(defaults, name)
        ]
        try:
            if others or (cell or "").strip():
                what = ", ".join(others) if others else "prompts"
                raise ValueError(f"--code makes no images: it takes only --from and --prompt-index, not {what}")
            code = self._source(args.source).code(args.code, args.prompt_index)
        except ValueError as error:
            raise UsageError(_said(error)) from None
        self.shell.set_next_input(code, replace=False)
        print(code, end="")

    def _source(self, name: str | None) -> BatchResult:
        if name is None:
            if self.last is None:
                raise ValueError("nothing to refine yet: run a batch first, or pass --from NAME")
            return self.last
        value = self.shell.user_ns.get(name)
        if not isinstance(value, BatchResult):
            raise ValueError(f"--from {name}: no batch result in a variable of that name")
        return value

    def _mask(self, name: str) -> Any:
        """--mask: a namespace variable (a picture or an array), else the text itself (a file, folder, glob or box)."""
        return self.shell.user_ns.get(name, name) if name.isidentifier() else name

    def _images(self, name: str) -> Any:
        """--image: a namespace variable (a picture, a path, or a list of either), a picture file, a folder or a glob.

        `nbbatch.core.pictures.gather_pictures` reads the files; `prepare_images` checks the pictures.
        """
        value = self.shell.user_ns.get(name, name)
        if isinstance(value, (list, tuple)) and not value:
            raise ValueError(f"--image {name}: the list is empty")
        if value is name and not os.path.exists(os.path.expanduser(name)) and not any(c in name for c in "*?["):
            raise ValueError(f"--image {name!r} is neither a variable nor a picture file, a folder or a glob")
        return value


HIRES_OPTIONS = {"--scale": "scale", "--hires-strength": "hires_strength", "--hires-upscaler": "hires_upscaler"}
"""The options that go with ``--hires``, by the name argparse gives them."""

FLAGS = {
    **{setting.name: setting.flag for setting in SETTINGS},
    **{name: flag for flag, name in HIRES_OPTIONS.items()},
    "prompt_index": "--prompt-index",
}
"""The magic's option for each name a `SettingError` may carry (the Python keyword it stands for)."""


def _stop(message: str, error: BaseException | None) -> NoReturn:
    """Stop the cell with `message`: one line for nbbatch's own refusals.

    For a library's `error`, the line goes to stderr and the error itself is raised, so that
    its traceback shows where it came from.
    """
    if error is not None and not raised_by_nbbatch(error):
        print(message, file=sys.stderr)
        raise error
    raise UsageError(message)


def _said(error: BaseException | None) -> str:
    """An error's first line as the magic's user reads it: a `SettingError` names its option (``--true-cfg``)."""
    if isinstance(error, SettingError):
        needs = FLAGS.get(error.needs, error.needs) if error.needs else None
        return first_line(error.said_as(FLAGS.get(error.field, error.field), needs))
    return first_line(error)
