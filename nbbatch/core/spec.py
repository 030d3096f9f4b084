"""What a batch is: its settings and its jobs (one per image), validated before anything runs.

Everything here is plain, frozen data whose constructors refuse bad values, so the magic,
the panel and the Python API share one set of checks. `Settings` is a pydantic model: its
fields' types and ranges are the checks (and, through `expectation`, the words of their
errors and of the docs' reference); a bad value raises `SettingError` naming its field, which
each front end says its own way (``--true-cfg`` in the magic, "true cfg" in the panel).
pydantic rather than msgspec or attrs: the image record (`nbbatch.core.record`) is
already checked by it, its strict mode refuses ``2.5`` steps and ``"yes"`` switches, and its
constraints can be read back to word an error.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from nbbatch.core.attention import MAX_PROMPT_CHARS, check_prompt, check_text
from nbbatch.core.errors import SettingError
from nbbatch.core.masks import make_mask
from nbbatch.core.pictures import Picture, gather_pictures
from nbbatch.core.seeds import MAX_IMAGES, SEED_MAX, parse_seeds, random_seeds
from nbbatch.core.templates import Prompt, expand, fill_variables

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_MODEL = "nbbatch:shapes"
"""The built-in model, trained by this project: one coloured shape on a plain background, 64x64."""


def default_model() -> str:
    """The model used when none is named: ``$NBBATCH_MODEL`` if set, else `DEFAULT_MODEL`."""
    return os.environ.get("NBBATCH_MODEL") or DEFAULT_MODEL


Dtype = Literal["auto", "fp16", "bf16", "fp32"]
DTYPES: tuple[str, ...] = get_args(Dtype)

UPSCALERS = {"latent": "Latent", "lanczos": "Lanczos"}
"""Hires-fix upscalers and the names A1111 writes for them (``Hires upscaler``)."""
MAX_SIDE = 8192

BatchSize = int | Literal["auto"] | None


@dataclass(frozen=True)
class Expect:
    """What a setting's error adds to its type and range: the whole want of a text setting, a note on a number's."""

    text: str


Steps = Annotated[int, Field(ge=1, le=1000)]
Guidance = Annotated[float | None, Field(ge=0, le=100)]
Side = Annotated[int | None, Field(ge=8, le=MAX_SIDE), AfterValidator(lambda side: _multiple_of_8(side))]
Fraction = Annotated[float, Field(ge=0, le=1)]


class Settings(BaseModel):
    """How every image of a batch is made (the prompts and seeds live in its jobs).

    ``None`` for `guidance`, `width`, `height` or `scheduler` means the pipeline's own
    default; the value used is recorded with each image. `batch_size` ``None`` runs the
    whole batch in one call; ``"auto"`` also does, halving on out-of-memory errors.
    `offload` is model CPU offload; `vae_tiling` decodes large images in tiles; `variant`
    picks a weight variant of the model files, such as ``"fp16"``. With a `variation_seed`,
    each image starts from its seed's noise blended towards that seed's noise by
    `variation_strength` (0: the seed's image, 1: the variation seed's), as A1111 does.
    `clip_skip` counts as A1111 does: 1 is the text encoder's last layer, 2 the one before
    (diffusers' ``clip_skip=1``). `loras` are (file or hub id, weight) pairs and `embeddings`
    (file, token) pairs; each may also be given as text, ``"PATH:WEIGHT"`` and ``"PATH:TOKEN"``
    (see `parse_lora` and `parse_embedding`). `compile`, `channels_last` and `fuse_qkv` are
    opt-in speedups of the UNet (see `nbbatch.models.speedups`). `true_cfg` is real
    classifier-free guidance beside a distilled guidance (FLUX.1's ``true_cfg_scale``: above 1,
    with the negative prompt, empty when none is given); `guidance_rescale` rescales CFG's
    prediction towards its unguided spread (diffusers' ``guidance_rescale``, 0 off; 0.7 for
    v-prediction and zero-terminal-SNR models); `max_sequence_length` how many tokens
    a T5 or LLM text encoder reads of each prompt (None: the pipeline's default). A `refiner`
    (an SDXL model) takes the latents over at `refiner_at` of the steps (default 0.8), as
    diffusers' ``denoising_end``/``denoising_start`` hand-off does.

    Values are checked by pydantic, strictly (a whole number is not taken from ``2.5`` or
    ``"2"``, nor a switch from ``1``), and a bad one raises `SettingError` naming its field.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", allow_inf_nan=False)

    model: Annotated[str, AfterValidator(lambda text: _model_name(text))] = Field(default_factory=default_model)
    steps: Steps = 30
    guidance: Guidance = None
    true_cfg: Annotated[float | None, Field(ge=1, le=100), Expect("1 is off")] = None
    guidance_rescale: Annotated[float | None, Field(ge=0, le=1), Expect("0 is off")] = None
    width: Side = None
    height: Side = None
    strength: Annotated[float, Field(gt=0, le=1)] = 0.8
    scheduler: Annotated[str | None, AfterValidator(lambda text: _plain_name(text))] = None
    dtype: Dtype = "auto"
    device: Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$"), Expect("auto, cpu, cuda, cuda:N or mps")] = (
        "auto"
    )
    generator_device: Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?)$"), Expect("cpu, cuda or cuda:N")] = "cpu"
    batch_size: Annotated[int, Field(ge=1, le=MAX_IMAGES)] | Literal["auto"] | None = None
    offload: bool = False
    vae_tiling: bool = False
    variant: Annotated[str | None, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"), Expect("a name such as fp16")] = None
    variation_seed: Annotated[int | None, Field(ge=0, le=SEED_MAX)] = None
    variation_strength: Fraction = 0.0
    clip_skip: Annotated[int | None, Field(ge=1, le=12), Expect("1 is no skip, 2 the layer before the last")] = None
    max_sequence_length: Annotated[int | None, Field(ge=1, le=4096)] = None
    refiner: Annotated[str | None, AfterValidator(lambda text: _plain_name(text))] = None
    refiner_at: Annotated[float | None, Field(gt=0, lt=1), Expect("a fraction of the steps")] = None
    loras: tuple[tuple[str, float], ...] = ()
    embeddings: tuple[tuple[str, str], ...] = ()
    compile: bool = False
    channels_last: bool = False
    fuse_qkv: bool = False

    def __init__(self, /, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise _setting_error(type(self), error) from None

    @field_validator("loras", mode="before")
    @classmethod
    def _read_loras(cls, values: Any) -> tuple[tuple[str, float], ...]:
        return _pairs(values, parse_lora, "loras")

    @field_validator("embeddings", mode="before")
    @classmethod
    def _read_embeddings(cls, values: Any) -> tuple[tuple[str, str], ...]:
        return _pairs(values, parse_embedding, "embeddings")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _read_batch_size(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value  # as the magic reads it

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        if self.variation_strength and self.variation_seed is None:
            raise SettingError("variation_strength", "needs {needs} to blend towards", needs="variation_seed")
        if self.refiner_at is not None and self.refiner is None:
            raise SettingError("refiner_at", "says when the refiner takes over: give {needs} too", needs="refiner")
        return self

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied and validated; unknown names raise `SettingError`."""
        return type(self)(**{**dict(self), **changes})

    def image_to_image_steps(self) -> int:
        """How many denoising steps image-to-image runs: ``int(steps * strength)``, at least 1."""
        run = int(self.steps * self.strength)
        if run < 1:
            raise ValueError(
                f"steps {self.steps} x strength {self.strength} leaves no denoising step: "
                "raise the steps or the strength"
            )
        return run


def _multiple_of_8(side: int | None) -> int | None:
    if side is not None and side % 8:
        raise ValueError(f"must be a multiple of 8 (the model works on 8x8 blocks), not {side}")
    return side


def _model_name(text: str) -> str:
    if not text.strip():
        raise ValueError("is empty: pass a model id or a local folder")
    return _plain_name(text)


def _plain_name(text: str | None) -> str | None:
    if text is not None:
        problem = name_problem(text) if text.strip() else "is empty: give a name"
        if problem:
            raise ValueError(problem)
    return text


def _setting_error(model: type[BaseModel], error: ValidationError) -> SettingError:
    """The first of pydantic's errors as one `SettingError` that says what the field takes."""
    first = error.errors(include_url=False)[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, SettingError):
        return cause
    name = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "extra_forbidden":
        return SettingError(name, f"is not a setting: the settings are {', '.join(model.model_fields)}")
    if isinstance(cause, ValueError):
        text = str(cause)
        return SettingError(name, text, predicate=text.startswith(("must ", "is ", "says ", "needs ")))
    return SettingError(name, f"must be {expectation(model.model_fields[name])}, not {first['input']!r}")


def expectation(field: FieldInfo) -> str:
    """What a field takes, in words: ``a whole number from 1 to 1000``, ``one of auto, fp16``.

    Read from the field's type and constraints (its own, or those of a union's member such as
    `batch_size`'s whole number), so that an error's words and the checks cannot drift apart.
    """
    kinds = [field.annotation] if get_origin(field.annotation) is Literal else [*get_args(field.annotation)]
    kinds = kinds or [field.annotation]
    metadata = list(field.metadata)
    for kind in list(kinds):
        if get_origin(kind) is Annotated:
            kinds.append(kind.__origin__)
            metadata += [part for item in kind.__metadata__ for part in getattr(item, "metadata", [item])]
    words = [str(value) for kind in kinds if get_origin(kind) is Literal for value in get_args(kind)]
    notes = [item.text for item in metadata if isinstance(item, Expect)]
    if bool in kinds:
        return "True or False"
    if int not in kinds and float not in kinds:
        return notes[0] if notes else ("one of " + ", ".join(words) if words else "text")
    bound = {
        type(item).__name__: getattr(item, type(item).__name__.lower())
        for item in metadata
        if isinstance(item, (Ge, Gt, Le, Lt))
    }
    if "Ge" in bound and "Le" in bound:
        limits = f"from {bound['Ge']} to {bound['Le']}"
    else:
        low = f"from {bound['Ge']}" if "Ge" in bound else f"above {bound['Gt']}"
        limits = f"{low} and at most {bound['Le']}" if "Le" in bound else f"{low} and below {bound['Lt']}"
    text = f"{'a whole number' if int in kinds else 'a number'} {limits}"
    return text + "".join(f" or {word}" for word in words) + "".join(f" ({note})" for note in notes)


@dataclass(frozen=True)
class Job:
    """One image to make: its prompt, seed and, for image-to-image, its input picture.

    `state` is a saved generator state; when set it replaces the seed, so a refinement
    starts from exactly the noise its parent started from. `parent` is the result item
    this image refines or varies. `settings`, when set, replaces the batch's settings
    for this image (a cell of an X/Y/Z grid); `provenance` is recorded with the image, as
    plain data (`nbbatch.core.record.Provenance`: the template and its choices, the grid
    cell, ...). A `mask` (white: repaint) makes it an inpaint of `init_image`.
    """

    prompt: str
    seed: int
    prompt_index: int = 0
    negative_prompt: str = ""
    init_image: Image.Image | None = field(default=None, compare=False, repr=False)
    state: bytes | None = field(default=None, compare=False, repr=False)
    parent: Any = field(default=None, compare=False, repr=False)
    origin: str = "batch"
    settings: Settings | None = field(default=None, compare=False, repr=False)
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    mask: Image.Image | None = field(default=None, compare=False, repr=False)


def build_jobs(
    prompts: Sequence[str | Prompt],
    seeds: tuple[int, ...] | list[int],
    negative_prompt: str = "",
    images: Sequence[Image.Image] = (),
    names: Sequence[str | None] = (),
    masks: Sequence[Image.Image] = (),
) -> tuple[Job, ...]:
    """Pictures x prompts x seeds, flattened: one job per image, grouped by picture, then by prompt (p0 s0, p0 s1, ...).

    A prompt made from a template records the template and its choices with each image.
    `images` (image-to-image) are the input pictures, each made with every prompt and seed;
    `names` their file names (recorded as ``picture``), where they came from files; `masks`,
    one per picture, make each an inpaint of its picture.
    """
    if isinstance(prompts, (str, Prompt)):
        prompts = [prompts]
    prompts = [Prompt(p) if isinstance(p, str) else p for p in prompts]
    if not prompts:
        raise ValueError("no prompt given: write one prompt per line")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, Prompt) or not isinstance(prompt.text, str):
            raise ValueError(f"prompt {index} is not text")
        if not prompt.text.strip():
            raise ValueError(f"prompt {index} is empty")
    if not seeds:
        raise ValueError("no seeds given")
    if len(set(seeds)) != len(seeds):
        raise ValueError("a seed is given twice")
    pictures = list(images) or [None]
    count = len(pictures) * len(prompts) * len(seeds)
    if count > MAX_IMAGES:
        some = f"{len(pictures)} pictures x " if images else ""
        raise ValueError(
            f"{some}{len(prompts)} prompts x {len(seeds)} seeds make {count} images; "
            f"the most one batch may hold is {MAX_IMAGES}"
        )
    if not isinstance(negative_prompt, str):
        raise ValueError(f"the negative prompt must be text, not {type(negative_prompt).__name__}")
    for text in [*(p.text for p in prompts), negative_prompt]:
        check_prompt(text)
    jobs = []
    for image, name, mask in itertools.zip_longest(
        pictures, list(names)[: len(pictures)], list(masks)[: len(pictures)]
    ):
        for index, prompt in enumerate(prompts):
            provenance = {"template": prompt.template, "choices": list(prompt.choices)} if prompt.template else {}
            if prompt.template and prompt.seed is not None:
                provenance["template_seed"] = prompt.seed
            if name is not None:
                provenance["picture"] = name
            for seed in seeds:
                jobs.append(
                    Job(
                        prompt.text.strip(),
                        seed,
                        index,
                        negative_prompt.strip(),
                        image,
                        provenance=provenance,
                        mask=mask,
                    )
                )
    return tuple(jobs)


def parse_lora(value: str | Sequence[Any]) -> tuple[str, float]:
    r"""A LoRA as (file or hub id, weight): from ``"PATH"`` (weight 1), ``"PATH:0.8"`` or a (path, weight) pair.

    The text after the last ``:`` is the weight unless it holds a path separator (``C:\loras\x``).
    """
    if isinstance(value, str):
        path, weight = _split_suffix(value)
        if weight is not None:
            try:
                number = float(weight)
            except ValueError:
                raise ValueError(f"LoRA weight must be a number, not {weight!r} (in {value!r})") from None
        else:
            number = 1.0
    elif isinstance(value, Sequence) and len(value) == 2 and isinstance(value[0], str):
        path, number = value
    else:
        raise ValueError(f"a LoRA is 'PATH:WEIGHT' or a (path, weight) pair, not {value!r}")
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"LoRA {value!r} names no file")
    check_name(path, "a LoRA")
    if not _is_number(number) or not -10 <= number <= 10:
        raise ValueError(f"LoRA weight must be a number from -10 to 10, not {number!r}")
    return path.strip(), float(number)


def parse_embedding(value: str | Sequence[Any]) -> tuple[str, str]:
    """An embedding as (file, token): from ``"PATH"`` (the token is the file's name, as A1111 does) or ``"PATH:TOKEN"``.

    The token is what prompts write to use it.
    """
    if isinstance(value, str):
        path, token = _split_suffix(value)
    elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, str) for v in value):
        path, token = value
    else:
        raise ValueError(f"an embedding is 'PATH:TOKEN' or a (path, token) pair, not {value!r}")
    if not path.strip():
        raise ValueError(f"embedding {value!r} names no file")
    check_name(path, "an embedding")
    token = (token or os.path.splitext(os.path.basename(path.strip()))[0]).strip()
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError(f"an embedding's token is one word with no spaces, not {token!r}")
    return path.strip(), token


def check_name(text: str, what: str) -> None:
    """Raise ValueError unless `text` is a name: one line of printable text, at most 1000 characters.

    Models, schedulers, files and tokens end up in labels, file records and exported code,
    where a newline or a control character would be read as something else.
    """
    problem = name_problem(text)
    if problem:
        raise ValueError(f"{what} {problem}")


def name_problem(text: str) -> str | None:
    """What makes `text` no name (``is 2,000 characters long: ...``), or None when it is one."""
    if len(text) > 1000:
        return f"is {len(text):,} characters long: a name has at most 1000"
    if not text.isprintable():
        bad = next(c for c in text if not c.isprintable())
        return f"{text[:80]!r} holds {bad!r}: a name is one line of printable text"
    return None


def _split_suffix(text: str) -> tuple[str, str | None]:
    head, colon, tail = text.rpartition(":")
    if not colon or not head or "/" in tail or "\\" in tail:
        return text, None
    return head, tail.strip()


def _pairs(values: Any, parse: Any, name: str) -> tuple:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list, not {values!r}")
    pairs = tuple(parse(v) for v in values)
    firsts = [pair[0] if name == "loras" else pair[1] for pair in pairs]
    if len(set(firsts)) != len(firsts):
        raise ValueError(f"{name}: {'a file' if name == 'loras' else 'a token'} is given twice")
    return pairs


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def prepare_images(images: Sequence[Any], width: int | None, height: int | None) -> tuple[Image.Image, ...]:
    """Input pictures for image-to-image, as RGB PIL images.

    Each may be a PIL image, a NumPy array (HxWx3 or HxW, uint8 0-255 or float 0-1) or
    a torch tensor of the same layout (or 3xHxW). With `width` and `height` every
    picture is resized to that size; without, each keeps its size cut down to a multiple
    of 8 (pictures of other sizes run in calls of their own).
    """
    from PIL import Image as PILImage

    if (width is None) != (height is None):
        raise ValueError("give both width and height to resize input images, or neither")
    prepared = []
    for index, image in enumerate(images):
        image = as_image(image, f"input image {index}")
        size = (width, height) if width is not None else (image.width // 8 * 8, image.height // 8 * 8)
        if min(size) < 8:
            raise ValueError(f"input image {index} is {image.width}x{image.height}: at least 8x8 is needed")
        prepared.append(image if image.size == size else image.resize(size, PILImage.Resampling.LANCZOS))
    return tuple(prepared)


def as_image(value: Any, what: str = "the image") -> Image.Image:
    """`value` as an RGB PIL image: a PIL image, or an array or tensor of pixels (see `prepare_images`)."""
    import numpy as np
    from PIL import Image as PILImage

    if isinstance(value, PILImage.Image):
        return value.convert("RGB")
    kind = type(value).__name__
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
        if value.ndim == 3 and value.shape[0] in (1, 3) and value.shape[-1] not in (1, 3):
            value = value.transpose(1, 2, 0)  # CxHxW, as torch keeps pictures
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{what} is a {kind}: give a PIL image, a NumPy array or a torch tensor")
    if value.ndim == 3 and value.shape[-1] == 1:
        value = value[..., 0]
    if value.ndim not in (2, 3) or (value.ndim == 3 and value.shape[-1] not in (3, 4)):
        raise ValueError(f"{what} is an array of shape {value.shape}: pictures are HxWx3 (or HxW)")
    if value.dtype == np.uint8:
        pixels = value
    elif np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer):
        if not np.isfinite(value).all() or value.min() < 0 or value.max() > 1:
            raise ValueError(f"{what} is a {value.dtype} array with values outside 0-1: give floats 0-1 or uint8")
        pixels = (value.astype(np.float32) * 255).round().astype(np.uint8)
    else:
        raise ValueError(f"{what} is an array of {value.dtype}: give uint8 (0-255) or floats (0-1)")
    return PILImage.fromarray(np.ascontiguousarray(pixels)).convert("RGB")


_OTHER_BREAKS = re.compile("[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
"""What `str.splitlines` also ends a line at; a cell's lines end at a newline only, so these read as spaces."""


def parse_prompt_lines(text: str, namespace: Mapping[str, Any] | None = None) -> list[str]:
    r"""One prompt (or template) per line; blank lines and ``#`` comments are skipped, ``\#`` starts one with ``#``.

    With a `namespace`, ``{name}`` is filled from it (see `nbbatch.core.templates`); an
    unknown name raises ValueError naming it and its line.
    """
    prompts = []
    for number, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        if len(line) > MAX_PROMPT_CHARS:
            check_text(line.strip())  # before the line is scanned again: a huge line is refused at once
        line = _OTHER_BREAKS.sub(" ", line).strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("\\#"):
            line = line[1:]
        if namespace is not None:
            line = fill_variables(line, number, namespace)
        prompts.append(line)
    return prompts


def make_jobs(
    prompts: str | Sequence[str],
    seeds: str | int | Sequence[int] | None,
    num: int | None,
    negative_prompt: str,
    images: Any,
    settings: Settings,
    *,
    wildcards: str | os.PathLike | None = None,
    random: int | None = None,
    random_seed: int | None = None,
    mask: Any = None,
) -> tuple[Job, ...]:
    """Validate prompts, seeds and input images into jobs, before any model is loaded.

    Templates in the prompts are expanded (every combination, or `random` draws from
    `random_seed`; see `nbbatch.core.templates.expand`). A `mask` makes every picture an
    inpaint: one mask for all (see `nbbatch.core.masks.make_mask`), or a folder or glob of
    masks matched to the pictures by file name (``cat.png`` with ``masks/cat.png``).
    """
    seed_list = choose_seeds(seeds, num)
    if isinstance(prompts, str):
        prompts = parse_prompt_lines(prompts)
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be text, or a list of texts")
    if not isinstance(negative_prompt, str):
        raise ValueError(f"the negative prompt must be text, not {type(negative_prompt).__name__}")
    for text in [*prompts, negative_prompt]:
        check_text(text)  # before templates are parsed: a huge text is refused at once
    expanded = expand([p.strip() for p in prompts], wildcards=wildcards, draws=random, seed=random_seed)
    pictures = gather_pictures(images, "the input images") if _given(images) else []
    if pictures:
        settings.image_to_image_steps()
    check_variation(settings, image_to_image=bool(pictures))
    images = [picture.image for picture in pictures]
    prepared = prepare_images(images, settings.width, settings.height) if images else ()
    masks = match_masks(mask, pictures, prepared) if mask is not None else ()
    return build_jobs(expanded, seed_list, negative_prompt, prepared, [picture.name for picture in pictures], masks)


def match_masks(mask: Any, pictures: Sequence[Picture], prepared: Sequence[Image.Image]) -> list[Image.Image]:
    """The inpaint mask of each picture: `mask` itself for all, or from a folder or glob by the picture's file name.

    A mask the size of its picture as given follows the picture's resize (nearest, so it stays
    black and white); a picture with no mask of its name is a one-line ValueError.
    """
    from PIL import Image as PILImage

    if not pictures:
        raise ValueError("a mask marks what to repaint in input pictures: give images (--image) too")
    text = os.fspath(mask) if isinstance(mask, str | os.PathLike) else None
    if text is None or not (os.path.isdir(os.path.expanduser(text)) or any(c in text for c in "*?[")):
        given = [mask] * len(pictures)
    else:
        found = {os.path.splitext(entry.name or "")[0]: entry.image for entry in gather_pictures(text, "the masks")}
        given = []
        for picture in pictures:
            stem = os.path.splitext(picture.name or "")[0]
            if picture.name is None or stem not in found:
                what = repr(picture.name) if picture.name else "a picture given as a picture, not a file"
                raise ValueError(f"the masks: none for {what} in {text!r} (a mask of the picture's file name)")
            given.append(found[stem])
    masks = []
    for picture, image, each in zip(pictures, prepared, given):
        original = getattr(picture.image, "size", None)
        if isinstance(each, PILImage.Image) and each.size == original and original != image.size:
            each = each.resize(image.size, PILImage.Resampling.NEAREST)
        masks.append(make_mask(each, image.size))
    return masks


def _given(images: Any) -> bool:
    """Whether `images` names any input: neither None nor an empty list (an array counts as one picture)."""
    return not (images is None or (isinstance(images, (list, tuple)) and not images))


def check_variation(settings: Settings, image_to_image: bool) -> None:
    """Refuse a variation seed with input images: it blends the starting noise, which text-to-image alone draws."""
    if image_to_image and settings.variation_seed is not None:
        raise ValueError("variation seeds blend the starting noise of text-to-image: they do not go with input images")


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
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        return parse_seeds(str(int(seeds)))
    if not isinstance(seeds, Iterable):
        raise ValueError(f"seeds must be whole numbers or text such as 0-7, not a {type(seeds).__name__}")
    seeds = list(itertools.islice(seeds, MAX_IMAGES + 1))  # a range(10**9) is refused without being listed
    if len(seeds) > MAX_IMAGES:
        raise ValueError(f"more than {MAX_IMAGES:,} seeds given: the most one batch may hold")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seeds must be whole numbers, not {seed!r}")
    return parse_seeds(",".join(str(int(s)) for s in seeds)) if seeds else ()
