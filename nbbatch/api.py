"""The Python API: `generate` a batch, `load` saved images and `reproduce` one of them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nbbatch.core.axes import with_axes
from nbbatch.core.errors import SettingError
from nbbatch.core.observer import QUIET, Observer
from nbbatch.core.result import BatchError, BatchResult, run_batch
from nbbatch.core.spec import Job, Settings, make_jobs
from nbbatch.formats.png import read_items
from nbbatch.session import Session, default_session
from nbbatch.settings import SETTINGS

if TYPE_CHECKING:
    from nbbatch.core.engine import CancelFlag

__all__ = ["BatchError", "generate", "load", "plan", "reproduce"]


def plan(
    prompts: str | Sequence[str],
    seeds: str | int | Sequence[int] | None = None,
    *,
    num: int | None = None,
    negative_prompt: str = "",
    images: Any = (),
    mask: Any = None,
    model: str | None = None,
    x: str | tuple[str, Sequence[Any]] | None = None,
    y: str | tuple[str, Sequence[Any]] | None = None,
    z: str | tuple[str, Sequence[Any]] | None = None,
    wildcards: str | os.PathLike | None = None,
    random: int | None = None,
    random_seed: int | None = None,
    **settings: Any,
) -> tuple[Settings, tuple[Job, ...]]:
    """The settings and the jobs (one per image, in order) that `generate` would run, checked, nothing run.

    Takes `generate`'s arguments; the command line's sweeps plan with it too.
    """
    known = [setting.name for setting in SETTINGS if setting.name != "model"]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise SettingError(unknown[0], f"is not a setting: the settings are {', '.join(known)}")
    settings_ = Settings(**({"model": model} if model is not None else {}), **settings)
    jobs = make_jobs(
        prompts,
        seeds,
        num,
        negative_prompt,
        images,
        settings_,
        wildcards=wildcards,
        random=random,
        random_seed=random_seed,
        mask=mask,
    )
    return settings_, with_axes(settings_, jobs, x, y, z, seeds_given=seeds is not None or num is not None)


def generate(
    prompts: str | Sequence[str],
    seeds: str | int | Sequence[int] | None = None,
    *,
    observer: Observer = QUIET,
    cancel: CancelFlag | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    session: Session | None = None,
    **options: Any,
) -> BatchResult:
    """Make every prompt with every seed, one generator per image, and return the result.

    `prompts` is a list, or text with one prompt per line (as in the magic); templates
    such as ``{red|blue}`` and ``__wildcard__`` (read from the `wildcards` folder) expand
    to every combination, or to `random` draws from `random_seed`. `seeds` is a list, an
    int, or text such as ``"0-7,10"`` (default ``"0-3"``); `num` draws that many random
    seeds instead. `images` makes it image-to-image: a picture (PIL image, HxWx3 uint8
    or 0-1 float array, tensor), a file, a folder or a glob (``"shots/*.png"``, sorted by
    name), or a list of any of these; every picture is made with every prompt and seed
    (pictures x prompts x seeds), each at its own size unless width and height are given,
    and a picture read from a file records its name (``seed 3 · cat.png``). `mask` makes each
    picture an inpaint: one mask for all (a picture, an array, a file, ``"box:x0,y0,x1,y1"``),
    or a folder or glob of masks matched to the pictures by file name. `x`, `y` and `z` make an X/Y/Z
    grid: ``x="steps=10,20,30"`` or ``x=("guidance", [3, 5.5, 8])``. `model` defaults to
    ``nbbatch:shapes`` (or ``$NBBATCH_MODEL``). Other keywords are the settings of
    `nbbatch.settings.SETTINGS` (`Settings` fields): SETTING_NAMES. `observer` watches the
    run (an `nbbatch.Observer`: ``Observer(progress=print)`` prints the progress at every
    step; one with a `preview` gets step previews of the images in flight, a `Preview` of
    positions in the batch, step and PIL pictures, at most four a second, for models whose
    latents have known colours). `cancel` (a `threading.Event`) stops the run at the next
    step. A cancel or interrupt returns the finished images with ``complete`` False; an
    error raises `BatchError`, whose ``result`` holds them.

    `workers` spreads the batch over that many Ray workers (one GPU each where the
    cluster has GPUs) in chunks of the batch size: the same images in the same order,
    streamed back chunk by chunk (no step previews). It joins the Ray this process started,
    else the cluster at `ray_address` (or ``$RAY_ADDRESS``), else starts a local one.
    It runs in `session` (its pipeline and workers; default: `default_session()`).
    """
    runner = (session or default_session()).runner(workers, ray_address)
    settings, jobs = plan(prompts, seeds, **options)
    return run_batch(settings, jobs, observer=observer, cancel=cancel, runner=runner)


generate.__doc__ = (generate.__doc__ or "").replace(
    "SETTING_NAMES", ", ".join(setting.name for setting in SETTINGS if setting.name != "model")
)


def load(path: str | os.PathLike, *, session: Session | None = None) -> BatchResult:
    """Read images back with their parameters: one PNG, or a folder (its index, or every PNG in it).

    An nbbatch PNG gives the exact item (refine and reproduce work on it); a PNG from
    another tool (A1111 family, ComfyUI, Fooocus, InvokeAI, NovelAI, SwarmUI, JSON
    parameters: `nbbatch.formats.foreign`) gives what it wrote, to vary or start a batch from.
    Refinements whose parent is loaded too get their parent link back; they run in `session`.
    """
    items = read_items(path)
    settings = items[0].settings if items else Settings()
    runner = (session or default_session()).runner()
    return BatchResult(items, settings, total=len(items), placement="loaded from disk", runner=runner)


def reproduce(
    path: str | os.PathLike, index: int = 0, *, allow_download: bool = False, session: Session | None = None
) -> BatchResult:
    """Make a saved image again, from its record: same settings, same generator state, same pixels.

    `index` picks the image when `path` is a folder or an index; a failure raises `BatchError`.
    The record's model, LoRAs and embeddings load only from the picture's folder, the
    built-in models or the download cache, unless `allow_download` (see `nbbatch.formats.trust`).
    """
    loaded = load(path, session=session)
    if not isinstance(index, int) or isinstance(index, bool) or not -len(loaded) <= index < len(loaded):
        raise ValueError(f"there is no image {index!r} in {str(path)!r}: it holds {len(loaded)} image(s)")
    item = loaded[index]
    if item.foreign:
        raise ValueError(f"{str(path)!r} was not made by nbbatch: it has no generator state to reproduce")
    job = Job(
        item.prompt,
        item.seed,
        0,
        item.negative_prompt,
        item.init_image,
        item.state,
        None,
        item.origin,
        provenance=item.provenance.as_plain(),
        mask=item.mask,
    )
    runner = (session or default_session()).runner()
    return run_batch(item.settings_to_remake({}, allow_download), [job], runner=runner)
