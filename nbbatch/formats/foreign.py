"""Other tools' PNGs: what made them, read into one shape, and their samplers mapped to nbbatch's schedulers.

`sd-parsers` reads what it knows: the A1111 text family (A1111, Forge, SD.Next and
others, settings-only text included), ComfyUI ``prompt`` graphs (it follows the sampler
node to its text encoders and checkpoint), Fooocus, InvokeAI (all three layouts) and
NovelAI. nbbatch reads by hand only what sd-parsers does not: JSON ``parameters`` chunks
in SwarmUI's layout (``sui_image_params``), RuinedFooocus' (``Prompt``, ``Negative``,
``cfg``, ``sampler_name``, ``base_model_name``) and the flat layout of Hugging Face spaces
and diffusers scripts (``prompt``, ``num_inference_steps``, ``guidance_scale``, ...), and
the size where a tool keeps it apart from the sampler (ComfyUI's latent node, Fooocus'
``resolution``, InvokeAI's fields). Any failure inside a reader counts as "no
parameters": a damaged chunk gives the caller's one-line error, never a traceback.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from PIL import Image

from nbbatch.core.item import Foreign
from nbbatch.models.pipelines import takes_schedule

A1111_SAMPLERS = {
    "euler": "euler",
    "euler a": "euler-a",
    "ddim": "ddim",
    "dpm++ 2m": "dpm++2m",
    "dpm++ 2m sde": "dpm++2m-sde",
    "unipc": "unipc",
    "heun": "heun",
    "plms": "pndm",
    "lms": "lms",
    "dpm2": "KDPM2DiscreteScheduler",
    "dpm2 a": "KDPM2AncestralDiscreteScheduler",
    "dpm++ sde": "DPMSolverSDEScheduler",
    "lcm": "LCMScheduler",
}
"""A1111's sampler names (lower case) and nbbatch's scheduler names for them."""

OTHER_SAMPLERS = {
    "euler_ancestral": "euler-a",
    "euler_a": "euler-a",
    "dpmpp_2m": "dpm++2m",
    "dpmpp_2m_sde": "dpm++2m-sde",
    "dpmpp_sde": "DPMSolverSDEScheduler",
    "dpm_2": "KDPM2DiscreteScheduler",
    "dpm_2_ancestral": "KDPM2AncestralDiscreteScheduler",
    "uni_pc": "unipc",
    "uni_pc_bh2": "unipc",
    "plms": "pndm",
    "lms": "lms",
    "heun": "heun",
    "ddim": "ddim",
    "euler": "euler",
    "lcm": "LCMScheduler",
}
"""ComfyUI's, InvokeAI's, NovelAI's, Fooocus' and SwarmUI's sampler names and nbbatch's for them.

Prefixes and suffixes (``k_``, ``sample_``, ``_gpu``, ``_karras``, InvokeAI's ``_k``) are
taken off first, the Karras ones giving the Karras schedule.
"""

SCHEDULES = {"karras": "karras", "exponential": "exponential", "beta": "beta"}
"""Schedule names that change a diffusers scheduler's sigmas; others (normal, simple, uniform, ...) are its default."""


def read_foreign(image: Image.Image) -> Foreign | None:
    """The parameters another tool stored in an opened PNG, or None when it holds none nbbatch can read.

    sd-parsers reads first; a ComfyUI graph then fills what it left unread (values that
    come through other nodes); Tensor.Art's ``generation_data`` and Stability Matrix's
    ``parameters-json`` (whose size is the first pass's, before a hires fix) come before
    what the others read; JSON ``parameters`` are read where nothing else was.
    """
    text = {key: value for key, value in dict(getattr(image, "text", {})).items() if isinstance(value, str)}
    try:
        found = _sd_parsers(image)
        graph = _graph(text.get("prompt"))
        if graph is not None:
            found = _fill(found, _comfy_graph(graph))
        if "generation_data" in text:
            found = _fill(_tensor_art(json.loads(_utf8(text["generation_data"]))), found)
        if "parameters-json" in text:  # Stability Matrix: its JSON has the first pass's size, its text the final one
            found = _fill(_stability_matrix(json.loads(text["parameters-json"])), found)
        parameters = text.get("parameters", "").strip()
        if found is None and parameters.startswith("{"):
            found = _json_parameters(json.loads(parameters), image.size)
        return found
    except Exception:  # a damaged chunk of any kind: no parameters, said in the caller's one line
        return None


def _fill(found: Foreign | None, more: Foreign | None) -> Foreign | None:
    """`found` with the fields it lacks taken from `more` (either may be None)."""
    if found is None or more is None:
        return found or more
    blanks = {
        name: getattr(more, name)
        for name in ("prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height", "sampler", "model")
        if getattr(found, name) in (None, "") and getattr(more, name) not in (None, "")
    }
    if "sampler" in blanks and found.schedule is None:
        blanks["schedule"] = more.schedule
    return dataclasses.replace(found, **blanks)


def _utf8(text: str) -> str:
    """Text a tool wrote as UTF-8 bytes into a Latin-1 chunk (Tensor.Art), decoded as it meant it."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _tensor_art(data: Mapping[str, Any]) -> Foreign | None:
    """Tensor.Art's ``generation_data`` JSON: prompt, negativePrompt, seed (text), steps, cfgScale, size, baseModel."""
    if not isinstance(data, Mapping) or not isinstance(data.get("prompt"), str):
        return None
    model = data.get("baseModel")
    return Foreign(
        tool="Tensor.Art",
        prompt=data["prompt"],
        negative_prompt=str(data.get("negativePrompt") or ""),
        seed=_number(data.get("seed"), int),
        steps=_number(data.get("steps"), int),
        guidance=_number(data.get("cfgScale"), float),
        width=_number(data.get("width"), int),
        height=_number(data.get("height"), int),
        model=model.get("modelFileName") if isinstance(model, Mapping) else None,
    )


def _stability_matrix(data: Mapping[str, Any]) -> Foreign | None:
    """Stability Matrix's ``parameters-json``: PositivePrompt, NegativePrompt, Seed, Steps, CfgScale, Width, Height."""
    if not isinstance(data, Mapping) or not isinstance(data.get("PositivePrompt"), str):
        return None
    return Foreign(
        tool="Stability Matrix",
        prompt=data["PositivePrompt"],
        negative_prompt=str(data.get("NegativePrompt") or ""),
        seed=_number(data.get("Seed"), int),
        steps=_number(data.get("Steps"), int),
        guidance=_number(data.get("CfgScale"), float),
        width=_number(data.get("Width"), int),
        height=_number(data.get("Height"), int),
        sampler=_first(data, "Sampler"),
        schedule=_first(data, "Scheduler"),
        model=_first(data, "ModelName"),
    )


_GRAPH_DEPTH = 20
"""How many nodes a value is followed through in a ComfyUI graph (a loop or a huge graph ends there)."""


def _graph(text: str | None) -> Mapping[str, Any] | None:
    if not text:
        return None
    graph = json.loads(text)
    return graph if isinstance(graph, Mapping) and len(graph) <= 10_000 else None


def _comfy_graph(graph: Mapping[str, Any]) -> Foreign | None:
    """A ComfyUI ``prompt`` graph read by following each sampler input to the node that holds its value.

    Custom saver and literal nodes (comfy-image-saver's Seed Generator and String Literal,
    primitives, rgthree's and Comfyroll's) hand seeds, prompts, CFG and sizes to the sampler
    through links, which readers that look only at the sampler's own inputs miss.
    """
    samplers = [
        node
        for node in graph.values()
        if isinstance(node, Mapping)
        and isinstance(node.get("inputs"), Mapping)
        and {"steps", "cfg"} <= set(node["inputs"])
        and ({"seed", "noise_seed"} & set(node["inputs"]))
    ]
    if not samplers:
        return None
    first = next((s for s in samplers if _value(graph, s["inputs"].get("denoise"), 0) in (1, None)), samplers[0])
    inputs = first["inputs"]

    def held(name: str, kind: type) -> Any:
        value = _value(graph, inputs.get(name), 0)
        return _number(value, kind) if kind in (int, float) else value if isinstance(value, str) else None

    size: dict[str, Any] = {}
    latent = _node(graph, inputs.get("latent_image"))
    if latent is not None and str(latent.get("class_type", "")).startswith("Empty"):
        size = {name: _number(_value(graph, latent["inputs"].get(name), 0), int) for name in ("width", "height")}
    loader = _node(graph, inputs.get("model"), lambda node: bool(_MODEL_INPUTS & set(node["inputs"])))
    model = None
    if loader is not None:
        name = next(name for name in _MODEL_INPUTS if name in loader["inputs"])
        model = _value(graph, loader["inputs"][name], 0)
    return Foreign(
        tool="ComfyUI",
        prompt=_text(graph, inputs.get("positive")) or "",
        negative_prompt=_text(graph, inputs.get("negative")) or "",
        seed=held("seed", int) if "seed" in inputs else held("noise_seed", int),
        steps=held("steps", int),
        guidance=held("cfg", float),
        width=size.get("width"),
        height=size.get("height"),
        sampler=held("sampler_name", str),
        schedule=held("scheduler", str),
        model=model if isinstance(model, str) else None,
    )


_MODEL_INPUTS = {"ckpt_name", "unet_name"}
"""The inputs in which ComfyUI's checkpoint and diffusion-model loaders name their file."""


def _node(graph: Mapping[str, Any], link: Any, wanted: Any = None, depth: int = 0) -> Mapping[str, Any] | None:
    """The node a link (``[id, output]``) points to; with `wanted`, the first upstream node it accepts."""
    if not (isinstance(link, list) and link and depth < _GRAPH_DEPTH):
        return None
    node = graph.get(str(link[0]))
    if not isinstance(node, Mapping) or not isinstance(node.get("inputs"), Mapping):
        return None
    if wanted is None or wanted(node):
        return node
    return next(
        (found for inner in node["inputs"].values() if (found := _node(graph, inner, wanted, depth + 1)) is not None),
        None,
    )


_VALUE_INPUTS = ("value", "seed", "noise_seed", "int", "float", "number", "string", "text", "Text", "cfg", "steps")
"""The inputs in which literal, primitive and selector nodes hold the value they hand on."""


def _value(graph: Mapping[str, Any], value: Any, depth: int) -> Any:
    """An input's value: itself, or the value held by the node its link comes from (followed through links)."""
    if not isinstance(value, list):
        return value
    node = _node(graph, value)
    if node is None or depth >= _GRAPH_DEPTH:
        return None
    inputs = node["inputs"]
    held = [inputs[name] for name in _VALUE_INPUTS if name in inputs]
    if not held and len(inputs) == 1:
        held = list(inputs.values())
    return _value(graph, held[0], depth + 1) if held else None


def _text(graph: Mapping[str, Any], link: Any) -> str | None:
    """The prompt of a conditioning input: the text of the first text encoder upstream of it."""
    encoder = _node(graph, link, lambda node: any(name in node["inputs"] for name in ("text", "text_g", "prompt")))
    if encoder is None:
        return None
    inputs = encoder["inputs"]
    value = _value(graph, inputs.get("text", inputs.get("text_g", inputs.get("prompt"))), 0)
    return value if isinstance(value, str) else None


def scheduler_name(sampler: str | None, schedule: str | None = None) -> str | None:
    """The nbbatch scheduler name for a sampler as A1111, ComfyUI, InvokeAI, NovelAI or Fooocus call it."""
    if not sampler:
        return None
    name = sampler.strip().lower()
    karras = name.endswith((" karras", "_karras", "_k"))
    name = re.sub(r"( karras|_karras|_k|_gpu)$", "", re.sub(r"^(k_|sample_)", "", name))
    base = A1111_SAMPLERS.get(name) or OTHER_SAMPLERS.get(name)
    if base is None:
        return None
    suffix = "karras" if karras else SCHEDULES.get((schedule or "").strip().lower())
    return f"{base}-{suffix}" if suffix and takes_schedule(f"{base}-{suffix}") else base  # Euler a has no Karras


def _sd_parsers(image: Image.Image) -> Foreign | None:
    from sd_parsers import ParserManager

    info = ParserManager().parse(image)
    if info is None or not info.samplers:
        return None
    sampler = _first_pass(info.samplers)
    values = {**{str(k).lower(): v for k, v in info.metadata.items()}, **sampler.parameters}
    width, height = _latent_size(info.raw_parameters, sampler.sampler_id) or _size(values, info.metadata)
    tool = getattr(info.generator, "value", str(info.generator))
    strength = _number(values.get("denoising strength", values.get("denoise", values.get("strength"))), float)
    cfg = _number(values.get("cfg_scale", values.get("cfg scale")), float)
    distilled = _number(values.get("distilled cfg scale"), float)  # Forge's FLUX: CFG scale is then true CFG
    return Foreign(
        tool=str(tool),
        prompt=", ".join(p.value for p in sampler.prompts),
        negative_prompt=", ".join(p.value for p in sampler.negative_prompts),
        seed=_number(values.get("seed", values.get("noise_seed")), int),
        steps=_number(values.get("steps"), int),
        guidance=cfg if distilled is None else distilled,
        true_cfg=cfg if distilled is not None and cfg is not None and cfg > 1 else None,
        width=width,
        height=height,
        sampler=sampler.name,
        schedule=values.get("scheduler"),
        model=sampler.model.name if sampler.model is not None else None,
        strength=None if strength is None or strength >= 1 else strength,
    )


def _first_pass(samplers: list[Any]) -> Any:
    """The sampler that made the picture from noise: the first with full denoise from step 0 (then hires passes)."""
    for sampler in samplers:
        denoise = _number(sampler.parameters.get("denoise"), float)
        start = _number(sampler.parameters.get("start_at_step"), int)
        if (denoise is None or denoise >= 1) and not start:
            return sampler
    return samplers[0]


def _latent_size(raw: Mapping[str, Any], sampler_id: Any) -> tuple[int, int] | None:
    """A ComfyUI sampler's size: the empty latent its ``latent_image`` input links to (sd-parsers lists them apart)."""
    graph = raw.get("prompt")
    graph = json.loads(graph) if isinstance(graph, str) else graph
    if not isinstance(graph, Mapping) or sampler_id is None:
        return None
    link = graph.get(str(sampler_id), {}).get("inputs", {}).get("latent_image")
    source = graph.get(str(link[0]), {}) if isinstance(link, list) and link else {}
    if source.get("class_type") != "EmptyLatentImage":
        return None
    width, height = _number(source["inputs"].get("width"), int), _number(source["inputs"].get("height"), int)
    return (width, height) if width and height else None


def _size(values: Mapping[str, Any], metadata: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Width and height from wherever the tool wrote them: ``Size``, a latent node, ``resolution`` or fields."""
    if isinstance(values.get("size"), str) and re.fullmatch(r"\d+x\d+", values["size"]):
        width, height = values["size"].split("x")
        return int(width), int(height)
    latents = metadata.get("EmptyLatentImage")
    if isinstance(latents, list) and latents and isinstance(latents[0], Mapping):
        return _number(latents[0].get("width"), int), _number(latents[0].get("height"), int)
    if isinstance(values.get("resolution"), str):  # Fooocus: "(width, height)"
        pair = ast.literal_eval(values["resolution"])
        return _number(pair[0], int), _number(pair[1], int)
    return _number(values.get("width"), int), _number(values.get("height"), int)


def _json_parameters(data: Mapping[str, Any], size: tuple[int, int]) -> Foreign | None:
    """A JSON ``parameters`` chunk: SwarmUI's ``sui_image_params``, else the flat diffusers-style keys.

    The flat layout (Hugging Face spaces, scripts) often leaves the size out: then it is the picture's `size`.
    """
    if isinstance(data.get("sui_image_params"), Mapping):
        params = data["sui_image_params"]
        creativity = _number(params.get("initimagecreativity"), float)
        return Foreign(
            tool="SwarmUI",
            prompt=str(params.get("prompt", "")),
            negative_prompt=str(params.get("negativeprompt", "")),
            seed=_number(params.get("seed"), int),
            steps=_number(params.get("steps"), int),
            guidance=_number(params.get("cfgscale"), float),
            width=_number(params.get("width"), int),
            height=_number(params.get("height"), int),
            sampler=params.get("sampler", params.get("comfyuisampler")),
            schedule=params.get("scheduler", params.get("comfyuischeduler")),
            model=params.get("model"),
            strength=creativity if params.get("initimage") or creativity else None,
        )
    prompt = data.get("prompt", data.get("Prompt"))  # RuinedFooocus writes Prompt, Negative, cfg, sampler_name
    if not isinstance(prompt, str):
        return None
    comfy_style = "sampler_name" in data  # then "scheduler" is the schedule (karras), not a diffusers class
    return Foreign(
        tool=str(data.get("software", data.get("pipeline", "JSON parameters"))),
        prompt=prompt,
        negative_prompt=str(data.get("negative_prompt", data.get("Negative")) or ""),
        seed=_number(data.get("seed"), int),
        steps=_number(data.get("num_inference_steps", data.get("steps")), int),
        guidance=_number(_first(data, "guidance_scale", "cfg_scale", "cfg", "guidance"), float),
        width=_number(data.get("width"), int) or size[0],
        height=_number(data.get("height"), int) or size[1],
        sampler=data["sampler_name"] if comfy_style else data.get("scheduler", data.get("sampler")),
        schedule=data.get("scheduler") if comfy_style else data.get("schedule", data.get("scheduler_type")),
        model=_first(data, "model", "model_id", "base_model", "base_model_name"),
        strength=_number(data.get("strength"), float),
    )


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    """The value of the first of `keys` that `data` has, or None."""
    return next((data[key] for key in keys if key in data), None)


def _number(value: Any, kind: type) -> Any:
    """`value` as an int or a float (numbers written as text too), or None."""
    if value is None or isinstance(value, bool):
        return None
    if kind is int and isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)  # seeds beyond 2**53 lose digits as floats
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if kind is int and number.is_integer() else kind(number) if kind is float else None
