"""Inpaint a region of a picked seed: masks of every kind, the family's inpaint pipeline, the outside kept."""

import re

import numpy as np
import pytest
import torch
from conftest import FAST, max_difference, pixels
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from PIL import Image

import nbbatch
from nbbatch.core.masks import make_mask
from nbbatch.models.tiny import builtin_path


def test_every_kind_of_mask_becomes_one_grey_picture_of_the_picture_s_size(tmp_path):
    box = make_mask("box:2,4,10,12", (16, 16))
    assert np.asarray(box)[4:12, 2:10].min() == 255 and np.asarray(box).sum() == 255 * 64
    ellipse = np.asarray(make_mask("ellipse: 0,0,16,16", (16, 16)))
    assert ellipse[8, 8] == 255 and ellipse[0, 0] == 0
    array = np.zeros((16, 16), bool)
    array[:8] = True
    assert np.asarray(make_mask(array, (16, 16))).sum() == 255 * 128
    assert np.asarray(make_mask(array.astype(np.float32), (16, 16))).sum() == 255 * 128
    Image.fromarray(array.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    assert np.asarray(make_mask(str(tmp_path / "mask.png"), (16, 16))).sum() == 255 * 128
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    clear.paste((255, 0, 0, 255), (0, 0, 16, 8))
    assert np.asarray(make_mask(clear, (16, 16))).sum() == 255 * 128, "a drawing's alpha is its mask"


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        ("box:0,0,40,8", "the box 0,0,40,8 is not inside the 16x16 picture with x0 < x1 and y0 < y1"),
        ("box:8,8,4,12", "the box 8,8,4,12 is not inside the 16x16 picture with x0 < x1 and y0 < y1"),
        ("star:1,1,4,4", "the mask 'star:1,1,4,4' is neither a file nor 'box:x0,y0,x1,y1' / 'ellipse:x0,y0,x1,y1'"),
        (np.zeros((16, 16)), "the mask is empty: paint white (or give a box) where the picture should change"),
        (np.ones((8, 16)), "the mask is 16x8 but the picture is 16x16"),
        (np.full((16, 16), 2.0), "a float mask array holds 0 (keep) to 1 (repaint)"),
        (np.ones((16, 16, 3)), "a mask array is HxW, not of shape (16, 16, 3)"),
        (42, "a mask is a picture, an array, a file or 'box:x0,y0,x1,y1' / 'ellipse:x0,y0,x1,y1', not int"),
    ],
)
def test_a_bad_mask_is_one_line(mask, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_mask(mask, (16, 16))


@pytest.mark.parametrize(
    ("model", "pipeline"),
    [("nbbatch:tiny-sd", "StableDiffusionInpaintPipeline"), ("nbbatch:tiny-sdxl", "StableDiffusionXLInpaintPipeline")],
)
def test_inpaint_repaints_inside_the_mask_keeps_the_outside_and_equals_diffusers_with_its_overlay(model, pipeline):
    import diffusers

    batch = nbbatch.generate("a red cat", [3, 4], model=model, **FAST)
    original = batch.by_seed(4)
    inpainted = batch.inpaint(4, "box:8,8,24,24", "a blue dog", strength=0.9)
    (item,) = inpainted
    assert item.call.pipeline == pipeline and item.label == "seed 4 · inpaint"
    assert item.parent is original and inpainted.parent is batch
    before, after = np.asarray(original.image, np.int16), np.asarray(item.image, np.int16)
    outside = np.ones((32, 32), bool)
    outside[8:24, 8:24] = False
    assert np.abs(before - after)[outside].max() == 0, "the outside is the original's, pasted back"
    assert np.abs(before - after)[~outside].max() > 10, "the inside is repainted"
    raw = diffusers.DiffusionPipeline.from_pretrained(str(builtin_path(model)), dtype=torch.float32)
    pipe = getattr(diffusers, pipeline).from_pipe(raw)
    pipe.set_progress_bar_config(disable=True)
    mask = make_mask("box:8,8,24,24", (32, 32))
    expected = pipe(
        "a blue dog",
        image=original.image,
        mask_image=mask,
        strength=0.9,
        num_inference_steps=4,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(4),
    ).images[0]
    expected = pipe.image_processor.apply_overlay(mask, original.image, expected)
    assert max_difference(item.image, expected) <= 1


def test_an_inpainted_image_reproduces_from_its_png_with_its_mask_and_exports_its_code(tmp_path):
    from test_code import run_codes

    batch = nbbatch.generate("a red cat", [5], model="nbbatch:tiny-sd", **FAST)
    inpainted = batch.inpaint(5, "ellipse:4,4,28,28", "a green cat")
    (path,) = inpainted.save(tmp_path, grid=False)
    assert len(list(tmp_path.glob("*mask*"))) == 1, "the mask is saved beside the picture"
    again = nbbatch.reproduce(path)[0]
    assert again.label == "seed 5 · inpaint" and max_difference(again.image, inpainted[0].image) == 0
    assert max_difference(run_codes({"inpaint": inpainted.code(5)}, tmp_path)["inpaint"], inpainted[0].image) <= 1


def test_the_magic_inpaints_a_seed_of_the_last_result_with_a_mask_variable_or_a_box(shell):
    with capture_output():
        shell.run_cell_magic("batchgen", "-m nbbatch:tiny-sd --seeds 1-2 --steps 4 --width 32 --height 32", "a cat")
        shell.user_ns["hole"] = np.pad(np.ones((8, 8), bool), 12)
        shell.run_cell_magic("batchgen", "--inpaint 2 --mask hole --out fixed", "a dog")
        shell.run_line_magic("batchgen", "--inpaint 1 --mask box:0,0,16,16 --from _batch --out boxed")
    assert shell.user_ns["fixed"][0].label == "seed 2 · inpaint"
    assert shell.user_ns["boxed"][0].prompt == "a cat", "the line form keeps the image's prompt"
    for line, message in [
        ("--inpaint 2", "--inpaint needs --mask: a variable holding a picture or array, a file, or box:x0,y0,x1,y1"),
        ("--mask box:0,0,4,4", "--mask goes with --inpaint SEED or --image"),
        ("--inpaint 1 --mask box:0,0,64,64", "the box 0,0,64,64 is not inside the 32x32 picture"),
    ]:
        with pytest.raises(UsageError, match=f"^{re.escape(message)}"):
            shell.run_line_magic("batchgen", line)


def test_inpaint_on_a_family_without_an_inpaint_pipeline_is_refused_in_one_line():
    batch = nbbatch.generate("a red cat", [1], model="nbbatch:tiny-cogview4", steps=2, width=64, height=64)
    with pytest.raises(ValueError, match=r"^CogView4 has no working inpaint pipeline in diffusers"):
        batch.inpaint(1, "box:0,0,32,32", "a dog")


def test_the_built_in_model_inpaints_by_blending_recolouring_the_shape_and_keeping_the_background(tmp_path):
    from nbbatch.models.shapes.data import judge

    batch = nbbatch.generate("a red circle on a white background", list(range(8)), model="nbbatch:shapes", steps=20)
    prompts = ["a blue circle on a white background", "a green circle on a white background"]
    asked, kept = [], []
    for original in batch:
        repainted = batch.inpaint(original.seed, "box:8,8,56,56", prompts)
        assert [item.call.pipeline for item in repainted] == ["StableDiffusionImg2ImgPipeline"] * 2
        asked += [judge(item.image).colour == colour for item, colour in zip(repainted, ("blue", "green"))]
        outside = np.ones((64, 64), bool)
        outside[8:56, 8:56] = False
        kept += [int(np.abs(pixels(item.image) - pixels(original.image))[outside].max()) for item in repainted]
    assert sum(asked) >= 14, f"{sum(asked)} of 16 take the colour asked for"
    assert max(kept) == 0, "outside the mask, the original's pixels"
    alone = batch.inpaint(3, "box:8,8,56,56", prompts[1])[0]
    assert max_difference(alone.image, batch.inpaint(3, "box:8,8,56,56", prompts)[1].image) <= 1, "as in a batch"
    (path,) = batch.inpaint(3, "box:8,8,56,56", prompts[1]).save(tmp_path, grid=False)
    again = nbbatch.reproduce(path)[0]
    assert max_difference(again.image, alone.image) == 0 and again.call.inpaint == "blend"
    with pytest.raises(ValueError, match="^nbbatch inpainted this image by blending at every step itself"):
        again.code()
