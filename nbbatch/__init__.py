"""nbbatch: reproducible batch image generation with diffusers, in Jupyter.

``%load_ext nbbatch`` registers ``%%batchgen`` and ``%batchgen_panel``. From Python:
`generate`, `panel`, `load` and `reproduce`; `history` and `favourites` gather what this
kernel made. Heavy modules (torch, diffusers, ipywidgets) are imported only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__version__ = "0.1.0"

_LAZY = {
    "generate": "nbbatch.api",
    "load": "nbbatch.api",
    "reproduce": "nbbatch.api",
    "plan": "nbbatch.api",
    "history": "nbbatch.core.history",
    "favourites": "nbbatch.core.history",
    "release_workers": "nbbatch.session",
    "Session": "nbbatch.session",
    "default_session": "nbbatch.session",
    "BatchError": "nbbatch.core.result",
    "BatchResult": "nbbatch.core.result",
    "Item": "nbbatch.core.item",
    "Settings": "nbbatch.core.spec",
    "SettingError": "nbbatch.core.errors",
    "Observer": "nbbatch.core.observer",
    "Observers": "nbbatch.core.observer",
    "Progress": "nbbatch.core.engine",
    "Preview": "nbbatch.core.engine",
    "parse_seeds": "nbbatch.core.seeds",
    "build_tiny_pipeline": "nbbatch.models.tiny",
    "build_pipeline": "nbbatch.models.standins",
    "clear_cache": "nbbatch.session",
    "Panel": "nbbatch.notebook.panel",
}
__all__ = [*_LAZY, "load_ipython_extension", "panel", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nbbatch' has no attribute {name!r}")


def panel(**defaults: Any) -> Any:
    """The nbbatch panel (an ipywidgets UI): leave it last in a cell to show it.

    Keywords preset the model, prompts, seeds and steps; its ``results`` hold its batches.
    """
    from nbbatch.notebook.panel import Panel

    return Panel(**defaults)


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register ``%%batchgen`` and ``%batchgen_panel`` (called by ``%load_ext nbbatch``)."""
    from nbbatch.notebook.magic import BatchMagics

    ipython.register_magics(BatchMagics)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """Remove the magics again (called by ``%unload_ext nbbatch``)."""
    magics = ipython.magics_manager.magics
    magics["cell"].pop("batchgen", None)
    for name in ("batchgen", "batchgen_panel"):
        magics["line"].pop(name, None)
