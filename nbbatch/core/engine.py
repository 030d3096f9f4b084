"""Running jobs: load the pipeline, call it in chunks with one generator per image, progress, cancel, back-off.

Each chunk is one pipeline call with lists of prompts and generators, as the diffusers
batch guide shows. Every generator is made fresh from its image's seed or saved state
and that initial state is kept, so any image can be made again alone. Finished chunks
are never lost: a cancel, a kernel interrupt or an error ends the run with what is done.
"""

from __future__ import annotations

import inspect
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from nbbatch.core.item import Item
from nbbatch.core.seeds import generator_state, make_generator
from nbbatch.models.pipelines import (
    apply_memory_options,
    check_steps,
    denoising_calls,
    free_memory,
    generator_device,
    get_pipeline,
)

if TYPE_CHECKING:
    from PIL import Image

    from nbbatch.core.spec import Job, Settings

Status = Literal["complete", "cancelled", "interrupted", "failed"]


class CancelFlag(Protocol):
    """Anything with ``is_set()``, such as a `threading.Event`."""

    def is_set(self) -> bool:
        """True once the run should stop."""
        ...


@dataclass(frozen=True)
class Progress:
    """Where a run stands: images `done` of `total`, and the step of the chunk in flight."""

    done: int
    total: int
    chunk: int
    step: int
    steps: int
    elapsed: float

    @property
    def fraction(self) -> float:
        """The share of all denoising work finished, 0 to 1."""
        step = min(self.step, self.steps) / max(self.steps, 1)
        return min(1.0, (self.done + self.chunk * step) / max(self.total, 1))

    @property
    def eta(self) -> float | None:
        """Seconds left, extrapolated from the time so far; None before the first step."""
        if self.fraction <= 0:
            return None
        return max(0.0, self.elapsed * (1 - self.fraction) / self.fraction)

    def describe(self) -> str:
        """One line for a progress bar: images, step and time left."""
        if self.chunk and self.done < self.total:
            images = f"images {self.done + 1}-{self.done + self.chunk} of {self.total}"
            text = f"{images} · step {self.step}/{self.steps}"
        else:
            text = f"{self.done} of {self.total} images"
        eta = self.eta
        if eta is not None and self.done < self.total:
            text += f" · {eta:.1f} s left"
        return text


@dataclass(frozen=True)
class Made:
    """One finished image with the initial state of its generator."""

    job: Job
    image: Image.Image
    state: bytes
    broken: bool


@dataclass
class Outcome:
    """What a run made and how it ended; `batch_size` is the chunk size that last worked."""

    made: list[Made]
    status: Status
    error: BaseException | None
    batch_size: int
    elapsed: float


def call_arguments(
    pipe: Any, settings: Settings, image_to_image: bool, model_defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The pipeline arguments shared by every image, with the model's, then the pipeline's defaults filled in."""
    arguments: dict[str, Any] = {"num_inference_steps": settings.steps}
    defaults = inspect.signature(pipe.__call__).parameters
    guidance = settings.guidance
    if guidance is None:
        guidance = (model_defaults or {}).get("guidance")
    if guidance is None and "guidance_scale" in defaults:
        guidance = defaults["guidance_scale"].default
    arguments["guidance_scale"] = guidance
    if image_to_image:
        settings.image_to_image_steps()
        arguments["strength"] = settings.strength
    else:
        arguments["width"] = settings.width
        arguments["height"] = settings.height
    return arguments


def run_jobs(
    pipe: Any,
    jobs: Sequence[Job],
    arguments: dict[str, Any],
    *,
    steps: int,
    generator_device: str = "cpu",
    batch_size: int | None = None,
    back_off: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelFlag | None = None,
    on_chunk: Callable[[list[Made]], None] | None = None,
) -> Outcome:
    """Run `jobs` in chunks of at most `batch_size` images (all at once when None).

    `arguments` go to every pipeline call (see `call_arguments`); `steps` is how many
    denoising steps each call runs, for the progress. With `back_off`, an out-of-memory
    error halves the chunk and retries it; finished images are kept either way.
    Returns every finished image and how the run ended.
    """
    import torch

    size = min(batch_size or len(jobs), len(jobs)) or 1
    states = [_initial_state(job, generator_device) for job in jobs]
    made: list[Made] = []
    start = time.perf_counter()
    status: Status = "complete"
    error: BaseException | None = None
    stop = {"cancelled": False}

    def report(step: int, chunk: int) -> None:
        if on_progress is not None:
            on_progress(Progress(len(made), len(jobs), chunk, step, steps, time.perf_counter() - start))

    try:  # a kernel interrupt (Ctrl-C) or any error ends the run with what is finished
        while len(made) < len(jobs):
            if cancel is not None and cancel.is_set():
                status = "cancelled"
                break
            first = len(made)
            chunk = list(range(first, min(first + size, len(jobs))))

            def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict, chunk: int = len(chunk)) -> dict:
                if cancel is not None and cancel.is_set():
                    stop["cancelled"] = True
                    pipeline._interrupt = True  # diffusers skips the remaining steps of this call
                report(step + 1, chunk)
                return tensors

            report(0, len(chunk))
            try:
                images = _call(
                    pipe, [jobs[i] for i in chunk], [states[i] for i in chunk], generator_device, arguments, on_step_end
                )
            except torch.OutOfMemoryError as exc:
                free_memory()
                if back_off and size > 1:
                    size //= 2
                    continue
                status, error = "failed", exc
                break
            except Exception as exc:  # any failure ends the run; what is finished stays
                status, error = "failed", exc
                break
            if stop["cancelled"]:  # the VAE decoded half-denoised latents: not results
                status = "cancelled"
                break
            new = [Made(jobs[i], image, states[i], broken) for i, (image, broken) in zip(chunk, images)]
            made.extend(new)
            if on_chunk is not None:
                on_chunk(new)  # autosave may fail: the images are kept all the same
        report(0, 0)
    except KeyboardInterrupt:
        status = "interrupted"
    except Exception as exc:  # the caller's on_progress or on_chunk failed: stop, keep the images
        status, error = "failed", exc
    return Outcome(made, status, error, size, time.perf_counter() - start)


def _initial_state(job: Job, device: str) -> bytes:
    return job.state if job.state is not None else generator_state(make_generator(device, job.seed))


def _call(
    pipe: Any,
    jobs: list[Job],
    states: list[bytes],
    device: str,
    arguments: dict[str, Any],
    on_step_end: Callable,
) -> list[tuple[Image.Image, bool]]:
    """One pipeline call for a chunk; returns each image and whether it is broken (NaN or all black)."""
    from diffusers.image_processor import VaeImageProcessor

    kwargs = dict(arguments)
    kwargs["prompt"] = [job.prompt for job in jobs]
    if any(job.negative_prompt for job in jobs):  # None keeps each pipeline's own empty-negative behaviour
        kwargs["negative_prompt"] = [job.negative_prompt for job in jobs]
    if jobs[0].init_image is not None:
        kwargs["image"] = [job.init_image for job in jobs]
    kwargs["generator"] = [make_generator(device, job.seed, state) for job, state in zip(jobs, states)]
    kwargs["callback_on_step_end"] = on_step_end
    kwargs["output_type"] = "np"
    pixels = np.asarray(pipe(**kwargs).images, dtype=np.float32)
    broken = ~np.isfinite(pixels).all(axis=(1, 2, 3))
    pixels = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
    images = VaeImageProcessor.numpy_to_pil(pixels)
    return [(image, bool(bad) or image.getextrema() == ((0, 0),) * 3) for image, bad in zip(images, broken)]


@dataclass
class Run:
    """What `execute` made: the finished items, how the run ended, where it ran and the chunk size used."""

    items: list[Item]
    status: Status
    error: BaseException | None
    elapsed: float
    placement: str
    batch_size: int


def execute(
    settings: Settings,
    jobs: Sequence[Job],
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelFlag | None = None,
    on_chunk: Callable[[list[Item]], None] | None = None,
) -> Run:
    """Load (or reuse) the pipeline and run `jobs`; one batch at a time in the whole process.

    `on_chunk` sees each chunk's items as soon as they are finished (for autosave). An
    error while loading is raised before anything runs; an error, a cancel or a kernel
    interrupt during the run ends it with every finished item in the returned `Run`.
    """
    if not jobs:
        raise ValueError("nothing to make: no jobs")
    if not _running.acquire(blocking=False):
        raise ValueError("another batch is running (in the panel?): wait for it, or Cancel it")
    try:
        return _execute(settings, jobs, on_progress, cancel, on_chunk)
    finally:
        _running.release()


_running = threading.Lock()
"""Held while a batch runs: a pipeline (its scheduler above all) serves one call at a time."""


def _execute(
    settings: Settings,
    jobs: Sequence[Job],
    on_progress: Callable[[Progress], None] | None,
    cancel: CancelFlag | None,
    on_chunk: Callable[[list[Item]], None] | None,
) -> Run:
    loaded = get_pipeline(settings)
    device = generator_device(settings)
    image_to_image = jobs[0].init_image is not None
    pipe = loaded.view(image_to_image, settings.scheduler)
    check_steps(pipe.scheduler, settings.steps)
    apply_memory_options(pipe, settings, loaded.placement.device)
    arguments = call_arguments(pipe, settings, image_to_image, loaded.defaults)
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
        steps=denoising_calls(pipe.scheduler, settings.steps, settings.strength if image_to_image else None),
        generator_device=device,
        batch_size=(loaded.working_batch_size if auto else settings.batch_size) or None,
        back_off=auto,
        on_progress=on_progress,
        cancel=cancel,
        on_chunk=collect,
    )
    if auto and outcome.made:
        loaded.working_batch_size = outcome.batch_size
    broken = [item.seed for item in items if item.broken]
    if broken:
        warnings.warn(broken_message(broken, loaded.placement.dtype), RuntimeWarning, stacklevel=3)
    return Run(items, outcome.status, outcome.error, outcome.elapsed, loaded.placement.reason, outcome.batch_size)


def broken_message(seeds: Sequence[int], dtype: str) -> str:
    """The warning for NaN or all-black images: which seeds, and the usual fix for the dtype used."""
    shown = ", ".join(str(seed) for seed in seeds)
    text = f"{len(seeds)} image(s) came out NaN or all black (seeds {shown})."
    if dtype in ("float16", "bfloat16"):
        return text + (
            f" In {dtype} this is usually the VAE overflowing (known on SDXL): use --dtype fp32, a VAE that"
            " upcasts to float32 (force_upcast in its config), or an fp16-fixed VAE such as"
            " madebyollin/sdxl-vae-fp16-fix."
        )
    return text + " The run was already in float32: the model or its inputs produce these values."
