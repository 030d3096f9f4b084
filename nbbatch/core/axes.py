"""X/Y/Z grids: axes over a setting, the seed or the prompt, and the cells they make.

An axis is written as in A1111's X/Y/Z plot: ``steps=10,20,30``, ranges ``1-5``,
``1-9 (+2)`` and ``2-8 [4]`` (four evenly spaced), and ``prompt=red,green,blue`` for
Prompt S/R (the first value is searched for and replaced by each value in the prompt
and the negative prompt). Every cell uses the batch's seeds and starting noise, so only
the axis changes; each job records its cell, which the grid reads its headers from.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from nbbatch.core.attention import check_text
from nbbatch.core.errors import SettingError
from nbbatch.core.seeds import MAX_IMAGES, SEED_MAX
from nbbatch.core.spec import Job, Settings
from nbbatch.settings import AXIS_KINDS

LETTERS = ("x", "y", "z")

_INT, _FLOAT, _TEXT = "int", "float", "text"
AXES: dict[str, str] = {**AXIS_KINDS, "size": _TEXT, "seed": _INT, "prompt": _TEXT}
"""Axis names (the setting, or job field, each changes) and the kind of their values: the settings table's
axes, then width and height together, the seed and the prompt."""

_ALIASES = {"cfg": "guidance", "cfg_scale": "guidance", "sampler": "scheduler", "denoising_strength": "strength"}
_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*-\s*({_NUMBER})\s*(?:\(\s*\+\s*({_NUMBER})\s*\)|\[\s*(\d+)\s*\])?\s*$")


@dataclass(frozen=True)
class Axis:
    """One axis of a grid: the name of what it changes and its values, in order."""

    name: str
    values: tuple[Any, ...]

    def label(self, value: Any) -> str:
        """The header of one value (see `axis_label`)."""
        return axis_label(self.name, value)


def axis_label(name: str, value: Any) -> str:
    """The header of an axis value: ``steps: 20``, ``size: 64x96``; the bare value for prompt and scheduler."""
    text = axis_value(value)
    return text if name in ("prompt", "scheduler") else f"{name.replace('_', ' ')}: {text}"


def axis_value(value: Any) -> str:
    """An axis value as text: a size (a pair, or a list once read back from JSON) as ``64x96``."""
    return "x".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def parse_axis(spec: str | tuple[str, Sequence[Any]] | Axis, letter: str = "x") -> Axis:
    """An axis from ``"steps=10,20"`` or ``("steps", [10, 20])``; raises ValueError naming the bad part."""
    if isinstance(spec, Axis):
        return spec
    if isinstance(spec, str):
        name, sep, text = spec.partition("=")
        if not sep:
            raise ValueError(f"--{letter} {spec!r}: write it as name=values, e.g. steps=10,20,30")
        raw: Sequence[Any] = _split(text, letter)
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        name, raw = spec
        if isinstance(raw, (str, int, float)):
            raw = [raw]
        elif isinstance(raw, Iterable) and not isinstance(raw, Mapping):
            raw = list(itertools.islice(raw, MAX_IMAGES + 1))
        else:
            raise ValueError(f"{letter}: the values of {name!r} must be a list, not {raw!r}")
    else:
        raise ValueError(f"{letter} must be text such as 'steps=10,20' or a (name, values) pair, not {spec!r}")
    key = _ALIASES.get(_key(name), _key(name))
    if key not in AXES:
        raise ValueError(
            f"--{letter}: {name.strip()!r} is not something a grid can vary; choose from {', '.join(AXES)}"
        )
    kind = AXES[key]
    values: list[Any] = []
    for value in raw:
        values.extend(_values(key, kind, value, letter))
    if not values:
        raise ValueError(f"--{letter} {key}: no values given")
    if len(set(map(str, values))) != len(values):
        raise ValueError(f"--{letter} {key}: a value is given twice")
    return Axis(key, tuple(values))


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _split(text: str, letter: str) -> list[str]:
    """Comma-separated values; double quotes keep commas inside one value, as in A1111."""
    try:
        row = next(csv.reader([text], skipinitialspace=True))
    except (csv.Error, StopIteration):
        raise ValueError(f"--{letter}: cannot read the values {text!r}") from None
    return [value.strip() for value in row]


def _values(name: str, kind: str, value: Any, letter: str) -> list[Any]:
    """One written value as a list: ranges become their members; numbers are checked."""
    where = f"--{letter} {name}"
    if kind == _TEXT:
        if name == "size":
            return [_size(value, where)]
        if not isinstance(value, str) or (name != "prompt" and not value.strip()):
            raise ValueError(f"{where}: {value!r} is not a name")
        check_text(value)
        return [value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        numbers = [value]
    elif isinstance(value, str) and (match := _RANGE.match(value)):
        numbers = _range(match, kind, where)
    else:
        numbers = [_number(value, where)]
    if kind == _INT:
        if any(not float(n).is_integer() for n in numbers):
            raise ValueError(f"{where}: {value!r} is not a whole number")
        numbers = [int(n) for n in numbers]
        if name in ("seed", "variation_seed") and any(not 0 <= n <= SEED_MAX for n in numbers):
            raise ValueError(f"{where}: seeds are whole numbers from 0 to {SEED_MAX}")
    return numbers


def _number(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number or a range such as 1-5, 1-9 (+2) or 2-8 [4]") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {value!r} is not a number")
    return int(number) if number.is_integer() and "." not in str(value) else number


def _range(match: re.Match, kind: str, where: str) -> list[float]:
    low, high = float(match.group(1)), float(match.group(2))
    step, count = match.group(3), match.group(4)
    if high < low:
        raise ValueError(f"{where}: the range {match.group(0).strip()!r} goes down")
    if count is not None:
        count = int(count)
        if not 1 <= count <= MAX_IMAGES:
            raise ValueError(f"{where}: [{count}] asks for too many values")
        if count == 1:
            return [low]
        numbers = [low + (high - low) * i / (count - 1) for i in range(count)]
        if kind == _INT:
            numbers = [float(math.floor(n + 0.5)) for n in numbers]
    else:
        size = float(step) if step is not None else 1.0
        if size <= 0:
            raise ValueError(f"{where}: the step of {match.group(0).strip()!r} must be above 0")
        if (high - low) / size >= MAX_IMAGES:
            raise ValueError(f"{where}: the range {match.group(0).strip()!r} holds too many values")
        numbers = [low + size * i for i in range(int((high - low) / size + 1e-9) + 1)]
    numbers = [round(n, 10) for n in numbers]
    return [int(n) if n.is_integer() and kind == _INT else n for n in dict.fromkeys(numbers)]


def _size(value: Any, where: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(value))
    if not match:
        raise ValueError(f"{where}: {value!r} is not a size such as 512x768")
    return int(match.group(1)), int(match.group(2))


def grid_jobs(settings: Settings, jobs: Sequence[Job], axes: Sequence[tuple[str, Axis]]) -> tuple[Job, ...]:
    """Every cell's jobs, z slowest and x fastest: the batch's jobs with the cell's settings, seed or prompt.

    `axes` pairs each letter (x, y, z) with its axis. Every cell's settings are checked
    here, so a bad value fails before anything runs.
    """
    letters = [letter for letter, _ in axes]
    if len(set(letters)) != len(letters) or not set(letters) <= set(LETTERS):
        raise ValueError(f"axes are x, y and z, each at most once, not {', '.join(letters)}")
    names = [axis.name for _, axis in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"two axes vary {names[0] if names.count(names[0]) > 1 else names[1]}: give each its own")
    _check_fits(settings, jobs, [axis for _, axis in axes])
    ordered = sorted(axes, key=lambda pair: -LETTERS.index(pair[0]))  # z, y, x: x varies fastest
    cells = list(itertools.product(*[[(letter, axis, v) for v in axis.values] for letter, axis in ordered]))
    count = len(cells) * len(jobs)
    if count > MAX_IMAGES:
        raise ValueError(f"the grid makes {count} images ({len(cells)} cells x {len(jobs)}); the most is {MAX_IMAGES}")
    made: list[Job] = []
    for cell in cells:
        changes: dict[str, Any] = {}
        record: dict[str, Any] = {}
        for letter, axis, value in sorted(cell, key=lambda part: part[0]):  # x, y, z
            record[letter] = [axis.name, list(value) if isinstance(value, tuple) else value]
            if axis.name == "size":
                changes["width"], changes["height"] = value
            elif axis.name not in ("seed", "prompt"):
                changes[axis.name] = value
        try:
            cell_settings = settings.replace(**changes) if changes else settings
        except ValueError as error:
            shown = ", ".join(f"{axis.name} {value}" for _, axis, value in cell)
            raise ValueError(f"the grid cell {shown}: {error}") from None
        for job in jobs:
            made.append(_cell_job(job, cell, cell_settings, record))
    return tuple(made)


def _cell_job(job: Job, cell: Sequence[tuple[str, Axis, Any]], settings: Settings, record: dict) -> Job:
    prompt, negative, seed = job.prompt, job.negative_prompt, job.seed
    for _, axis, value in cell:
        if axis.name == "seed":
            seed = value
        elif axis.name == "prompt":
            prompt = prompt.replace(axis.values[0], value)
            negative = negative.replace(axis.values[0], value)
    return replace(
        job,
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        settings=settings,
        provenance={**job.provenance, "axes": record},
    )


def _has(axes: Sequence[Axis], name: str) -> bool:
    return any(axis.name == name for axis in axes)


def _check_fits(settings: Settings, jobs: Sequence[Job], axes: Sequence[Axis]) -> None:
    """Refuse axes that cannot apply to these jobs: with one line saying why."""
    image_to_image = any(job.init_image is not None for job in jobs)
    for axis in axes:
        if axis.name == "strength" and not image_to_image:
            raise ValueError("a strength axis is for image-to-image: give an input image")
        if axis.name in ("size", "width", "height") and image_to_image:
            raise ValueError(f"a {axis.name} axis is for text-to-image: input images keep their size")
        if axis.name == "variation_strength" and settings.variation_seed is None and not _has(axes, "variation_seed"):
            raise SettingError("variation_strength", "as an axis needs {needs}", needs="variation_seed")
        if axis.name == "seed" and len({job.seed for job in jobs}) > 1:
            raise ValueError("a seed axis gives every cell its seed: pass one seed (or none), not several")
        if axis.name == "prompt":
            search = axis.values[0]
            if not isinstance(search, str) or not search:
                raise ValueError("a prompt axis (Prompt S/R) starts with the text to search for")
            for job in jobs:
                if search not in job.prompt and search not in job.negative_prompt:
                    raise ValueError(f"prompt S/R: {search!r} is not in the prompt {job.prompt!r}")


def with_axes(
    settings: Settings,
    jobs: Sequence[Job],
    x: Any = None,
    y: Any = None,
    z: Any = None,
    *,
    seeds_given: bool = True,
) -> tuple[Job, ...]:
    """The batch's jobs made into an X/Y/Z grid (or left as they are when no axis is given).

    Each axis is text such as ``"steps=10,20"`` or a ``(name, values)`` pair. A seed axis
    gives every cell its seed: the batch's default seeds (`seeds_given` False) then step aside.
    """
    axes = [(letter, parse_axis(spec, letter)) for letter, spec in zip(LETTERS, (x, y, z)) if spec is not None]
    if not axes:
        return tuple(jobs)
    if not seeds_given and any(axis.name == "seed" for _, axis in axes):
        jobs = [job for job in jobs if job.seed == jobs[0].seed]
    return grid_jobs(settings, jobs, axes)
