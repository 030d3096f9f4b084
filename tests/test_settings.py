"""The settings table: every setting is one row, and every front end offers it from there."""

import dataclasses

import pytest
from IPython.core.magic_arguments import parse_argstring

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
    assert sorted(s.name for s in SETTINGS) == sorted(f.name for f in dataclasses.fields(Settings))
    assert len({s.flag for s in SETTINGS}) == len(SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_has_a_magic_option_that_reaches_its_field(setting):
    text, value = EXAMPLES.get(setting.kind, (TEXT.get(setting.name, "euler"), TEXT.get(setting.name, "euler")))
    args = parse_argstring(BatchMagics.batchgen, f"{setting.flag} {text}".strip())
    assert getattr(args, setting.name) == value
    help_text = " ".join(BatchMagics.batchgen.__doc__.split())
    assert setting.flag in help_text and " ".join(setting.help.split()[:4]) in help_text, "in %batchgen?"


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_has_a_panel_control_or_says_why_not(setting):
    if " " in setting.panel:
        assert setting.panel.startswith("not in the panel"), "a reason a reader understands"
        return
    assert hasattr(Panel(), setting.panel), f"the panel has no control {setting.panel!r} for {setting.name}"


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


def test_a_setting_given_to_the_panel_reaches_its_field():
    panel = Panel(model="nbbatch:tiny-flux")
    panel.true_cfg.value, panel.max_sequence_length.value = "2.5", "64"
    settings = panel._settings()
    assert (settings.true_cfg, settings.max_sequence_length) == (2.5, 64)
    panel.max_sequence_length.value = "lots"
    with pytest.raises(ValueError, match="^max sequence length must be a whole number, not 'lots'$"):
        panel._settings()
