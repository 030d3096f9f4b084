"""Headless sweeps: a TOML file of prompts, seeds and settings, made image by image into a folder, resumable.

Every image of the sweep has a fixed file name (``00042-p01-s7.png``: its position, prompt
and seed), is written as soon as its chunk is finished, and gets a line in the folder's
``index.jsonl``. Running the same sweep again skips the images already there (file and
index line), makes the missing ones with the same names and pixels, and adopts an image
whose index line was lost to a kill between the two writes. A folder made from another
spec, or with other settings, is refused rather than mixed.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbbatch.api import plan
from nbbatch.core.engine import Runner
from nbbatch.core.errors import first_line
from nbbatch.core.masks import SHAPES
from nbbatch.core.observer import Observer
from nbbatch.core.record import Record
from nbbatch.core.result import run_batch
from nbbatch.core.spec import Settings
from nbbatch.formats.png import INDEX, Saver, folder_lock, index_entries
from nbbatch.session import default_session

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from nbbatch.core.engine import CancelFlag, Progress, Status
    from nbbatch.core.item import Item
    from nbbatch.core.spec import Job

SPEC_NAMES = tuple(name for name in inspect.signature(plan).parameters if name != "settings") + tuple(
    name for name in Settings.model_fields if name != "model"
)
"""What a sweep file may set: the names `nbbatch.generate` takes."""

SLICE = 256
"""Images per batch: a sweep holds no more than this many images in memory at a time."""


def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The sweep file at `path` as `generate`'s keywords; paths in it (wildcards, images) count from its folder."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            spec = tomllib.load(file)
    except OSError as error:
        raise ValueError(f"cannot read the sweep file {str(path)!r}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid TOML: {error}") from None
    unknown = sorted(set(spec) - set(SPEC_NAMES))
    if unknown:
        raise ValueError(
            f"{str(path)!r} sets {', '.join(map(repr, unknown))}, which a sweep does not take; "
            f"the names are those of generate: {', '.join(SPEC_NAMES)}"
        )
    if "prompts" not in spec:
        raise ValueError(f'{str(path)!r} has no prompts: write prompts = ["...", ...]')
    if "wildcards" in spec:
        if not isinstance(spec["wildcards"], str):
            raise ValueError(f"wildcards must be a folder name, not {spec['wildcards']!r}")
        spec["wildcards"] = str(path.parent / spec["wildcards"])
    if "images" in spec:
        spec["images"] = [str(path.parent / name) for name in _names(spec["images"])]  # files, folders or globs
    if isinstance(spec.get("mask"), str) and not spec["mask"].lstrip().startswith(SHAPES):
        spec["mask"] = str(path.parent / spec["mask"])  # a mask file, or a folder or glob of masks
    return spec


def _names(value: Any) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"images must be a file, folder or glob name, or a list of them, not {value!r}")
    return names


def file_stems(jobs: Sequence[Job]) -> list[str]:
    """Each job's fixed file name, without ``.png``: position, prompt and seed (``00042-p01-s7``)."""
    width = max(5, len(str(len(jobs) - 1)))
    return [f"{n:0{width}d}-p{job.prompt_index:02d}-s{job.seed}" for n, job in enumerate(jobs)]


@dataclass
class Sweep:
    """How a sweep went: images in all, found already made, made now, and how it ended."""

    folder: Path
    total: int
    found: int
    made: int
    status: Status
    error: BaseException | None = None

    def summary(self) -> str:
        """One line for the terminal."""
        have = self.found + self.made
        text = f"{have} of {self.total} images in {self.folder} ({self.made} made now, {self.found} found)"
        if self.status == "failed":
            return f"{text}; stopped: {first_line(self.error)}"
        if self.status != "complete":
            return f"{text}; {self.status}: run the same command again to go on"
        return text


class SweepObserver(Observer):
    """An `Observer` of a sweep, also told how many images it holds and how many the folder has before anything runs.

    Its `made` gets each chunk once it is saved (its `start` counts within the sweep's
    current batch of at most `SLICE` images).
    """

    def started(self, total: int, found: int) -> None:
        """The sweep's `total` images, `found` of them in the folder already."""


def run_sweep(
    spec: Mapping[str, Any],
    folder: str | os.PathLike,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    observer: SweepObserver | None = None,
    cancel: CancelFlag | None = None,
) -> Sweep:
    """Make every image of `spec` (`generate`'s keywords) that `folder` does not hold yet, each saved as it is done.

    `observer` is told how many there are and found, the progress and each saved chunk.
    Errors in the spec or the folder raise ValueError before anything runs; a failure,
    a cancel or Ctrl-C later ends the sweep with every finished image on disk.
    """
    settings, jobs = plan(**spec)
    saver = Saver(folder)
    with folder_lock(saver.folder):
        return _sweep(settings, jobs, saver, workers, ray_address, observer or SweepObserver(), cancel)


def _sweep(
    settings: Settings,
    jobs: Sequence[Job],
    saver: Saver,
    workers: int | None,
    ray_address: str | None,
    observer: SweepObserver,
    cancel: CancelFlag | None,
) -> Sweep:
    """`run_sweep` once the folder is locked."""
    stems = file_stems(jobs)
    found, indexed = made_already(saver, stems, jobs, settings)
    missing = [n for n in range(len(jobs)) if n not in found]
    observer.started(len(jobs), len(found))
    runner: Runner = default_session().runner(workers, ray_address)
    sweep = Sweep(saver.folder, len(jobs), len(found), 0, "complete")
    for first in range(0, len(missing), SLICE):
        part = missing[first : first + SLICE]

        result = run_batch(
            settings,
            [jobs[n] for n in part],
            observer=_Saving(observer, saver, sweep, [stems[n] for n in part], indexed),
            cancel=cancel,
            raise_on_failure=False,
            runner=runner,
        )
        if not result.complete:
            sweep.status, sweep.error = result.status, result.error
            break
    return sweep


class _Saving(Observer):
    """Saves each chunk of a slice of the sweep under its file stems, then tells the sweep's observer."""

    def __init__(self, observer: Observer, saver: Saver, sweep: Sweep, stems: list[str], indexed: set[str]) -> None:
        super().__init__()
        self.observer, self.saver, self.sweep, self.stems, self.indexed = observer, saver, sweep, stems, indexed

    def progress(self, progress: Progress) -> None:
        """Pass the progress on."""
        self.observer.progress(progress)

    def made(self, items: list[Item], start: int) -> None:
        """Save the chunk, count it, then tell the observer."""
        self.saver.add(items, self.stems[start : start + len(items)], self.indexed)
        self.sweep.made += len(items)
        self.observer.made(items, start)


def made_already(
    saver: Saver, stems: Sequence[str], jobs: Sequence[Job], settings: Settings
) -> tuple[set[int], set[str]]:
    """The positions whose image is in the folder, and the file names its index lists.

    An image without its index line (a kill between the two writes) gets it back. Raises
    ValueError when an image there, or the index line of one deleted, was made from another
    prompt, seed or settings: the folder belongs to another sweep.
    """
    entries = index_entries(saver.folder / INDEX)
    found: set[int] = set()
    adopted: list[dict[str, Any]] = []
    for position, (stem, job) in enumerate(zip(stems, jobs)):
        name = f"{stem}.png"
        entry = entries.get(name)
        if (saver.folder / name).exists():
            if entry is None:
                entry = {"file": name, **_record(saver.folder / name)}
                adopted.append(entry)
            found.add(position)
        if entry is not None:  # a deleted image's line stays: the image made again must be the same
            _check(entry, job, job.settings or settings, saver.folder)
    saver.append_index(adopted)
    return found, set(entries) | {entry["file"] for entry in adopted}


def _record(path: Path) -> dict[str, Any]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return Record.from_json(image.text["nbbatch"]).to_dict()
    except (OSError, UnidentifiedImageError, KeyError, ValueError, AttributeError):
        raise ValueError(f"{path} is in the way: it is not an image of an nbbatch sweep; move it away") from None


def _check(entry: Mapping[str, Any], job: Job, settings: Settings, folder: Path) -> None:
    """Refuse an image of the folder that this sweep would not make at its place."""
    wanted = {
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "seed": job.seed,
        "settings": json.loads(json.dumps(settings.model_dump(), default=str)),
    }
    for key, value in wanted.items():
        if entry.get(key) != value:
            shown = "other settings" if key == "settings" else f"{key} {entry.get(key)!r}, not {value!r}"
            raise ValueError(
                f"{folder} holds another sweep: {entry.get('file')} was made with {shown}; "
                "give another --out, or the spec that made it"
            )
