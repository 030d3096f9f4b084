"""Fit the preview map of ``nbbatch:shapes``: its latent channels to RGB, on its VAE's decodes.

Run by hand (about two minutes) after retraining:
``python -m nbbatch.models.shapes.preview_factors``. It makes `--per-setting` pictures of
the evaluation's prompts at each of `SETTINGS` (steps and guidance: previews must hold
when a user changes them), decodes their final latents, fits
`nbbatch.models.previews.fit_palette` on half of each, and writes the map into
``weights/nbbatch.json`` (``latent_rgb``), which the step previews read. It prints how far
the previews' mean colours are from the other halves' pictures', for the palette map and
for the best linear map (`fit_latent_map`) as a yardstick.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nbbatch.models import shapes
from nbbatch.models.previews import LatentMap, fit_latent_map, fit_palette
from nbbatch.models.shapes.data import COLOURS, caption
from nbbatch.models.shapes.evaluate import prompt_set

SETTINGS = ((12, 3.0), (20, 3.0), (30, 3.0), (20, 1.5), (20, 5.0))
"""(steps, guidance) the map is fitted and tested on: the default guidance at three step counts, and two others."""

MASK, SHAPE, BACKGROUND = 0, (1, 2, 3), (4, 5, 6)
"""The designed latent's channels (see `nbbatch.models.shapes.train`): the mask, the shape's RGB, the background's."""


def fit(model: str = shapes.NAME, per_setting: int = 96) -> tuple[LatentMap, dict[str, dict[str, float]]]:
    """The map fitted on half the pictures of each setting; mean-colour errors (0-255) on the rest, per setting."""
    import torch

    from nbbatch.core.spec import Settings
    from nbbatch.models.pipelines import PipelineCache

    pipe = PipelineCache().get(Settings(model=model, device="cpu")).pipe
    halves: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index, (steps, guidance) in enumerate(SETTINGS):
        prompts = [caption(*triple) for triple in prompt_set(per_setting, seed=99 + index)]
        first = 1000 * (index + 1)
        generators = [torch.Generator("cpu").manual_seed(first + n) for n in range(per_setting)]
        with torch.no_grad():
            latents = pipe(
                prompts, generator=generators, num_inference_steps=steps, guidance_scale=guidance, output_type="latent"
            ).images
            pictures = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample.clamp(-1, 1)
        halves.append((latents, pictures))
    half = per_setting // 2
    fit_latents = torch.cat([latents[:half] for latents, _ in halves])
    fit_pictures = torch.cat([pictures[:half] for _, pictures in halves])
    colours = [tuple(c / 255 * 2 - 1 for c in rgb) for rgb in COLOURS.values()]
    mapping = fit_palette(fit_latents, fit_pictures, colours, MASK, SHAPE, BACKGROUND)
    yardstick = fit_latent_map(fit_latents, fit_pictures)
    errors: dict[str, dict[str, float]] = {}
    for name, candidate in (("palette", mapping), ("linear", yardstick)):
        offs = []
        for (steps, guidance), (latents, pictures) in zip(SETTINGS, halves):
            with torch.no_grad():
                previews = ((candidate.rgb(latents[half:]).clamp(-1, 1) + 1) * 127.5).mean(dim=(1, 2))
            off = (previews - ((pictures[half:] + 1) * 127.5).mean(dim=(2, 3))).abs().max(dim=1).values
            offs.append(off)
            if name == "palette":
                errors[f"{steps} steps, guidance {guidance:g}"] = _summary(off)
        errors[f"{name}, all"] = _summary(torch.cat(offs))
    return mapping, errors


def _summary(off: Any) -> dict[str, float]:
    return {"median": float(off.median()), "p90": float(off.quantile(0.9)), "max": float(off.max())}


def main(argv: list[str] | None = None) -> None:
    """Fit, write into the weights' ``nbbatch.json`` and print the colour errors."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-setting", type=int, default=96, help="pictures per setting, half fitted on (96)")
    parser.add_argument("--weights", type=Path, default=shapes.WEIGHTS, help="the model folder (default: the shipped)")
    args = parser.parse_args(argv)
    model = shapes.NAME if args.weights == shapes.WEIGHTS else str(args.weights)
    mapping, errors = fit(model, args.per_setting)
    path = args.weights / "nbbatch.json"
    notes = json.loads(path.read_text(encoding="utf-8"))
    notes["latent_rgb"] = mapping.as_notes()
    shown = "; ".join(
        f"{where}: " + ", ".join(f"{name} {value:.1f}" for name, value in figures.items())
        for where, figures in errors.items()
    )
    notes["latent_rgb_why"] = (
        f"preview_factors.py, fitted on {args.per_setting // 2} decodes at each of {len(SETTINGS)} settings; "
        f"mean-colour error on the others (levels): {shown}"
    )
    path.write_text(json.dumps(notes, indent=1) + "\n", encoding="utf-8")
    print(notes["latent_rgb_why"])


if __name__ == "__main__":
    main()
