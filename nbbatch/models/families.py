"""Model families: what differs between the kinds of diffusers pipeline, behind one seam the engine talks to.

A `Family` says, for the pipelines of one kind, how their starting noise is drawn and
passed (its shape per image, its dtype, packed into 2x2 patches or not), what their
scheduler needs to set its timesteps (a dynamic shift's ``mu``, computed as the pipeline
computes it), which pipeline class makes image-to-image from a loaded one, whether
nbbatch may encode their prompts itself (A1111 weights and long prompts on the CLIP-only
families, weights on FLUX.1's T5), whether a negative prompt does anything, and which tokenizer bounds what the
model reads of a prompt. `family_of` finds a pipeline's family by its class.

Families so far: Stable Diffusion 1.x/2.x and SDXL (UNet latents), SD3/3.5, Z-Image, Lumina 2, PixArt-Σ, Sana,
AuraFlow, CogView4 and HiDream (unpacked transformer latents), FLUX.1 dev and schnell, Qwen-Image and Chroma (packed
latents), and FLUX.1 Kontext, which edits a picture it is given by an instruction (packed latents). `family_of`
refuses, in one line, a pipeline of no family it knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from nbbatch.core.errors import SettingError


@dataclass(frozen=True)
class Companion:
    """A model a family's published repos leave out, and the repo its model card loads it from.

    HiDream-I1's repos hold no Llama: its model card loads ``text_encoder_4`` and ``tokenizer_4``
    from Meta's Llama 3.1 8B Instruct. `parts` are each component and the transformers class that loads it.
    """

    repo: str
    parts: tuple[tuple[str, str], ...]

    def missing(self, index: dict[str, Any]) -> bool:
        """Whether a pipeline's ``model_index.json`` (`index`) leaves the companion out (absent or null)."""
        return any(not any(index.get(name) or ()) for name, _ in self.parts)

    def source(self, pipe: Any) -> str | None:
        """The repo if `pipe`'s companion was loaded from it (not from the model's own files), else None."""
        name, _ = self.parts[0]
        loaded = getattr(getattr(pipe, name, None), "config", None)
        return self.repo if getattr(loaded, "_name_or_path", None) == self.repo else None


@dataclass(frozen=True)
class Family:
    """The rules of one kind of pipeline (see the module's text).

    `latents`: ``unet`` (SD, SDXL), ``transformer`` (unpacked, SD3), ``packed`` (2x2
    patches as tokens, FLUX.1 and Chroma) or ``patched`` (2x2 patches as channels, drawn so at
    1/16 and flattened by the pipeline itself: FLUX.2). `embeddings` names the text encoder whose dtype
    the prompt embeddings, and so the noise, take. `reader` names the tokenizer that bounds
    a prompt and its window (None: the tokenizer's own). `negative` is None where a
    negative prompt works, else the one-line refusal. `guidance` is the call argument that
    ``--guidance`` sets: the scale the family's model cards use (Qwen-Image's real CFG is
    ``true_cfg_scale``); `true_cfg` says whether ``--true-cfg`` (real CFG beside a distilled
    guidance) applies. `max_sequence` is the most text tokens ``--max-sequence-length`` may
    ask for (None: the family has no such setting). `default_size` is the side the pipeline
    draws when none is given, where it is fixed rather than the model's sample size.
    """

    name: str
    pipelines: tuple[str, ...]
    image_to_image: str | None
    latents: Literal["unet", "transformer", "packed", "patched"] = "unet"
    embeddings: str = "text_encoder"
    reader: tuple[str, int | None] = ("tokenizer", None)
    weights: Literal["clip", "t5", "sd3", "t5-masked", "t5-zeroed", "t5-exact"] | None = "clip"
    """How nbbatch may encode prompts itself: ``clip`` (SD, SDXL: A1111 weights, ``BREAK``, any length), ``t5``
    (FLUX.1: A1111 weights on its T5 sequence, through compel), ``sd3`` (SD3: A1111 weights on its two CLIPs'
    and its T5's sequences, through compel), ``t5-masked`` (Chroma: A1111 weights on its T5 sequence, encoded and
    attended with the padding masked), ``t5-zeroed`` (AuraFlow: the same, the padding's embeddings zeroed),
    ``t5-exact`` (PixArt-Σ: the same, the mask of the prompt's tokens alone, each fragment preprocessed as the
    pipeline preprocesses a prompt), None
    (prompts go to the pipeline as text)."""
    negative: str | None = None
    pads_to_longest: bool = False
    """Whether the pipeline pads every prompt to the batch's longest: then only prompts of one length share a call."""
    float32_noise: bool = False
    shift_rule: Literal["flux", "cogview4", "flux2", "hidream"] = "flux"
    guidance: str = "guidance_scale"
    distilled: bool = False
    """Whether the guidance is embedded in the transformer (FLUX.1-dev), so a model without that embedding has none."""
    true_cfg: bool = False
    max_sequence: int | None = None
    default_size: int | None = None
    patch: int | None = None
    """The transformer's patch side where its config names it otherwise (Z-Image's ``all_patch_size``)."""
    inpaint: str | None = None
    """The diffusers inpaint pipeline made from a loaded one (None: the family has none)."""
    legacy_callback: bool = False
    """Whether the pipeline takes only the old ``callback(step, timestep, latents)`` (PixArt-Σ): no stop mid-call."""
    bins: tuple[tuple[int, str], ...] = ()
    """The aspect-ratio bins the pipeline rounds the size to first, and so draws noise at (PixArt-Σ, Sana): by the
    transformer's sample size, the diffusers table (``module.NAME`` under ``diffusers.pipelines``) it picks."""
    prefix: tuple[str, str] | None = None
    """The pipeline attribute it puts before every prompt, and the text between (Lumina 2's system prompt)."""
    edit: bool = False
    """Whether the pipeline edits a picture it is given as ``image`` by an instruction (FLUX.1 Kontext): no strength."""
    reference: bool = False
    """Whether ``image`` is one list of reference pictures for every image of a call (FLUX.2), not one per image:
    then a call holds the jobs of one picture, given once."""
    area: bool = False
    """Whether the pipeline scales any size asked for to its default area, keeping the aspect (HiDream)."""
    companion: Companion | None = None
    """A model the family's published repos leave out, loaded beside them (HiDream's Llama)."""

    def noise_shape(self, pipe: Any, height: int | None, width: int | None) -> tuple[int, ...]:
        """The shape of one image's starting noise as the pipeline draws it (before packing)."""
        scale = pipe.vae_scale_factor
        if self.latents == "unet":
            default = pipe.unet.config.sample_size * scale
            channels = pipe.unet.config.in_channels
        else:
            default = self.default_size or (
                (getattr(pipe, "default_sample_size", None) or pipe.transformer.config.sample_size) * scale
            )
            channels = pipe.transformer.config.in_channels
        height, width = int(height or default), int(width or default)
        if self.area:  # as HiDreamImagePipeline: to the default's area, each side a multiple of twice the VAE's scale
            ratio = math.sqrt(default**2 / (width * height))
            width, height = (int(side * ratio // (scale * 2) * (scale * 2)) for side in (width, height))
        if self.bins:  # the noise is drawn at the bin's size; the picture is resized back afterwards
            height, width = pipe.image_processor.classify_height_width_bin(height, width, ratios=self.bin_table(pipe))
        if self.latents == "packed":  # each side even, as FluxPipeline.prepare_latents makes it
            return (1, channels // 4, 2 * (height // (scale * 2)), 2 * (width // (scale * 2)))
        if self.latents == "patched":  # 2x2 patches already in the channels, as Flux2KleinPipeline draws them
            return (1, channels, height // (scale * 2), width // (scale * 2))
        return (1, channels, height // scale, width // scale)

    def noise_dtype(self, pipe: Any) -> Any:
        """The dtype the pipeline draws its noise in: its prompt embeddings' (CogView4: always float32)."""
        if self.float32_noise:
            import torch

            return torch.float32
        encoder = getattr(pipe, self.embeddings, None)
        return (
            encoder.dtype if encoder is not None else (pipe.unet if self.latents == "unet" else pipe.transformer).dtype
        )

    def recorded_size(self, pipe: Any, arguments: dict[str, Any], picture: Any) -> dict[str, int]:
        """The size an image's record states, so that passing it again makes the same picture.

        The picture's own size, except where the pipeline scales the size asked for to its area
        (HiDream): there a picture's size may scale to another one (736 x 1392 is drawn at 736 x
        1408), so the record keeps the size asked for, with the pipeline's default for a side not given.
        """
        if not self.area:
            return {"width": picture.width, "height": picture.height}
        default = pipe.default_sample_size * pipe.vae_scale_factor
        return {side: int(arguments.get(side) or default) for side in ("width", "height")}

    def bin_table(self, pipe: Any) -> dict[str, list[float]]:
        """The aspect-ratio bins the pipeline picks for its transformer's sample size."""
        import importlib

        where = dict(self.bins)[pipe.transformer.config.sample_size]
        module, name = where.rsplit(".", 1)
        return getattr(importlib.import_module(f"diffusers.pipelines.{module}"), name)

    def unpack(self, latents: Any, shape: tuple[int, ...]) -> Any:
        """Packed latents (tokens of 2x2 patches) as channels x height x width; `shape` is one image's, unpacked.

        FLUX.2's tokens are its noise's 2x2-patched channels: they come back as a quarter of
        the channels at twice the size (as ComfyUI unpatches them for its preview factors).
        """
        _, channels, height, width = shape
        batch = latents.shape[0]
        if self.latents == "patched":
            patched = latents.permute(0, 2, 1).reshape(batch, channels // 4, 2, 2, height, width)
            return patched.permute(0, 1, 4, 2, 5, 3).reshape(batch, channels // 4, 2 * height, 2 * width)
        patches = latents.view(batch, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return patches.reshape(batch, channels, height, width)

    def pack(self, pipe: Any, noise: Any) -> Any:
        """The noise as the pipeline's ``latents=`` takes it (`FluxPipeline._pack_latents` for packed families)."""
        if self.latents != "packed":
            return noise
        batch, channels, height, width = noise.shape
        return pipe._pack_latents(noise, batch, channels, height, width)

    def timestep_options(
        self, scheduler: Any, pipe: Any, height: int | None, width: int | None, steps: int
    ) -> dict[str, Any]:
        """What ``set_timesteps`` needs besides the step count: ``mu`` for a dynamic shift, from the token count."""
        config = scheduler.config
        if self.latents == "unet" or not config.get("use_dynamic_shifting"):
            return {}
        _, _, rows, columns = self.noise_shape(pipe, height, width)
        if self.shift_rule == "flux2":  # FLUX.2's empirical rule: from the token count and the number of steps
            from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

            return {"mu": compute_empirical_mu(rows * columns, steps)}
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        if self.shift_rule == "hidream":  # its transformer's longest sequence, at calculate_shift's defaults
            return {"mu": calculate_shift(pipe.transformer.max_seq)}
        patch = 2 if self.latents == "packed" else self.patch or pipe.transformer.config.patch_size
        if self.shift_rule == "cogview4":  # its own rule: the square root of the token count's ratio
            from diffusers.pipelines.cogview4.pipeline_cogview4 import calculate_shift as cogview4_shift

            tokens = (rows * columns) // patch**2
            base, low, high = (config.get(k, d) for k, d in (("base_image_seq_len", 256), ("base_shift", 0.25),
                                                                ("max_shift", 0.75)))  # fmt: skip
            return {"mu": cogview4_shift(tokens, base, low, high)}
        mu = calculate_shift(
            (rows // patch) * (columns // patch),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        return {"mu": mu}

    def unguided(self, pipe: Any) -> str | None:
        """None when ``guidance_scale`` does something; else why not (FLUX.1-schnell embeds no guidance)."""
        if getattr(getattr(pipe, "config", None), "is_distilled", False):  # FLUX.2 Klein step-distilled: ignored
            return f"this {self.name} model is step-distilled: it has no guidance (its pipeline ignores it); leave out"
        transformer = getattr(pipe, "transformer", None)
        if not self.distilled or transformer is None or transformer.config.get("guidance_embeds", True):
            return None
        return f"this {self.name} model has no guidance: its transformer embeds none (as schnell's); leave guidance out"

    def check_sequence(self, pipe: Any, max_sequence_length: int | None) -> None:
        """Refuse a ``--max-sequence-length`` the family has no use for, or past what its pipeline reads."""
        if max_sequence_length is None:
            return
        if self.max_sequence is None:
            readers = [family.name for family in FAMILIES if family.max_sequence]
            raise SettingError(
                "max_sequence_length",
                f"is for the T5 and LLM text encoders of {', '.join(readers[:-1])} and {readers[-1]}; "
                f"{type(pipe).__name__} reads a fixed number of CLIP tokens",
            )
        if not 1 <= max_sequence_length <= self.max_sequence:
            raise SettingError(
                "max_sequence_length",
                f"must be from 1 to {self.max_sequence} for {self.name}, not {max_sequence_length}",
            )

    def token_count(self, pipe: Any, prompt: str, window: int | None = None) -> int:
        """How many tokens `prompt` takes in the pipeline's reading tokenizer, up to its window (or `window`)."""
        tokenizer, own = self.prompt_window(pipe)
        return min(len(tokenizer(prompt).input_ids), window or own)

    def prompt_window(self, pipe: Any, window: int | None = None) -> tuple[Any, int]:
        """The tokenizer whose window bounds what the model reads of a prompt, and that window in tokens.

        `window` is a ``max_sequence_length`` the user gave, which replaces the family's default.
        """
        name, default = self.reader
        tokenizer = getattr(pipe, name, None)
        window = window or default or getattr(tokenizer, "model_max_length", 0)
        if self.prefix is not None and tokenizer is not None:  # the part of the window the prefix takes
            attribute, between = self.prefix
            window -= len(tokenizer(getattr(pipe, attribute, "") + between, add_special_tokens=False).input_ids)
        return tokenizer, max(window, 2)


_ALPHA, _SIGMA = "pixart_alpha.pipeline_pixart_alpha.ASPECT_RATIO", "pixart_alpha.pipeline_pixart_sigma.ASPECT_RATIO"
PIXART_BINS = ((256, f"{_SIGMA}_2048_BIN"), (128, f"{_ALPHA}_1024_BIN"), (64, f"{_ALPHA}_512_BIN"),
               (32, f"{_ALPHA}_256_BIN"))  # fmt: skip
"""PixArt-Σ's bins by sample size, as `PixArtSigmaPipeline` picks them."""
SANA_BINS = ((128, "sana.pipeline_sana.ASPECT_RATIO_4096_BIN"), (64, f"{_SIGMA}_2048_BIN"), (32, f"{_ALPHA}_1024_BIN"),
             (16, f"{_ALPHA}_512_BIN"))  # fmt: skip
"""Sana's bins by sample size, as `SanaPipeline` picks them."""


def _both(name: str) -> tuple[str, str]:
    return f"{name}Pipeline", f"{name}Img2ImgPipeline"


FAMILIES = (
    Family(
        "Stable Diffusion",
        _both("StableDiffusion"),
        "StableDiffusionImg2ImgPipeline",
        inpaint="StableDiffusionInpaintPipeline",
    ),
    Family(
        "SDXL",
        _both("StableDiffusionXL"),
        "StableDiffusionXLImg2ImgPipeline",
        inpaint="StableDiffusionXLInpaintPipeline",
    ),
    Family(
        "SD3",
        _both("StableDiffusion3"),
        "StableDiffusion3Img2ImgPipeline",
        inpaint="StableDiffusion3InpaintPipeline",
        latents="transformer",
        reader=("tokenizer_3", 256),  # T5 reads 256 tokens by default; CLIP's 77 are a part of the sequence
        weights="sd3",
        max_sequence=512,
    ),
    Family(
        "FLUX.1",
        _both("Flux"),
        "FluxImg2ImgPipeline",
        inpaint="FluxInpaintPipeline",
        latents="packed",
        embeddings="text_encoder_2",
        reader=("tokenizer_2", 512),  # T5; CLIP gives only the pooled embedding
        weights="t5",
        negative=(
            "FLUX.1 ignores a negative prompt without true CFG (its guidance is distilled): pass --true-cfg above 1 "
            "(a second pass each step) or leave the negative prompt out"
        ),
        distilled=True,
        true_cfg=True,
        max_sequence=512,
    ),
    Family(
        "FLUX.1 Kontext",
        ("FluxKontextPipeline",),
        None,
        latents="packed",
        embeddings="text_encoder_2",
        reader=("tokenizer_2", 512),
        weights=None,
        negative=(
            "FLUX.1 Kontext ignores a negative prompt without true CFG (its guidance is distilled): pass --true-cfg "
            "above 1 (a second pass each step) or leave the negative prompt out"
        ),
        distilled=True,
        true_cfg=True,
        max_sequence=512,
        edit=True,
    ),
    Family(
        "FLUX.2 Klein",
        ("Flux2KleinPipeline",),
        None,  # no image-to-image: a picture it is given is a reference it edits from
        latents="patched",
        reader=("tokenizer", 512),
        weights=None,
        negative=(
            "FLUX.2 Klein reads no negative prompt: diffusers' Flux2KleinPipeline guides against an empty one; "
            "leave the negative prompt out"
        ),
        shift_rule="flux2",
        max_sequence=512,
        edit=True,
        reference=True,
    ),
    Family(
        "Qwen-Image",
        _both("QwenImage"),
        "QwenImageImg2ImgPipeline",
        inpaint="QwenImageInpaintPipeline",
        latents="packed",
        reader=("tokenizer", 512),
        weights=None,
        guidance="true_cfg_scale",  # its CFG; guidance_scale is for guidance-distilled checkpoints (none yet)
        max_sequence=1024,
    ),
    Family(
        "Z-Image",
        _both("ZImage"),
        "ZImageImg2ImgPipeline",
        inpaint="ZImageInpaintPipeline",
        latents="transformer",
        reader=("tokenizer", 512),
        weights=None,
        float32_noise=True,
        max_sequence=512,
        default_size=1024,
        patch=2,
    ),
    Family(
        "Chroma",
        _both("Chroma"),
        "ChromaImg2ImgPipeline",  # no inpaint: ChromaInpaintPipeline reads a guidance_embeds Chroma lacks (0.42.1)
        latents="packed",
        reader=("tokenizer", 512),
        weights="t5-masked",
        max_sequence=512,
    ),
    Family(
        "PixArt-Σ",
        ("PixArtSigmaPipeline",),
        None,
        latents="transformer",
        reader=("tokenizer", 300),
        weights="t5-exact",
        max_sequence=300,
        legacy_callback=True,
        bins=PIXART_BINS,
    ),
    Family(
        "Sana",
        ("SanaPipeline",),
        None,
        latents="transformer",
        reader=("tokenizer", 300),  # Gemma 2 after its complex human instruction, which has a window of its own
        weights=None,
        float32_noise=True,
        max_sequence=300,
        default_size=1024,
        bins=SANA_BINS,
    ),
    Family(
        "AuraFlow",
        ("AuraFlowPipeline",),
        None,
        latents="transformer",
        reader=("tokenizer", 256),  # UMT5, padded to the length it reads: no prompt changes another
        weights="t5-zeroed",
        max_sequence=512,
        default_size=1024,  # its pipeline draws 1024 px unless a size is given, whatever the model's sample size
    ),
    Family(
        "Lumina 2",
        ("Lumina2Pipeline",),
        None,
        latents="transformer",
        reader=("tokenizer", 256),
        weights=None,
        max_sequence=256,  # its caption positions: the real transformer's rotary table holds 300
        prefix=("system_prompt", " <Prompt Start> "),
    ),
    Family(
        "HiDream",
        ("HiDreamImagePipeline",),
        None,  # diffusers has no HiDream-I1 image-to-image
        latents="transformer",
        reader=("tokenizer_3", 128),  # T5 and Llama read 128 tokens by default; its CLIPs 218 at most
        weights=None,
        shift_rule="hidream",
        max_sequence=512,
        area=True,
        companion=Companion(
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
            (("text_encoder_4", "LlamaForCausalLM"), ("tokenizer_4", "AutoTokenizer")),
        ),
    ),
    Family(
        "CogView4",
        ("CogView4Pipeline",),
        None,
        latents="transformer",
        reader=("tokenizer", 1024),
        weights=None,
        pads_to_longest=True,  # with no attention mask: a short prompt beside a long one changes by ~110 levels
        float32_noise=True,
        shift_rule="cogview4",
        max_sequence=1024,
    ),
)
"""The families nbbatch knows, by their pipelines' class names."""

GENERIC = Family("generic", (), None)
"""The rules of a pipeline of no family nbbatch knows (a record's, to export): the SD rules, where they apply."""


def check_family(pipe: Any) -> None:
    """Refuse, in one line, a pipeline of no family nbbatch knows."""
    if family_of(pipe) is GENERIC:
        known = ", ".join(family.name for family in FAMILIES)
        raise ValueError(f"nbbatch does not know the {type(pipe).__name__} family yet: it runs {known}")


def family_of(pipe: Any) -> Family:
    """The family of `pipe` by its class (or a class it derives from), else `GENERIC`."""
    return family_named(*(cls.__name__ for cls in type(pipe).__mro__))


def family_named(*names: str) -> Family:
    """The family of the first of these pipeline class names that one has (its inpaint one too), else `GENERIC`."""
    return next(
        (family for name in names for family in FAMILIES if name in (*family.pipelines, family.inpaint)), GENERIC
    )
