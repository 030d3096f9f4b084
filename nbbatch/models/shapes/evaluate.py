"""Measure how well ``nbbatch:shapes`` follows its prompts; write the figures to a JSON file.

    python -m nbbatch.models.shapes.evaluate [--model FOLDER] [--guidance 3 5] [--out FILE]

It generates through nbbatch itself (so it measures what users get) and judges every
picture with `nbbatch.models.shapes.data.judge`:

- colour and shape: 96 prompt x seed pairs (48 prompts, 2 seeds each): is the background
  the asked colour, the shape the asked colour, the shape the asked kind?
- refine: 16 seeds; each image is refined with only the shape's colour word changed, and
  the IoU of the two shape masks is taken (control: the same prompt with another seed);
- speed: 16 images at 64x64 and 20 steps, the median of three runs.
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
    return {"pairs": len(result), **rates}


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
        "seconds_16_images_20_steps": speed(model, guidances[0]),
    }


def main(argv: list[str] | None = None) -> None:
    """The command line; prints the figures and writes them to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nbbatch:shapes", help="the model to judge (default nbbatch:shapes)")
    parser.add_argument(
        "--guidance", type=float, nargs="*", default=None, help="guidance scales (default: the model's)"
    )
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    figures = evaluate(args.model, args.guidance or [None], args.steps)
    args.out.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
