"""Python that makes one image again with diffusers alone (no nbbatch): `BatchResult.code`, ``%batchgen --code``.

The code loads the pipeline class the image was made with (its dtype and weight
variant), sets the exact scheduler class and config, makes the image's generator (from
its seed, or from the saved state where that differs, as for a refinement of a
refinement's draw), and calls the pipeline with every argument nbbatch passed; it ends
with the picture in a variable named ``image``. An image-to-image input travels inside
the code as a base64 PNG, so the code runs alone. Variation seeds come with the few
lines that blend the two noises (`nbbatch.core.seeds.slerp`, copied in), LoRAs and
textual-inversion embeddings with diffusers' own loaders.

What diffusers alone cannot do is refused in one line rather than written wrong: prompts
nbbatch encodes itself with compel (A1111 weights, ``BREAK``, more than 75 tokens, clip
skip), the stand-in models (built in memory, never saved), and images from other tools
(their noise came from another generator).
"""

from __future__ import annotations

import base64
import inspect
import io
import math
import pprint
import re
import textwrap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from nbbatch import __version__
from nbbatch.core.record import TORCH_DTYPES, Call, Provenance
from nbbatch.core.seeds import generator_state, make_generator, slerp
from nbbatch.models.families import family_named

if TYPE_CHECKING:
    from PIL import Image

    from nbbatch.core.spec import Settings


class _Exported(Protocol):
    """What the code reads of an image, read-only: a `nbbatch.core.item.Item` (not imported: `Item.code` calls here)."""

    @property
    def seed(self) -> int: ...
    @property
    def prompt(self) -> str: ...
    @property
    def negative_prompt(self) -> str: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def call(self) -> Call | None: ...
    @property
    def provenance(self) -> Provenance: ...
    @property
    def foreign(self) -> bool: ...
    @property
    def state(self) -> bytes: ...
    @property
    def init_image(self) -> Image.Image | None: ...

    @property
    def mask(self) -> Image.Image | None: ...
    @property
    def origin(self) -> str: ...
    @property
    def label(self) -> str: ...


def item_code(item: _Exported) -> str:
    """The Python source that makes `item`'s image again with diffusers alone, ending with it in ``image``."""
    call = _check(item)
    pipeline = _diffusers_class(call.pipeline, "Pipeline")
    scheduler = _diffusers_class(call.scheduler, "Scheduler")
    dtype = call.dtype
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"the record's dtype {str(dtype)[:40]!r} is none of {', '.join(TORCH_DTYPES)}: no code")
    imports = ["import torch", f"from diffusers import {', '.join(sorted({pipeline, scheduler} - {None}))}"]
    body, parts = _companion(call, dtype, imports)
    body += [
        f"pipe = {pipeline}.from_pretrained(",
        f"    {_source(item)!r},",
        *(f"    {name}={name}," for name in parts),
        f"    dtype=torch.{dtype},",
        *([f"    variant={item.settings.variant!r},"] if item.settings.variant else []),
        ")",
    ]
    config = pprint.pformat(_plain(call.scheduler_config), width=100, sort_dicts=True)
    body.append(f"pipe.scheduler = {scheduler}.from_config(\n{textwrap.indent(config, '    ')}\n)")
    body += _placement(item, call) + _adapters(call) + _generator(item, call, imports)
    if any(line.startswith("vectors = safetensors") for line in body):
        imports.append("import safetensors.torch")
    arguments = _arguments(item, call)
    if item.init_image is not None:
        imports += ["import base64", "import io", "from PIL import Image"]
        body.append(f"init_image = Image.open(io.BytesIO(base64.b64decode({_png_base64(item.init_image)!r})))")
        arguments["image"] = "init_image"
    if item.mask is not None:
        body.append(f"mask = Image.open(io.BytesIO(base64.b64decode({_png_base64(item.mask)!r})))")
        arguments["mask_image"] = "mask"
    if call.variation_seed is not None and call.variation_strength:
        imports += ["from typing import Any", "from diffusers.utils.torch_utils import randn_tensor"]
        body += _variation(item, call)
        arguments["latents"] = "latents"
    if call.refiner:
        imports.append("from diffusers import AutoPipelineForImage2Image")
        body += _refiner(item, call.refiner, dtype)
        arguments.update(denoising_end=_literal(_float(call.refiner_at)), output_type="'latent'")
    written = "".join(f"    {name}={value},\n" for name, value in arguments.items())
    if call.refiner:
        body.append(f"latents = pipe(\n{written}).images  # the base's part of the steps")
        handed = {name: arguments[name] for name in _HANDED if name in arguments}
        handed.update(image="latents", denoising_start=arguments.pop("denoising_end"), generator="generator")
        written = "".join(f"    {name}={value},\n" for name, value in handed.items())
        body.append(f"image = refiner(\n{written}).images[0]  # the refiner's, from the base's latents")
    else:
        body.append(f"image = pipe(\n{written}).images[0]")
    if item.mask is not None:
        body.append("image = pipe.image_processor.apply_overlay(mask, init_image, image)  # the original outside")
    header = (
        f"# {_one_line(item.label)} of {item.prompt!r}, made again with diffusers alone (code by nbbatch {__version__})"
    )
    return "\n".join([header, *dict.fromkeys(imports), "", *body]) + "\n"


def _one_line(text: str) -> str:
    """`text` for a comment: every character that is not printable (a newline above all) escaped as Python does."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _diffusers_class(name: Any, kind: str) -> str:
    """`name` if diffusers has a class of that name of the `kind` (``Pipeline`` or ``Scheduler``), else ValueError."""
    import diffusers

    from nbbatch.models.quiet import quiet_loading

    with quiet_loading():  # the lookup imports the class's module, whose dependencies print notices
        found = getattr(diffusers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not isinstance(found, type) or not name.endswith(kind):
        raise ValueError(
            f"the record's {kind.lower()} {str(name)[:60]!r} is no diffusers {kind.lower()} class: no code"
        )
    return name


def takes_size(pipeline: str, argument: str = "height") -> bool:
    """Whether the diffusers pipeline class `pipeline` takes `argument` (``height``: SD's image-to-image does not)."""
    import inspect

    import diffusers

    return argument in inspect.signature(getattr(diffusers, _diffusers_class(pipeline, "Pipeline")).__call__).parameters


def _check(item: _Exported) -> Call:
    """The item's call; refused, in one line, where diffusers alone cannot repeat its making."""
    from nbbatch.core.attention import is_plain
    from nbbatch.models.standins import STANDINS

    model = str(item.settings.model)
    call = item.call
    if item.foreign or call is None:
        raise ValueError("this image was made by another tool: its noise came from another generator, so no code here")
    if model in STANDINS:
        raise ValueError(f"{model} is a stand-in built in memory and never saved: no code can load it")
    if item.provenance.hires is not None and item.provenance.hires.upscaler == "latent":
        raise ValueError(
            "nbbatch upscaled this hires fix's latents itself: diffusers alone has no latent upscaler "
            "(a lanczos hires fix exports)"
        )
    if call.inpaint == "blend":
        raise ValueError(
            "nbbatch inpainted this image by blending at every step itself (diffusers' inpaint pipeline misreads "
            "this model's UNet): no code"
        )
    if call.refiner and item.settings.scheduler is not None:
        raise ValueError(
            "the refiner ran with a scheduler made from its own config, which the record does not hold: no code "
            "(a refiner with its own scheduler exports)"
        )
    if call.encoded_by == "compel":
        if (item.settings.clip_skip or 1) > 1:
            why = f"clip skip {item.settings.clip_skip}"
        elif not all(is_plain(text) for text in (item.prompt, item.negative_prompt) if text):
            why = "A1111 weights or BREAK in its prompt"
        else:
            why = "a prompt longer than 75 tokens"
        raise ValueError(f"nbbatch encoded this image's prompt itself with compel ({why}): diffusers alone cannot")
    return call


_HANDED = ("prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "clip_skip")
"""The base call's arguments the refiner's call takes too."""


def _refiner(item: _Exported, refiner: str, dtype: str) -> list[str]:
    """The SDXL refiner loaded as the diffusers guide loads it: sharing the base's VAE and second text encoder."""
    from nbbatch.models.pipelines import resolve_model

    source = resolve_model(refiner)
    placed = "refiner.enable_model_cpu_offload()" if item.settings.offload else "refiner.to(pipe.device)"
    return [
        "refiner = AutoPipelineForImage2Image.from_pretrained(",
        f"    {source!r},",
        "    text_encoder_2=pipe.text_encoder_2,",
        "    vae=pipe.vae,",
        f"    dtype=torch.{dtype},",
        *([f"    variant={item.settings.variant!r},"] if item.settings.variant else []),
        ")",
        placed,
    ]


def _source(item: _Exported) -> str:
    from nbbatch.models.pipelines import resolve_model

    return resolve_model(item.settings.model)


def _companion(call: Call, dtype: str, imports: list[str]) -> tuple[list[str], list[str]]:
    """The lines that load what the pipeline's files lack from its model card's repo (HiDream's Llama), and names."""
    from nbbatch.models.families import family_named

    companion = family_named(call.pipeline).companion
    if companion is None or call.companion is None:
        return [], []
    imports.append(f"from transformers import {', '.join(sorted(kind for _, kind in companion.parts))}")
    lines = [
        f"{name} = {kind}.from_pretrained({call.companion!r}"
        + (")" if kind.endswith("Tokenizer") else f", dtype=torch.{dtype})")
        + "  # as its model card loads it"
        for name, kind in companion.parts
    ]
    return lines, [name for name, _ in companion.parts]


def _placement(item: _Exported, call: Call) -> list[str]:
    settings = item.settings
    device = _device(call.device)
    lines = ["pipe.enable_model_cpu_offload()" if settings.offload else f"pipe.to({device!r})"]
    if str(device).startswith(("cuda", "mps")) or settings.offload:
        lines.append("pipe.vae.enable_slicing()")
    if settings.vae_tiling:
        lines.append("pipe.vae.enable_tiling()")
    return lines


def _adapters(call: Call) -> list[str]:
    lines = []
    for number, lora in enumerate(call.loras):
        lines.append(f"pipe.load_lora_weights({lora.source!r}, adapter_name='lora{number}')")
    if call.loras:
        names = [f"lora{number}" for number in range(len(call.loras))]
        weights = [_float(lora.weight) for lora in call.loras]
        lines.append(f"pipe.set_adapters({names!r}, adapter_weights={weights!r})")
    for embedding in call.embeddings:
        source, token = embedding.source, embedding.token
        if "XL" not in call.pipeline:
            lines.append(f"pipe.load_textual_inversion({source!r}, token={token!r})")
            continue
        lines += [  # an SDXL file holds a tensor for each text encoder
            f"vectors = safetensors.torch.load_file({source!r})",
            f"pipe.load_textual_inversion(vectors['clip_l'], {token!r}, pipe.tokenizer, pipe.text_encoder)",
            f"pipe.load_textual_inversion(vectors['clip_g'], {token!r}, pipe.tokenizer_2, pipe.text_encoder_2)",
        ]
    return lines


def _generator(item: _Exported, call: Call, imports: list[str]) -> list[str]:
    """The image's generator: seeded, or set to its saved state where that is not the seed's (a refinement's)."""
    device = _device(call.generator_device)
    made = f"generator = torch.Generator({device!r})"
    if item.state == generator_state(make_generator(device, item.seed)):
        return [f"{made}.manual_seed({_int(item.seed)})"]
    imports.append("import base64")
    state = base64.b64encode(item.state).decode()
    return [
        made,
        f"state = base64.b64decode({state!r})  # the image's saved generator state",
        "generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))",
    ]


def _arguments(item: _Exported, call: Call) -> dict[str, str]:
    arguments = {"prompt": repr(item.prompt)}
    if item.negative_prompt or (call.true_cfg_scale or 0) > 1:  # true CFG runs only with one, if empty
        arguments["negative_prompt"] = repr(item.negative_prompt)
    for name in (
        "num_inference_steps",
        "guidance_scale",
        "true_cfg_scale",
        "guidance_rescale",
        "max_sequence_length",
        "strength",
    ):
        if getattr(call, name) is not None and (name != "strength" or item.init_image is not None):
            arguments[name] = _literal(getattr(call, name))
    if item.init_image is None or takes_size(call.pipeline):  # FLUX's img2img and others: 1024 unless told
        arguments["width"], arguments["height"] = _literal(call.width), _literal(call.height)
        if takes_size(call.pipeline, "max_area"):  # FLUX.1 Kontext fits its size to this area (1024² else)
            arguments["max_area"] = _literal(_int(call.width) * _int(call.height))
    arguments["generator"] = "generator"
    return arguments


def _variation(item: _Exported, call: Call) -> list[str]:
    """The starting noise blended towards the variation seed's, as `nbbatch.core.engine.starting_noise` draws it."""
    device = _device(call.generator_device)
    height, width = _int(call.height), _int(call.width)
    family = family_named(call.pipeline)
    model = "unet" if family.latents == "unet" else "transformer"
    if family.latents == "packed":  # channels in 2x2 patches, each side even, packed after the blend
        shape = [
            "scale = pipe.vae_scale_factor * 2",
            f"shape = (1, pipe.{model}.config.in_channels // 4, 2 * ({height} // scale), 2 * ({width} // scale))",
        ]
    elif family.latents == "patched":  # 2x2 patches already in the channels (FLUX.2), which the pipeline flattens
        shape = [
            "scale = pipe.vae_scale_factor * 2",
            f"shape = (1, pipe.{model}.config.in_channels, {height} // scale, {width} // scale)",
        ]
    elif family.bins:  # PixArt-Σ and Sana draw their noise at their aspect-ratio bin's size
        modules: dict[str, list[str]] = {}
        for _, where in family.bins:
            module, name = where.rsplit(".", 1)
            modules.setdefault(module, []).append(name)
        table = ", ".join(f"{side}: {where.rsplit('.', 1)[1]}" for side, where in family.bins)
        shape = [
            *(f"from diffusers.pipelines.{module} import {', '.join(names)}" for module, names in modules.items()),
            f"bins = {{{table}}}[pipe.transformer.config.sample_size]",
            f"binned = pipe.image_processor.classify_height_width_bin({height}, {width}, ratios=bins)",
            "shape = (1, pipe.transformer.config.in_channels, *(side // pipe.vae_scale_factor for side in binned))",
        ]
    elif family.area:  # HiDream draws at its default area, keeping the aspect asked for, as its __call__ scales it
        shape = [
            "import math",
            "area, division = (pipe.default_sample_size * pipe.vae_scale_factor) ** 2, pipe.vae_scale_factor * 2",
            f"ratio = math.sqrt(area / ({width} * {height}))",
            "scale = pipe.vae_scale_factor",
            f"sides = [int(side * ratio // division * division) // scale for side in ({height}, {width})]",
            "shape = (1, pipe.transformer.config.in_channels, *sides)",
        ]
    else:
        shape = [
            f"shape = (1, pipe.{model}.config.in_channels, "
            f"{height} // pipe.vae_scale_factor, {width} // pipe.vae_scale_factor)"
        ]
    shape.append("dtype = torch.float32" if family.float32_noise else f"dtype = pipe.{family.embeddings}.dtype")
    pack = "latents = pipe._pack_latents(latents, *shape)" if family.latents == "packed" else None
    return [
        "",
        inspect.getsource(slerp).rstrip(),
        "",
        *shape,
        f"other_generator = torch.Generator({device!r}).manual_seed({_int(call.variation_seed)})",
        "other = randn_tensor(shape, generator=other_generator, device=pipe._execution_device, dtype=dtype).float()",
        "own = randn_tensor(shape, generator=generator, device=pipe._execution_device, dtype=dtype)",
        f"latents = slerp({_literal(_float(call.variation_strength))}, own.float(), other).to(dtype)",
        *([pack] if pack else []),
    ]


def _device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"cpu|mps|cuda(:\d{1,2})?", value):
        raise ValueError(f"the record's device {str(value)[:40]!r} is none of cpu, mps, cuda, cuda:N: no code")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"the record holds {str(value)[:40]!r} where a number belongs: no code")
    return float(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"the record holds {str(value)[:40]!r} where a whole number belongs: no code")
    return value


def _png_base64(image: Any) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _plain(value: Any) -> Any:
    """A config as Python literals for `pprint`: mappings as dicts, tuples kept, infinities as ``float('-inf')``.

    Anything but plain data is refused: `pprint` would write its ``repr``, which could be any text.
    """
    if isinstance(value, Mapping):
        return {str(key): _plain(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(inner) for inner in value)
    if isinstance(value, float) and not math.isfinite(value):
        return _Expression(f"float({str(value)!r})")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"the record's scheduler config holds a {type(value).__name__}, not plain data: no code")


def _literal(value: Any) -> str:
    """`value` as Python source: only plain numbers, text and None are written."""
    if value is None or isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return repr(value)
    raise ValueError(f"the record holds {str(value)[:40]!r} where a number or text belongs: no code")


class _Expression:
    """Source text that `pprint` writes as it is (``repr`` of a float infinity is no Python literal)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text
