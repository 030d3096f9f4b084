"""Measure how well ``nbbatch:shapes`` follows its prompts; write the figures to a JSON file.

    python -m nbbatch.models.shapes.evaluate [--model FOLDER] [--guidance 3 5] [--out FILE] [--card FILE]

It generates through nbbatch itself (so it measures what users get) and judges every
picture with `nbbatch.models.shapes.data.judge`:

- colour and shape: 96 prompt x seed pairs (48 prompts, 2 seeds each): is the background
  the asked colour, the shape the asked colour, the shape the asked kind? At the model's
  default guidance and at 1.5, 5 and 7 (each a row of the tables);
- colour pairs: every pair of palette colours, each as shape on background and the other way
  round, on each shape (6 pictures a pair, at the default settings): both colours right?
- refine: 16 seeds; each image is refined with only the shape's colour word changed, and
  the IoU of the two shape masks is taken (control: the same prompt with another seed);
- speed: 16 images at 64x64 and 20 steps, the median of three runs.

The figures go to ``evaluation.json`` and, as tables, into the model card (``MODEL_CARD.md``,
between its ``evaluation`` markers), so the card always shows the file's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from nbbatch.models.shapes.data import COLOURS, SHAPES, caption, iou, judge

NAMES = list(COLOURS)
DEFAULT_OUT = Path(__file__).with_name("evaluation.json")
DEFAULT_CARD = Path(__file__).with_name("MODEL_CARD.md")
GUIDANCES: tuple[float | None, ...] = (None, 1.5, 5.0, 7.0)
"""The guidance scales measured: the model's default, then three that people use."""
MARKERS = ("<!-- evaluation tables: written by evaluate.py -->", "<!-- end of evaluation tables -->")


def prompt_set(count: int, seed: int = 1234) -> list[tuple[str, str, str]]:
    """`count` (shape, colour, background) triples, every shape equally often, colours drawn at random."""
    rng = np.random.default_rng(seed)
    triples = []
    for index in range(count):
        colour, background = rng.choice(len(NAMES), size=2, replace=False)
        triples.append((SHAPES[index % len(SHAPES)], NAMES[colour], NAMES[background]))
    return triples


def follow_rates(model: str, guidance: float | None, steps: int | None) -> dict[str, Any]:
    """Share of pictures whose background colour, shape colour and shape are the asked ones."""
    import nbbatch

    triples = prompt_set(48)
    result = nbbatch.generate([caption(*t) for t in triples], [0, 1], model=model, **_options(guidance, steps))
    hits = {"background": [], "colour": [], "shape": []}
    for item in result:
        shape, colour, background = triples[item.prompt_index]
        seen = judge(item.image)
        hits["background"].append(seen.background == background)
        hits["colour"].append(seen.colour == colour)
        hits["shape"].append(seen.shape == shape)
    rates = {name: round(float(np.mean(values)), 3) for name, values in hits.items()}
    return {"guidance_scale": result[0].call.guidance_scale, "pairs": len(result), **rates}


def colour_pairs(model: str, guidance: float | None, steps: int | None) -> dict[str, float]:
    """For each pair of palette colours, the share of its 6 pictures with both colours right (by pair name)."""
    import itertools

    import nbbatch

    pairs = list(itertools.combinations(NAMES, 2))
    triples = [(shape, a, b) for x, y in pairs for a, b in ((x, y), (y, x)) for shape in SHAPES]
    result = nbbatch.generate([caption(*t) for t in triples], [0], model=model, **_options(guidance, steps))
    right: dict[str, list[bool]] = {f"{x}/{y}": [] for x, y in pairs}
    for item in result:
        _, colour, background = triples[item.prompt_index]
        seen = judge(item.image)
        name = next(key for key in (f"{colour}/{background}", f"{background}/{colour}") if key in right)
        right[name].append(seen.colour == colour and seen.background == background)
    return {name: round(float(np.mean(values)), 3) for name, values in right.items()}


def refine_iou(model: str, guidance: float | None, steps: int | None) -> dict[str, Any]:
    """Median mask IoU of a refine that changes only the shape's colour word, and of two different seeds."""
    import nbbatch

    rng = np.random.default_rng(99)
    refined, control = [], []
    for seed in range(16):
        shape = SHAPES[seed % len(SHAPES)]
        first, second, background = (NAMES[i] for i in rng.choice(len(NAMES), size=3, replace=False))
        base = nbbatch.generate(
            caption(shape, first, background), [seed, seed + 1000], model=model, **_options(guidance, steps)
        )
        again = base.refine(seed, caption(shape, second, background))[0]
        mask = judge(base.by_seed(seed).image).mask
        refined.append(iou(mask, judge(again.image).mask))
        control.append(iou(mask, judge(base.by_seed(seed + 1000).image).mask))
    return {
        "seeds": 16,
        "refine_median_iou": round(statistics.median(refined), 3),
        "refine_mean_iou": round(float(np.mean(refined)), 3),
        "control_median_iou": round(statistics.median(control), 3),
    }


def speed(model: str, guidance: float | None) -> float:
    """Seconds for 16 images at 64x64 and 20 steps (median of 3, after a warm-up run)."""
    import nbbatch

    nbbatch.generate("a red circle on a blue background", [0], model=model, **_options(guidance, 20))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        nbbatch.generate("a red circle on a blue background", "0-15", model=model, **_options(guidance, 20))
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 2)


def _options(guidance: float | None, steps: int | None) -> dict[str, Any]:
    """The settings to pass: only those given, so that the rest are nbbatch's and the model's defaults."""
    return {name: value for name, value in (("guidance", guidance), ("steps", steps)) if value is not None}


def evaluate(model: str, guidances: list[float | None], steps: int | None) -> dict[str, Any]:
    """Every measurement at each guidance scale (None: the model's default)."""
    import torch

    runs = []
    for guidance in guidances:
        runs.append(
            {
                "guidance": guidance if guidance is not None else "default",
                "steps": steps or "default",
                **follow_rates(model, guidance, steps),
                **refine_iou(model, guidance, steps),
            }
        )
    return {
        "model": model,
        "threads": torch.get_num_threads(),
        "runs": runs,
        "colour_pairs": colour_pairs(model, guidances[0], steps),
        "seconds_16_images_20_steps": speed(model, guidances[0]),
    }


def card_tables(figures: dict[str, Any]) -> str:
    """The figures as the model card's Markdown tables: one row per guidance, then the colour pairs."""
    lines = [
        "| guidance | background right | shape colour right | shape kind right | refine: median mask IoU "
        "| two seeds: median IoU |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in figures["runs"]:
        guidance = run["guidance"]
        if guidance == "default" and run.get("guidance_scale") is not None:
            guidance = f"default ({run['guidance_scale']:g})"
        lines.append(
            f"| {guidance} | {run['background']:.1%} | {run['colour']:.1%} | {run['shape']:.1%} "
            f"| {run['refine_median_iou']:.2f} | {run['control_median_iou']:.2f} |"
        )
    pairs = sorted(figures["colour_pairs"].items(), key=lambda pair: (pair[1], pair[0]))
    lines += [
        "",
        f"Colour pairs at the first guidance, both colours right (6 pictures each; lowest first; "
        f"{sum(rate >= 0.9 for _, rate in pairs)} of {len(pairs)} at 90% or more):",
        "",
        "| pair | right | pair | right | pair | right | pair | right |",
        "| --- | ---: | --- | ---: | --- | ---: | --- | ---: |",
    ]
    cells = [f"{name} | {rate:.0%}" for name, rate in pairs]
    for start in range(0, len(cells), 4):
        row = cells[start : start + 4] + [" | "] * (4 - len(cells[start : start + 4]))
        lines.append("| " + " | ".join(row) + " |")
    lines.append(f"\n16 images at 64x64 and 20 steps: {figures['seconds_16_images_20_steps']} s "
                 f"({figures['threads']} threads).")  # fmt: skip
    return "\n".join(lines)


def write_card(card: Path, figures: dict[str, Any]) -> None:
    """Put `card_tables` between the card's markers (a ValueError if it has none)."""
    text = card.read_text(encoding="utf-8")
    start, end = (text.find(marker) for marker in MARKERS)
    if start < 0 or end < start:
        raise ValueError(f"{card} has no evaluation markers: {MARKERS[0]} ... {MARKERS[1]}")
    new = text[: start + len(MARKERS[0])] + "\n" + card_tables(figures) + "\n" + text[end:]
    card.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """The command line; prints the figures and writes them to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nbbatch:shapes", help="the model to judge (default nbbatch:shapes)")
    parser.add_argument(
        "--guidance", type=float, nargs="*", default=None, help="guidance scales (default: the model's, 1.5, 5, 7)"
    )
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--card", type=Path, default=DEFAULT_CARD, help="the model card to put the tables in")
    args = parser.parse_args(argv)
    figures = evaluate(args.model, args.guidance or list(GUIDANCES), args.steps)
    args.out.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    write_card(args.card, figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
