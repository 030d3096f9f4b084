import re

import pytest
from PIL import Image

import nbbatch
from nbbatch.core import spec
from nbbatch.core.spec import Settings, build_jobs, parse_prompt_lines, prepare_images


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps must be a whole number from 1 to 1000, not 0"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"width": 30}, "width must be a multiple of 8"),
        ({"height": 0}, "height must be a whole number from 8"),
        ({"guidance": float("nan")}, "guidance must be a number"),
        ({"strength": 0}, "strength must be a number above 0 and at most 1, not 0"),
        ({"strength": 1.5}, "strength must be a number above 0"),
        ({"dtype": "fp8"}, "dtype must be one of auto, fp16, bf16, fp32, not 'fp8'"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda, cuda:N or mps, not 'gpu'"),
        ({"generator_device": "mps"}, "generator_device must be cpu, cuda or cuda:N, not 'mps'"),
        ({"batch_size": 0}, "batch_size must be a whole number from 1 to 100000 or auto, not 0"),
        ({"batch_size": "many"}, "batch_size must be a whole number"),
        ({"model": " "}, "model is empty: pass a model id or a local folder"),
        ({"variant": "fp 16"}, "variant must be a name such as fp16"),
    ],
)
def test_settings_refuse_bad_values_naming_them(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings(**changes)


def test_replace_validates_and_refuses_unknown_names():
    settings = Settings(steps=4)
    assert settings.replace(steps=5).steps == 5
    with pytest.raises(ValueError, match="stepz is not a setting"):
        settings.replace(stepz=5)
    with pytest.raises(ValueError, match="steps must be"):
        settings.replace(steps=-1)


def test_image_to_image_needs_at_least_one_denoising_step():
    assert Settings(steps=10, strength=0.3).image_to_image_steps() == 3
    with pytest.raises(ValueError, match="steps 2 x strength 0.3 leaves no denoising step"):
        Settings(steps=2, strength=0.3).image_to_image_steps()


def test_jobs_are_prompts_times_seeds_grouped_by_prompt():
    jobs = build_jobs(["a cat", "a dog"], (5, 6, 7), "blurry")
    assert [(j.prompt, j.seed, j.prompt_index) for j in jobs] == [
        ("a cat", 5, 0),
        ("a cat", 6, 0),
        ("a cat", 7, 0),
        ("a dog", 5, 1),
        ("a dog", 6, 1),
        ("a dog", 7, 1),
    ]
    assert {j.negative_prompt for j in jobs} == {"blurry"}


def test_every_input_picture_is_made_with_every_prompt_and_seed_grouped_by_picture(monkeypatch):
    red, blue = Image.new("RGB", (16, 16), "red"), Image.new("RGB", (16, 16), "blue")
    crossed = build_jobs(["a", "b"], (0, 1), images=[red, blue], names=["red.png", None])
    assert [(j.init_image, j.prompt, j.seed) for j in crossed] == [
        (picture, prompt, seed) for picture in (red, blue) for prompt in "ab" for seed in (0, 1)
    ]
    assert [j.provenance.get("picture") for j in crossed] == ["red.png"] * 4 + [None] * 4
    shared = build_jobs(["a", "b"], (0,), images=[red])
    assert [j.init_image for j in shared] == [red, red]
    monkeypatch.setattr(spec, "MAX_IMAGES", 10)
    with pytest.raises(ValueError, match="^3 pictures x 2 prompts x 2 seeds make 12 images; the most one batch"):
        build_jobs(["a", "b"], (0, 1), images=[red, blue, red])


@pytest.mark.parametrize(
    ("prompts", "seeds", "message"),
    [([], (0,), "no prompt given"), (["a", "  "], (0,), "prompt 1 is empty"), (["a"], (), "no seeds given")],
)
def test_jobs_refuse_empty_input(prompts, seeds, message):
    with pytest.raises(ValueError, match=message):
        build_jobs(prompts, seeds)


def test_prompt_lines_skip_blanks_and_comments_and_fill_variables():
    text = "\n  # a comment\ncinematic photo of {subject}, 35mm\n\npixel-art {subject} at \\{night\\}\n"
    assert parse_prompt_lines(text, {"subject": "a lighthouse"}) == [
        "cinematic photo of a lighthouse, 35mm",
        "pixel-art a lighthouse at \\{night\\}",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a {missing} cat", "prompt line 1: unknown variable {missing}"),
        ("ok\na {cat}", "prompt line 2: unknown variable {cat}"),
    ],
)
def test_prompt_variables_must_exist(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_prompt_lines(text, {"x": 1})


def test_input_images_are_resized_to_the_asked_size_or_cut_to_multiples_of_8():
    image = Image.new("RGBA", (37, 50), "red")
    assert [i.size for i in prepare_images([image], 16, 24)] == [(16, 24)]
    (cut,) = prepare_images([image], None, None)
    assert cut.size == (32, 48) and cut.mode == "RGB"
    sizes = [i.size for i in prepare_images([Image.new("RGB", (16, 16)), Image.new("RGB", (33, 32))], None, None)]
    assert sizes == [(16, 16), (32, 32)], "each keeps its own size (other sizes run in calls of their own)"
    with pytest.raises(ValueError, match="input image 0 is a str"):
        prepare_images(["cat.png"], None, None)


def test_a_width_alone_sets_the_width_of_a_text_to_image_batch():
    settings, jobs = nbbatch.plan("a red cat", [0], width=64)
    assert (settings.width, settings.height, len(jobs)) == (64, None, 1)
