"""Hires fix of a picked seed: A1111's two passes, the original kept, equal to diffusers' image-to-image."""

import re
import statistics

import numpy as np
import pytest
import torch
from conftest import FAST, max_difference
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from PIL import Image

import nbbatch
from nbbatch.formats.png import a1111_parameters
from nbbatch.models.shapes.data import iou, judge
from nbbatch.models.tiny import builtin_path


def test_a_hires_fix_of_the_built_in_model_doubles_the_size_and_keeps_the_shape_in_its_place():
    prompts = [
        "a red circle on a white background",
        "a blue square on a black background",
        "a green triangle on a yellow background",
        "a yellow square on a blue background",
    ]
    batch = nbbatch.generate(prompts, "0-3", model="nbbatch:shapes")
    kept, control = [], []
    for original in batch:
        hires = batch.upscale(original.seed, prompt_index=original.prompt_index)
        (item,) = hires
        assert item.image.size == (128, 128) and item.label == f"seed {original.seed} · hires x2"
        assert hires.parent is batch and item.parent is original, "the original stays in the batch"
        upscaled = original.image.resize((128, 128), Image.Resampling.LANCZOS)
        kept.append(iou(judge(item.image).mask, judge(upscaled).mask))
        other = batch.by_seed((original.seed + 1) % 4, original.prompt_index).image.resize((128, 128))
        control.append(iou(judge(item.image).mask, judge(other).mask))
    # 128 px is twice what the model was trained at: now and then a triangle comes back bent (IoU 0.46 for one)
    assert statistics.median(kept) >= 0.8 and sum(value >= 0.6 for value in kept) >= 14, kept
    assert statistics.median(control) < statistics.median(kept) - 0.2, "another seed's shape sits elsewhere"


def test_a_hires_fix_equals_diffusers_image_to_image_of_the_lanczos_upscale_with_the_seed_s_generator():
    from diffusers import DiffusionPipeline, StableDiffusionImg2ImgPipeline

    model = "nbbatch:tiny-sd"
    batch = nbbatch.generate("a red cat", [3, 4], model=model, **FAST)
    hires = batch.upscale(4, scale=1.5, strength=0.5, steps=6)
    (item,) = hires
    assert item.image.size == (48, 48)
    raw = DiffusionPipeline.from_pretrained(str(builtin_path(model)), dtype=torch.float32)
    pipe = StableDiffusionImg2ImgPipeline.from_pipe(raw)
    pipe.set_progress_bar_config(disable=True)
    picture = batch.by_seed(4).image.resize((48, 48), Image.Resampling.LANCZOS)
    expected = pipe(
        "a red cat",
        image=picture,
        strength=0.5,
        num_inference_steps=6,
        generator=torch.Generator().manual_seed(4),
    ).images[0]
    assert max_difference(item.image, expected) <= 1
    text = a1111_parameters(item)
    assert "Size: 32x32," in text and "Denoising strength: 0.5, Hires upscale: 1.5, Hires upscaler: Lanczos" in text


def test_a_hires_fix_reproduces_from_its_png_and_exports_its_code(tmp_path):
    from test_code import run_codes

    batch = nbbatch.generate("a red cat", [5], model="nbbatch:tiny-sdxl", **FAST)
    hires = batch.upscale(5)
    (path,) = hires.save(tmp_path, grid=False)
    again = nbbatch.reproduce(path)[0]
    assert again.label == "seed 5 · hires x2" and max_difference(again.image, hires[0].image) == 0
    assert max_difference(run_codes({"hires": hires.code(5)}, tmp_path)["hires"], hires[0].image) <= 1


def test_the_latent_upscaler_upscales_sd_latents_and_is_refused_where_there_are_none(tmp_path):
    batch = nbbatch.generate("a red cat", [5], model="nbbatch:tiny-sd", **FAST)
    latent = batch.upscale(5, upscaler="latent", strength=0.6)
    lanczos = batch.upscale(5, upscaler="lanczos", strength=0.6)
    assert latent[0].image.size == (64, 64) and max_difference(latent[0].image, lanczos[0].image) > 1
    (path,) = latent.save(tmp_path, grid=False)
    assert max_difference(nbbatch.reproduce(path)[0].image, latent[0].image) == 0
    assert "Hires upscaler: Latent" in a1111_parameters(latent[0])
    with pytest.raises(ValueError, match=r"^nbbatch upscaled this hires fix's latents itself: diffusers alone"):
        latent.code(5)
    shapes = nbbatch.generate("a red circle on a white background", [1], model="nbbatch:shapes")
    with pytest.raises(ValueError, match=r"^the latent hires upscaler needs SD 1.x/2.x or SDXL's 4-channel latents"):
        shapes.upscale(1, upscaler="latent")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": 1.0}, "scale must be a number above 1 and at most 4, not 1.0"),
        ({"scale": 8}, "scale must be a number above 1 and at most 4, not 8"),
        ({"upscaler": "esrgan"}, "unknown hires upscaler 'esrgan': choose latent or lanczos"),
        ({"strength": 0}, "strength must be a number above 0 and at most 1, not 0"),
        ({"width": 128}, "a hires fix's size is the picture's times the scale: give scale, not width or height"),
    ],
)
def test_bad_hires_input_is_one_line_before_anything_runs(options, message, monkeypatch):
    batch = nbbatch.generate("a red cat", [5], model="nbbatch:tiny-sd", **FAST)
    monkeypatch.setattr(batch, "runner", lambda *a, **k: pytest.fail("nothing may run"))
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        batch.upscale(5, **options)


def test_the_magic_makes_a_hires_fix_of_the_last_result_and_refuses_lone_hires_options(shell):
    with capture_output():
        shell.run_cell_magic("batchgen", "-m nbbatch:tiny-sd --seeds 1-2 --steps 4 --width 32 --height 32", "a cat")
        shell.run_line_magic("batchgen", "--hires 2 --scale 1.5 --hires-strength 0.6 --out big")
    big = shell.user_ns["big"]
    assert big[0].image.size == (48, 48) and big[0].call.strength == 0.6
    assert np.asarray(big[0].image).std() > 0
    for line, message in [
        ("--scale 2", "--scale go with --hires SEED"),
        ("--hires 2 --vary 2", "--vary and --hires do not go together: choose one"),
        ("--hires 2 --strength 0.5", "--hires takes one prompt (or none) and --hires-strength, not --strength"),
        ("--hires 2 --scale 9", "--scale must be a number above 1 and at most 4, not 9.0"),
    ]:
        with pytest.raises(UsageError, match=f"^{re.escape(message)}"):
            shell.run_line_magic("batchgen", line)


@pytest.mark.parametrize(("model", "pipeline"), [("nbbatch:tiny-flux", "FluxImg2ImgPipeline")])
def test_a_hires_fix_on_a_transformer_family_is_its_own_image_to_image_pipeline(model, pipeline, tmp_path):
    import diffusers
    from test_code import run_codes

    batch = nbbatch.generate("a red cat", [2], model=model, steps=2, width=64, height=64)
    hires = batch.upscale(2, scale=1.5, strength=0.5)
    (item,) = hires
    assert item.image.size == (96, 96) and item.call.pipeline == pipeline
    raw = diffusers.DiffusionPipeline.from_pretrained(str(builtin_path(model)), dtype=torch.float32)
    pipe = getattr(diffusers, pipeline).from_pipe(raw)
    pipe.set_progress_bar_config(disable=True)
    picture = batch[0].image.resize((96, 96), Image.Resampling.LANCZOS)
    expected = pipe("a red cat", image=picture, strength=0.5, num_inference_steps=2, height=96, width=96,
                    generator=torch.Generator().manual_seed(2)).images[0]  # fmt: skip
    assert max_difference(item.image, expected) <= 1
    assert max_difference(run_codes({"flux": hires.code(2)}, tmp_path)["flux"], item.image) <= 1, "96 px, not 1024"
