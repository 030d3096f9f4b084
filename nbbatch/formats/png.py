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
import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
import secrets
import stat
import sys
import warnings
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from nbbatch import __version__
from nbbatch.core.attention import check_text
from nbbatch.core.axes import axis_value
from nbbatch.core.item import Foreign, Item
from nbbatch.core.observer import Observer
from nbbatch.core.pictures import read_picture
from nbbatch.core.record import RECORD_VERSION, Call, Generator, Record, Step, is_plain_name
from nbbatch.core.seeds import SEED_MAX
from nbbatch.core.spec import MAX_SIDE, UPSCALERS, Settings, check_name
from nbbatch.formats.foreign import read_foreign, scheduler_name
from nbbatch.formats.trust import settings_to_remake
from nbbatch.models.families import family_named
from nbbatch.models.pipelines import schedule_name
from nbbatch.settings import PLOT_TYPES

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
    """The ``parameters`` text A1111 writes: the prompt, ``Negative prompt: ...``, then ``key: value, ...``.

    Made from the item's record (`Item.call` and `Item.provenance`), as the code export is.
    """
    call, hires = _call_of(item), item.provenance.hires  # A1111 writes the first pass's size and the upscale
    true_cfg = call.true_cfg_scale  # Forge's way: CFG scale is real CFG, the distilled one beside it
    fields = {
        "Steps": call.num_inference_steps,
        "Sampler": _sampler(call),
        "Schedule type": schedule_type(call.scheduler_config),
        "CFG scale": call.guidance_scale if true_cfg is None else true_cfg,
        "Distilled CFG Scale": None if true_cfg is None else call.guidance_scale,
        "Seed": item.seed,
        "Size": f"{hires.width}x{hires.height}" if hires else f"{item.image.width}x{item.image.height}",
        "Model": model_short_name(call.model),
        "Denoising strength": call.strength,
        "Hires upscale": f"{hires.scale:g}" if hires else None,
        "Hires upscaler": UPSCALERS[hires.upscaler] if hires else None,
        "Clip skip": call.clip_skip + 1 if call.clip_skip else None,
        "Refiner": model_short_name(call.refiner) if call.refiner else None,
        "Refiner switch at": call.refiner_at,
        "RNG": RNG.get(call.generator_device.split(":")[0]),
        "Variation seed": call.variation_seed if call.variation_strength else None,
        "Variation seed strength": call.variation_strength or None,
        "Template": item.provenance.template,
        "Lora hashes": ", ".join(f"{r.name}: {r.hash}" for r in call.loras if r.hash) or None,
        "TI hashes": ", ".join(f"{r.token}: {r.hash}" for r in call.embeddings if r.hash) or None,
        "Version": f"nbbatch {__version__}",
    }
    line = ", ".join(f"{key}: {_quote(value)}" for key, value in fields.items() if value not in (None, ""))
    negative = f"\nNegative prompt: {item.negative_prompt}" if item.negative_prompt else ""
    tags = "".join(f" <lora:{lora.name}:{lora.weight:g}>" for lora in call.loras)
    return f"{item.prompt}{tags}{negative}\n{line}"


def _call_of(item: Item) -> Call:
    """The item's call; a ValueError for a picture another tool made (nbbatch writes only what it made)."""
    if item.call is None:
        tool = item.found.tool if item.found else "another tool"
        raise ValueError(
            f"{item.file or 'a picture'} was made by {tool}: nbbatch saves only what it made (copy the file itself)"
        )
    return item.call


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


AXIS_TYPES = {**PLOT_TYPES, "seed": "Seed", "prompt": "Prompt S/R", "size": "Size"}
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


def _sampler(call: Call) -> str | None:
    """The A1111 sampler name of the scheduler used (``DPM++ 2M SDE`` for DPM-Solver++ in its SDE form)."""
    name = SAMPLERS.get(call.scheduler, call.scheduler)
    if call.scheduler_config.get("algorithm_type") == "sde-dpmsolver++":
        name = f"{name} SDE"
    return name


def record(item: Item, **files: str) -> Record:
    """The exact record of how `item` was made; `files` names its input picture and mask (``init_image``, ``mask``)."""
    return Record(
        nbbatch_record=RECORD_VERSION,
        prompt=item.prompt,
        negative_prompt=item.negative_prompt,
        seed=item.seed,
        prompt_index=item.prompt_index,
        origin=item.origin,
        broken=item.broken,
        settings=json.loads(json.dumps(item.settings.model_dump(), default=str)),
        call=_call_of(item),
        provenance=item.provenance,
        generator=Generator(device=item.settings.generator_device, state=base64.b64encode(item.state or b"").decode()),
        lineage=[Step(prompt=step.prompt, seed=step.seed, origin=step.origin) for step in item.lineage()],
        versions=versions(),
        **files,
    )


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


class Saver(Observer):
    """Writes items into one folder as they come: PNGs with metadata, input images, and index lines.

    Used whole by `BatchResult.save` and chunk by chunk by autosave and sweeps (as a run's
    `Observer`, it writes each chunk it is handed). Every write
    stays in the folder and refuses to follow a symbolic link; files get the modes of any
    file the process makes (its umask). Part files a killed process left are removed.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            os.unlink(self._part())  # can we write here at all?
        except OSError as error:
            raise ValueError(f"cannot write to {str(folder)!r}: {error.strerror or error}") from None
        _remove_dead_parts(self.folder)
        self.written: list[Path] = []

    def made(self, items: list[Item], start: int) -> None:
        """Write a run's finished chunk (autosave)."""
        self.add(items)

    def add(
        self, items: Iterable[Item], stems: Sequence[str] | None = None, indexed: Container[str] = ()
    ) -> list[Path]:
        """Write each item's PNG (and input image), then append their index lines; return the PNG paths.

        Files are named ``p00-s5.png`` (``-1``, ``-2``, ... when taken), or exactly ``stem.png``
        from `stems` (a headless sweep, whose names must not move: a taken one is an error).
        A file named in `indexed` gets no index line: its line is there already (a sweep's image made again).
        """
        items = list(items)
        for item in items:
            _call_of(item)  # another tool's picture: refused before anything is written
        paths, entries = [], []
        for number, item in enumerate(items):
            files = {}
            if item.init_image is not None:
                files["init_image"] = self._input_image(item.init_image)
            if item.mask is not None:
                files["mask"] = self._input_image(item.mask, "mask")
            entry = record(item, **files)
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", a1111_parameters(item))
            info.add_text("nbbatch", entry.to_json())
            if stems is None:
                stem = f"p{item.prompt_index:02d}-s{item.seed}" + (f"-{item.origin}" if item.origin != "batch" else "")
                path = self._write(stem, _png_bytes(item.image, info))
            else:
                path = self._write(stems[number], _png_bytes(item.image, info), fixed=True)
            paths.append(path)
            if path.name not in indexed:
                entries.append({"file": path.name, **entry.to_dict()})
        self.append_index(entries)
        self.written.extend(paths)
        return paths

    def append_index(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Append one JSON line per entry to the index, in one write: the lines of a chunk go in together.

        A last line cut short by an earlier write (a full disk, a kill) is taken out first;
        its image, which was written before it, is found again by `read_items` and sweeps.
        """
        if not entries:
            return
        path = self.folder / INDEX
        data = "".join(json.dumps(entry, default=str) + "\n" for entry in entries).encode()
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | _NOFOLLOW, 0o666)
        except OSError as error:
            raise _write_error(path, error) from error
        try:
            _check_regular(handle, path)
            size = os.fstat(handle).st_size
            if size and os.pread(handle, 1, size - 1) != b"\n":
                whole = os.pread(handle, size, 0)
                if _is_entry(whole[whole.rfind(b"\n") + 1 :]):
                    data = b"\n" + data  # only its newline was lost
                else:
                    os.truncate(handle, whole.rfind(b"\n") + 1)
            written = 0
            while written < len(data):
                written += os.write(handle, data[written:])
        except OSError as error:
            raise _write_error(path, error) from error
        finally:
            os.close(handle)

    def add_grid(self, grid: Image.Image, items: Sequence[Item] = ()) -> Path:
        """Write a result's grid as one more PNG; an X/Y/Z grid of `items` gets A1111's grid parameters."""
        info = None
        parameters = grid_parameters(items)
        if parameters is not None:
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", parameters)
        return self._write("grid", _png_bytes(grid, info))

    def _input_image(self, image: Image.Image, kind: str = "input") -> str:
        data = _png_bytes(image)
        name = f"{kind}-{hashlib.sha1(data).hexdigest()[:12]}.png"  # same picture, same file
        self._write(name[:-4], data, exact=True)
        return name

    def _part(self) -> Path:
        """A new, empty part file of this process (``.nbbatch-PID-RANDOM.part``), made without following links."""
        path = self.folder / f"{_PART}{os.getpid()}-{secrets.token_hex(6)}.part"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666))
        return path

    def _write(self, stem: str, data: bytes, exact: bool = False, fixed: bool = False) -> Path:
        """Write `data` to ``stem.png`` or, if taken, ``stem-1.png``, ...: atomically, never overwriting.

        `exact`: a taken name is the same file already (input images, named by their hash);
        `fixed`: a taken name is an error. A link never counts as taken by the same file.
        """
        try:
            temporary = self._part()
        except OSError as error:
            raise _write_error(self.folder / f"{stem}.png", error) from error
        try:
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            for number in range(10_000):
                path = self.folder / (f"{stem}.png" if number == 0 else f"{stem}-{number}.png")
                try:
                    os.link(temporary, path)  # fails if the name is taken, even by a link: no overwrite, no race
                    return path
                except FileExistsError:
                    if exact and stat.S_ISREG(path.lstat().st_mode):
                        return path
                    if fixed or exact:
                        raise ValueError(f"{path} exists already: it is not overwritten") from None
            raise ValueError(f"no free file name for {stem}.png in {self.folder}")
        except OSError as error:
            raise _write_error(self.folder / f"{stem}.png", error) from error
        finally:
            temporary.unlink(missing_ok=True)


_PART = ".nbbatch-"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _remove_dead_parts(folder: Path) -> None:
    """Remove the part files of processes that no longer run (a kill during a save); others are theirs."""
    for part in folder.glob(f"{_PART}*.part"):
        pid = part.name[len(_PART) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            part.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _check_regular(handle: int, path: Path) -> None:
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        raise ValueError(f"{path} is not a plain file: nbbatch writes its index only into one")


def _is_entry(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold the lock of `folder` (``.nbbatch.lock``) while a sweep writes it; a second run is refused at once.

    The lock is the operating system's (`fcntl.flock`), so it ends with its process:
    a lock left by a killed run is simply taken. Where there is no ``fcntl`` (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = folder / ".nbbatch.lock"
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o666)
    except OSError as error:
        raise _write_error(path, error) from error
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 20, 0).decode(errors="replace").strip() or "unknown"
            raise ValueError(
                f"{folder} is being written by another nbbatch run (pid {holder}): wait for it, or give another --out"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(handle)


def _write_error(path: Path, error: OSError) -> ValueError:
    """A failed write as one line: a link in the way, a full disk, a file-size limit, no permission."""
    if error.errno == errno.ELOOP:
        return ValueError(f"{path} is a symbolic link: nbbatch does not write through links")
    return ValueError(f"cannot write {path}: {error.strerror or error}")


def index_entries(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of the index `path` by file name, in order (a name listed twice counts once); empty if none.

    Each names a PNG in the index's own folder; one that names anything else, or a line
    that is not an entry, is a one-line ValueError, except a last line cut short (no
    newline after it: a write stopped by a full disk or a kill), which is left out.
    """
    if not path.exists():
        return {}
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ValueError(f"cannot read {str(path)!r}: {error.strerror or error}") from None
    lines = data.split(b"\n")
    entries: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            name = entry["file"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
            if number == len(lines):  # no newline after it: cut short, its image is adopted
                break
            raise ValueError(f"line {number} of {str(path)!r} is damaged: not an index entry") from None
        if not isinstance(name, str) or not is_plain_name(name) or not name.endswith(".png"):
            raise ValueError(f"line {number} of {str(path)!r} names {str(name)[:80]!r}, not a PNG in its folder")
        entries[name] = entry
    return entries


def read_items(path: str | os.PathLike) -> list[Item]:
    """The items saved in `path`: one PNG, an ``index.jsonl``, or a folder.

    A folder gives the images its index lists, then its other PNGs with an nbbatch record
    (an index line lost to a kill) in name order; without an index, every PNG with
    parameters nbbatch can read (others are skipped with one warning). Only files inside
    the folder are read.
    """
    path = Path(path).expanduser()
    if path.is_dir() and not (path / INDEX).exists():
        return link_parents(_folder_items(path, sorted(path.glob("*.png")), foreign=True))
    if path.is_dir():
        path = path / INDEX
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist")
    if path.suffix != ".jsonl":
        return [_load_png(path)[0]]
    listed = index_entries(path)
    items = [_load_png(_inside(path.parent, name)) for name in listed]
    others = [png for png in sorted(path.parent.glob("*.png")) if png.name not in listed]
    return link_parents(items + _folder_items(path.parent, others, foreign=False))


def _folder_items(folder: Path, pngs: Sequence[Path], *, foreign: bool) -> list[Loaded]:
    """Items of a folder's PNGs (grids and input images left out); those without readable parameters are skipped.

    `foreign`: take other tools' pictures too (a folder without an index); else nbbatch's records only.
    """
    items, skipped = [], []
    for png in pngs:
        if png.name.startswith(("grid", "input-", ".")) or png.is_symlink():
            continue
        try:
            loaded = _load_png(png)
        except ValueError:
            skipped.append(png.name)
            continue
        if foreign or not loaded[0].foreign:
            items.append(loaded)
    if skipped and foreign:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(
            f"{len(skipped)} PNG(s) in {str(folder)!r} hold no parameters nbbatch can read: {shown}", stacklevel=4
        )
    return items


def _inside(folder: Path, name: str) -> Path:
    """`folder / name`, refused unless it is a file of `folder` itself (not a link out of it)."""
    path = folder / name
    real = Path(os.path.realpath(path))
    if real.parent != Path(os.path.realpath(folder)):
        raise ValueError(f"{name!r} in {str(folder)!r} leads outside its folder: nbbatch reads only files inside it")
    return path


Loaded = tuple[Item, Sequence[Step]]
"""A loaded item and the lineage its record names (empty for another tool's picture)."""


def link_parents(loaded: Sequence[Loaded]) -> list[Item]:
    """The loaded items, with refinements and variations given their parent items back where the parent is loaded too.

    A record keeps its lineage as (prompt, seed, origin) steps; the parent is the latest
    loaded item matching the step before the last. Order is kept.
    """
    linked: dict[tuple, Item] = {}
    result = [item for item, _ in loaded]
    for position in sorted(range(len(loaded)), key=lambda i: len(loaded[i][1])):
        lineage = loaded[position][1]
        if len(lineage) > 1 and (parent := linked.get((lineage[-2].prompt, lineage[-2].seed, lineage[-2].origin))):
            result[position] = dataclasses.replace(result[position], parent=parent)
        item = result[position]
        linked[(item.prompt, item.seed, item.origin)] = item
    return result


def _load_png(path: Path) -> Loaded:
    image, text, kind = read_picture(path)
    if kind != "PNG":
        raise ValueError(f"{str(path)!r} is a {kind} image: nbbatch reads parameters from PNGs")
    if "nbbatch" in text:
        try:
            entry = Record.from_json(text["nbbatch"])
            return _item_from_record(entry, image, path), entry.lineage
        except ValueError as error:
            raise ValueError(f"the nbbatch record in {str(path)!r} is damaged: {error}") from None
    with Image.open(path) as opened:
        found = read_foreign(opened)
    if found is None:
        raise ValueError(f"{str(path)!r} holds no generation parameters that nbbatch can read")
    return _item_from_foreign(found, image, path), ()


def _item_from_record(entry: Record, image: Image.Image, path: Path) -> Item:
    """An item from a checked record (see `nbbatch.core.record`); its input image must lie beside it."""
    call = entry.call
    if (call.width, call.height) != image.size and not family_named(call.pipeline).area:  # HiDream's: as asked
        raise ValueError(f"call: it says {call.width}x{call.height}, the picture is {image.width}x{image.height}")
    init_image = None
    if entry.init_image:
        source = _inside(path.parent, entry.init_image)
        if not source.is_file():
            raise ValueError(f"its image-to-image input {entry.init_image!r} is missing from {str(path.parent)!r}")
        init_image, _, _ = read_picture(source)
    mask = None
    if entry.mask:
        source = _inside(path.parent, entry.mask)
        if not source.is_file():
            raise ValueError(f"its inpaint mask {entry.mask!r} is missing from {str(path.parent)!r}")
        with Image.open(source) as opened:
            mask = opened.convert("L")
        if mask.size != image.size:
            raise ValueError(
                f"its inpaint mask is {mask.width}x{mask.height}, the picture {image.width}x{image.height}"
            )
    return Item(
        image,
        entry.seed,
        entry.prompt,
        entry.negative_prompt,
        entry.prompt_index,
        Settings(**entry.settings),
        call,
        base64.b64decode(entry.generator.state),
        init_image,
        None,
        entry.origin,
        entry.broken,
        loaded_from=str(path),
        mask=mask,
        provenance=entry.provenance,
        vet=settings_to_remake,
    )


def _item_from_foreign(found: Foreign, image: Image.Image, path: Path) -> Item:
    """An item for another tool's picture: its prompt and settings, and nbbatch's generator for its seed.

    Its noise came from that tool's generator, so nbbatch cannot make it again (refine,
    verify and reproduce refuse); its settings start a new batch or a `vary` of it.
    """
    seed = _number(found.seed, 0, SEED_MAX, whole=True)
    width, height = (_number(v, 8, MAX_SIDE, whole=True) for v in (found.width, found.height))
    sizes = {name: v for name, v in (("width", width), ("height", height)) if v is not None and v % 8 == 0}
    texts = []
    for name, text in (("prompt", found.prompt), ("negative prompt", found.negative_prompt or "")):
        if not isinstance(text, str):
            raise ValueError(f"the {name} in {str(path)!r} is not text")
        check_text(text)
        texts.append(text)
    model = found.model if isinstance(found.model, str) and _is_name(found.model) else None
    scheduler = scheduler_name(found.sampler, found.schedule)
    scheduler = scheduler if isinstance(scheduler, str) and _is_name(scheduler) else None
    settings = Settings(
        model=model or "unknown",
        steps=_number(found.steps, 1, 1000, whole=True) or 30,
        guidance=_number(found.guidance, 0, 100),
        true_cfg=_number(found.true_cfg, 1, 100),
        scheduler=scheduler,
        strength=_number(found.strength, 0.01, 1) or 0.8,
        **sizes,
    )
    return Item(
        image,
        seed,
        texts[0],
        texts[1],
        0,
        settings,
        None,  # no call of nbbatch's, and no state: another tool's noise
        None,
        None,
        None,
        "foreign",
        loaded_from=str(path),
        found=found,
        vet=settings_to_remake,
    )


def _number(value: Any, low: float, high: float, *, whole: bool = False) -> Any:
    """`value` if it is a finite number (a whole one if `whole`) from `low` to `high`, else None."""
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        return None
    return value


def _is_name(text: str) -> bool:
    try:
        check_name(text, "")
    except ValueError:
        return False
    return bool(text.strip())


def _png_bytes(image: Image.Image, info: PngImagePlugin.PngInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _quote(value: Any) -> str:
    """A1111's quoting: values with commas, colons or newlines are written as JSON strings."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text
