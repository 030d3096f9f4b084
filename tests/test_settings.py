"""The settings table: every setting is one row, and every front end offers it from there."""

import pytest
from conftest import direct_call, max_difference
from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring
from test_code import run_codes

import nbbatch
from nbbatch.core.axes import AXES
from nbbatch.core.spec import Settings
from nbbatch.notebook.magic import BatchMagics
from nbbatch.notebook.panel import Panel
from nbbatch.settings import SETTINGS

EXAMPLES = {
    "int": ("7", 7),
    "float": ("2.5", 2.5),
    "switch": ("", True),
    "repeat": ("x.safetensors", ["x.safetensors"]),
}
TEXT = {"dtype": "fp32", "device": "cpu", "generator_device": "cpu", "batch_size": "auto", "model": "some/model"}


def test_the_table_has_one_row_for_each_field_of_settings_and_one_flag_for_each_row():
    assert sorted(s.name for s in SETTINGS) == sorted(Settings.model_fields)
    assert len({s.flag for s in SETTINGS}) == len(SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_has_a_magic_option_that_reaches_its_field(setting):
    text, value = EXAMPLES.get(setting.kind, (TEXT.get(setting.name, "euler"), TEXT.get(setting.name, "euler")))
    args = parse_argstring(BatchMagics.batchgen, f"{setting.flag} {text}".strip())
    assert getattr(args, setting.name) == value
    help_text = " ".join(BatchMagics.batchgen.__doc__.split())
    assert setting.flag in help_text and " ".join(setting.help.split()[:4]) in help_text, "in %batchgen?"


PANEL_VALUES = {
    "int": 16,
    "float": 2.5,
    "switch": True,
    "repeat": [("x.safetensors", 0.5)],
    "strength": 0.35,
    "variation_strength": 0.4,
    "refiner_at": 0.7,
    "embeddings": [("x.safetensors", "tok")],
    "clip_skip": 2,
    "guidance_rescale": 0.7,
    **TEXT,
    "generator_device": "cuda",
}


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_has_a_panel_control_that_reaches_its_field(setting):
    value = PANEL_VALUES.get(setting.name, PANEL_VALUES.get(setting.kind, "euler"))
    panel = Panel(**{setting.name: value})
    control = panel.controls[setting.name]
    assert control.description == setting.title and control.tooltip == setting.help
    assert control in _all_widgets(panel.widget), "shown in the panel"
    given = panel.controls.given()
    assert given[setting.name] == ([":".join(map(str, pair)) for pair in value] if setting.kind == "repeat" else value)
    needs = {"variation_strength": {"variation_seed": 1}, "refiner_at": {"refiner": "nbbatch:tiny-sdxl-refiner"}}
    settings = Settings(**{**given, **needs.get(setting.name, {})})
    assert getattr(settings, setting.name) == (tuple(value) if setting.kind == "repeat" else value)


def _all_widgets(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _all_widgets(child)


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_is_a_keyword_of_generate(setting):
    value = {"int": 16, "float": 0.5, "switch": True, "repeat": [("x.safetensors", 0.5)]}.get(setting.kind, "euler")
    value = {**TEXT, "true_cfg": 2.5, "clip_skip": 2, "embeddings": [("x.safetensors", "tok")]}.get(setting.name, value)
    needs = {"variation_strength": {"variation_seed": 1}, "refiner_at": {"refiner": "nbbatch:tiny-sdxl-refiner"}}
    given = {setting.name: value, **needs.get(setting.name, {})}
    settings, jobs = nbbatch.plan("a red cat", [0], **given)
    assert getattr(settings, setting.name) == (tuple(value) if setting.kind == "repeat" else value)
    assert len(jobs) == 1


def test_the_grid_axes_are_the_table_s_and_the_job_s_own():
    assert {name for name in AXES} == {s.name for s in SETTINGS if s.axis} | {"size", "seed", "prompt"}


def test_text_a_panel_control_cannot_read_is_a_one_line_error_naming_it():
    panel = Panel(model="nbbatch:tiny-flux")
    panel.controls["max_sequence_length"].value = "lots"
    with pytest.raises(ValueError, match="^max tokens must be a whole number, not 'lots'$"):
        panel._settings()
    panel.controls["max_sequence_length"].value = " 64 "
    assert panel._settings().max_sequence_length == 64
    with pytest.raises(ValueError, match="^stpes is not a setting: the settings are model, steps, "):
        Panel(stpes=20)


# guidance_rescale is the example of a setting added as one row of the table plus its use (the call argument,
# the record's field, the code export): the magic's flag, the panel's control, generate's keyword, the X/Y axis,
# the A1111 plot name and the docs' reference line all come from its row.


@pytest.mark.parametrize("model", ["nbbatch:tiny-sd", "nbbatch:tiny-sdxl"])
def test_guidance_rescale_equals_diffusers_guidance_rescale_alone(model):
    made = nbbatch.generate(["a red cat", "a much longer prompt of a blue dog"], [3, 4], model=model,
                            guidance=7.5, guidance_rescale=0.7, steps=3, width=32, height=32)  # fmt: skip
    for item in made:
        alone = direct_call(model, item.prompt, item.seed, guidance_scale=7.5, guidance_rescale=0.7,
                            num_inference_steps=3, width=32, height=32)  # fmt: skip
        assert max_difference(item.image, alone) <= 1
    plain = direct_call(model, "a red cat", 3, guidance_scale=7.5, num_inference_steps=3, width=32, height=32)
    assert max_difference(made[0].image, plain) > 2, "it changes the picture"
    assert made[0].call.guidance_rescale == 0.7


def test_guidance_rescale_is_an_axis_a_magic_flag_and_reproduces_from_its_png_and_code(shell, tmp_path):
    shell.run_cell_magic(
        "batchgen",
        "--seeds 5 --steps 3 --width 32 --height 32 -g 7.5 --x guidance_rescale=0,0.7 --no-display",
        "a red cat",
    )
    grid = shell.user_ns["_batch"]
    assert [item.call.guidance_rescale for item in grid] == [None, 0.7], "0 is diffusers' default: off"
    path = grid.save(tmp_path / "saved", grid=False)[1]
    again = nbbatch.reproduce(path)
    assert max_difference(again[0].image, grid[1].image) == 0
    assert "guidance_rescale=0.7" in grid.cell(x=0.7).code(5)
    assert max_difference(run_codes({"rescaled": grid[1].code()}, tmp_path)["rescaled"], grid[1].image) <= 1
    with pytest.raises(UsageError, match=r"^--guidance-rescale must be a number from 0 to 1 \(0 is off\), not 1.5$"):
        shell.run_cell_magic("batchgen", "--guidance-rescale 1.5", "a red cat")


def test_guidance_rescale_on_a_pipeline_without_it_is_a_one_line_error_before_anything_runs():
    with pytest.raises(ValueError, match=r"^guidance_rescale: diffusers' FluxPipeline has no guidance rescale"):
        nbbatch.generate(
            "a red cat", [0], model="nbbatch:tiny-flux", guidance_rescale=0.7, steps=2, width=64, height=64
        )
