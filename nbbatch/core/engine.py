"""Running jobs: load the pipeline, call it in chunks with one generator per image, progress, cancel, back-off.

Each chunk is one pipeline call with lists of prompts and generators, as the diffusers
batch guide shows. Every generator is made fresh from its image's seed or saved state
and that initial state is kept, so any image can be made again alone. Finished chunks
are never lost: a cancel, a kernel interrupt or an error ends the run with what is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from nbbatch.core.attention import check_prompt, is_plain
from nbbatch.core.item import Item
from nbbatch.core.seeds import generator_state, make_generator, slerp
from nbbatch.core.spec import check_variation
from nbbatch.models.conditioning import Conditioner, cut_text, supports
from nbbatch.models.families import family_of
from nbbatch.models.pipelines import (
    Loaded,
    apply_memory_options,
    check_steps,
    denoising_calls,
    free_memory,
    generator_device,
    get_pipeline,
)
from nbbatch.models.previews import Preview, StepPreviewer
from nbbatch.models.quiet import quiet_call
from nbbatch.models.speedups import SPEEDUPS, apply_speedups

if TYPE_CHECKING:
    from PIL import Image

    from nbbatch.core.spec import Job, Settings

Status = Literal["complete", "cancelled", "interrupted", "failed"]

ChunkCallback = Callable[[list[Item], int], None]
"""Called with a finished chunk's items and the position of its first image among the batch's jobs."""


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
    unguided = family_of(pipe).unguided(pipe)
    if unguided is not None and settings.guidance is not None:
        raise ValueError(unguided)
    guidance = settings.guidance
    if guidance is None:
        guidance = (model_defaults or {}).get("guidance")
    if guidance is None and "guidance_scale" in defaults:
        guidance = defaults["guidance_scale"].default
    if _is_number(guidance) and unguided is None:  # left out where the pipeline names none (**kwargs) or ignores it
        arguments["guidance_scale"] = guidance
    if image_to_image:
        settings.image_to_image_steps()
        arguments["strength"] = settings.strength
    else:  # a size left unset is not passed: Sana and AuraFlow default to 1024 only when none is given
        arguments.update({name: getattr(settings, name) for name in ("width", "height") if getattr(settings, name)})
    if settings.clip_skip is not None and settings.clip_skip > 1:
        arguments["clip_skip"] = settings.clip_skip - 1  # diffusers counts the layers skipped
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
    variation: tuple[int | None, float] = (None, 0.0),
    conditioner: Conditioner | None = None,
    previewer: StepPreviewer | None = None,
    on_preview: Callable[[Preview], None] | None = None,
) -> Outcome:
    """Run `jobs` in chunks of at most `batch_size` images (all at once when None).

    `arguments` go to every pipeline call (see `call_arguments`); `steps` is how many
    denoising steps each call runs, for the progress. With `back_off`, an out-of-memory
    error halves the chunk and retries it; finished images are kept either way.
    `variation` is a variation seed and strength (see `starting_noise`). With a
    `conditioner`, chunks that need it are given embeddings rather than prompt text
    (weighted or long prompts, clip skip; see `nbbatch.models.conditioning`). With a
    `previewer`, `on_preview` gets pictures of the chunk in flight (positions in `jobs`).
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
                if on_preview is not None and previewer is not None and not stop["cancelled"] and previewer.due():
                    positions = tuple(range(len(made), len(made) + chunk))
                    on_preview(Preview(positions, step + 1, steps, previewer.pictures(tensors["latents"])))
                return tensors

            report(0, len(chunk))
            try:
                images = _call(
                    pipe,
                    [jobs[i] for i in chunk],
                    [states[i] for i in chunk],
                    generator_device,
                    arguments,
                    on_step_end,
                    variation,
                    conditioner,
                    previewer if on_preview is not None else None,
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
    variation: tuple[int | None, float],
    conditioner: Conditioner | None = None,
    previewer: StepPreviewer | None = None,
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
    if variation[0] is not None:
        kwargs["latents"] = starting_noise(pipe, kwargs["generator"], arguments, device, *variation)
    negatives = [job.negative_prompt or None for job in jobs]
    if conditioner is not None and conditioner.needed(kwargs["prompt"], negatives):
        for key in ("prompt", "negative_prompt", "clip_skip"):
            kwargs.pop(key, None)
        kwargs.update(conditioner.arguments([job.prompt for job in jobs], negatives))
    kwargs["callback_on_step_end"] = on_step_end
    kwargs["output_type"] = "np"
    with previewer.capturing(pipe.scheduler) if previewer is not None else contextlib.nullcontext(), quiet_call():
        pixels = np.asarray(pipe(**kwargs).images, dtype=np.float32)
    broken = ~np.isfinite(pixels).all(axis=(1, 2, 3))
    pixels = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
    images = VaeImageProcessor.numpy_to_pil(pixels)
    return [(image, bool(bad) or image.getextrema() == ((0, 0),) * 3) for image, bad in zip(images, broken)]


def starting_noise(
    pipe: Any, generators: list[Any], arguments: dict[str, Any], device: str, variation_seed: int, strength: float
) -> Any:
    """Each image's starting noise blended towards the variation seed's: ``slerp(strength, noise, variation)``.

    The noise is drawn from each image's own generator exactly as the pipeline would
    draw it (same shape, dtype and device, packed as its family packs it: see
    `nbbatch.models.families`), so strength 0 gives the seed's own image; the generators
    are then passed on, already past that draw, as they would be.
    """
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    family = family_of(pipe)
    shape = family.noise_shape(pipe, arguments.get("height"), arguments.get("width"))
    dtype = family.noise_dtype(pipe)
    target = pipe._execution_device
    other = randn_tensor(shape, generator=make_generator(device, variation_seed), device=target, dtype=dtype).float()
    blended = []
    for generator in generators:
        own = randn_tensor(shape, generator=generator, device=target, dtype=dtype)
        blended.append(slerp(strength, own.float(), other).to(dtype))
    return family.pack(pipe, torch.cat(blended))


@dataclass
class Run:
    """What `execute` made: the finished items, how the run ended, where it ran and the chunk size used.

    `positions` are the items' places among the jobs, where a stopped run on several
    workers leaves gaps; None means the first ``len(items)`` jobs, in order.
    """

    items: list[Item]
    status: Status
    error: BaseException | None
    elapsed: float
    placement: str
    batch_size: int
    positions: list[int] | None = None


class Runner(Protocol):
    """What runs a batch's jobs and hands back a `Run`: `execute` in this process, or a pool of Ray workers."""

    def __call__(
        self,
        settings: Settings,
        jobs: Sequence[Job],
        *,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: CancelFlag | None = None,
        on_chunk: ChunkCallback | None = None,
        on_preview: Callable[[Preview], None] | None = None,
    ) -> Run:
        """Run `jobs` as `execute` does: errors before the first image raise, later ones end the run."""
        ...


def execute(
    settings: Settings,
    jobs: Sequence[Job],
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelFlag | None = None,
    on_chunk: ChunkCallback | None = None,
    on_preview: Callable[[Preview], None] | None = None,
) -> Run:
    """Load (or reuse) the pipeline and run `jobs`; one batch at a time in the whole process.

    `on_chunk` sees each chunk's items (and its first position) as soon as they are finished (for autosave);
    `on_preview` gets step previews of the images in flight, at most four a second, where
    the model's latents have known colours (see `nbbatch.models.previews`). An
    error while loading is raised before anything runs; an error, a cancel or a kernel
    interrupt during the run ends it with every finished item in the returned `Run`.
    """
    if not jobs:
        raise ValueError("nothing to make: no jobs")
    if not _running.acquire(blocking=False):
        raise ValueError("another batch is running (in the panel?): wait for it, or Cancel it")
    try:
        return _execute(settings, jobs, on_progress, cancel, on_chunk, on_preview)
    finally:
        _running.release()


_running = threading.Lock()
"""Held while a batch runs: a pipeline (its scheduler above all) serves one call at a time."""


def _execute(
    settings: Settings,
    jobs: Sequence[Job],
    on_progress: Callable[[Progress], None] | None,
    cancel: CancelFlag | None,
    on_chunk: ChunkCallback | None,
    on_preview: Callable[[Preview], None] | None = None,
) -> Run:
    start = time.perf_counter()
    prepared = [_prepare(segment_settings, segment) for segment_settings, segment in _segments(settings, jobs)]
    segments = [part for segment in prepared for part in segment.split()]
    items: list[Item] = []
    outcome = None
    for segment in segments:  # each one pipeline view; a grid's cells with equal settings share one
        offset = len(items)

        def shifted(progress: Progress, offset: int = offset) -> None:
            elapsed = time.perf_counter() - start
            if on_progress is not None:
                on_progress(
                    dataclasses.replace(progress, done=progress.done + offset, total=len(jobs), elapsed=elapsed)
                )

        def collect(made: list[Made], segment: _Segment = segment) -> None:
            new = [segment.item(m) for m in made]
            first = len(items)
            items.extend(new)
            if on_chunk is not None:
                on_chunk(new, first)

        def preview(shown: Preview, offset: int = offset) -> None:
            assert on_preview is not None  # passed on only when there is one
            on_preview(dataclasses.replace(shown, positions=tuple(p + offset for p in shown.positions)))

        outcome = segment.run(shifted, cancel, collect, preview if on_preview is not None else None)
        if outcome.status != "complete":
            break
    assert outcome is not None  # there is at least one segment: jobs is not empty
    broken = [item.seed for item in items if item.broken]
    if broken:
        warnings.warn(broken_message(broken, segments[0].loaded.placement.dtype), RuntimeWarning, stacklevel=3)
    elapsed = time.perf_counter() - start
    placement = segments[0].loaded.placement.reason
    return Run(items, outcome.status, outcome.error, elapsed, placement, outcome.batch_size)


def _segments(settings: Settings, jobs: Sequence[Job]) -> list[tuple[Settings, list[Job]]]:
    """Runs of consecutive jobs that share their settings (a job's own, else the batch's)."""
    segments: list[tuple[Settings, list[Job]]] = []
    for job in jobs:
        own = job.settings or settings
        if segments and segments[-1][0] == own:
            segments[-1][1].append(job)
        else:
            segments.append((own, [job]))
    return segments


@dataclass
class _Segment:
    """Jobs that run with one settings: the pipeline view and call arguments, ready before anything runs."""

    settings: Settings
    jobs: list[Job]
    loaded: Loaded
    pipe: Any
    arguments: dict[str, Any]
    common: dict[str, Any]
    steps: int
    conditioner: Conditioner | None
    previewer: StepPreviewer | None

    def split(self) -> list[_Segment]:
        """Runs of consecutive jobs whose prompt embeddings have one length: only those can share a call.

        That is a length nbbatch's own encoding makes (weighted or long prompts), or the token
        counts of a family that pads every prompt to the batch's longest with no mask (CogView4),
        so that an image is the same in any batch as alone.
        """
        family = family_of(self.pipe)
        if self.conditioner is None and not family.pads_to_longest:
            return [self]
        counted: dict[str, int] = {}  # each text tokenized once, however many seeds share it

        def count(text: str) -> int:
            if text not in counted:
                counted[text] = family.token_count(self.pipe, text)
            return counted[text]

        runs: list[tuple[Any, list[Job]]] = []
        for job in self.jobs:
            if self.conditioner is not None:
                length: Any = self.conditioner.length(job.prompt, job.negative_prompt or None)
            else:
                length = (count(job.prompt), count(job.negative_prompt))
            if runs and runs[-1][0] == length:
                runs[-1][1].append(job)
            else:
                runs.append((length, [job]))
        return [dataclasses.replace(self, jobs=run) for _, run in runs]

    def run(
        self,
        on_progress: Callable[[Progress], None],
        cancel: CancelFlag | None,
        on_chunk: Callable[[list[Made]], None],
        on_preview: Callable[[Preview], None] | None = None,
    ) -> Outcome:
        settings = self.settings
        apply_memory_options(self.pipe, settings, self.loaded.placement.device)
        self.loaded.adapters.activate(self.pipe, settings.loras)
        auto = settings.batch_size == "auto"
        outcome = run_jobs(
            self.pipe,
            self.jobs,
            self.arguments,
            steps=self.steps,
            generator_device=self.common["generator_device"],
            batch_size=(self.loaded.working_batch_size if auto else settings.batch_size) or None,
            back_off=auto,
            on_progress=on_progress,
            cancel=cancel,
            on_chunk=on_chunk,
            variation=(settings.variation_seed, settings.variation_strength),
            conditioner=self.conditioner,
            previewer=self.previewer,
            on_preview=on_preview,
        )
        if auto and outcome.made:
            self.loaded.working_batch_size = outcome.batch_size
        return outcome

    def item(self, made: Made) -> Item:
        job = made.job
        params = {**self.common, "width": made.image.width, "height": made.image.height, **job.extra}
        if self.conditioner is not None and self.conditioner.needed([job.prompt], [job.negative_prompt or None]):
            params["encoded_by"] = "compel"  # its embeddings were built here, not by the pipeline: see code export
        return Item(
            image=made.image,
            seed=job.seed,
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            prompt_index=job.prompt_index,
            settings=self.settings,
            params=MappingProxyType(params),
            state=made.state,
            init_image=job.init_image,
            parent=job.parent,
            origin=job.origin,
            broken=made.broken,
        )


def _prepare(settings: Settings, jobs: list[Job]) -> _Segment:
    """Load (or reuse) the pipeline and make the segment's view: errors here come before any image."""
    loaded = get_pipeline(settings)
    device = generator_device(settings)
    image_to_image = jobs[0].init_image is not None
    check_variation(settings, image_to_image)  # a grid cell or a refinement may bring one
    pipe = loaded.view(image_to_image, settings.scheduler)
    check_steps(pipe.scheduler, settings.steps)
    arguments = call_arguments(pipe, settings, image_to_image, loaded.defaults)
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
    if settings.variation_seed is not None:
        common["variation_seed"] = settings.variation_seed
        common["variation_strength"] = settings.variation_strength
    wanted = {name for name in SPEEDUPS if getattr(settings, name)}
    if "fuse_qkv" in wanted:
        if settings.loras:
            raise ValueError("fuse_qkv does not go with LoRAs (their layers wrap the projections it fuses): drop one")
        loaded.adapters.unload_loras(loaded.pipe)  # those of earlier batches: loaded again when asked for
    apply_speedups(loaded.pipe, loaded.speedups, wanted)
    if wanted:
        common["speedups"] = tuple(name for name in SPEEDUPS if name in wanted)
    if settings.loras:
        common["loras"] = tuple(MappingProxyType(r) for r in loaded.adapters.load_loras(loaded.pipe, settings.loras))
    embeddings = loaded.adapters.load_embeddings(loaded.pipe, settings.embeddings)
    if embeddings:
        common["embeddings"] = tuple(MappingProxyType(r) for r in embeddings)
    family = family_of(pipe)
    if family.negative is not None and any(job.negative_prompt for job in jobs):
        raise ValueError(family.negative)
    _check_clip_skip(pipe, settings.clip_skip)
    conditioner = Conditioner(pipe, settings.clip_skip) if family.weights and supports(pipe) else None
    _check_prompts(pipe, jobs, conditioner is not None)
    first = jobs[0].init_image
    height, width = (first.height, first.width) if first is not None else (settings.height, settings.width)
    timesteps = family.timestep_options(pipe.scheduler, pipe, height, width)
    steps = denoising_calls(pipe.scheduler, settings.steps, settings.strength if image_to_image else None, **timesteps)
    previewer = None
    if loaded.latent_map is not None:
        shape = family.noise_shape(pipe, height, width)
        unpack = functools.partial(family.unpack, shape=shape) if family.latents == "packed" else None
        previewer = StepPreviewer(loaded.latent_map, pipe.vae_scale_factor, unpack)
    return _Segment(settings, jobs, loaded, pipe, arguments, common, steps, conditioner, previewer)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_clip_skip(pipe: Any, clip_skip: int | None) -> None:
    """Refuse a clip skip past the text encoder's layers (the built-in model's has few)."""
    config = getattr(getattr(pipe, "text_encoder", None), "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    if clip_skip and clip_skip > 1 and isinstance(layers, int) and clip_skip > layers:
        raise ValueError(f"clip skip {clip_skip} reaches past the text encoder, which has {layers} layers")


def _check_prompts(pipe: Any, jobs: list[Job], weights: bool) -> None:
    """Refuse weight syntax it cannot read (or, on a pipeline without `weights` support, any); warn of a cut prompt."""
    texts = dict.fromkeys(text for job in jobs for text in (job.prompt, job.negative_prompt) if text)
    for text in texts:
        check_prompt(text)
        if not weights and not is_plain(text):
            raise ValueError(
                f"prompt weights and BREAK need an SD 1.x/2.x or SDXL pipeline; {type(pipe).__name__} reads "
                f"{text!r} as plain text: write \\( \\) \\[ \\] for brackets"
            )
        cut = None if weights else cut_text(*family_of(pipe).prompt_window(pipe), text)
        if cut:
            warnings.warn(
                f"prompt {text!r} is longer than the text encoder reads: {cut!r} is cut off "
                f"({type(pipe).__name__} has no long-prompt support in nbbatch)",
                UserWarning,
                stacklevel=4,
            )


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
