"""Model families: what differs between the kinds of diffusers pipeline, behind one seam the engine talks to.

A `Family` says, for the pipelines of one kind, how their starting noise is drawn and
passed (its shape per image, its dtype, packed or not), what their scheduler needs to set
its timesteps (FLUX.1-dev's dynamic shift ``mu``, computed as the pipeline computes it),
which pipeline class makes image-to-image from a loaded one, whether nbbatch may encode
their prompts itself (A1111 weights, long prompts: CLIP-only families) and whether a
negative prompt does anything. `family_of` finds a pipeline's family by its class.

Families so far: Stable Diffusion 1.x/2.x, SDXL and FLUX.1 (dev, with dynamic shift, and
schnell, with a static one). Other pipelines run as a generic family (the SD rules where
they apply) until their own family is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """The rules of one kind of pipeline (see the module's text); the base class is the UNet families'."""

    name: str
    pipelines: tuple[str, ...]
    image_to_image: str | None
    weights: bool = True
    negative: str | None = None
    """None when a negative prompt works; else why the family ignores it (the one-line refusal)."""

    def noise_shape(self, pipe: Any, height: int | None, width: int | None) -> tuple[int, ...]:
        """The shape of one image's starting noise as the pipeline draws it (before any packing)."""
        scale = pipe.vae_scale_factor
        height = height or pipe.unet.config.sample_size * scale
        width = width or pipe.unet.config.sample_size * scale
        return (1, pipe.unet.config.in_channels, height // scale, width // scale)

    def noise_dtype(self, pipe: Any) -> Any:
        """The dtype the pipeline draws its noise in (its prompt embeddings')."""
        encoder = getattr(pipe, "text_encoder", None)
        return encoder.dtype if encoder is not None else pipe.unet.dtype

    def pack(self, pipe: Any, noise: Any) -> Any:
        """The noise as the pipeline's ``latents=`` takes it."""
        return noise

    def timestep_options(self, scheduler: Any, pipe: Any, height: int | None, width: int | None) -> dict[str, Any]:
        """What ``set_timesteps`` needs besides the step count, as the pipeline passes it."""
        return {}

    def unguided(self, pipe: Any) -> str | None:
        """None when the pipeline's ``guidance_scale`` does something; else why not (the one-line refusal)."""
        return None

    def reader(self, pipe: Any) -> tuple[Any, int]:
        """The tokenizer whose window bounds what the model reads of a prompt, and that window in tokens."""
        tokenizer = getattr(pipe, "tokenizer", None)
        return tokenizer, getattr(tokenizer, "model_max_length", 0)


@dataclass(frozen=True)
class Flux(Family):
    """FLUX.1 dev and schnell: 16-channel latents packed into 2x2 patches; dev's scheduler shifts by image size."""

    def noise_shape(self, pipe: Any, height: int | None, width: int | None) -> tuple[int, ...]:
        """``(1, C, H, W)`` of the unpacked latents, each side even, as `FluxPipeline.prepare_latents` makes them."""
        scale = pipe.vae_scale_factor
        height = height or pipe.default_sample_size * scale
        width = width or pipe.default_sample_size * scale
        channels = pipe.transformer.config.in_channels // 4
        return (1, channels, 2 * (int(height) // (scale * 2)), 2 * (int(width) // (scale * 2)))

    def noise_dtype(self, pipe: Any) -> Any:
        """T5's dtype: FluxPipeline draws its noise in the prompt embeddings' dtype."""
        return pipe.text_encoder_2.dtype

    def pack(self, pipe: Any, noise: Any) -> Any:
        """`FluxPipeline._pack_latents`: 2x2 patches of the latent as tokens."""
        _, channels, height, width = noise.shape
        return pipe._pack_latents(noise, noise.shape[0], channels, height, width)

    def timestep_options(self, scheduler: Any, pipe: Any, height: int | None, width: int | None) -> dict[str, Any]:
        """``mu`` of a dynamic shift (FLUX.1-dev's scheduler), from the image's token count, as FluxPipeline does."""
        if not scheduler.config.get("use_dynamic_shifting"):
            return {}
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        _, _, rows, columns = self.noise_shape(pipe, height, width)
        config = scheduler.config
        mu = calculate_shift(
            (rows // 2) * (columns // 2),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        return {"mu": mu}

    def unguided(self, pipe: Any) -> str | None:
        """A transformer without a guidance embedding (schnell) ignores ``guidance_scale``."""
        if pipe.transformer.config.guidance_embeds:
            return None
        return "this FLUX.1 model (schnell) has no guidance: its transformer embeds none; leave guidance out"

    def reader(self, pipe: Any) -> tuple[Any, int]:
        """T5, up to FluxPipeline's default ``max_sequence_length`` (512): CLIP gives only the pooled embedding."""
        return pipe.tokenizer_2, 512


FLUX = Flux(
    "FLUX.1",
    ("FluxPipeline", "FluxImg2ImgPipeline"),
    "FluxImg2ImgPipeline",
    weights=False,
    negative="FluxPipeline ignores a negative prompt (distilled guidance, no second pass): leave it out",
)
FAMILIES = (
    Family(
        "Stable Diffusion",
        ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
        "StableDiffusionImg2ImgPipeline",
    ),
    Family(
        "SDXL", ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"), "StableDiffusionXLImg2ImgPipeline"
    ),
    FLUX,
)
"""The families nbbatch knows, by their pipelines' class names."""

GENERIC = Family("generic", (), None)
"""Pipelines of no known family: the SD rules, where they apply."""


def family_of(pipe: Any) -> Family:
    """The family of `pipe` by its class (or the class it was made from), else `GENERIC`."""
    names = {cls.__name__ for cls in type(pipe).__mro__}
    return next((family for family in FAMILIES if names & set(family.pipelines)), GENERIC)
