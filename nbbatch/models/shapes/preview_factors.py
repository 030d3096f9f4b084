"""Fit the preview map of ``nbbatch:shapes``: its latent channels to RGB, by least squares on its VAE's decodes.

Run by hand (under a minute) after retraining: ``python -m nbbatch.models.shapes.preview_factors``.
It makes `--count` pictures of the evaluation's prompts, decodes their final latents, fits
`nbbatch.models.previews.fit_latent_map` (with the mask channel, 0) on half of them and
writes the map into ``weights/nbbatch.json`` (``latent_rgb``), which the step previews
read. It prints how far the previews' mean colours are from the other half's pictures'.
"""

from __future__ import annotations

import argparse
import json

from nbbatch.models import shapes
from nbbatch.models.previews import LatentMap, fit_latent_map
from nbbatch.models.shapes.data import caption
from nbbatch.models.shapes.evaluate import prompt_set


def fit(count: int = 96, steps: int = 20) -> tuple[LatentMap, dict[str, float]]:
    """The map fitted on half the pictures, and its mean-colour errors (0-255) on the other half."""
    import torch

    from nbbatch.core.spec import Settings
    from nbbatch.models.pipelines import get_pipeline

    loaded = get_pipeline(Settings(model=shapes.NAME, device="cpu"))
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
    mapping = fit_latent_map(latents[:half], pictures[:half], mask=0)
    previews = ((mapping.rgb(latents[half:]).clamp(-1, 1) + 1) * 127.5).mean(dim=(1, 2))
    errors = (previews - ((pictures[half:] + 1) * 127.5).mean(dim=(2, 3))).abs().max(dim=1).values
    return mapping, {"median": float(errors.median()), "p90": float(errors.quantile(0.9)), "max": float(errors.max())}


def main(argv: list[str] | None = None) -> None:
    """Fit, write into the weights' ``nbbatch.json`` and print the factors and the colour error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=96, help="pictures to fit on (default 96)")
    args = parser.parse_args(argv)
    mapping, errors = fit(args.count)
    path = shapes.WEIGHTS / "nbbatch.json"
    notes = json.loads(path.read_text(encoding="utf-8"))
    notes["latent_rgb"] = mapping.as_notes()
    shown = ", ".join(f"{name} {value:.1f}" for name, value in errors.items())
    notes["latent_rgb_why"] = (
        f"preview_factors.py, fitted on {args.count // 2} decodes; mean-colour error on as many others: {shown} levels"
    )
    path.write_text(json.dumps(notes, indent=1) + "\n", encoding="utf-8")
    print(notes["latent_rgb_why"])


if __name__ == "__main__":
    main()
