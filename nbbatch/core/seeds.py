"""Seeds and generators: parse "0-7,10", draw random seeds, make one generator per image.

A seed list is parsed without torch; generators are made only where a batch runs.
Each image keeps the initial state of its own generator, because that state (not
the printed seed) is what reproduces the image: see `generator_state`. `slerp` blends
two seeds' noise (variation seeds); the engine and the exported code both use it.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from nbbatch.core.errors import first_line

if TYPE_CHECKING:
    import torch

SEED_MAX = 2**64 - 1
"""The largest seed `torch.Generator.manual_seed` takes."""

RANDOM_SEED_MAX = 2**32 - 1
"""Random seeds stay in 32 bits, the range other tools (A1111, ComfyUI) show."""

MAX_IMAGES = 100_000
"""The most images one batch may hold (a sweep on many workers); a larger seed range is refused before it is built."""


def parse_seeds(text: str) -> tuple[int, ...]:
    """Parse a seed list such as ``"0-7"``, ``"3,17,42"`` or ``"0-3,10"``.

    Ranges are inclusive and ascending. Raises ValueError naming the bad part.
    """
    seeds: list[int] = []
    parts = [part.strip() for part in text.split(",")]
    if not text.strip():
        raise ValueError("no seeds given: write them like 0-7, 3,17,42 or 0-3,10")
    for part in parts:
        if not part:
            raise ValueError(f"empty entry in seed list {text!r}")
        low_text, sep, high_text = part.partition("-")
        low = _parse_seed(low_text, part)
        high = _parse_seed(high_text, part) if sep else low
        if high < low:
            raise ValueError(f"seed range {part!r} goes down: write it as {high}-{low}")
        if len(seeds) + high - low + 1 > MAX_IMAGES:
            raise ValueError(f"seed list {text!r} holds more than {MAX_IMAGES} seeds")
        seeds.extend(range(low, high + 1))
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise ValueError(f"seed {seed} is given twice in {text!r}")
        seen.add(seed)
    return tuple(seeds)


def _parse_seed(text: str, part: str) -> int:
    text = text.strip()
    if not text.isdecimal() or not text.isascii():
        raise ValueError(f"bad seed {part!r}: seeds are whole numbers from 0 to {SEED_MAX}, like 0-7 or 3,17")
    value = int(text)
    if value > SEED_MAX:
        raise ValueError(f"seed {value} is larger than {SEED_MAX}")
    return value


def random_seeds(count: int) -> tuple[int, ...]:
    """Draw `count` distinct random seeds (32-bit), for ``--num N``."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_IMAGES:
        raise ValueError(f"the number of random seeds must be from 1 to {MAX_IMAGES}, not {count!r}")
    drawn: dict[int, None] = {}
    while len(drawn) < count:
        drawn[secrets.randbelow(RANDOM_SEED_MAX + 1)] = None
    return tuple(drawn)


def make_generator(device: str, seed: int, state: bytes | None = None) -> torch.Generator:
    """A fresh generator on `device`, seeded with `seed` or set to a saved `state`.

    A saved state wins over the seed: it is the exact stream the image was made with.
    """
    import torch

    try:
        generator = torch.Generator(device=device)
    except RuntimeError as error:
        raise ValueError(f"cannot make a random generator on {device!r}: {first_line(error)}") from None
    if state is None:
        generator.manual_seed(seed)
    else:
        try:
            generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
        except RuntimeError as error:
            raise ValueError(f"saved generator state does not fit a {device} generator: {first_line(error)}") from None
    return generator


def generator_state(generator: torch.Generator) -> bytes:
    """The generator's current state as bytes (5056 of them for a CPU generator)."""
    return generator.get_state().numpy().tobytes()


def slerp(strength: float, low: Any, high: Any) -> Any:
    """Spherical interpolation per latent pixel (across channels), as A1111's ``rng.slerp``.

    Where the two are nearly parallel it falls back to a straight blend, with the weights
    the right way round (A1111 swaps them there, which only matters for a seed with itself).
    """
    import torch

    low_unit = low / torch.linalg.vector_norm(low, dim=1, keepdim=True)
    high_unit = high / torch.linalg.vector_norm(high, dim=1, keepdim=True)
    dot = (low_unit * high_unit).sum(1)
    if dot.mean() > 0.9995:
        return low * (1 - strength) + high * strength
    omega = torch.acos(dot)
    sine = torch.sin(omega)
    return (torch.sin((1.0 - strength) * omega) / sine).unsqueeze(1) * low + (
        torch.sin(strength * omega) / sine
    ).unsqueeze(1) * high
