"""The panel's controls, made from the settings table: one widget per row of `nbbatch.settings.SETTINGS`.

A row's kind picks the widget (a tick box for a switch, a list for choices, a slider for a
row with a range, a box of lines for a repeatable setting, else a text box whose
placeholder says what empty means); `Setting.read` turns what the widget holds into what
`Settings` takes. So the panel holds no list of settings of its own: a new row is a new
control, in the section the row names.
"""

from __future__ import annotations

from typing import Any

from nbbatch.core.errors import SettingError
from nbbatch.core.spec import Settings, default_model
from nbbatch.settings import SETTINGS, Setting

DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}
"""Each setting's default as `Settings` has it (undefined for the model, whose default is read at run time)."""


class Controls:
    """A widget for every setting, by its name, and the `Settings` keywords they hold.

    `initial` sets controls' starting values (the panel's ``steps=``, ``model=``); an unknown name is an error.
    """

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        start = {**DEFAULTS, "model": default_model()}
        self.widgets: dict[str, Any] = {s.name: _control(s, start[s.name]) for s in SETTINGS}
        for name, widget in self.widgets.items():
            widget.add_class(f"nbbatch-{name.replace('_', '-')}")
        self.set(**(initial or {}))

    def __getitem__(self, name: str) -> Any:
        return self.widgets[name]

    def set(self, **values: Any) -> None:
        """Put Python values into the controls as a user would type them: ``steps=20``, ``loras=[("a.pt", 0.6)]``."""
        rows = {s.name: s for s in SETTINGS}
        unknown = sorted(set(values) - set(rows))
        if unknown:
            raise SettingError(unknown[0], f"is not a setting: the settings are {', '.join(rows)}")
        for name, value in values.items():
            self.widgets[name].value = _shown(rows[name], value)

    def given(self) -> dict[str, Any]:
        """The settings whose controls hold something other than `Settings`' default, read as `Settings` takes them.

        Raises a one-line ValueError naming the control for text that is not a value of its kind.
        """
        given = {s.name: s.read(self.widgets[s.name].value) for s in SETTINGS}
        return {name: value for name, value in given.items() if value is not None and value != DEFAULTS[name]}

    def section(self, section: str) -> list[Any]:
        """The controls of one section of the table, in its order ("" for the panel's face)."""
        return [self.widgets[s.name] for s in SETTINGS if s.section == section]


def _control(setting: Setting, value: Any) -> Any:
    """The widget that asks for `setting`, starting at `value` (None: empty, its placeholder shown)."""
    import ipywidgets as w

    common = {"description": setting.title, "tooltip": setting.help, "style": {"description_width": "initial"}}
    if setting.kind == "switch":
        return w.Checkbox(_shown(setting, value), indent=False, **common)
    if setting.choices:
        return w.Dropdown(options=setting.choices, value=_shown(setting, value), **common)
    if setting.slider is not None:
        low, high, step = setting.slider
        return w.FloatSlider(_shown(setting, value), min=low, max=high, step=step, **common)
    text = _shown(setting, value)
    if setting.kind == "repeat":
        layout = w.Layout(width="min(100%, 40em)")
        return w.Textarea(text, placeholder=setting.placeholder, rows=2, layout=layout, **common)
    if setting.suggestions:
        suggested = list(setting.suggestions)
        return w.Combobox(value=text, options=suggested, placeholder=setting.placeholder, ensure_option=False, **common)
    layout = w.Layout(width="min(100%, 40em)") if setting.wide else w.Layout()
    return w.Text(text, placeholder=setting.placeholder, layout=layout, **common)


def _shown(setting: Setting, value: Any) -> Any:
    """`value` as `setting`'s control holds it: a tick, a choice, a slider's number, else text (a line per value)."""
    if setting.kind == "switch":
        return bool(value)
    if setting.choices:
        return value
    if setting.slider is not None:
        return DEFAULTS[setting.name] if value is None else float(value)
    if setting.kind == "repeat":
        return "\n".join(v if isinstance(v, str) else ":".join(map(str, v)) for v in value or ())
    return "" if value is None else str(value)
