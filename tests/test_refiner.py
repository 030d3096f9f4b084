"""SDXL base + refiner: the latents handed over partway, equal to the diffusers SDXL guide's two calls."""

import re

import pytest
import torch
from conftest import max_difference
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from test_code import run_codes

import nbbatch
from nbbatch.formats.png import a1111_parameters
from nbbatch.models.tiny import builtin_path

BASE, REFINER = "nbbatch:tiny-sdxl", "nbbatch:tiny-sdxl-refiner"
SIZE = {"steps": 10, "width": 32, "height": 32}


@pytest.fixture(scope="module")
def raw():
    """The guide's recipe: the refiner loaded with the base's VAE and second text encoder."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base = StableDiffusionXLPipeline.from_pretrained(str(builtin_path(BASE)), dtype=torch.float32)
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(
        str(builtin_path(REFINER)), text_encoder_2=base.text_encoder_2, vae=base.vae, dtype=torch.float32
    )
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)

    def make(prompt: str, seed: int, at: float = 0.8, **kwargs):
        generator = torch.Generator().manual_seed(seed)
        common = {"prompt": prompt, "num_inference_steps": 10, "generator": generator, **kwargs}
        latents = base(**common, width=32, height=32, denoising_end=at, output_type="latent").images
        return refiner(**common, image=latents, denoising_start=at).images[0]

    return make


def test_each_image_of_a_refined_batch_equals_the_guide_s_two_calls_made_alone(raw):
    made = nbbatch.generate(["a red cat", "a much longer prompt: a blue dog in a park"], [1, 2], model=BASE,
                            refiner=REFINER, **SIZE)  # fmt: skip
    for item in made:
        assert max_difference(item.image, raw(item.prompt, item.seed)) <= 1, item.label
        assert (item.call.refiner, item.call.refiner_at) == (REFINER, 0.8)
    early = nbbatch.generate("a red cat", [1], model=BASE, refiner=REFINER, refiner_at=0.5, guidance=3.0, **SIZE)[0]
    assert max_difference(early.image, raw("a red cat", 1, at=0.5, guidance_scale=3.0)) <= 1
    plain = nbbatch.generate("a red cat", [1], model=BASE, guidance=3.0, **SIZE)[0]
    assert max_difference(plain.image, early.image) > 8, "the refiner makes the second half of the steps"


def test_the_hand_off_is_recorded_as_a1111_writes_it_reproduces_and_exports_its_code(raw, tmp_path):
    made = nbbatch.generate("a red cat", [3], model=BASE, refiner=REFINER, refiner_at=0.7, **SIZE)
    assert "Refiner: nbbatch-tiny-sdxl-refiner, Refiner switch at: 0.7," in a1111_parameters(made[0])
    (path,) = made.save(tmp_path / "out", grid=False)
    again = nbbatch.reproduce(path)[0]
    assert max_difference(again.image, made[0].image) == 0 and again.settings.refiner == REFINER
    code = made.code(3)
    assert (
        "denoising_end=0.7" in code and "denoising_start=0.7" in code and "text_encoder_2=pipe.text_encoder_2" in code
    )
    assert max_difference(run_codes({"refined": code}, tmp_path)["refined"], made[0].image) <= 1
    with_scheduler = nbbatch.generate("a red cat", [3], model=BASE, refiner=REFINER, scheduler="dpm++2m", **SIZE)
    with pytest.raises(ValueError, match="^the refiner ran with a scheduler made from its own config"):
        with_scheduler.code(3)


def test_an_x_y_grid_varies_when_the_refiner_takes_over(raw):
    grid = nbbatch.generate("a red cat", [1], model=BASE, refiner=REFINER, x=("refiner_at", [0.5, 0.9]), **SIZE)
    assert [item.label for item in grid] == ["seed 1 · refiner at: 0.5", "seed 1 · refiner at: 0.9"]
    for item, at in zip(grid, (0.5, 0.9)):
        assert max_difference(item.image, raw("a red cat", 1, at=at)) <= 1


def test_the_progress_counts_the_base_s_steps_then_the_refiner_s():
    seen = []
    nbbatch.generate(
        "a red cat", [1], model=BASE, refiner=REFINER, observer=nbbatch.Observer(progress=seen.append), **SIZE
    )
    steps = [progress.step for progress in seen if progress.step]
    assert steps == sorted(steps) and max(steps) == 10, steps


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "nbbatch:tiny-sd", "refiner": REFINER}, "refiner takes SDXL latents over partway"),
        ({"model": BASE, "refiner": "nbbatch:tiny-flux"}, "the refiner nbbatch:tiny-flux is FLUX.1, not an SDXL model"),
        ({"model": BASE, "refiner_at": 0.5}, "refiner_at says when the refiner takes over: give refiner too"),
        (
            {"model": BASE, "refiner": REFINER, "refiner_at": 1.0},
            "refiner_at must be a number above 0 and below 1",
        ),
        (
            {"model": BASE, "refiner": REFINER, "images": [__import__("PIL.Image").Image.new("RGB", (32, 32))]},
            "a refiner takes a text-to-image batch's latents over: it does not go with input images",
        ),
        ({"model": BASE, "refiner": REFINER, "prompts": "a (red:1.3) cat"}, "prompt weights, BREAK and prompts"),
    ],
)
def test_a_refiner_that_cannot_hand_over_is_one_line_before_any_image(kwargs, message):
    prompts = kwargs.pop("prompts", "a red cat")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        nbbatch.generate(prompts, [1], steps=4, width=32, height=32, **kwargs)


def test_the_magic_takes_refiner_and_refiner_at(shell):
    with capture_output():
        shell.run_cell_magic(
            "batchgen", f"-m {BASE} --refiner {REFINER} --refiner-at 0.6 --seeds 1 --steps 10 --width 32 --height 32",
            "a red cat",
        )  # fmt: skip
    assert shell.user_ns["_batch"][0].call.refiner_at == 0.6
    with pytest.raises(UsageError, match="^--refiner-at says when the refiner takes over: give --refiner too$"):
        shell.run_cell_magic("batchgen", f"-m {BASE} --refiner-at 0.6", "a red cat")


def test_a_stranger_s_refiner_loads_only_when_allowed(tmp_path):
    import dataclasses

    (path,) = nbbatch.generate("a red cat", [1], model=BASE, refiner=REFINER, **SIZE).save(tmp_path, grid=False)
    loaded = nbbatch.load(path)[0]
    assert loaded.settings_to_remake({}).refiner == REFINER, "a built-in refiner loads"
    hostile = dataclasses.replace(loaded, settings=loaded.settings.replace(refiner="evil-org/evil-refiner"))
    with pytest.raises(ValueError, match=r"allow it: refiner hub model 'evil-org/evil-refiner'; put its files beside"):
        hostile.settings_to_remake({})
    assert hostile.settings_to_remake({}, allow_download=True).refiner == "evil-org/evil-refiner"
    unvetted = dataclasses.replace(hostile, vet=None)  # an item that claims a file but skipped its reader's check
    with pytest.raises(ValueError, match=r"was read without its reader's check of what it names: read it with load$"):
        unvetted.settings_to_remake({})
