"""The Python API: `generate` a batch, and `execute` jobs with settings (what refine, the magic and panel share)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from nbbatch.pipelines import apply_memory_options, generator_device, get_pipeline
from nbbatch.result import BatchResult, Item
from nbbatch.run import call_arguments, run_jobs
from nbbatch.seeds import parse_seeds, random_seeds
from nbbatch.spec import DEFAULT_MODEL, Job, Settings, build_jobs, prepare_images

if TYPE_CHECKING:
    from PIL import Image

    from nbbatch.run import CancelFlag, Made, Progress


class BatchError(RuntimeError):
    """A batch stopped on an error; `result` holds every image finished before it."""

    def __init__(self, message: str, result: BatchResult) -> None:
        super().__init__(message)
        self.result = result


def generate(
    prompts: str | Sequence[str],
    seeds: str | int | Sequence[int] | None = None,
    *,
    num: int | None = None,
    negative_prompt: str = "",
    images: Image.Image | Sequence[Image.Image] = (),
    model: str = DEFAULT_MODEL,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelFlag | None = None,
    **settings: Any,
) -> BatchResult:
    """Make every prompt with every seed, one generator per image, and return the result.

    `seeds` is a list, an int, or text such as ``"0-7,10"`` (default ``"0-3"``); `num`
    draws that many random seeds instead. `images` makes it image-to-image (one per
    prompt, or one for all). Other keywords are `Settings` fields (steps, guidance,
    width, height, strength, scheduler, dtype, device, generator_device, batch_size,
    offload, vae_tiling, variant). A cancel or interrupt returns the finished images
    with ``complete`` False; an error raises `BatchError`, whose ``result`` holds them.
    """
    settings_ = Settings(model=model, **settings)
    jobs = make_jobs(prompts, seeds, num, negative_prompt, images, settings_)
    result = execute(settings_, jobs, on_progress=on_progress, cancel=cancel)
    if result.status == "failed":
        raise BatchError(result.summary(), result)
    return result


def make_jobs(
    prompts: str | Sequence[str],
    seeds: str | int | Sequence[int] | None,
    num: int | None,
    negative_prompt: str,
    images: Image.Image | Sequence[Image.Image],
    settings: Settings,
) -> tuple[Job, ...]:
    """Validate prompts, seeds and input images into jobs, before any model is loaded."""
    seed_list = choose_seeds(seeds, num)
    if not isinstance(images, (list, tuple)):
        images = [images]
    if images:
        settings.image_to_image_steps()
    prepared = prepare_images(images, settings.width, settings.height)
    return build_jobs(prompts, seed_list, negative_prompt, prepared)


def choose_seeds(
    seeds: str | int | Sequence[int] | None, num: int | None, default: tuple[int, ...] | None = (0, 1, 2, 3)
) -> tuple[int, ...]:
    """The seeds asked for: a list, an int or text such as ``"0-7,10"``; or `num` random ones; or `default`.

    A `default` of None draws four random seeds.
    """
    if seeds is not None and num is not None:
        raise ValueError("give seeds or a number of random seeds, not both")
    if num is not None:
        return random_seeds(num)
    if seeds is None:
        return default if default is not None else random_seeds(4)
    if isinstance(seeds, str):
        return parse_seeds(seeds)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return parse_seeds(str(seeds))
    return parse_seeds(",".join(str(s) for s in seeds)) if seeds else ()


def execute(
    settings: Settings,
    jobs: Sequence[Job],
    *,
    parent: BatchResult | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelFlag | None = None,
    on_chunk: Callable[[list[Item]], None] | None = None,
) -> BatchResult:
    """Load (or reuse) the pipeline, run `jobs`, and wrap what was made in a `BatchResult`.

    `on_chunk` sees each chunk's items as soon as they are finished (for autosave).
    """
    if not jobs:
        raise ValueError("nothing to make: no jobs")
    if not _running.acquire(blocking=False):
        raise ValueError("another batch is running (in the panel?): wait for it, or Cancel it")
    try:
        return _execute(settings, jobs, parent, on_progress, cancel, on_chunk)
    finally:
        _running.release()


_running = threading.Lock()
"""Held while a batch runs: a pipeline (its scheduler above all) serves one call at a time."""


def _execute(
    settings: Settings,
    jobs: Sequence[Job],
    parent: BatchResult | None,
    on_progress: Callable[[Progress], None] | None,
    cancel: CancelFlag | None,
    on_chunk: Callable[[list[Item]], None] | None,
) -> BatchResult:
    loaded = get_pipeline(settings)
    device = generator_device(settings)
    image_to_image = jobs[0].init_image is not None
    pipe = loaded.view(image_to_image, settings.scheduler)
    apply_memory_options(pipe, settings)
    arguments = call_arguments(pipe, settings, image_to_image)
    auto = settings.batch_size == "auto"
    common: dict[str, Any] = {
        "model": settings.model,
        "pipeline": type(pipe).__name__,
        "scheduler": type(pipe.scheduler).__name__,
        "scheduler_config": MappingProxyType(dict(pipe.scheduler.config)),
        "dtype": loaded.placement.dtype,
        "device": loaded.placement.device,
        "generator_device": device,
        **arguments,
    }
    items: list[Item] = []

    def collect(made: list[Made]) -> None:
        new = [
            Item(
                m.image,
                m.job.seed,
                m.job.prompt,
                m.job.negative_prompt,
                m.job.prompt_index,
                settings,
                MappingProxyType({**common, "width": m.image.width, "height": m.image.height}),
                m.state,
                m.job.init_image,
                m.job.parent,
                m.job.origin,
                m.broken,
            )
            for m in made
        ]
        items.extend(new)
        if on_chunk is not None:
            on_chunk(new)

    outcome = run_jobs(
        pipe,
        jobs,
        arguments,
        steps=settings.image_to_image_steps() if image_to_image else settings.steps,
        generator_device=device,
        batch_size=(loaded.working_batch_size if auto else settings.batch_size) or None,
        back_off=auto,
        on_progress=on_progress,
        cancel=cancel,
        on_chunk=collect,
    )
    if auto and outcome.made:
        loaded.working_batch_size = outcome.batch_size
    result = BatchResult(
        items,
        settings,
        total=len(jobs),
        status=outcome.status,
        error=outcome.error,
        elapsed=outcome.elapsed,
        placement=loaded.placement.reason,
        batch_size=outcome.batch_size,
        parent=parent,
    )
    if result.broken:
        warnings.warn(broken_message(result), RuntimeWarning, stacklevel=2)
    return result


def broken_message(result: BatchResult) -> str:
    """The warning for NaN or all-black images: which seeds, and the usual fix."""
    seeds = ", ".join(str(item.seed) for item in result.broken)
    return (
        f"{len(result.broken)} image(s) came out NaN or all black (seeds {seeds}). In float16 this is "
        "usually the VAE overflowing (known on SDXL): use --dtype fp32, a VAE that upcasts to float32 "
        "(force_upcast in its config), or an fp16-fixed VAE such as madebyollin/sdxl-vae-fp16-fix."
    )
