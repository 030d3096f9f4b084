"""mkdocs hooks: the repository's notebooks as pages, and the settings reference made from `nbbatch.settings`.

The notebooks stay in ``notebooks/`` (where ``make demo`` and the tests run them); they are
added to the site's files before mkdocs-jupyter renders them. The settings page is written
from the same table the magic, the panel and ``generate`` are made from, so it cannot drift.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from nbbatch.core.spec import Settings, expectation
from nbbatch.settings import SETTINGS, Setting

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("quickstart.ipynb", "refine.ipynb", "explore.ipynb")


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the notebooks and the generated settings reference to the site."""
    for name in NOTEBOOKS:
        files.append(File(f"notebooks/{name}", str(ROOT), config.site_dir, config.use_directory_urls))
    files.append(File.generated(config, "reference/settings.md", content=settings_page()))
    return files


def settings_page() -> str:
    """The reference of every setting: its magic flag, `generate` keyword, default, panel place and grid axis."""
    fields = Settings.model_fields
    rows = [
        "| `generate` keyword | `%%batchgen` flag | value | default | panel | X/Y/Z axis (A1111 plot) | what it does |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        default = fields[setting.name].default
        shown = setting.placeholder if default is None or default is PydanticUndefined else f"`{default!r}`"
        axis = f"{setting.axis} ({setting.plot})" if setting.axis else ""
        flags = ", ".join(f"`{flag}`" for flag in setting.option_strings)
        place = f"{setting.title} ({setting.section or 'on its face'})"
        value = _value(setting, fields[setting.name])
        rows.append(f"| `{setting.name}` | {flags} | {value} | {shown} | {place} | {axis} | {_cell(setting.help)} |")
    return (
        "# Settings\n\n"
        "Every setting of a batch, made from the table in `nbbatch/settings.py` that the magic's options, the panel's "
        "controls, `generate`'s keywords and the X/Y/Z axes are made from. A setting left out (or empty in the panel) "
        "takes its default; *model default* means the pipeline's own, recorded with each image.\n\n"
        + "\n".join(rows)
        + "\n"
    )


def _value(setting: Setting, field: FieldInfo) -> str:
    """What the setting takes, as `Settings` checks it (``a whole number from 1 to 1000``)."""
    if setting.kind == "switch":
        return "on/off"
    if setting.kind == "repeat":
        return f"`{setting.metavar}`, repeatable"
    return expectation(field) if expectation(field) != "text" or not setting.metavar else f"`{setting.metavar}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
