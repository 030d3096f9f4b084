"""Model families beyond SD: every feature on tiny FLUX.1 pipelines, each image equal to raw diffusers within one level.

``nbbatch:tiny-flux`` has FLUX.1-dev's scheduler (dynamic shift: ``mu`` from the image's
size) and embedded guidance; ``nbbatch:tiny-flux-schnell`` a static shift and no guidance.
Each test names the family and the feature it checks.
"""

from __future__ import annotations

import pytest
import torch
from conftest import direct_call, max_difference
from test_code import run_codes

import nbbatch
from nbbatch.core.seeds import slerp
from nbbatch.models.tiny import builtin_path

FLUX = ["nbbatch:tiny-flux", "nbbatch:tiny-flux-schnell"]
SIZE = {"steps": 2, "width": 64, "height": 64}
LONG = "a very long prompt about a small blue dog running through a green park on a sunny day, " * 3


@pytest.fixture(params=FLUX, ids=["flux-dev", "flux-schnell"])
def flux(request) -> str:
    return request.param


def test_flux_batch_of_prompts_of_other_lengths_and_sizes_equals_diffusers_alone(flux):
    made = nbbatch.generate(["a red cat", LONG], [1, 2], model=flux, **SIZE)
    assert [item.params["pipeline"] for item in made] == ["FluxPipeline"] * 4
    for item in made:
        alone = direct_call(flux, item.prompt, item.seed, num_inference_steps=2, width=64, height=64)
        assert max_difference(item.image, alone) <= 1, (item.prompt[:20], item.seed)
    wide = nbbatch.generate("a red cat", [3], model=flux, steps=2, width=128, height=64)[0]  # another mu on dev
    assert (
        max_difference(wide.image, direct_call(flux, "a red cat", 3, num_inference_steps=2, width=128, height=64)) <= 1
    )


def test_flux_refine_keeps_the_starting_noise(flux):
    made = nbbatch.generate("a red cat", [4, 5], model=flux, **SIZE)
    refined = made.refine(5, "a green cat")[0]
    assert refined.label == "seed 5 · refine 1"
    expected = direct_call(flux, "a green cat", 5, num_inference_steps=2, width=64, height=64)
    assert max_difference(refined.image, expected) <= 1
    assert made.verify(4) <= 1


def test_flux_vary_is_its_own_image_to_image_pipeline(flux):
    made = nbbatch.generate("a red cat", [1], model=flux, **SIZE)
    varied = made.vary(1, seeds=[7], strength=0.6)[0]
    assert varied.params["pipeline"] == "FluxImg2ImgPipeline"
    expected = direct_call(flux, "a red cat", 7, image=made[0].image, strength=0.6, num_inference_steps=2)
    assert max_difference(varied.image, expected) <= 1


def test_flux_variation_seeds_blend_packed_noise_as_diffusers_takes_it(flux):
    from diffusers import FluxPipeline
    from diffusers.utils.torch_utils import randn_tensor

    plain = nbbatch.generate("a red cat", [2], model=flux, **SIZE)[0]
    none = nbbatch.generate("a red cat", [2], model=flux, variation_seed=9, variation_strength=0.0, **SIZE)[0]
    assert max_difference(plain.image, none.image) <= 1
    half = nbbatch.generate("a red cat", [2], model=flux, variation_seed=9, variation_strength=0.5, **SIZE)[0]
    pipe = FluxPipeline.from_pretrained(str(builtin_path(flux)), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    shape = (1, 16, 8, 8)  # 64 px / 8, in 2x2 patches
    own, other = (randn_tensor(shape, generator=torch.Generator().manual_seed(s)) for s in (2, 9))
    latents = pipe._pack_latents(slerp(0.5, own, other), 1, *shape[1:])
    expected = pipe("a red cat", latents=latents, num_inference_steps=2, width=64, height=64).images[0]
    assert max_difference(half.image, expected) <= 1
    assert max_difference(half.image, plain.image) > 1


def test_flux_save_load_reproduce_and_code_make_the_same_pixels(flux, tmp_path):
    made = nbbatch.generate("a red cat", [3], model=flux, **SIZE)
    varied = nbbatch.generate("a red cat", [3], model=flux, variation_seed=9, variation_strength=0.4, **SIZE)
    (path,) = made.save(tmp_path / "plain", grid=False)
    again = nbbatch.reproduce(path)[0]
    assert max_difference(again.image, made[0].image) == 0 and again.params["pipeline"] == "FluxPipeline"
    pictures = run_codes({"plain": made.code(3), "variation": varied.code(3)}, tmp_path)
    assert max_difference(pictures["plain"], made[0].image) <= 1
    assert max_difference(pictures["variation"], varied[0].image) <= 1


def test_flux_dev_guidance_grid_changes_the_picture_and_each_cell_equals_diffusers():
    model = "nbbatch:tiny-flux"
    grid = nbbatch.generate("a red cat", [1], model=model, x=("guidance", [1.5, 6.0]), **SIZE)
    assert [item.params["guidance_scale"] for item in grid] == [1.5, 6.0]
    assert max_difference(grid[0].image, grid[1].image) > 1
    for item in grid:
        expected = direct_call(
            model,
            "a red cat",
            1,
            guidance_scale=item.params["guidance_scale"],
            num_inference_steps=2,
            width=64,
            height=64,
        )
        assert max_difference(item.image, expected) <= 1


def test_flux_schnell_records_no_guidance_and_refuses_one():
    made = nbbatch.generate("a red cat", [1], model="nbbatch:tiny-flux-schnell", **SIZE)[0]
    assert "guidance_scale" not in made.params
    with pytest.raises(ValueError, match=r"^this FLUX.1 model \(schnell\) has no guidance"):
        nbbatch.generate("a red cat", [1], model="nbbatch:tiny-flux-schnell", guidance=3.0, **SIZE)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"negative_prompt": "blurry"}, "FluxPipeline ignores a negative prompt"),
        ({"prompts": "a (red:1.3) cat"}, "prompt weights and BREAK need an SD 1.x/2.x or SDXL pipeline"),
    ],
    ids=["negative-prompt", "weights"],
)
def test_flux_refuses_what_it_would_ignore_in_one_line(flux, options, message):
    options = dict(options)  # the parameter is shared by both models' runs
    prompts = options.pop("prompts", "a red cat")
    with pytest.raises(ValueError, match=message) as error:
        nbbatch.generate(prompts, [1], model=flux, **SIZE, **options)
    assert "\n" not in str(error.value)
