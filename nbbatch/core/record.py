"""The record of one image: how it was made, typed, versioned, and checked field by field when read.

An item carries its `Call` (every argument the pipeline was called with, where, with which
scheduler config, adapters and speedups) and its `Provenance` (the template and choices, the
grid cell, the refinement step, the hires fix, the input picture's name); a saved image
carries a `Record`: those two with its prompt, seed, settings, generator state and lineage.
`Record.to_json` writes it (the PNG's ``nbbatch`` chunk, an index line) and
`Record.from_json` reads it back, the only way in; the A1111 text and the code export are
both made from the same `Call`.

A PNG or an ``index.jsonl`` line may come from anyone, so a record is data to be
checked, never trusted: every field has a type and a range (the ones a user could type),
unknown fields are refused, and the first field that fails is named in a one-line
ValueError (``the record's call.pipeline: ...``). What passes is plain JSON of known
shape: prompts within the length nbbatch takes, names that are one printable line
(pipeline and scheduler class names), numbers that are finite.
pydantic does the checking (its JSON parser also bounds nesting, so a deeply nested
file is an error rather than a `RecursionError`); the settings go through
`nbbatch.core.spec.Settings`, the same checks as typed input.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from pydantic_core import from_json

from nbbatch.core.attention import MAX_PROMPT_CHARS, check_text
from nbbatch.core.axes import AXES
from nbbatch.core.seeds import MAX_IMAGES, SEED_MAX
from nbbatch.core.spec import MAX_SIDE, Settings, check_name

RECORD_VERSION = 2
"""The record's layout: 1 kept the provenance inside the call and the scheduler config beside it (read still)."""

TORCH_DTYPES = ("float32", "float16", "bfloat16")
"""The dtypes a pipeline runs in, as torch names them (``torch.float16``)."""


def _prompt(text: str) -> str:
    check_text(text)
    return text


def _name(text: str) -> str:
    check_name(text, "the name")
    return text


def _class_name(text: str) -> str:
    """A Python class name (the export checks that diffusers has it): never code, never more than a name."""
    if not (text.isidentifier() and text.isascii()):
        raise ValueError(f"{text[:80]!r} is not a class name")
    return text


def _base64(text: str) -> str:
    try:
        base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    return text


def is_plain_name(text: str) -> bool:
    """Whether `text` names a file of a folder itself: no folder part, not hidden, one printable line."""
    return bool(text) and "/" not in text and "\\" not in text and not text.startswith(".") and text.isprintable()


def _file_name(text: str) -> str:
    if not is_plain_name(text):
        raise ValueError(f"{text[:80]!r} is not a plain file name in the picture's folder")
    return text


Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS), AfterValidator(_prompt)]
Name = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_name)]
FileName = Annotated[str, Field(max_length=255), AfterValidator(_file_name)]
Seed = Annotated[StrictInt, Field(ge=0, le=SEED_MAX)]
Side = Annotated[StrictInt, Field(ge=8, le=MAX_SIDE)]
Origin = Literal["batch", "refine", "vary", "hires", "inpaint", "edit"]
Key = Annotated[str, Field(max_length=100)]
Scalar = StrictBool | StrictInt | float | Annotated[str, Field(max_length=1000)] | None
AxisValue = Scalar | Annotated[list[StrictInt], Field(max_length=2)]
ConfigScalar = (
    StrictBool | StrictInt | Annotated[float, Field(allow_inf_nan=True)] | Annotated[str, Field(max_length=1000)] | None
)
"""A scheduler config's value: infinities too (DPM++'s ``lambda_min_clipped`` is ``-inf`` by default)."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class LoraRecord(_Strict):
    """A LoRA as it was loaded: its name, file (or hub id), weight and A1111 short hash."""

    name: Name
    source: Name
    weight: Annotated[float, Field(ge=-10, le=10)]
    hash: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")] | None = None


class EmbeddingRecord(_Strict):
    """A textual-inversion embedding as it was loaded: its token, file and short hash."""

    token: Name
    source: Name
    hash: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")] | None = None


class Hires(_Strict):
    """A hires fix: the scale, the upscaler and the first pass's size."""

    scale: Annotated[float, Field(gt=1, le=4)]
    upscaler: Literal["latent", "lanczos"]
    width: Side
    height: Side


class Call(_Strict):
    """Every argument the pipeline was called with, and where: what the code export writes out.

    The sizes are the picture's (HiDream's: those asked for, which its pipeline scales to its area); a guidance or
    strength the pipeline does not take is left out (None), as are speedups, adapters and the refiner when none ran.
    """

    model: Name
    pipeline: Annotated[str, Field(max_length=100), AfterValidator(_class_name)]
    scheduler: Annotated[str, Field(max_length=100), AfterValidator(_class_name)]
    dtype: Literal[TORCH_DTYPES]  # type: ignore[valid-type]
    device: Annotated[str, Field(pattern=r"^(cpu|mps|cuda(:\d{1,2})?)$")]
    generator_device: Annotated[str, Field(pattern=r"^(cpu|cuda(:\d{1,2})?)$")]
    num_inference_steps: Annotated[StrictInt, Field(ge=1, le=1000)]
    guidance_scale: Annotated[float, Field(ge=0, le=100)] | None = None
    true_cfg_scale: Annotated[float, Field(ge=0, le=100)] | None = None
    guidance_rescale: Annotated[float, Field(ge=0, le=1)] | None = None
    max_sequence_length: Annotated[StrictInt, Field(ge=1, le=4096)] | None = None
    width: Side
    height: Side
    strength: Annotated[float, Field(gt=0, le=1)] | None = None
    clip_skip: Annotated[StrictInt, Field(ge=1, le=11)] | None = None
    variation_seed: Seed | None = None
    variation_strength: Annotated[float, Field(ge=0, le=1)] | None = None
    speedups: Annotated[list[Literal["compile", "channels_last", "fuse_qkv"]], Field(max_length=3)] = []
    loras: Annotated[list[LoraRecord], Field(max_length=100)] = []
    embeddings: Annotated[list[EmbeddingRecord], Field(max_length=100)] = []
    encoded_by: Literal["compel"] | None = None
    refiner: Name | None = None
    companion: Name | None = None
    """The repo a model the pipeline's own files lack was loaded from, as its model card loads it (HiDream's Llama)."""
    inpaint: Literal["blend"] | None = None
    refiner_at: Annotated[float, Field(gt=0, lt=1)] | None = None
    scheduler_config: Annotated[
        dict[Annotated[str, Field(max_length=100)], ConfigScalar | list[ConfigScalar]], Field(max_length=200)
    ] = {}

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Call:
        """A call from plain data (mappings, tuples), checked as a saved one is: what a file would read back."""
        return cls.model_validate_json(json.dumps(_json_ready(data)))


class Provenance(_Strict):
    """Where an image came from besides its call: template and choices, grid cell, refine step, hires, picture."""

    template: Prompt | None = None
    choices: Annotated[list[Prompt], Field(max_length=1000)] = []
    template_seed: Seed | None = None
    step: Annotated[str, Field(pattern=r"^[re]\d{1,4}[a-z]{0,8}$")] | None = None
    hires: Hires | None = None
    picture: FileName | None = None
    axes: dict[Literal["x", "y", "z"], tuple[Literal[tuple(AXES)], AxisValue]] = {}  # type: ignore[valid-type]

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Provenance:
        """Provenance from a job's plain record (`nbbatch.core.spec.Job.provenance`), checked as a saved one is."""
        return cls.model_validate_json(json.dumps(_json_ready(data)))

    def as_plain(self) -> dict[str, Any]:
        """What a job records to make this provenance again (only what is set)."""
        return self.model_dump(exclude_defaults=True)


def _json_ready(value: Any) -> Any:
    """`value` with every mapping as a dict and every tuple as a list: what `json.dumps` writes as JSON."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, Mapping):
        return {str(key): _json_ready(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(inner) for inner in value]
    return value


class Generator(_Strict):
    """Where the image's generator lived and its initial state (base64): the truth of its starting noise."""

    device: Annotated[str, Field(pattern=r"^(cpu|cuda(:\d{1,2})?)$")]
    state: Annotated[str, Field(max_length=8192), AfterValidator(_base64)]


class Step(_Strict):
    """One image of a lineage: the first image first."""

    prompt: Prompt
    seed: Seed
    origin: Origin


class Record(_Strict):
    """An nbbatch record as saved in a PNG's ``nbbatch`` chunk (and, with ``file``, as an index line)."""

    nbbatch_record: Literal[2]
    prompt: Prompt
    negative_prompt: Prompt
    seed: Seed
    prompt_index: Annotated[StrictInt, Field(ge=0, lt=MAX_IMAGES)]
    origin: Origin
    broken: StrictBool = False
    settings: dict[str, Any]
    call: Call
    provenance: Provenance = Provenance()
    generator: Generator
    lineage: Annotated[list[Step], Field(max_length=1000)] = []
    versions: Annotated[
        dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=100)]], Field(max_length=20)
    ] = {}
    init_image: FileName | None = None
    mask: FileName | None = None
    file: FileName | None = None

    @classmethod
    def from_json(cls, text: str | bytes) -> Record:
        """The record in `text` (JSON), checked; ValueError naming the first bad field.

        Its ``settings`` must make a valid `Settings`. A record of layout 1 (wave 2's PNGs) is
        read as the same record in today's layout.
        """
        try:
            data = from_json(text)
        except ValueError as error:
            raise ValueError(f"the record: not JSON ({str(error).splitlines()[0]})") from None
        if isinstance(data, dict) and data.get("nbbatch_record") == 1:
            text = json.dumps(_from_layout_1(data))
        try:
            record = cls.model_validate_json(text)
        except ValidationError as error:
            raise ValueError(_first_error(error)) from None
        try:
            Settings(**record.settings)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"settings: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
            ) from None
        return record

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data (what is unset left out): an index line adds its ``file`` to this."""
        return _json_ready(self.model_dump(exclude_defaults=True))

    def to_json(self) -> str:
        """The record as JSON, as a PNG's ``nbbatch`` chunk holds it (`from_json` reads it back)."""
        return json.dumps(self.to_dict())


def _from_layout_1(data: dict[str, Any]) -> dict[str, Any]:
    """A layout-1 record in layout 2: the provenance taken out of the call, the scheduler config put in it."""
    call = data.get("call")
    if not isinstance(call, dict):
        return data
    provenance = {name: call.pop(name) for name in list(call) if name in Provenance.model_fields}
    call["scheduler_config"] = data.pop("scheduler_config", {})
    return {**data, "nbbatch_record": 2, "call": call, "provenance": provenance}


def _first_error(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the record"
    error = first.get("ctx", {}).get("error") if first["type"] == "value_error" else None
    message = str(error) if error is not None else first["msg"]  # the project's own words, without pydantic's prefix
    message = message.splitlines()[0] if message else first["type"]
    return f"{where}: {message}"
