"""Folders, globs and lists of pictures: every picture with every prompt and seed, each the same as alone."""

import re

import numpy as np
import pytest
from conftest import direct_call, max_difference, pixels
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from PIL import Image

import nbbatch

STEPS, RAW = {"steps": 4}, {"num_inference_steps": 4}
"""Four steps; no size, so that each picture keeps its own."""
COLOURS = {"b-green.png": (30, 200, 60), "a-red.png": (220, 30, 30), "c-blue.jpg": (30, 30, 220)}


@pytest.fixture
def folder(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    for name, colour in COLOURS.items():
        Image.new("RGB", (32, 32), colour).save(shots / name)
    (shots / "notes.txt").write_text("not a picture")
    (shots / "inner").mkdir()
    Image.new("RGB", (32, 32)).save(shots / "inner" / "deeper.png")  # sub-folders are not read
    return shots


def test_a_folder_of_three_pictures_two_prompts_two_seeds_makes_twelve_images_each_equal_alone(folder):
    result = nbbatch.generate(["warm", "cold"], [1, 2], images=folder, strength=0.6, model="nbbatch:tiny-sd", **STEPS)
    names = sorted(COLOURS)
    assert [(item.provenance.picture, item.prompt, item.seed) for item in result] == [
        (name, prompt, seed) for name in names for prompt in ("warm", "cold") for seed in (1, 2)
    ]
    assert result[5].label == "seed 2 · b-green.png"
    assert [group.title for group in result.groups()][:2] == [
        "a-red.png · prompt 0: warm",
        "a-red.png · prompt 1: cold",
    ]
    for item in result:
        picture = Image.open(folder / item.provenance.picture).convert("RGB")
        alone = direct_call("nbbatch:tiny-sd", item.prompt, item.seed, image=picture, strength=0.6, **RAW)
        assert max_difference(item.image, alone) <= 1, item.label


def test_pictures_of_other_sizes_each_keep_their_size_and_equal_alone(tmp_path):
    small, wide = Image.new("RGB", (32, 32), (200, 40, 40)), Image.new("RGB", (48, 32), (40, 40, 200))
    small.save(tmp_path / "small.png")
    wide.save(tmp_path / "wide.png")
    result = nbbatch.generate("a boat", [3], images=str(tmp_path / "*.png"), model="nbbatch:tiny-sd", **STEPS)
    assert [(item.provenance.picture, item.image.size) for item in result] == [
        ("small.png", (32, 32)),
        ("wide.png", (48, 32)),
    ]
    for item, picture in zip(result, (small, wide)):
        alone = direct_call("nbbatch:tiny-sd", "a boat", 3, image=picture, strength=0.8, **RAW)
        assert max_difference(item.image, alone) <= 1


def test_the_picture_s_name_is_in_the_record_and_its_png_reproduces(folder, tmp_path):
    result = nbbatch.generate("warm", [1], images=[folder / "a-red.png"], model="nbbatch:tiny-sd", **STEPS)
    (path,) = result.save(tmp_path / "out", grid=False)
    again = nbbatch.reproduce(path)[0]
    assert again.provenance.picture == "a-red.png" and again.label == "seed 1 · a-red.png"
    assert max_difference(again.image, result[0].image) == 0


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ("no/such/place", "the input images: 'no/such/place' is no picture file, folder or glob"),
        ("EMPTY", "the input images: the folder 'EMPTY' holds no pictures (.png, .jpg, .jpeg, .webp, .bmp)"),
        ("EMPTY/*.png", "the input images: the glob 'EMPTY/*.png' holds no pictures"),
        ("EMPTY/broken.txt", "cannot read 'EMPTY/broken.txt' as an image: "),
    ],
)
def test_a_bad_folder_or_glob_is_one_line_before_anything_loads(tmp_path, monkeypatch, images, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "EMPTY" / "broken.txt").write_text("no picture")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        nbbatch.plan("a cat", [1], images=images, model="nbbatch:tiny-sd")


def test_the_magic_takes_a_folder_for_image(shell, folder):
    with capture_output():
        shell.run_cell_magic("batchgen", f"-m nbbatch:tiny-sd --seeds 1 --steps 4 --image {folder} --out shots", "a")
    assert [item.provenance.picture for item in shell.user_ns["shots"]] == sorted(COLOURS)
    with capture_output():
        shell.run_cell_magic(
            "batchgen", f"-m nbbatch:tiny-sd --seeds 1 --steps 4 --image {folder} --mask box:0,0,16,16 --out fixed", "a"
        )
    assert [item.call.pipeline for item in shell.user_ns["fixed"]] == ["StableDiffusionInpaintPipeline"] * 3
    with pytest.raises(UsageError, match="^the input images: the glob .* holds no pictures"):
        shell.run_cell_magic("batchgen", f"-m nbbatch:tiny-sd --image {folder / 'inner' / 'none'}*", "a")


def test_a_folder_inpaints_each_picture_with_the_mask_of_its_name_and_keeps_the_outside(folder, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for name, box in (
        ("a-red.png", (0, 0, 16, 16)),
        ("b-green.png", (16, 16, 32, 32)),
        ("c-blue.png", (0, 16, 32, 32)),
    ):
        mask = Image.new("L", (32, 32))
        mask.paste(255, box)
        mask.save(masks / name)  # c-blue.jpg's mask is a PNG of the same stem
    result = nbbatch.generate("a cat", [4], images=folder, mask=masks, strength=0.9, model="nbbatch:tiny-sd", **STEPS)
    assert [item.call.pipeline for item in result] == ["StableDiffusionInpaintPipeline"] * 3
    for item in result:
        picture = Image.open(folder / item.provenance.picture).convert("RGB")
        inside = np.asarray(item.mask) > 127
        assert np.abs(pixels(item.image) - pixels(picture))[~inside].max() == 0, "outside: the picture's pixels"
        assert np.abs(pixels(item.image) - pixels(picture))[inside].max() > 8, "inside: repainted"
        alone = nbbatch.generate("a cat", [4], images=picture, mask=item.mask, strength=0.9, model="nbbatch:tiny-sd",
                                 **STEPS)[0]  # fmt: skip
        assert max_difference(alone.image, item.image) <= 1
    path = result.save(tmp_path / "out", grid=False)[0]
    assert max_difference(nbbatch.reproduce(path)[0].image, result[0].image) == 0, "its mask is saved beside it"


def test_a_mask_folder_without_a_picture_s_mask_is_one_line(folder, tmp_path):
    (tmp_path / "masks").mkdir()
    Image.new("L", (32, 32), 255).save(tmp_path / "masks" / "a-red.png")
    with pytest.raises(ValueError, match=r"^the masks: none for 'b-green.png' in '.*masks' \(a mask of the picture's"):
        nbbatch.plan("a cat", [1], images=folder, mask=tmp_path / "masks", model="nbbatch:tiny-sd")
    with pytest.raises(ValueError, match=r"^a mask marks what to repaint in input pictures: give images"):
        nbbatch.plan("a cat", [1], mask="box:0,0,8,8", model="nbbatch:tiny-sd")


def test_a_file_name_a_record_cannot_hold_is_left_out_and_the_picture_still_saves_and_reproduces(tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(odd / "bell\x07.png")
    made = nbbatch.generate("a boat", [2], images=odd, model="nbbatch:tiny-sd", **STEPS)
    assert made[0].label == "seed 2" and made[0].provenance.picture is None
    (path,) = made.save(tmp_path / "out", grid=False)
    assert max_difference(nbbatch.reproduce(path)[0].image, made[0].image) == 0
