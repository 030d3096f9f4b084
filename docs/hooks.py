"""mkdocs hooks: the repository's notebooks as pages, and the settings reference made from `nbbatch.settings`.

The notebooks stay in ``notebooks/`` (where ``make demo`` and the tests run them); they are
added to the site's files before mkdocs-jupyter renders them. The settings page is written
from the same table the magic, the panel and ``generate`` are made from, so it cannot drift.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

from nbbatch.core.spec import Settings
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
    defaults = {field.name: field.default for field in dataclasses.fields(Settings)}
    rows = [
        "| `generate` keyword | `%%batchgen` flag | value | default | panel | X/Y/Z axis (A1111 plot) | what it does |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        default = defaults[setting.name]
        shown = setting.placeholder if default in (None, dataclasses.MISSING) else f"`{default!r}`"
        axis = f"{setting.axis} ({setting.plot})" if setting.axis else ""
        flags = ", ".join(f"`{flag}`" for flag in setting.option_strings)
        place = f"{setting.title} ({setting.section or 'on its face'})"
        rows.append(
            f"| `{setting.name}` | {flags} | {_value(setting)} | {shown} | {place} | {axis} | {_cell(setting.help)} |"
        )
    return (
        "# Settings\n\n"
        "Every setting of a batch, made from the table in `nbbatch/settings.py` that the magic's options, the panel's "
        "controls, `generate`'s keywords and the X/Y/Z axes are made from. A setting left out (or empty in the panel) "
        "takes its default; *model default* means the pipeline's own, recorded with each image.\n\n"
        + "\n".join(rows)
        + "\n"
    )


def _value(setting: Setting) -> str:
    if setting.choices:
        return " or ".join(f"`{choice}`" for choice in setting.choices)
    kinds = {"int": "whole number", "float": "number", "switch": "on/off", "repeat": f"`{setting.metavar}`, repeatable"}
    return kinds.get(setting.kind, f"`{setting.metavar}`" if setting.metavar else "text")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
