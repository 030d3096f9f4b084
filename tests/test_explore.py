"""Exploring a space of pictures: prompt templates, X/Y/Z grids and variation seeds (issue 12).

Pixels are compared with images made alone and with raw diffusers calls; templates with
the dynamicprompts library's own generator.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import FAST, direct_call, max_difference
from dynamicprompts.generators import CombinatorialPromptGenerator
from IPython.core.error import UsageError
from PIL import Image

import nbbatch
from nbbatch.core.axes import parse_axis
from nbbatch.core.seeds import slerp
from nbbatch.core.spec import parse_prompt_lines
from nbbatch.core.templates import expand

TINY = {"steps": 3, "width": 32, "height": 32}


# --- templates ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "a {red|green|blue} {circle|square} on a white background",
        "{2$$red|green|blue} stripes",
        "{1-2$$ and $$cat|dog|owl}",
        "a {small|{dark|light} big} house",
        "{3::rare|common} word",
    ],
)
def test_templates_make_what_dynamicprompts_makes_in_its_order_and_record_the_choices(template):
    made = expand([template])
    assert [p.text for p in made] == CombinatorialPromptGenerator().generate(template)
    assert all(p.template == template for p in made)
    for prompt in made:  # the recorded choices, put back into the template's literal parts, give the prompt
        assert _put_back(template, prompt.choices) == prompt.text


def _put_back(template: str, choices: tuple[str, ...]) -> str:
    values = iter(choices)
    return re.sub(r"\{(?:[^{}]|\{[^{}]*\})*\}", lambda _: next(values), template)


def test_template_combinations_vary_the_rightmost_choice_fastest_and_count_right():
    made = expand(["a {red|green} {circle|square|triangle}", "plain prompt"])
    assert [p.choices for p in made[:3]] == [("red", "circle"), ("red", "square"), ("red", "triangle")]
    assert len(made) == 7 and made[-1].text == "plain prompt" and made[-1].template is None


def test_wildcards_read_from_the_folder_the_user_names(tmp_path):
    (tmp_path / "colour.txt").write_text("red\ngreen\n# a comment\nblue\n", encoding="utf-8")
    made = expand(["a __colour__ {circle|square}"], wildcards=tmp_path)
    assert len(made) == 6
    assert {p.choices[0] for p in made} == {"red", "green", "blue"}
    assert all(p.text == f"a {p.choices[0]} {p.choices[1]}" for p in made)
    with pytest.raises(ValueError, match=re.escape(f"unknown wildcard __shape__; {tmp_path} holds colour")):
        expand(["a __shape__"], wildcards=tmp_path)
    with pytest.raises(ValueError, match=re.escape("unknown wildcard __colour__; give a wildcards folder")):
        expand(["a __colour__"])
    with pytest.raises(ValueError, match="the wildcards folder .* does not exist"):
        expand(["a __colour__"], wildcards=tmp_path / "nope")


def test_random_draws_are_reproducible_from_their_seed():
    template = ["a {red|green|blue|white|black} {circle|square|triangle} on {grey|yellow}"]
    first = expand(template, draws=8, seed=11)
    assert [p.text for p in first] == [p.text for p in expand(template, draws=8, seed=11)]
    assert [p.text for p in first] != [p.text for p in expand(template, draws=8, seed=12)]
    assert len(first) == 8 and all(p.seed == 11 for p in first)
    unseeded = expand(template, draws=8)  # a seed is drawn and kept: it makes the same prompts again
    assert [p.text for p in expand(template, draws=8, seed=unseeded[0].seed)] == [p.text for p in unseeded]


def test_generated_images_record_their_template_choices_and_draw_seed():
    result = nbbatch.generate("a {red|green} cat", seeds=[0], random=3, random_seed=5, **TINY)
    again = nbbatch.generate("a {red|green} cat", seeds=[0], random=3, random_seed=5, **TINY)
    assert [item.prompt for item in result] == [item.prompt for item in again]
    assert all(item.provenance.template == "a {red|green} cat" for item in result)
    assert all(item.provenance.template_seed == 5 for item in result)
    assert [item.prompt for item in result] == [f"a {item.provenance.choices[0]} cat" for item in result]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a {red|green", "prompt line 1: the braces do not balance (1 { and 0 })"),
        ("a {red}} cat", "prompt line 1: the braces do not balance (1 { and 2 })"),
        ("a {red|$x} cat", "prompt line 1: the template does not read at '{red|$x} cat'"),
        ("{a|b|c|d|e|f|g|h} " * 5 + "{w|x|y|z}", "more than 100000 prompts"),
    ],
)
def test_bad_templates_are_one_line_errors(line, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        expand([line])


def test_variables_and_templates_share_the_braces_in_the_magic(shell):
    shell.user_ns["colour"] = "green {bright}"
    shell.run_cell_magic("batchgen", "--seeds 0 --steps 2 --no-display", "a {colour} {circle|square} \\{literal\\}")
    prompts = [item.prompt for item in shell.user_ns["_batch"]]
    assert prompts == ["a green {bright} circle {literal}", "a green {bright} square {literal}"]
    with pytest.raises(UsageError, match=re.escape("prompt line 1: unknown variable {shape}")):
        shell.run_cell_magic("batchgen", "--no-display", "a {shape} and {circle|square}")


def test_prompt_lines_fill_only_identifiers_and_keep_templates():
    lines = parse_prompt_lines("# skip\na {subject} {red|blue}\n\\#tag {subject}\n", {"subject": "lighthouse"})
    assert lines == ["a lighthouse {red|blue}", "#tag lighthouse"]


# --- X/Y/Z axes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "name", "values"),
    [
        ("steps=10,20,30", "steps", (10, 20, 30)),
        ("steps=1-5", "steps", (1, 2, 3, 4, 5)),
        ("steps=1-9 (+2)", "steps", (1, 3, 5, 7, 9)),
        ("steps=2-8 [4]", "steps", (2, 4, 6, 8)),
        ("guidance=3-8 [3]", "guidance", (3.0, 5.5, 8.0)),
        ("cfg=1.5, 7", "guidance", (1.5, 7)),
        ("variation-strength=0-0.5 [6]", "variation_strength", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)),
        ("size=64x32, 32x64", "size", ((64, 32), (32, 64))),
        ('prompt=red,"dark, green",blue', "prompt", ("red", "dark, green", "blue")),
        ("sampler=euler, ddim", "scheduler", ("euler", "ddim")),
    ],
)
def test_axis_values_take_lists_and_ranges_as_a1111_writes_them(spec, name, values):
    axis = parse_axis(spec)
    assert axis.name == name and axis.values == values


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": "colour=1,2"}, "--x: 'colour' is not something a grid can vary"),
        ({"x": "steps=ten"}, "--x steps: 'ten' is not a number or a range"),
        ({"y": "steps=9-3"}, "--y steps: the range '9-3' goes down"),
        ({"x": "steps=2.5"}, "--x steps: '2.5' is not a whole number"),
        ({"x": "steps"}, "--x 'steps': write it as name=values"),
        ({"x": "steps=2,3", "y": "steps=4"}, "two axes vary steps"),
        ({"x": "steps=0,2"}, "the grid cell steps 0: steps must be a whole number from 1 to 1000"),
        ({"x": "prompt=dog,cat"}, "prompt S/R: 'dog' is not in the prompt 'a red cat'"),
        ({"x": "steps=1-400", "y": "guidance=1-300"}, "the grid makes 120000 images (120000 cells x 1)"),
        ({"x": "strength=0.5"}, "a strength axis is for image-to-image"),
        ({"x": "variation_strength=0,1"}, "variation_strength as an axis needs variation_seed"),
        ({"x": "seed=1,2", "seeds": "3,4"}, "a seed axis gives every cell its seed: pass one seed"),
        ({"x": "size=33x32"}, "width must be a multiple of 8"),
    ],
)
def test_bad_axes_are_refused_before_anything_runs(monkeypatch, kwargs, message):
    monkeypatch.setattr("nbbatch.api.run_batch", lambda *a, **k: pytest.fail("nothing may run"))
    with pytest.raises(ValueError, match=re.escape(message)):
        nbbatch.generate("a red cat", **{"seeds": [0], **kwargs}, **TINY)


def test_every_cell_of_an_xy_grid_equals_raw_diffusers_with_that_setting():
    result = nbbatch.generate("a red cat", seeds=[3], x="steps=2,4", y="guidance=1.5,7", width=32, height=32)
    assert len(result) == 4
    assert [item.cell for item in result] == [
        {"x": ("steps", 2), "y": ("guidance", 1.5)},
        {"x": ("steps", 4), "y": ("guidance", 1.5)},
        {"x": ("steps", 2), "y": ("guidance", 7)},
        {"x": ("steps", 4), "y": ("guidance", 7)},
    ]
    for item in result:
        steps, guidance = item.cell["x"][1], item.cell["y"][1]
        assert item.call.num_inference_steps == steps and item.call.guidance_scale == guidance
        raw = direct_call(
            "nbbatch:tiny-sd", "a red cat", 3, num_inference_steps=steps, guidance_scale=guidance, width=32, height=32
        )
        assert max_difference(item.image, raw) <= 1, item.label


def test_prompt_seed_and_scheduler_axes_equal_the_images_made_alone():
    grid = nbbatch.generate(
        "a red cat", negative_prompt="red fur", seeds=[1], x="prompt=red,blue", y="scheduler=euler,ddim", **TINY
    )
    assert [item.prompt for item in grid] == ["a red cat", "a blue cat"] * 2
    assert [item.negative_prompt for item in grid] == ["red fur", "blue fur"] * 2
    for item in grid:
        alone = nbbatch.generate(
            item.prompt, negative_prompt=item.negative_prompt, seeds=[1], scheduler=item.cell["y"][1], **TINY
        )
        assert max_difference(item.image, alone[0].image) <= 1, item.label
    seeds = nbbatch.generate("a cat", x="seed=4,9", **TINY)  # no --seeds: the axis gives them
    assert [item.seed for item in seeds] == [4, 9]
    assert max_difference(seeds[1].image, nbbatch.generate("a cat", seeds=[9], **TINY)[0].image) <= 1


def test_a_grid_shows_one_table_per_prompt_and_seed_and_its_png_carries_a1111_axis_fields(tmp_path):
    grid = nbbatch.generate(
        "a {red|blue} cat", seeds="0-1", x="steps=2,3", y="guidance=1,7", z="size=32x32,40x32", steps=2
    )
    assert len(grid) == 2 * 2 * 2 * 2 * 2
    assert grid[0].label == "seed 0 · steps: 2 · guidance: 1 · size: 32x32"
    one = nbbatch.generate("a cat", seeds=[0], x="steps=2,3", y="guidance=1,7", width=32, height=32)
    table = np.asarray(one.grid(cell=32))
    tables = np.asarray(grid.grid(cell=32))
    assert tables.shape[1] == table.shape[1] and tables.shape[0] > 7 * table.shape[0]  # 8 tables, stacked
    at = {(item.cell["x"][1], item.cell["y"][1]): _find(table, np.asarray(item.image)) for item in one}
    assert None not in at.values()  # every cell's image is in the table: X over the columns, Y down the rows
    assert at[2, 1][0] == at[3, 1][0] < at[2, 7][0] == at[3, 7][0]
    assert at[2, 1][1] == at[2, 7][1] < at[3, 1][1] == at[3, 7][1]
    one.save(tmp_path)
    with Image.open(tmp_path / "grid.png") as saved:
        assert saved.text["parameters"].endswith('X Type: Steps, X Values: "2, 3", Y Type: CFG Scale, Y Values: "1, 7"')


def _find(canvas: np.ndarray, image: np.ndarray) -> tuple[int, int] | None:
    """Where `image` lies in `canvas` (top-left corner), or None."""
    h, w = image.shape[:2]
    for y in range(canvas.shape[0] - h + 1):
        matches = np.nonzero((canvas[y, : canvas.shape[1] - w + 1] == image[0, 0]).all(axis=-1))[0]
        for x in matches:
            if np.array_equal(canvas[y : y + h, x : x + w], image):
                return y, int(x)
    return None


# --- variation seeds ---------------------------------------------------------------------------------------


def test_variation_strength_0_and_1_equal_raw_diffusers_images_of_the_seed_and_the_variation_seed(model):
    sweep = nbbatch.generate(
        "a red cat", seeds=[3], variation_seed=9, x="variation_strength=0,0.5,1", scheduler="euler", model=model, **TINY
    )
    kwargs = {"num_inference_steps": 3, "width": 32, "height": 32}
    from diffusers import EulerDiscreteScheduler

    seed_image = direct_call(model, "a red cat", 3, scheduler=EulerDiscreteScheduler, **kwargs)
    variation_image = direct_call(model, "a red cat", 9, scheduler=EulerDiscreteScheduler, **kwargs)
    assert max_difference(sweep[0].image, seed_image) <= 1
    assert max_difference(sweep[2].image, variation_image) <= 1
    assert max_difference(sweep[1].image, seed_image) > 10 and max_difference(sweep[1].image, variation_image) > 10
    assert [item.call.variation_strength for item in sweep] == [0, 0.5, 1]
    assert " · variation seed 9 at several strengths · " in sweep.summary(), "the caption says so"
    with pytest.raises(ValueError, match=re.escape("seed 3 is in 3 cells of this grid: pick a cell first, e.g. ")):
        sweep.refine(3, "a blue cat")
    half = sweep.cell(x=0.5)
    assert [item.call.variation_strength for item in half] == [0.5] and half.verify(3) <= 1
    with pytest.raises(ValueError, match=re.escape("its values are x: 0, 0.5, 1")):
        sweep.cell(x=0.25)


def test_the_starting_noise_is_a1111s_slerp_of_the_two_seeds_noise():
    low = torch.randn((1, 4, 4, 4), generator=torch.Generator().manual_seed(3))
    high = torch.randn((1, 4, 4, 4), generator=torch.Generator().manual_seed(9))
    for strength in (0.0, 0.25, 1.0):
        dot = (low / low.norm(dim=1, keepdim=True) * (high / high.norm(dim=1, keepdim=True))).sum(1)
        omega = torch.acos(dot)
        expected = (torch.sin((1 - strength) * omega) / torch.sin(omega)).unsqueeze(1) * low + (
            torch.sin(strength * omega) / torch.sin(omega)
        ).unsqueeze(1) * high
        assert torch.allclose(slerp(strength, low, high), expected, atol=1e-6)
    assert torch.equal(slerp(0.0, low, high), low) and torch.allclose(slerp(1.0, low, high), high, atol=1e-6)


def test_a_variation_image_is_made_again_from_its_png_and_refines_from_the_same_noise(tmp_path):
    made = nbbatch.generate("a red cat", seeds="2-3", variation_seed=7, variation_strength=0.3, **TINY)
    assert " · variation seed 7 at 0.3 · " in made.summary() and "variation seed 7" in made._repr_html_()
    paths = made.save(tmp_path)
    with Image.open(paths[1]) as png:
        assert "Variation seed: 7, Variation seed strength: 0.3" in png.text["parameters"]
    again = nbbatch.reproduce(tmp_path, 1)
    assert max_difference(again[0].image, made[1].image) <= 1  # made alone now, in a batch of two then
    assert made.verify(3) <= 1
    plain = nbbatch.generate("a red cat", seeds=[3], **TINY)
    assert max_difference(made[1].image, plain[0].image) > 10  # the variation did change the picture


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--variation-strength 0.5", "--variation-strength needs --variation-seed to blend towards"),
        ("--variation-seed 3 --variation-strength 2", "--variation-strength must be a number from 0 to 1"),
        ("--variation-seed 3 --image pic", "variation seeds blend the starting noise of text-to-image"),
        ("--x nope=1", "--x: 'nope' is not something a grid can vary"),
        ("--refine 0 --x steps=2,3", "--x, --y, --z and --random make a new batch"),
    ],
)
def test_magic_refuses_bad_exploration_options_in_one_line(shell, line, message):
    shell.user_ns["pic"] = Image.new("RGB", (32, 32))
    shell.magics_manager.registry["BatchMagics"].last = nbbatch.generate("a cat", seeds=[0], **FAST)
    with pytest.raises(UsageError, match=re.escape(message)):
        shell.run_cell_magic("batchgen", f"{line} --no-display", "a cat")
    assert "_batch" not in shell.user_ns


def test_magic_makes_an_xy_grid_with_a_variation_seed_and_saves_it(shell, tmp_path):
    shell.run_cell_magic(
        "batchgen",
        f"--seeds 4 --steps 2 --variation-seed 8 --x 'variation-strength=0,1' --y 'guidance=1,7' --save {tmp_path}",
        "a {red|blue} square",
    )
    result = shell.user_ns["_batch"]
    assert len(result) == 8 and {item.prompt for item in result} == {"a red square", "a blue square"}
    with Image.open(tmp_path / "grid.png") as grid:
        assert "X Type: Var. strength" in grid.text["parameters"]
    loaded = nbbatch.load(tmp_path)
    assert [item.cell for item in loaded] == [item.cell for item in result]
    again = nbbatch.reproduce(tmp_path, 5)  # made again: the same pixels, cell, template and choices
    assert max_difference(again[0].image, result[5].image) <= 1 and again[0].label == result[5].label
    assert again[0].provenance.choices == result[5].provenance.choices and again[0].label.endswith("guidance: 7")
