"""Saving and loading results: PNGs with their parameters, an index of runs, and reproduction.

Every image is written with two PNG text chunks: ``parameters`` in the layout
AUTOMATIC1111's web UI writes (which its "PNG Info" and many other tools read), and
``nbbatch``, the exact record as JSON (settings, every call argument, the generator's
initial state, lineage and library versions). Files are never overwritten: a taken
name gets a suffix. Each file is written to a temporary name and linked into place,
so an interrupted save leaves no half-written image.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Container, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from nbbatch import __version__
from nbbatch.core.axes import axis_value
from nbbatch.core.item import Item
from nbbatch.core.seeds import SEED_MAX, generator_state, make_generator
from nbbatch.core.spec import MAX_SIDE, Settings
from nbbatch.formats.foreign import Foreign, read_foreign
from nbbatch.models.pipelines import schedule_name

RECORD_VERSION = 1
INDEX = "index.jsonl"
SAMPLERS = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DDIMScheduler": "DDIM",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "UniPCMultistepScheduler": "UniPC",
    "HeunDiscreteScheduler": "Heun",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "KDPM2DiscreteScheduler": "DPM2",
    "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "DPMSolverSDEScheduler": "DPM++ SDE",
    "LCMScheduler": "LCM",
}
"""diffusers scheduler classes and the sampler names A1111 shows for them (diffusers' own table of the two)."""

RNG = {"cpu": "CPU", "cuda": "GPU"}
"""Where the generators were, as A1111's ``RNG`` field says it (its GPU noise is torch's CUDA generator's)."""


def a1111_parameters(item: Item) -> str:
    """The ``parameters`` text A1111 writes: the prompt, ``Negative prompt: ...``, then ``key: value, ...``."""
    params = item.params
    fields = {
        "Steps": params.get("num_inference_steps"),
        "Sampler": _sampler(params),
        "Schedule type": schedule_type(params.get("scheduler_config", {})),
        "CFG scale": params.get("guidance_scale"),
        "Seed": item.seed,
        "Size": f"{item.image.width}x{item.image.height}",
        "Model": model_short_name(params["model"]) if params.get("model") else None,
        "Denoising strength": params.get("strength"),
        "Clip skip": params["clip_skip"] + 1 if params.get("clip_skip") else None,
        "RNG": RNG.get(str(params.get("generator_device", "")).split(":")[0]),
        "Variation seed": params.get("variation_seed") if params.get("variation_strength") else None,
        "Variation seed strength": params.get("variation_strength") or None,
        "Template": params.get("template"),
        "Lora hashes": _hashes(params.get("loras", ()), "name"),
        "TI hashes": _hashes(params.get("embeddings", ()), "token"),
        "Version": f"nbbatch {__version__}",
    }
    line = ", ".join(f"{key}: {_quote(value)}" for key, value in fields.items() if value not in (None, ""))
    negative = f"\nNegative prompt: {item.negative_prompt}" if item.negative_prompt else ""
    tags = "".join(f" <lora:{lora['name']}:{lora['weight']:g}>" for lora in params.get("loras", ()))
    return f"{item.prompt}{tags}{negative}\n{line}"


def schedule_type(config: Mapping[str, Any]) -> str:
    """A1111's ``Schedule type`` of a scheduler config, always written so that no reader guesses Karras.

    Karras, Exponential or Beta where the config asks for those sigmas; otherwise the
    timesteps are evenly spaced: ``SGM Uniform`` when they end at the last training step
    (diffusers' ``trailing`` spacing, as SGM's samplers), else ``Uniform``.
    """
    return schedule_name(config) or ("SGM Uniform" if config.get("timestep_spacing") == "trailing" else "Uniform")


def model_short_name(model: str) -> str:
    """The ``Model`` name A1111 readers take whole: a folder's or hub id's last part, ``nbbatch:x`` as ``nbbatch-x``.

    A ``:`` or a ``/`` in the field breaks other tools' parsers; the full id stays in the record.
    """
    return model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].replace(":", "-")


def _hashes(records: Sequence[Mapping[str, Any]], key: str) -> str | None:
    """A1111's ``Lora hashes`` / ``TI hashes`` value: ``name: hash, name: hash`` (files without a hash left out)."""
    return ", ".join(f"{r[key]}: {r['hash']}" for r in records if r.get("hash")) or None


AXIS_TYPES = {
    "steps": "Steps",
    "guidance": "CFG Scale",
    "scheduler": "Sampler",
    "strength": "Denoising",
    "seed": "Seed",
    "variation_seed": "Var. seed",
    "variation_strength": "Var. strength",
    "prompt": "Prompt S/R",
    "size": "Size",
    "width": "Width",
    "height": "Height",
}
"""Axis names and the ``X Type`` A1111's X/Y/Z plot writes for them."""


def grid_parameters(items: Sequence[Item]) -> str | None:
    """The ``parameters`` text of an X/Y/Z grid: the first image's, plus ``X Type``/``X Values`` (Y, Z).

    None when `items` are not a grid.
    """
    if not items or not items[0].cell:
        return None
    axes: dict[str, tuple[str, list[Any]]] = {}
    for item in items:
        for letter, (name, value) in item.cell.items():
            values = axes.setdefault(letter, (name, []))[1]
            if value not in values:
                values.append(value)
    fields = []
    for letter in sorted(axes):
        name, values = axes[letter]
        shown = ", ".join(axis_value(v) for v in values)
        fields.append(f"{letter.upper()} Type: {AXIS_TYPES[name]}, {letter.upper()} Values: {_quote(shown)}")
    return f"{a1111_parameters(items[0])}, {', '.join(fields)}"


def _sampler(params: Mapping[str, Any]) -> str | None:
    """The A1111 sampler name of the scheduler used (``DPM++ 2M SDE`` for DPM-Solver++ in its SDE form)."""
    name = SAMPLERS.get(params.get("scheduler", ""), params.get("scheduler"))
    if params.get("scheduler_config", {}).get("algorithm_type") == "sde-dpmsolver++":
        name = f"{name} SDE"
    return name


def record(item: Item) -> dict[str, Any]:
    """The exact, JSON-ready record of how `item` was made."""
    return {
        "nbbatch_record": RECORD_VERSION,
        "prompt": item.prompt,
        "negative_prompt": item.negative_prompt,
        "seed": item.seed,
        "prompt_index": item.prompt_index,
        "origin": item.origin,
        "broken": item.broken,
        "settings": dataclasses.asdict(item.settings),
        "call": {key: value for key, value in item.params.items() if key != "scheduler_config"},
        "scheduler_config": dict(item.params.get("scheduler_config", {})),
        "generator": {"device": item.settings.generator_device, "state": base64.b64encode(item.state).decode()},
        "lineage": [{"prompt": step.prompt, "seed": step.seed, "origin": step.origin} for step in item.lineage()],
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    """The versions of nbbatch, diffusers, transformers, torch and Python."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"nbbatch": __version__, "python": sys.version.split()[0]}
    for name in ("diffusers", "transformers", "torch"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


class Saver:
    """Writes items into one folder as they come: PNGs with metadata, input images, and index lines.

    Used whole by `BatchResult.save` and chunk by chunk by autosave.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".nbbatch-check-"):
                pass
        except OSError as error:
            raise ValueError(f"cannot write to {str(folder)!r}: {error.strerror or error}") from None
        self.written: list[Path] = []

    def add(
        self, items: Iterable[Item], stems: Sequence[str] | None = None, indexed: Container[str] = ()
    ) -> list[Path]:
        """Write each item's PNG (and input image), then append their index lines; return the PNG paths.

        Files are named ``p00-s5.png`` (``-1``, ``-2``, ... when taken), or exactly ``stem.png``
        from `stems` (a headless sweep, whose names must not move: a taken one is an error).
        A file named in `indexed` gets no index line: its line is there already (a sweep's image made again).
        """
        paths, entries = [], []
        for number, item in enumerate(items):
            entry = record(item)
            if item.init_image is not None:
                entry["init_image"] = self._input_image(item.init_image)
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", a1111_parameters(item))
            info.add_text("nbbatch", json.dumps(entry, default=str))
            if stems is None:
                stem = f"p{item.prompt_index:02d}-s{item.seed}" + (f"-{item.origin}" if item.origin != "batch" else "")
                path = self._write(stem, _png_bytes(item.image, info))
            else:
                path = self._write(stems[number], _png_bytes(item.image, info), fixed=True)
            paths.append(path)
            if path.name not in indexed:
                entries.append({"file": path.name, **entry})
        self.append_index(entries)
        self.written.extend(paths)
        return paths

    def append_index(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Append one JSON line per entry to the index, in one write: the lines of a chunk go in together."""
        if entries:
            with open(self.folder / INDEX, "a", encoding="utf-8") as index:
                index.write("".join(json.dumps(entry, default=str) + "\n" for entry in entries))

    def add_grid(self, grid: Image.Image, items: Sequence[Item] = ()) -> Path:
        """Write a result's grid as one more PNG; an X/Y/Z grid of `items` gets A1111's grid parameters."""
        info = None
        parameters = grid_parameters(items)
        if parameters is not None:
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", parameters)
        return self._write("grid", _png_bytes(grid, info))

    def _input_image(self, image: Image.Image) -> str:
        data = _png_bytes(image)
        name = f"input-{hashlib.sha1(data).hexdigest()[:12]}.png"  # same picture, same file
        if not (self.folder / name).exists():
            self._write(name[:-4], data, exact=True)
        return name

    def _write(self, stem: str, data: bytes, exact: bool = False, fixed: bool = False) -> Path:
        """Write `data` to ``stem.png`` or, if taken, ``stem-1.png``, ...: atomically, never overwriting.

        `exact`: a taken name is the same file already (input images, named by their hash);
        `fixed`: a taken name is an error.
        """
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".nbbatch-", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            for number in range(10_000):
                path = self.folder / (f"{stem}.png" if number == 0 else f"{stem}-{number}.png")
                try:
                    os.link(temporary, path)  # fails if the name is taken: no overwrite, no race
                    return path
                except FileExistsError:
                    if exact:
                        return path
                    if fixed:
                        raise ValueError(f"{path} exists already: it is not overwritten") from None
            raise ValueError(f"no free file name for {stem}.png in {self.folder}")
        finally:
            os.unlink(temporary)


def index_entries(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of the index `path` by file name, in order (a name listed twice counts once); empty if none."""
    if not path.exists():
        return {}
    entries: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            entries[entry["file"]] = entry
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"line {number} of {str(path)!r} is damaged: not an index entry") from None
    return entries


def read_items(path: str | os.PathLike) -> list[Item]:
    """The items saved in `path`: one PNG, an ``index.jsonl``, or a folder (its index, else its PNGs)."""
    path = Path(path).expanduser()
    if path.is_dir() and not (path / INDEX).exists():
        return [_load_png(png) for png in sorted(path.glob("*.png")) if not png.name.startswith(("grid", "input-"))]
    if path.is_dir():
        path = path / INDEX
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist")
    if path.suffix != ".jsonl":
        return [_load_png(path)]
    items = [_load_png(path.parent / name) for name in index_entries(path)]
    return link_parents(items)


def link_parents(items: list[Item]) -> list[Item]:
    """Give loaded refinements and variations their parent items back, where the parent is among `items`.

    A record keeps its lineage as (prompt, seed, origin) steps; the parent is the latest
    loaded item matching the step before the last. Order is kept.
    """

    def key(step: Mapping[str, Any]) -> tuple:
        return (step.get("prompt"), step.get("seed"), step.get("origin"))

    linked: dict[tuple, Item] = {}
    result = list(items)
    for position in sorted(range(len(items)), key=lambda i: len(items[i].params.get("lineage", ()))):
        lineage = items[position].params.get("lineage", ())
        if len(lineage) > 1 and key(lineage[-2]) in linked:
            result[position] = dataclasses.replace(items[position], parent=linked[key(lineage[-2])])
        item = result[position]
        linked[(item.prompt, item.seed, item.origin)] = item
    return result


def _load_png(path: Path) -> Item:
    try:
        with Image.open(path) as opened:
            opened.load()
            image, text = opened.convert("RGB"), dict(getattr(opened, "text", {}))
            if opened.format != "PNG":
                raise ValueError(f"{str(path)!r} is a {opened.format} image: nbbatch reads parameters from PNGs")
            found = None if "nbbatch" in text else read_foreign(opened)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read {str(path)!r} as an image: {error}") from None
    if "nbbatch" in text:
        try:
            entry = json.loads(text["nbbatch"])
            return _item_from_record(entry, image, path)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"the nbbatch record in {str(path)!r} is damaged: {error}") from None
    if found is None:
        raise ValueError(f"{str(path)!r} holds no generation parameters that nbbatch can read")
    return _item_from_foreign(found, image, path)


def _item_from_record(entry: Mapping[str, Any], image: Image.Image, path: Path) -> Item:
    settings = Settings(**entry["settings"])
    init_image = None
    if entry.get("init_image"):
        source = path.parent / entry["init_image"]
        if not source.is_file():
            raise ValueError(f"its image-to-image input {entry['init_image']!r} is missing from {str(path.parent)!r}")
        with Image.open(source) as opened:
            init_image = opened.convert("RGB")
    params = {**entry["call"], "scheduler_config": entry.get("scheduler_config", {})}
    params["lineage"] = entry.get("lineage", [])
    params["file"] = path.name
    return Item(
        image,
        int(entry["seed"]),
        entry["prompt"],
        entry["negative_prompt"],
        int(entry["prompt_index"]),
        settings,
        MappingProxyType(params),
        base64.b64decode(entry["generator"]["state"]),
        init_image,
        None,
        entry["origin"],
        bool(entry.get("broken")),
    )


def _item_from_foreign(found: Foreign, image: Image.Image, path: Path) -> Item:
    """An item for another tool's picture: its prompt and settings, and nbbatch's generator for its seed.

    Its noise came from that tool's generator, so nbbatch cannot make it again (refine,
    verify and reproduce refuse); its settings start a new batch or a `vary` of it.
    """
    seed = found.seed if found.seed is not None and 0 <= found.seed <= SEED_MAX else 0
    sizes = {
        name: value
        for name, value in (("width", found.width), ("height", found.height))
        if value is not None and 8 <= value <= MAX_SIDE and value % 8 == 0
    }
    settings = Settings(
        model=found.model or "unknown",
        steps=found.steps if found.steps is not None and 1 <= found.steps <= 1000 else 30,
        guidance=found.guidance if found.guidance is not None and 0 <= found.guidance <= 100 else None,
        scheduler=found.scheduler,
        strength=found.strength if found.strength is not None and 0 < found.strength <= 1 else 0.8,
        **sizes,
    )
    params = {
        "file": path.name,
        "tool": found.tool,
        "num_inference_steps": found.steps,
        "guidance_scale": found.guidance,
        "sampler": found.sampler,
        "schedule": found.schedule,
        "width": found.width,
        "height": found.height,
        "model": found.model,
        "strength": found.strength,
    }
    state = generator_state(make_generator("cpu", seed))
    return Item(
        image,
        seed,
        found.prompt,
        found.negative_prompt,
        0,
        settings,
        MappingProxyType(params),
        state,
        None,
        None,
        "foreign",
    )


def _png_bytes(image: Image.Image, info: PngImagePlugin.PngInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _quote(value: Any) -> str:
    """A1111's quoting: values with commas, colons or newlines are written as JSON strings."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text
