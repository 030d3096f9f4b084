"""The diffusers backend of the engine: a pass per settings, one pipeline call per chunk.

`DiffusersBackend.prepare` loads (or reuses) the pipeline, makes its view (image-to-image,
another scheduler), checks the prompts and settings against the model's family and works
out the call arguments, all before any image is made; each `DiffusersPass.call` then calls
the pipeline with one generator per image, as the diffusers batch guide shows. Its `execute`
is the engine (`nbbatch.core.engine.execute`) with this backend: the runner the front ends use
(one backend per `nbbatch.session.Session`, over the session's pipeline cache).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from nbbatch.core import engine
from nbbatch.core.attention import check_prompt, is_plain, parse_attention, plain_text
from nbbatch.core.errors import OutOfMemory, SettingError
from nbbatch.core.item import Item
from nbbatch.core.notices import notice
from nbbatch.core.observer import QUIET, Observer
from nbbatch.core.record import Call, Provenance
from nbbatch.core.seeds import make_generator, slerp
from nbbatch.core.spec import check_variation
from nbbatch.models.conditioning import (
    Conditioner,
    MaskedT5Conditioner,
    PromptEncoder,
    SD3Conditioner,
    T5Conditioner,
    cut_text,
    supports,
)
from nbbatch.models.families import FAMILIES, family_of
from nbbatch.models.pipelines import (
    Loaded,
    PipelineCache,
    apply_memory_options,
    check_steps,
    denoising_calls,
    free_memory,
    generator_device,
)
from nbbatch.models.previews import StepPreviewer
from nbbatch.models.quiet import quiet_call
from nbbatch.models.speedups import SPEEDUPS, apply_speedups

if TYPE_CHECKING:
    from PIL import Image

    from nbbatch.core.engine import CancelFlag, Made, Run, StepHook
    from nbbatch.core.spec import Job, Settings


def call_arguments(
    pipe: Any, settings: Settings, image_to_image: bool, model_defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The pipeline arguments shared by every image, with the model's, then the pipeline's defaults filled in.

    `model_defaults` are the model folder's (its ``nbbatch.json``); an ``image_to_image`` entry there holds
    those that differ for image-to-image (vary, hires fix, inpaint), as a model may need stronger guidance to
    repaint than to draw.
    """
    arguments: dict[str, Any] = {"num_inference_steps": settings.steps}
    defaults = inspect.signature(pipe.__call__).parameters
    family = family_of(pipe)
    unguided = family.unguided(pipe)
    if unguided is not None and settings.guidance is not None:
        raise ValueError(unguided)
    model = dict(model_defaults or {})
    own = model.pop("image_to_image", {})  # a model's defaults for image-to-image, where they differ
    if image_to_image:
        model.update(own)
    guidance = settings.guidance
    if guidance is None:
        guidance = model.get("guidance")
    if guidance is None and family.guidance in defaults:
        guidance = defaults[family.guidance].default
    if _is_number(guidance) and unguided is None:  # left out where the pipeline names none (**kwargs) or ignores it
        arguments[family.guidance] = guidance
    if settings.true_cfg is not None:
        if not family.true_cfg:
            what = f"guidance is its CFG ({family.guidance})"
            raise SettingError(
                "true_cfg", f"is FLUX.1's real CFG beside its distilled guidance; for {family.name} {what}"
            )
        arguments["true_cfg_scale"] = settings.true_cfg
    if settings.guidance_rescale:  # 0 is diffusers' own default: off
        if "guidance_rescale" not in defaults:
            raise SettingError(
                "guidance_rescale",
                f"diffusers' {type(pipe).__name__} has no guidance rescale (SD 1.x/2.x "
                "text-to-image and SDXL have it); pass 0 to go without",
                predicate=False,
            )
        arguments["guidance_rescale"] = settings.guidance_rescale
    family.check_sequence(pipe, settings.max_sequence_length)
    if settings.max_sequence_length is not None:
        arguments["max_sequence_length"] = settings.max_sequence_length
    if image_to_image:
        settings.image_to_image_steps()
        arguments["strength"] = settings.strength
    else:  # a size left unset is not passed: Sana and AuraFlow default to 1024 only when none is given
        arguments.update({name: getattr(settings, name) for name in ("width", "height") if getattr(settings, name)})
    if settings.clip_skip is not None and settings.clip_skip > 1:
        arguments["clip_skip"] = settings.clip_skip - 1  # diffusers counts the layers skipped
    return arguments


def masked_blend(pipe: Any, jobs: list[Job], generators: list[Any]) -> Callable[[Any, int, Any], Any]:
    """Inpaint by blending in image-to-image: after each step, outside the mask, the original noised to the next step.

    As diffusers' ``StableDiffusionInpaintPipeline`` does for a UNet that reads only latents:
    ``latents = (1 - mask) * add_noise(original, noise, next timestep) + mask * latents``, the
    original's own latents after the last step. The original is encoded with the VAE's mode,
    the mask (white: repaint) is binarised and cut to the latents' size, and the noise is
    drawn from each image's own generator at the first step, so an image is the same in any
    batch as alone. For models whose UNet diffusers' inpaint pipeline misreads (the built-in one).
    """
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    device = pipe._execution_device
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess([job.init_image for job in jobs]).to(device, vae.dtype)
    with torch.no_grad():
        original = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
    mask = torch.stack([torch.from_numpy(np.asarray(job.mask.convert("L"), dtype=np.float32) / 255) for job in jobs])
    mask = (mask[:, None] >= 0.5).to(device, original.dtype)
    mask = torch.nn.functional.interpolate(mask, size=original.shape[-2:])  # nearest, as diffusers cuts it
    noise: list[Any] = []

    def blend(pipeline: Any, step: int, latents: Any) -> Any:
        if not noise:
            noise.append(randn_tensor(original.shape, generator=generators, device=device, dtype=original.dtype))
        timesteps = pipeline.scheduler.timesteps[len(pipeline.scheduler.timesteps) - pipeline.num_timesteps :]
        proper = original
        if step + 1 < len(timesteps):
            proper = pipeline.scheduler.add_noise(original, noise[0], timesteps[step + 1 : step + 2])
        return (1 - mask) * proper.to(latents.dtype) + mask * latents

    return blend


def upscaled_latents(pipe: Any, pictures: list[Any], width: int | None, height: int | None) -> Any:
    """The pictures' latents upscaled to `width` x `height` (bilinear), as A1111's "Latent" hires upscaler does.

    Encoded with the VAE's mode (no randomness, so the generators stay untouched) and scaled
    as the image-to-image pipelines of SD 1.x/2.x and SDXL take latents in place of a picture.
    """
    import torch

    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(pictures).to(pipe._execution_device, vae.dtype)
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
    size = (int(height) // pipe.vae_scale_factor, int(width) // pipe.vae_scale_factor)
    return torch.nn.functional.interpolate(latents, size=size, mode="bilinear", align_corners=False)


def true_cfg(arguments: dict[str, Any]) -> bool:
    """Whether a call runs real CFG through ``true_cfg_scale``: then it is given the negative prompt, empty or not.

    FLUX.1 and Qwen-Image run that second pass only when a negative prompt is passed at all.
    """
    scale = arguments.get("true_cfg_scale")
    return scale is not None and scale > 1


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
class DiffusersPass:
    """Jobs that run with one settings on one pipeline view, with its call arguments (an `engine.Pass`)."""

    settings: Settings
    jobs: list[Job]
    loaded: Loaded
    pipe: Any
    arguments: dict[str, Any]
    recorded: Call
    """What each image's record says of the call (its size and prompt encoding are the image's own)."""
    steps: int
    conditioner: PromptEncoder | None
    previewer: StepPreviewer | None
    refiner: Any = None
    """The SDXL refiner that takes the latents over at ``settings.refiner_at`` (None: no hand-off)."""
    blend: bool = False
    """Whether nbbatch inpaints by blending at every step (a UNet diffusers' inpaint pipeline misreads)."""

    @property
    def generator_device(self) -> str:
        """Where each image's generator lives (its noise is drawn there)."""
        return self.recorded.generator_device

    @property
    def back_off(self) -> bool:
        """Whether an out-of-memory error halves the chunk: with ``batch_size="auto"``."""
        return self.settings.batch_size == "auto"

    @property
    def batch_size(self) -> int | None:
        """The chunk to start with: the size that last worked for this model when automatic."""
        return (self.loaded.working_batch_size if self.back_off else self.settings.batch_size) or None

    @property
    def dtype(self) -> str:
        """The dtype the pipeline runs in."""
        return self.loaded.placement.dtype

    @property
    def placement(self) -> str:
        """Where and in which dtype the pipeline runs, and why, in words."""
        return self.loaded.placement.reason

    def worked(self, batch_size: int) -> None:
        """Remember the chunk size that worked for the next automatic batch."""
        self.loaded.working_batch_size = batch_size

    def split(self) -> list[DiffusersPass]:
        """Runs of consecutive jobs whose prompt embeddings have one length: only those can share a call.

        Where the family takes one reference picture for a whole call (FLUX.2), a run also has one picture.

        That is a length nbbatch's own encoding makes (weighted or long prompts), or the token
        counts of a family that pads every prompt to the batch's longest with no mask (CogView4),
        so that an image is the same in any batch as alone.
        """
        family = family_of(self.pipe)
        if family.reference:  # a call's picture is every image's reference: one picture a call
            runs = itertools.groupby(self.jobs, key=lambda job: id(job.init_image))
            return [replace(self, jobs=list(run)) for _, run in runs]
        if self.conditioner is None and not family.pads_to_longest:
            return [self]
        counted: dict[str, int] = {}  # each text tokenized once, however many seeds share it

        def count(text: str) -> int:
            if text not in counted:
                counted[text] = family.token_count(self.pipe, text, self.settings.max_sequence_length)
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
        return [replace(self, jobs=run) for _, run in runs]

    def start(self) -> None:
        """Memory options and this pass's LoRAs, set on the shared pipeline just before its calls."""
        apply_memory_options(self.pipe, self.settings, self.loaded.placement.device)
        self.loaded.adapters.activate(self.pipe, self.settings.loras)

    def call(self, jobs: list[Job], states: list[bytes], on_step: StepHook) -> list[tuple[Image.Image, bool]]:
        """One pipeline call for a chunk; returns each image and whether it is broken (NaN or all black)."""
        import torch

        try:
            return self._call(jobs, states, on_step)
        except torch.OutOfMemoryError as exc:
            free_memory()
            raise OutOfMemory(str(exc)) from exc

    def _call(self, jobs: list[Job], states: list[bytes], on_step: StepHook) -> list[tuple[Image.Image, bool]]:
        from diffusers.image_processor import VaeImageProcessor

        pipe, previewer = self.pipe, self.previewer
        kwargs = dict(self.arguments)
        kwargs["prompt"] = [job.prompt for job in jobs]
        if any(job.negative_prompt for job in jobs) or true_cfg(self.arguments):
            kwargs["negative_prompt"] = [job.negative_prompt for job in jobs]  # else each pipeline's own default
        if jobs[0].init_image is not None:
            kwargs["image"] = [job.init_image for job in (jobs[:1] if family_of(pipe).reference else jobs)]
            if jobs[0].mask is not None and not self.blend:
                kwargs["mask_image"] = [job.mask for job in jobs]
            if "height" in inspect.signature(pipe.__call__).parameters:  # else FLUX's and others' make 1024 px
                kwargs["width"], kwargs["height"] = jobs[0].init_image.size
            if jobs[0].provenance.get("hires", {}).get("upscaler") == "latent":
                kwargs["image"] = upscaled_latents(pipe, kwargs["image"], self.settings.width, self.settings.height)
        if {"width", "height"} <= kwargs.keys() and "max_area" in inspect.signature(pipe.__call__).parameters:
            kwargs["max_area"] = kwargs["width"] * kwargs["height"]  # FLUX.1 Kontext fits its size to this area
        device = self.generator_device
        kwargs["generator"] = [make_generator(device, job.seed, state) for job, state in zip(jobs, states)]
        variation = (self.settings.variation_seed, self.settings.variation_strength)
        if variation[0] is not None:
            kwargs["latents"] = starting_noise(pipe, kwargs["generator"], self.arguments, device, *variation)
        negatives = [job.negative_prompt or None for job in jobs]
        if self.conditioner is not None and self.conditioner.needed(kwargs["prompt"], negatives):
            for key in ("prompt", "negative_prompt", "clip_skip"):
                kwargs.pop(key, None)
            kwargs.update(self.conditioner.arguments([job.prompt for job in jobs], negatives))
            if "negative_prompt_embeds" in kwargs:  # PixArt-Σ's default negative is "", refused beside embeddings
                kwargs["negative_prompt"] = None

        done = [0]  # steps of earlier calls of this chunk (the base's, before a refiner's)
        blend = masked_blend(pipe, jobs, kwargs["generator"]) if self.blend else None

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict) -> dict:
            if blend is not None:
                tensors = {**tensors, "latents": blend(pipeline, step, tensors["latents"])}
            pictures = None if previewer is None else functools.partial(previewer.pictures, tensors["latents"])
            if on_step(done[0] + step + 1, pictures):
                pipeline._interrupt = True  # diffusers skips the remaining steps of this call
            return tensors

        def legacy(step: int, timestep: Any, latents: Any) -> None:  # no stop: a cancel drops the chunk after it
            on_step(step + 1, None if previewer is None else functools.partial(previewer.pictures, latents))

        if family_of(pipe).legacy_callback:
            kwargs.update(callback=legacy, callback_steps=1)
        else:
            kwargs["callback_on_step_end"] = on_step_end
        kwargs["output_type"] = "np"
        if self.refiner is not None:
            pixels = self._hand_over(kwargs, done)
        else:
            with previewer.capturing(pipe.scheduler) if previewer else contextlib.nullcontext(), quiet_call():
                pixels = np.asarray(pipe(**kwargs).images, dtype=np.float32)
        broken = ~np.isfinite(pixels).all(axis=(1, 2, 3))
        pixels = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
        images = VaeImageProcessor.numpy_to_pil(pixels)
        made = [(image, bool(bad) or image.getextrema() == ((0, 0),) * 3) for image, bad in zip(images, broken)]
        if jobs[0].mask is not None:  # outside the mask, the original's pixels: not a VAE round trip of them
            overlay = pipe.image_processor.apply_overlay
            made = [(overlay(job.mask, job.init_image, image), bad) for job, (image, bad) in zip(jobs, made)]
        return made

    def _hand_over(self, kwargs: dict[str, Any], done: list[int]) -> Any:
        """The base's call up to ``refiner_at`` of the steps, then the refiner's from its latents: the pixels.

        As the diffusers SDXL guide's two calls (``denoising_end``, then ``denoising_start``),
        with each image's generator carried on from the base to the refiner.
        """
        at = float(self.recorded.refiner_at or 0.8)
        with quiet_call():
            latents = self.pipe(**{**kwargs, "denoising_end": at, "output_type": "latent"}).images
        if self.pipe.interrupt:  # a cancel: the engine drops this chunk
            return np.zeros((latents.shape[0], 8, 8, 3), dtype=np.float32)
        done[0] = self.pipe.num_timesteps  # the base's steps: the refiner's count on from there
        passed = ("prompt", "negative_prompt", "guidance_scale", "clip_skip", "num_inference_steps", "generator")
        refined = {name: kwargs[name] for name in passed if name in kwargs}
        refined.update(image=latents, denoising_start=at, output_type="np")
        refined["callback_on_step_end"] = kwargs["callback_on_step_end"]
        with quiet_call():
            return np.asarray(self.refiner(**refined).images, dtype=np.float32)

    def item(self, made: Made) -> Item:
        """The finished image as a result item, with the pass's settings, its call and its job's provenance."""
        job = made.job
        own: dict[str, Any] = family_of(self.pipe).recorded_size(self.pipe, self.arguments, made.image)
        if self.conditioner is not None and self.conditioner.needed([job.prompt], [job.negative_prompt or None]):
            own["encoded_by"] = "compel"  # its embeddings were built here, not by the pipeline: see code export
        return Item(
            image=made.image,
            seed=job.seed,
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            prompt_index=job.prompt_index,
            settings=self.settings,
            call=self.recorded.model_copy(update=own),
            provenance=Provenance.of(job.provenance),
            state=made.state,
            init_image=job.init_image,
            mask=job.mask,
            parent=job.parent,
            origin=job.origin,
            broken=made.broken,
        )


class DiffusersBackend:
    """Makes `DiffusersPass`es: loads (or reuses) the pipeline of its cache and checks everything before any image."""

    def __init__(self, pipelines: PipelineCache) -> None:
        self.pipelines = pipelines
        self.lock = pipelines.lock

    def execute(
        self,
        settings: Settings,
        jobs: Sequence[Job],
        *,
        observer: Observer = QUIET,
        cancel: CancelFlag | None = None,
    ) -> Run:
        """Load (or reuse) the pipeline and run `jobs` in this process (see `nbbatch.core.engine.execute`).

        Step previews come where the model's latents have known colours (see `nbbatch.models.previews`).
        """
        return engine.execute(settings, jobs, self, observer=observer, cancel=cancel)

    def prepare(self, settings: Settings, jobs: list[Job]) -> list[DiffusersPass]:
        """The passes for `jobs` with `settings`: one, or several where only prompts of one length share a call.

        Input pictures of other sizes run in passes of their own (one call takes one size).
        """
        runs = itertools.groupby(jobs, key=lambda job: None if job.init_image is None else job.init_image.size)
        return [part for _, run in runs for part in _prepare(settings, list(run), self.pipelines).split()]


def _prepare(settings: Settings, jobs: list[Job], pipelines: PipelineCache) -> DiffusersPass:
    """Load (or reuse) the pipeline and make the pass's view: errors here come before any image."""
    loaded = pipelines.get(settings)
    device = generator_device(settings)
    editor = family_of(loaded.pipe).edit
    if jobs[0].origin == "edit" and not editor:
        raise ValueError(
            f"{settings.model} is a {family_of(loaded.pipe).name} model ({type(loaded.pipe).__name__}), not an editing "
            "one: an edit needs a model that edits a picture by an instruction, such as "
            "black-forest-labs/FLUX.1-Kontext-dev"
        )
    family = family_of(loaded.pipe)
    if editor and jobs[0].mask is not None:
        raise ValueError(f"{family.name} has no working inpaint pipeline in diffusers: inpaint needs one")
    if editor and jobs[0].origin in ("vary", "hires"):
        raise ValueError(
            f"{family.name} has no image-to-image pipeline in diffusers: vary and hires fix need one; "
            "it edits the picture it is given by an instruction (edit, --image)"
        )
    image_to_image = jobs[0].init_image is not None and not editor  # an editing model takes the picture as it is
    check_variation(settings, image_to_image)  # a grid cell or a refinement may bring one
    blend = jobs[0].mask is not None and misread_by_inpaint(loaded.pipe)
    pipe = loaded.view(image_to_image, settings.scheduler, inpaint=jobs[0].mask is not None and not blend)
    check_steps(pipe.scheduler, settings.steps)
    arguments = call_arguments(pipe, settings, image_to_image, loaded.defaults)
    recorded: dict[str, Any] = {
        "model": settings.model,
        "pipeline": type(pipe).__name__,
        "scheduler": type(pipe.scheduler).__name__,
        "scheduler_config": dict(pipe.scheduler.config),
        "dtype": loaded.placement.dtype,
        "device": loaded.placement.device,
        "generator_device": device,
        **arguments,
    }
    companion = family_of(pipe).companion
    if companion is not None and companion.source(pipe):
        recorded["companion"] = companion.repo
    if settings.variation_seed is not None:
        recorded["variation_seed"] = settings.variation_seed
        recorded["variation_strength"] = settings.variation_strength
    wanted = {name for name in SPEEDUPS if getattr(settings, name)}
    if "fuse_qkv" in wanted:
        if settings.loras:
            raise SettingError(
                "fuse_qkv", "does not go with LoRAs (their layers wrap the projections it fuses): drop one"
            )
        loaded.adapters.unload_loras(loaded.pipe)  # those of earlier batches: loaded again when asked for
    apply_speedups(loaded.pipe, loaded.speedups, wanted)
    if wanted:
        recorded["speedups"] = tuple(name for name in SPEEDUPS if name in wanted)
    if settings.loras:
        recorded["loras"] = loaded.adapters.load_loras(loaded.pipe, settings.loras)
    embeddings = loaded.adapters.load_embeddings(loaded.pipe, settings.embeddings)
    if embeddings:
        recorded["embeddings"] = embeddings
    family = family_of(pipe)
    upscaler = jobs[0].provenance.get("hires", {}).get("upscaler")
    if upscaler == "latent" and (family.latents != "unet" or pipe.vae.config.get("latent_channels") != 4):
        raise ValueError(
            "the latent hires upscaler needs SD 1.x/2.x or SDXL's 4-channel latents (their image-to-image takes "
            f"those in place of a picture); {settings.model} has none: use the lanczos upscaler"
        )
    if family.negative is not None and not true_cfg(arguments) and any(job.negative_prompt for job in jobs):
        raise ValueError(family.negative)
    _check_clip_skip(pipe, settings.clip_skip)
    conditioner: PromptEncoder | None = None
    if family.weights == "clip" and supports(pipe):
        conditioner = Conditioner(pipe, settings.clip_skip)
    elif family.weights == "t5":
        window = settings.max_sequence_length or family.reader[1] or 512
        conditioner = T5Conditioner(pipe, window, true_cfg(arguments))
    elif family.weights == "sd3":
        window = settings.max_sequence_length or family.reader[1] or 256
        conditioner = SD3Conditioner(pipe, window, arguments.get("clip_skip"))
    elif family.weights in ("t5-masked", "t5-zeroed", "t5-exact"):
        window = settings.max_sequence_length or family.reader[1] or 512
        conditioner = MaskedT5Conditioner(pipe, window, mask=family.weights)
    check_prompts(pipe, jobs, conditioner, settings.max_sequence_length)
    if loaded.vocabulary:
        check_vocabulary(loaded.vocabulary, jobs, settings.model)
    first = jobs[0].init_image
    height, width = (first.height, first.width) if first is not None else (settings.height, settings.width)
    timesteps = family.timestep_options(pipe.scheduler, pipe, height, width, settings.steps)
    steps = denoising_calls(pipe.scheduler, settings.steps, settings.strength if image_to_image else None, **timesteps)
    refiner = None
    if settings.refiner is not None:
        if image_to_image or editor:
            raise ValueError(
                "a refiner takes a text-to-image batch's latents over: it does not go with input images, vary, "
                "hires fix, inpaint or edit"
            )
        refiner = loaded.refiner(settings)
        if conditioner is not None and any(
            conditioner.needed([job.prompt], [job.negative_prompt or None]) for job in jobs
        ):
            raise ValueError(
                "prompt weights, BREAK and prompts past 77 tokens do not go with a refiner yet: the refiner reads "
                "the plain prompt with its own text encoder"
            )
        recorded.update(refiner=settings.refiner, refiner_at=settings.refiner_at or 0.8)
    previewer = None
    if loaded.latent_map is not None:
        shape = family.noise_shape(pipe, height, width)
        unpack = functools.partial(family.unpack, shape=shape) if family.latents in ("packed", "patched") else None
        previewer = StepPreviewer(loaded.latent_map, pipe.vae_scale_factor, unpack)
    if blend:
        recorded["inpaint"] = "blend"  # made by nbbatch's blending: the code export says it cannot
    call = Call.of({**recorded, "width": 64, "height": 64})  # checked before any image; each image has its own size
    return DiffusersPass(settings, jobs, loaded, pipe, arguments, call, steps, conditioner, previewer, refiner, blend)


def misread_by_inpaint(pipe: Any) -> bool:
    """Whether diffusers' SD inpaint pipeline would misread `pipe`'s UNet: one of plain latents other than 4.

    The built-in model's UNet reads its VAE's 9 latent channels, which that pipeline takes for an
    inpainting UNet's (4 + 1 + 4); nbbatch then inpaints by blending (`masked_blend`).
    """
    unet, vae = getattr(pipe, "unet", None), getattr(pipe, "vae", None)
    if unet is None or vae is None:
        return False
    return unet.config.in_channels == vae.config.get("latent_channels") != 4


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_clip_skip(pipe: Any, clip_skip: int | None) -> None:
    """Refuse a clip skip past the text encoder's layers (the built-in model's has few)."""
    config = getattr(getattr(pipe, "text_encoder", None), "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    if clip_skip and clip_skip > 1 and isinstance(layers, int) and clip_skip > layers:
        raise SettingError(
            "clip_skip", f"{clip_skip} reaches past the text encoder, which has {layers} layers", predicate=False
        )


def check_vocabulary(vocabulary: dict[str, Any], jobs: list[Job], model: str) -> None:
    """Warn, once for the whole batch, of the prompt words a model with a closed vocabulary does not know."""
    known = {word for key in ("colours", "shapes", "words") for word in vocabulary.get(key, ())}
    texts = dict.fromkeys(text for job in jobs for text in (job.prompt, job.negative_prompt) if text)
    unknown = dict.fromkeys(word for text in texts for word in re.findall(r"[a-z]+", text.lower()) if word not in known)
    if unknown:
        shown = ", ".join(repr(word) for word in list(unknown)[:12]) + (" ..." if len(unknown) > 12 else "")
        notice(
            f"{model} does not know {shown}: it draws only '{vocabulary.get('caption', '')}' with colours "
            f"{', '.join(vocabulary.get('colours', ()))} and shapes {', '.join(vocabulary.get('shapes', ()))} "
            "(the pictures are still made)",
            UserWarning,
            stacklevel=7,  # the caller of execute
        )


def check_prompts(pipe: Any, jobs: list[Job], conditioner: PromptEncoder | None, window: int | None = None) -> None:
    """Refuse weight syntax it cannot read (any, where no `conditioner` reads weights); warn of a cut prompt.

    `window` is the ``max_sequence_length`` asked for, in place of the family's default.
    """
    family = family_of(pipe)
    texts = dict.fromkeys(text for job in jobs for text in (job.prompt, job.negative_prompt) if text)
    for text in texts:
        check_prompt(text)
        if conditioner is not None and not conditioner.reads_any_length and len(parse_attention(text)) > 1:
            reads = "one CLIP window and one T5 sequence" if family.weights == "sd3" else "one T5 sequence"
            raise ValueError(
                f"BREAK splits CLIP's 75-token windows; {family.name} reads {reads}: take it out of {text!r}"
            )
        if conditioner is None and not is_plain(text):
            readers = [f.name for f in FAMILIES if f.weights]
            raise ValueError(
                f"prompt weights are read on {', '.join(readers[:-1])} and {readers[-1]} pipelines; "
                f"{type(pipe).__name__} reads {text!r} as plain text: write \\( \\) \\[ \\] for brackets"
            )
        tokenizer, read = family.prompt_window(pipe, window)
        long = conditioner is not None and conditioner.reads_any_length
        cut = None if long else cut_text(tokenizer, read, plain_text(text) if conditioner is not None else text)
        if cut:
            asked = window or family.reader[1] or read
            if family.max_sequence is None:
                how = "no long-prompt support"
            elif asked < family.max_sequence:
                how = f"raise --max-sequence-length (up to {family.max_sequence})"
            else:
                how = f"{asked} tokens is the most it reads"
            notice(
                f"prompt {text!r} is longer than the text encoder reads: {cut!r} is cut off "
                f"({type(pipe).__name__}: {how})",
                UserWarning,
                stacklevel=7,  # the caller of execute
            )
