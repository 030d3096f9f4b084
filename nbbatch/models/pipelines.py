"""Loading pipelines once per kernel: device and dtype choice, the cache, schedulers and image-to-image.

The text-to-image pipeline is loaded with `AutoPipelineForText2Image.from_pretrained`
(a hub id, a local folder, or a built-in ``nbbatch:`` model), or with `DiffusionPipeline.from_pretrained`
where the auto mapping has no entry for it (HiDream). Image-to-image and other
schedulers are views made with `from_pipe`, which share the loaded weights.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbbatch.core.errors import SettingError, first_line
from nbbatch.core.spec import Settings
from nbbatch.models import shapes
from nbbatch.models.adapters import Adapters
from nbbatch.models.families import Companion, check_family, family_named, family_of
from nbbatch.models.previews import LatentMap, latent_map
from nbbatch.models.quiet import quiet_loading
from nbbatch.models.standins import STANDINS, build_pipeline
from nbbatch.models.tiny import BUILTIN_MODELS, builtin_path

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

DTYPE_NAMES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}

SCHEDULERS = {
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "heun": "HeunDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
}
"""Short scheduler names; any diffusers scheduler class name is accepted too."""

SAMPLER_VARIANTS = {"dpm++2m-sde": ("dpm++2m", {"algorithm_type": "sde-dpmsolver++"})}
"""Short names that are a scheduler with settings of its own (A1111's DPM++ 2M SDE)."""

SCHEDULES = {
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
}
"""Noise schedules, written after a scheduler name as A1111 spells them: ``dpm++2m-karras``, ``euler-exponential``."""


@dataclass(frozen=True)
class Placement:
    """Where a pipeline runs and in which dtype, with the reason in words."""

    device: str
    dtype: str
    reason: str

    def torch_dtype(self) -> torch.dtype:
        """The dtype as a torch dtype."""
        import torch

        return getattr(torch, self.dtype)


def choose_placement(device: str = "auto", dtype: str = "auto", *, cuda: bool | None = None) -> Placement:
    """Pick the device and dtype: ``auto`` is CUDA in float16 when CUDA is there, else the CPU in float32.

    float32 on the CPU because float16 there is slow or unsupported on many processors
    (``--dtype fp16`` still works where the CPU has it). `cuda` overrides the check,
    so the choice can be tested on any machine.
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda else "cpu"
        why = "CUDA is available" if cuda else "no CUDA device found"
    else:
        why = "as asked"
        if device.startswith("cuda") and not cuda:
            raise SettingError(
                "device", f"{device!r} asked for, but CUDA is not available here: use cpu", predicate=False
            )
        if device == "mps" and not _mps_available():
            raise SettingError(
                "device", "'mps' asked for, but Apple's MPS is not available here: use cpu", predicate=False
            )
    if dtype == "auto":
        dtype = "float16" if device.startswith(("cuda", "mps")) else "float32"
        why += f"; {dtype} is the default on {device.split(':')[0]}"
    else:
        dtype = DTYPE_NAMES[dtype]
    return Placement(device, dtype, f"{device}, {dtype} ({why})")


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def generator_device(settings: Settings, *, cuda: bool | None = None) -> str:
    """The device of the per-image generators; CPU unless asked, and CUDA only when present."""
    if settings.generator_device.startswith("cuda"):
        if cuda is None:
            import torch

            cuda = torch.cuda.is_available()
        if not cuda:
            raise SettingError(
                "generator_device", "cuda needs CUDA, which is not available here: use cpu", predicate=False
            )
    return settings.generator_device


@dataclass
class Loaded:
    """A loaded pipeline and its views (image-to-image, other schedulers), which share its weights.

    `working_batch_size` remembers the chunk size that last fit in memory, for ``batch_size="auto"``;
    `defaults` are the model folder's own defaults for settings left unset (its ``nbbatch.json``);
    `adapters` are the LoRAs and embeddings loaded into it; `latent_map` turns its latents into
    step previews (None: no preview for this model); `speedups` are those applied to its UNet;
    `vocabulary` is every word the model knows, where its folder says (the built-in one's caption words).
    """

    placement: Placement
    pipe: DiffusionPipeline
    views: dict[tuple[str, str | None], DiffusionPipeline] = field(default_factory=dict)
    working_batch_size: int | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    adapters: Adapters = field(default_factory=Adapters)
    latent_map: LatentMap | None = None
    speedups: set[str] = field(default_factory=set)
    vocabulary: dict[str, Any] | None = None
    refiners: dict[tuple[str, str | None], DiffusionPipeline] = field(default_factory=dict)

    def refiner(self, settings: Settings) -> DiffusionPipeline:
        """`settings.refiner` as an SDXL image-to-image pipeline sharing this one's VAE and second text encoder.

        Loaded on first use and kept with this pipeline (released with it), as the diffusers
        SDXL guide loads the refiner; with `settings.scheduler` where one is asked for.
        """
        model = settings.refiner or ""
        if (model, None) not in self.refiners:
            if family_of(self.pipe).name != "SDXL":
                raise SettingError(
                    "refiner",
                    f"takes SDXL latents over partway (denoising_end/denoising_start); "
                    f"{settings.model} is {family_of(self.pipe).name}: leave it out",
                )
            refiner = load_pipeline(
                resolve_model(model),
                self.placement,
                model,
                settings.variant,
                image_to_image=True,
                text_encoder_2=self.pipe.text_encoder_2,
                vae=self.pipe.vae,
            )
            if family_of(refiner).name != "SDXL":
                raise ValueError(f"the refiner {model} is {family_of(refiner).name}, not an SDXL model")
            place(refiner, self.placement, settings.offload)
            refiner.set_progress_bar_config(disable=True)
            self.refiners[(model, None)] = refiner
        key = (model, settings.scheduler)
        if key not in self.refiners:
            refiner = self.refiners[(model, None)]
            with quiet_loading():
                scheduler = make_scheduler(settings.scheduler or "", refiner.scheduler)
                self.refiners[key] = type(refiner).from_pipe(refiner, scheduler=scheduler)
            self.refiners[key].set_progress_bar_config(disable=True)
        return self.refiners[key]

    def view(self, image_to_image: bool, scheduler: str | None, inpaint: bool = False) -> DiffusionPipeline:
        """The pipeline to call: text-to-image, image-to-image or inpaint, with the scheduler asked for."""
        key = ("inpaint" if inpaint else "img2img" if image_to_image else "txt2img", scheduler)
        if key not in self.views:
            import diffusers

            kwargs = {"scheduler": make_scheduler(scheduler, self.pipe.scheduler)} if scheduler else {}
            family = family_of(self.pipe)
            if inpaint and family.inpaint is None:
                raise ValueError(f"{family.name} has no working inpaint pipeline in diffusers: inpaint needs one")
            if image_to_image and not inpaint and family.image_to_image is None and family.pipelines:
                raise ValueError(
                    f"{family.name} has no image-to-image pipeline in diffusers: --image, vary and hires fix need one"
                )
            maker = getattr(diffusers, family.image_to_image or "AutoPipelineForImage2Image")
            if inpaint:
                maker = getattr(diffusers, family.inpaint)
            with quiet_loading():  # from_pipe repeats loading-time notices (dtype, scheduler config) per view
                if image_to_image:
                    view = maker.from_pipe(self.pipe, **kwargs)
                elif kwargs:
                    view = type(self.pipe).from_pipe(self.pipe, **kwargs)
                else:
                    view = self.pipe
            view.set_progress_bar_config(disable=True)  # nbbatch shows one bar for the whole batch
            self.views[key] = view
        return self.views[key]


def apply_memory_options(pipe: Any, settings: Settings, device: str = "cpu") -> None:
    """VAE slicing on accelerators, VAE tiling when asked.

    Slicing decodes one image at a time, so the decode's peak memory stops growing with
    the batch (a little slower, the same pixels within one level): worth it where memory
    is scarce, on a GPU. On the CPU the batch decodes at once, which is faster there.
    Tiling decodes large images in overlapping tiles, which saves more memory but can
    show faint tone differences between tiles.
    """
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return
    if device.startswith(("cuda", "mps")) or settings.offload:
        vae.enable_slicing()
    else:
        vae.disable_slicing()
    if settings.vae_tiling:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


def make_scheduler(name: str, current: Any) -> Any:
    """A scheduler named `name` with `current`'s config: a short name or a diffusers class name, with a schedule.

    ``dpm++2m-karras`` is DPM++ 2M with Karras sigmas (`SCHEDULES` lists the schedules).
    A class that does not fit the pipeline (not among `current`'s compatibles, such as a
    flow-matching scheduler on Stable Diffusion), a schedule the class does not have, or
    a missing optional package is refused with a one-line ValueError.
    """
    import diffusers

    class_name, options, schedule, suffix = _parse_scheduler(name)
    scheduler_class = getattr(diffusers, class_name, None)
    if not class_name.endswith("Scheduler") or scheduler_class is None:
        known = ", ".join([*SCHEDULERS, *SAMPLER_VARIANTS])
        raise ValueError(
            f"unknown scheduler {name!r}: choose {known} (with -karras, -exponential or -beta for the schedule) "
            "or a diffusers scheduler class name"
        )
    fits = {type(current).__name__, *(c.__name__ for c in getattr(current, "compatibles", ()))}
    if class_name not in fits:
        raise ValueError(
            f"scheduler {class_name} does not fit this pipeline, which uses {type(current).__name__}: "
            f"choose {', '.join(sorted(fits))}"
        )
    if not _accepts(scheduler_class, schedule):
        raise ValueError(f"scheduler {class_name} has no {suffix} schedule: choose it without -{suffix}")
    try:
        return scheduler_class.from_config(current.config, **options, **schedule)
    except ImportError as error:
        package = re.search(r"requires the (\w+) library|install (\w+)", str(error))
        needed = next((group for group in package.groups() if group), "a missing") if package else "a missing"
        what = f"{class_name} with the {suffix} schedule" if schedule else class_name
        raise ValueError(f"scheduler {what} needs the {needed} package: pip install {needed}") from None


def takes_schedule(name: str) -> bool:
    """Whether `name` (``euler-a-karras``) is a diffusers scheduler that has its schedule's sigmas."""
    import diffusers

    class_name, _, schedule, _ = _parse_scheduler(name)
    scheduler_class = getattr(diffusers, class_name, None)
    return scheduler_class is not None and _accepts(scheduler_class, schedule)


def _parse_scheduler(name: str) -> tuple[str, dict[str, Any], dict[str, bool], str]:
    """A scheduler name's diffusers class name, its variant's options, its schedule's options and the schedule."""
    base, _, suffix = name.lower().rpartition("-")
    schedule = SCHEDULES.get(suffix, {}) if base else {}
    if not schedule:
        base = name.lower()
    base, options = SAMPLER_VARIANTS.get(base, (base, {}))
    class_name = SCHEDULERS.get(base, name.rpartition("-")[0] if schedule else name)
    return class_name, options, schedule, suffix


def _accepts(scheduler_class: Any, options: Mapping[str, Any]) -> bool:
    accepted = inspect.signature(scheduler_class.__init__).parameters
    return all(key in accepted for key in options)


def schedule_name(config: Mapping[str, Any]) -> str | None:
    """The A1111 ``Schedule type`` of a scheduler config: Karras, Exponential or Beta; None for the default."""
    for suffix, option in SCHEDULES.items():
        if all(config.get(key) for key in option):
            return suffix.capitalize()
    return None


def check_steps(scheduler: Any, steps: int) -> None:
    """Refuse step counts a scheduler cannot run (PNDM's Runge-Kutta warm-up needs at least 4)."""
    if type(scheduler).__name__ == "PNDMScheduler" and steps < 4:
        raise SettingError(
            "steps", f"must be at least 4 for the pndm scheduler, not {steps}: raise them or choose another"
        )


def denoising_calls(scheduler: Any, steps: int, strength: float | None = None, **options: Any) -> int:
    """How many times a pipeline call runs its step callback: one per entry of the scheduler's timesteps.

    Second-order schedulers (Heun, KDPM2) take about two per step and PNDM one more, so a
    progress counted in `steps` would pass 100%; image-to-image skips the first part.
    `options` go to ``set_timesteps`` as the pipeline passes them (``mu`` for a dynamic shift).
    """
    probe = type(scheduler).from_config(scheduler.config)
    probe.set_timesteps(steps, device="cpu", **options)
    calls = len(probe.timesteps)
    if strength is not None:
        skipped = steps - min(int(steps * strength), steps)
        calls -= skipped * getattr(probe, "order", 1)
    return max(calls, 1)


class PipelineCache:
    """The loaded pipeline of a session, reused by later batches, and the lock that lets one batch use it at a time.

    One pipeline is kept: loading another model (or dtype or device) releases the last
    one, so two large models never sit in GPU memory together (a second `Session` keeps
    its own). A pipeline, its scheduler above all, serves one call at a time: `lock` is
    held while a batch runs.
    """

    def __init__(self) -> None:
        self.loaded: dict[tuple[str, str, str, bool, str | None], Loaded] = {}
        self.lock = threading.Lock()

    def get(self, settings: Settings, *, cuda: bool | None = None) -> Loaded:
        """The pipeline for `settings`, loaded on first use; a failed load keeps the one loaded before."""
        placement = choose_placement(settings.device, settings.dtype, cuda=cuda)
        if settings.offload and not placement.device.startswith("cuda"):
            raise SettingError("offload", "moves models between the CPU and a GPU: it needs a CUDA device")
        source = resolve_model(settings.model)
        key = (source, placement.device, placement.dtype, settings.offload, settings.variant)
        if key not in self.loaded:
            if settings.model in STANDINS:
                self.clear()  # built right on its device: the last model leaves it first
                device = "cpu" if settings.offload else placement.device
                pipe = build_pipeline(settings.model, device, placement.torch_dtype())
                notes: dict[str, Any] = {"latent_rgb": None}  # random weights: no colours to preview
            else:
                pipe = load_pipeline(source, placement, settings.model, settings.variant)  # on failure the last stays
                check_family(pipe)  # a pipeline nbbatch cannot run is refused here, before the last one leaves
                self.clear()  # loading happens in CPU memory: the last model leaves the GPU before this one goes on
                notes = model_notes(source)
            place(pipe, placement, settings.offload)
            pipe.set_progress_bar_config(disable=True)
            self.loaded[key] = Loaded(
                placement,
                pipe,
                defaults=dict(notes.get("defaults", {})),
                latent_map=latent_map(pipe, notes),
                vocabulary=notes.get("vocabulary"),
            )
        return self.loaded[key]

    def clear(self) -> None:
        """Forget the loaded pipeline and free what it held on the GPU."""
        self.loaded.clear()
        free_memory()


def free_memory() -> None:
    """Collect garbage and hand cached CUDA memory back, e.g. after an out-of-memory error."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


BUILTIN_NAMES = (shapes.NAME, *BUILTIN_MODELS, *STANDINS)


def resolve_model(model: str) -> str:
    """The folder or hub id to load: built-in names become their folder; a missing local folder is an error."""
    if model == shapes.NAME:
        return str(shapes.WEIGHTS)
    if model in BUILTIN_MODELS:
        return str(builtin_path(model))  # built quietly on first use
    if model in STANDINS:
        return model  # built, not loaded: see nbbatch.models.standins
    if model.startswith("nbbatch:"):
        raise ValueError(f"unknown built-in model {model!r}: choose {', '.join(BUILTIN_NAMES)}")
    path = os.path.expanduser(model)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            raise ValueError(f"folder {model!r} is not a diffusers pipeline: it has no model_index.json")
        return os.path.abspath(path)
    looks_local = model.startswith(("/", "./", "../", "~", "\\")) or model.count("/") > 1 or os.sep + os.sep in model
    if looks_local or os.path.exists(path):
        raise ValueError(f"model folder {model!r} does not exist")
    return model


def model_notes(source: str) -> dict[str, Any]:
    """A model folder's ``nbbatch.json``: ``defaults`` for settings left unset, ``latent_rgb``.

    ``defaults`` holds e.g. the guidance, and under ``image_to_image`` those that differ for image-to-image.
    """
    path = os.path.join(source, "nbbatch.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as file:
        return dict(json.load(file))


def load_pipeline(
    source: str,
    placement: Placement,
    name: str,
    variant: str | None = None,
    image_to_image: bool = False,
    **components: Any,
) -> DiffusionPipeline:
    """`AutoPipelineForText2Image.from_pretrained(source, dtype=..., variant=...)`, with the loading bars silenced.

    A pipeline the auto mapping does not know (HiDream) is loaded with `DiffusionPipeline`, and a model its published
    repos leave out (HiDream's Llama) from the repo its model card names (`nbbatch.models.families.Companion`), as the
    card loads it. A `variant` such as ``"fp16"`` loads the weight files saved in that precision, where the model has
    them: half the download for an fp16 run. When the hub cannot be reached, only the download cache is tried, so the
    error comes at once rather than after retries. `image_to_image` loads its image-to-image pipeline instead (an SDXL
    refiner), with `components` taken from a loaded pipeline rather than from the files.
    """
    with quiet_loading():
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image, DiffusionPipeline
        from diffusers.pipelines.auto_pipeline import AUTO_TEXT2IMAGE_PIPELINES_MAPPING, SUPPORTED_TASKS_MAPPINGS

        offline = not os.path.isdir(source) and not hub_reachable()  # then only the download cache, no retries
        try:
            index = DiffusionPipeline.load_config(source, local_files_only=offline)
            name_of_class = str(index.get("_class_name", ""))
            if image_to_image:
                loader: Any = AutoPipelineForImage2Image
            elif _auto_key(name_of_class, SUPPORTED_TASKS_MAPPINGS) in AUTO_TEXT2IMAGE_PIPELINES_MAPPING:
                loader = AutoPipelineForText2Image  # an image-to-image or inpaint class too: its text-to-image one
            else:
                loader = DiffusionPipeline  # the class its model_index.json names; check_family refuses an unknown
            companion = family_named(name_of_class).companion
            if companion is not None and companion.missing(index) and not components:
                components = _companion(companion, placement)
            return loader.from_pretrained(
                source, dtype=placement.torch_dtype(), variant=variant, local_files_only=offline, **components
            )
        except (OSError, ValueError) as error:
            if offline:
                raise ValueError(
                    f"could not load model {name!r}: it is not in the download cache and the Hugging Face hub "
                    "cannot be reached (no network?): pass a local folder, or download it where there is a network"
                ) from None
            raise ValueError(f"could not load model {name!r}: {first_line(error)}") from error


def _auto_key(class_name: str, mappings: Any) -> str | None:
    """The auto pipelines' name for the family of pipeline class `class_name` (as they look it up), else None."""
    return next((key for mapping in mappings for key, cls in mapping.items() if cls.__name__ == class_name), None)


def _companion(companion: Companion, placement: Placement) -> dict[str, Any]:
    """The companion's parts, each loaded from its repo by its transformers class (models in the pipeline's dtype)."""
    import transformers

    offline = not os.path.isdir(companion.repo) and not hub_reachable()  # a local model may need the hub's Llama
    parts = {}
    for name, class_name in companion.parts:
        loader = getattr(transformers, class_name)
        options = {} if class_name.endswith("Tokenizer") else {"dtype": placement.torch_dtype()}
        try:
            parts[name] = loader.from_pretrained(companion.repo, local_files_only=offline, **options)
        except OSError as error:
            raise ValueError(
                f"this model's repo has no {name}: its model card loads it from {companion.repo}, which could not be "
                f"loaded ({first_line(error)}); on the hub it may ask you to accept its licence first"
            ) from None
    return parts


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within `timeout` seconds (False when offline)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def place(pipe: Any, placement: Placement, offload: bool) -> None:
    """Move `pipe` to its device, or install model CPU offload (one model on the GPU at a time).

    diffusers' notice that float16 "cannot run" on the CPU is silenced: it runs here (slowly on some
    processors), and the result's summary says which dtype was chosen and why.
    """
    with quiet_loading():
        if offload:
            pipe.enable_model_cpu_offload(device=placement.device)
        else:
            pipe.to(placement.device)
