"""Instruction edits of a picked seed: an editing model (FLUX.1 Kontext) given the picture, equal to diffusers.

``nbbatch:tiny-flux-kontext`` is FLUX.1 Kontext's pipeline over ``nbbatch:tiny-flux``'s very weights,
so an edit of a tiny FLUX picture is what a Kontext edit of a FLUX.1-dev picture is at full size.
"""

import functools
import re

import pytest
import torch
from conftest import max_difference, pixels
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from test_code import run_codes

import nbbatch
from nbbatch.core.grid import Group, make_grid
from nbbatch.formats.png import a1111_parameters
from nbbatch.models.tiny import builtin_path

KONTEXT = "nbbatch:tiny-flux-kontext"
SIZE = {"steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def batch():
    return nbbatch.generate("a red cat on a mat", [4, 5], model="nbbatch:tiny-flux", **SIZE)


@pytest.fixture(scope="module")
def kontext():
    from diffusers import FluxKontextPipeline

    pipe = FluxKontextPipeline.from_pretrained(str(builtin_path(KONTEXT)), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def raw_edit(pipe, picture, instruction, seed, **kwargs):
    """diffusers' own Kontext edit of `picture` at its size, from `seed`'s generator."""
    width, height = picture.size
    generator = torch.Generator().manual_seed(seed)
    return pipe(
        image=picture,
        prompt=instruction,
        num_inference_steps=2,
        width=width,
        height=height,
        max_area=width * height,
        generator=generator,
        **kwargs,
    ).images[0]


def test_an_edit_from_the_seed_s_own_noise_equals_diffusers_kontext_alone_for_each_instruction(batch, kontext):
    instructions = ["make it green", "a much longer instruction: paint the cat blue and give it a tall red hat"]
    edited = batch.edit(5, instructions, model=KONTEXT)
    assert [item.label for item in edited] == ["seed 5 · edit e1a", "seed 5 · edit e1b"]
    assert [item.call.pipeline for item in edited] == ["FluxKontextPipeline"] * 2
    assert all(item.image.size == (64, 64) and item.parent is batch[1] for item in edited)
    for item in edited:
        assert max_difference(item.image, raw_edit(kontext, batch[1].image, item.prompt, 5)) <= 1
    unseen = kontext(prompt=instructions[0], num_inference_steps=2, width=64, height=64, max_area=64 * 64,
                     generator=torch.Generator().manual_seed(5)).images[0]  # fmt: skip
    assert max_difference(edited[0].image, unseen) > 8, "the picture is given (its tokens change every pixel)"


def test_instructions_times_new_seeds_each_equal_alone_and_show_beside_the_original(batch, kontext):
    edited = batch.edit(4, ["make it green", "make it blue"], model=KONTEXT, seeds=[7, 8])
    assert [(item.prompt, item.seed) for item in edited] == [
        ("make it green", 7),
        ("make it green", 8),
        ("make it blue", 7),
        ("make it blue", 8),
    ]
    assert edited[1].label == "seed 8 · edit e1a of 4"
    for item in edited:
        assert max_difference(item.image, raw_edit(kontext, batch[0].image, item.prompt, item.seed)) <= 1
    ((title, row),) = edited.story_rows()
    assert row[0] is batch[0] and row[1:] == list(edited), "the original first, then each edit once"
    assert title == "the story of seed 4: a red cat on a mat"
    model = "model nbbatch:tiny-flux->nbbatch:tiny-flux-kontext"
    labels = [f'{item.label}: "{item.prompt}", {model}' for item in edited]
    row = [Group(title, (0, 1, 2, 3, 4))]
    expected = make_grid([batch[0].image, *edited.images], ["seed 4", *labels], row, cell=64)
    assert edited.grid(cell=64).tobytes() == expected.tobytes(), "captioned by the instruction and the model"


def test_an_edit_reproduces_from_its_png_and_its_code_makes_it_with_diffusers_alone(batch, tmp_path):
    edited = batch.edit(5, "make it green", model=KONTEXT)
    (path,) = edited.save(tmp_path / "edits", grid=False)
    assert "Model: nbbatch-tiny-flux-kontext, " in a1111_parameters(edited[0])
    again = nbbatch.reproduce(path)[0]
    assert max_difference(again.image, edited[0].image) == 0 and again.origin == "edit"
    assert again.label == "seed 5 · edit e1"
    code = edited.code(5)
    assert "FluxKontextPipeline.from_pretrained(" in code and "max_area=4096" in code
    assert max_difference(run_codes({"edit": code}, tmp_path)["edit"], edited[0].image) <= 1


def test_an_editing_model_edits_every_picture_of_a_folder_by_each_instruction(batch, kontext, tmp_path):
    for item in batch:
        item.image.save(tmp_path / f"cat-{item.seed}.png")
    edited = nbbatch.generate(["make it green", "make it blue"], [9], images=tmp_path, model=KONTEXT, steps=2)
    assert [(item.provenance.picture, item.prompt) for item in edited] == [
        (f"cat-{seed}.png", instruction) for seed in (4, 5) for instruction in ("make it green", "make it blue")
    ]
    assert edited[3].label == "seed 9 · cat-5.png" and edited[3].call.strength is None
    for item in edited:
        picture = batch.by_seed(int(item.provenance.picture[4]))
        assert max_difference(item.image, raw_edit(kontext, picture.image, item.prompt, 9)) <= 1


def test_an_edit_of_an_edit_counts_on(batch):
    first = batch.edit(5, "make it green", model=KONTEXT)
    second = first.edit(5, "now add a hat")
    assert second[0].label == "seed 5 · edit e2" and second[0].settings.model == KONTEXT
    assert [step.origin for step in second[0].lineage()] == ["batch", "edit", "edit"]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([],), {"model": KONTEXT}, 'an edit needs an instruction: text, one or more ("make the circle green")'),
        (("  ",), {"model": KONTEXT}, 'an edit needs an instruction: text, one or more ("make the circle green")'),
        (
            ("green",),
            {"model": KONTEXT, "width": 96},
            "an edit keeps the picture's size: width and height do not apply",
        ),
        (("green",), {"model": KONTEXT, "seeds": []}, "no seeds given"),
        (
            ("green",),
            {},
            "nbbatch:tiny-flux is a FLUX.1 model (FluxPipeline), not an editing one: an edit needs a model that edits "
            "a picture by an instruction, such as black-forest-labs/FLUX.1-Kontext-dev",
        ),
    ],
)
def test_bad_edit_input_is_one_line_before_any_image(batch, args, kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        batch.edit(5, *args, **kwargs)


def test_the_magic_edits_a_seed_of_the_last_result_by_each_line_of_the_cell(shell):
    with capture_output():
        shell.run_cell_magic("batchgen", "-m nbbatch:tiny-flux --seeds 1-2 --steps 2 --width 64 --height 64", "a cat")
        shell.run_cell_magic("batchgen", f"--edit 2 --model {KONTEXT} --out edits", "make it green\nmake it blue")
    edits = shell.user_ns["edits"]
    assert [(item.prompt, item.seed, item.origin) for item in edits] == [
        ("make it green", 2, "edit"),
        ("make it blue", 2, "edit"),
    ]
    assert edits[0].parent is shell.user_ns["_batch"].by_seed(2)
    for line, cell, message in [
        (f"--edit 2 --model {KONTEXT}", "", '--edit needs instructions: one per line of the cell ("make'),
        (f"--edit 2 --model {KONTEXT} --negative blurry", "green", "--edit takes instructions, not --negative"),
        ("--edit 2 --hires 2", "green", "--hires and --edit do not go together: choose one"),
        ("--edit 2 --from _batch", "green", "nbbatch:tiny-flux is a FLUX.1 model (FluxPipeline), not an editing one"),
    ]:
        run = (
            functools.partial(shell.run_cell_magic, "batchgen", line, cell)
            if cell
            else functools.partial(shell.run_line_magic, "batchgen", line)
        )
        with pytest.raises(UsageError, match=f"^{re.escape(message)}"):
            run()


KLEIN = "nbbatch:tiny-flux2-klein"


@pytest.fixture(scope="module")
def klein():
    from diffusers import Flux2KleinPipeline

    pipe = Flux2KleinPipeline.from_pretrained(str(builtin_path(KLEIN)), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def raw_klein(pipe, picture, instruction, seed):
    """diffusers' own FLUX.2 Klein edit: the picture as its one reference, at its size, from `seed`'s generator."""
    width, height = picture.size
    generator = torch.Generator().manual_seed(seed)
    return pipe(image=[picture], prompt=instruction, num_inference_steps=2, width=width, height=height,
                generator=generator).images[0]  # fmt: skip


def test_flux2_klein_edits_from_the_seed_s_own_noise_and_equals_diffusers_alone(batch, klein):
    edited = batch.edit(5, ["make it green", "a much longer instruction: paint the cat blue"], model=KLEIN)
    assert [item.label for item in edited] == ["seed 5 · edit e1a", "seed 5 · edit e1b"]
    assert [item.call.pipeline for item in edited] == ["Flux2KleinPipeline"] * 2
    for item in edited:
        assert max_difference(item.image, raw_klein(klein, batch[1].image, item.prompt, 5)) <= 1


def test_flux2_klein_edits_each_picture_of_a_folder_in_calls_of_its_own(batch, klein, tmp_path, monkeypatch):
    from diffusers import Flux2KleinPipeline

    given = []  # the reference pictures of each call (the tiny model's random weights barely heed them)
    call = Flux2KleinPipeline.__call__
    monkeypatch.setattr(
        Flux2KleinPipeline, "__call__", lambda pipe, **kwargs: given.append(kwargs["image"]) or call(pipe, **kwargs)
    )
    for item in batch:
        item.image.save(tmp_path / f"cat-{item.seed}.png")
    edited = nbbatch.generate(["make it green", "make it blue"], [9], images=tmp_path, model=KLEIN, steps=2)
    assert [(item.provenance.picture, item.prompt) for item in edited] == [
        (f"cat-{seed}.png", instruction) for seed in (4, 5) for instruction in ("make it green", "make it blue")
    ]
    assert [[pixels(p).tolist() for p in pictures] for pictures in given] == [
        [pixels(batch[0].image).tolist()],
        [pixels(batch[1].image).tolist()],
    ], "a call per picture, each given its one picture: a picture never sees another's"
    monkeypatch.undo()
    for item in edited:
        picture = batch.by_seed(int(item.provenance.picture[4]))
        assert max_difference(item.image, raw_klein(klein, picture.image, item.prompt, 9)) <= 1
    (path,) = edited.save(tmp_path / "saved", grid=False)[:1]
    assert max_difference(nbbatch.reproduce(path)[0].image, edited[0].image) == 0
    assert max_difference(run_codes({"klein": edited[0].code()}, tmp_path)["klein"], edited[0].image) <= 1
