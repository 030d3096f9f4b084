"""Fit the preview map of ``nbbatch:shapes``: its latent channels to RGB, by least squares on its VAE's decodes.

Run by hand (under a minute) after retraining: ``python -m nbbatch.models.shapes.preview_factors``.
It makes `--count` pictures of the evaluation's prompts, decodes their final latents, fits
`nbbatch.models.previews.fit_latent_map` (with the mask channel, 0) and then a small
per-pixel `fit_head` on half of them, and writes the map into ``weights/nbbatch.json``
(``latent_rgb``), which the step previews read. It prints how far the previews' mean
colours are from the other half's pictures', with and without the head.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nbbatch.models import shapes
from nbbatch.models.previews import LatentMap, fit_head, fit_latent_map
from nbbatch.models.shapes.data import caption
from nbbatch.models.shapes.evaluate import prompt_set


def fit(model: str = shapes.NAME, count: int = 384, steps: int = 20) -> tuple[LatentMap, dict[str, dict[str, float]]]:
    """The map fitted on half the pictures; its mean-colour errors (0-255) on the rest, without and with the head."""
    import torch

    from nbbatch.core.spec import Settings
    from nbbatch.models.pipelines import get_pipeline

    loaded = get_pipeline(Settings(model=model, device="cpu"))
    pipe = loaded.pipe
    prompts = [caption(*triple) for triple in prompt_set(count, seed=99)]
    generators = [torch.Generator("cpu").manual_seed(1000 + n) for n in range(count)]
    with torch.no_grad():
        latents = pipe(
            prompts,
            generator=generators,
            num_inference_steps=steps,
            guidance_scale=loaded.defaults.get("guidance", 3.0),
            output_type="latent",
        ).images
        pictures = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample.clamp(-1, 1)
    half = count // 2
    linear = fit_latent_map(latents[:half], pictures[:half], mask=0)
    mapping = fit_head(linear, latents[:half], pictures[:half])
    errors = {}
    for name, candidate in (("linear", linear), ("with head", mapping)):
        with torch.no_grad():
            previews = ((candidate.rgb(latents[half:]).clamp(-1, 1) + 1) * 127.5).mean(dim=(1, 2))
        off = (previews - ((pictures[half:] + 1) * 127.5).mean(dim=(2, 3))).abs().max(dim=1).values
        errors[name] = {"median": float(off.median()), "p90": float(off.quantile(0.9)), "max": float(off.max())}
    return mapping, errors


def main(argv: list[str] | None = None) -> None:
    """Fit, write into the weights' ``nbbatch.json`` and print the factors and the colour error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=384, help="pictures: half to fit on, half to test (default 384)")
    parser.add_argument("--weights", type=Path, default=shapes.WEIGHTS, help="the model folder (default: the shipped)")
    args = parser.parse_args(argv)
    model = shapes.NAME if args.weights == shapes.WEIGHTS else str(args.weights)
    mapping, errors = fit(model, args.count)
    path = args.weights / "nbbatch.json"
    notes = json.loads(path.read_text(encoding="utf-8"))
    notes["latent_rgb"] = mapping.as_notes()
    shown = "; ".join(
        f"{fit}: " + ", ".join(f"{name} {value:.1f}" for name, value in figures.items())
        for fit, figures in errors.items()
    )
    notes["latent_rgb_why"] = (
        f"preview_factors.py, fitted on {args.count // 2} decodes; mean-colour error on the others (levels): {shown}"
    )
    path.write_text(json.dumps(notes, indent=1) + "\n", encoding="utf-8")
    print(notes["latent_rgb_why"])


if __name__ == "__main__":
    main()
