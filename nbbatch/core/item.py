"""One finished image and everything that made it: the unit that results, files and front ends share.

An `Item` keeps its generator's initial state, which is the source of truth for making
the image again: a refinement restores it exactly and changes only the prompt or
settings. Items remember their parent, so a refinement knows its whole lineage.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nbbatch.core.axes import axis_label
from nbbatch.core.record import Call, Provenance
from nbbatch.core.spec import Settings

if TYPE_CHECKING:
    from PIL import Image


Origin = Literal["batch", "refine", "vary", "hires", "inpaint", "edit", "foreign"]
"""How an image came to be: made by a batch or by one of the ways of improving a picked one, or read from a PNG
another tool made (``foreign``: no generator state, so no refinement from its starting noise)."""


@dataclass(frozen=True)
class Foreign:
    """What another tool wrote about how it made a picture, as read (None where it wrote nothing)."""

    tool: str
    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    true_cfg: float | None = None
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    schedule: str | None = None
    model: str | None = None
    strength: float | None = None


@dataclass(frozen=True, eq=False)
class Item:
    """One finished image and everything needed to make it again.

    `state` is the initial state of the image's own generator; `call` every argument the
    pipeline was called with, defaults resolved, and `provenance` where the image came from
    (template, grid cell, refine step, ...): both typed (`nbbatch.core.record`). A picture
    another tool made has neither state nor call, and what that tool wrote in `found`.
    `parent` is the item this one refines or varies. `loaded_from` is the file it was read
    from: what its record names is then data from that file, which `vet`, the check of the
    reader that read it (`nbbatch.formats.trust.settings_to_remake`), passes before anything
    loads it (see `settings_to_remake`).
    """

    image: Image.Image = field(repr=False)
    seed: int
    prompt: str
    negative_prompt: str
    prompt_index: int
    settings: Settings = field(repr=False)
    call: Call | None = field(repr=False)
    state: bytes | None = field(repr=False)
    init_image: Image.Image | None = field(default=None, repr=False)
    parent: Item | None = field(default=None, repr=False)
    origin: Origin = "batch"
    broken: bool = False
    loaded_from: str | None = field(default=None, repr=False, compare=False)
    mask: Image.Image | None = field(default=None, repr=False)
    provenance: Provenance = field(default=Provenance(), repr=False)
    found: Foreign | None = field(default=None, repr=False)
    vet: Callable[[Item, Mapping[str, Any]], Settings] | None = field(default=None, repr=False)

    def settings_to_remake(self, overrides: Mapping[str, Any], allow_download: bool = False) -> Settings:
        """Its settings with `overrides`, to make it again (refine, vary, reproduce, ...).

        An item made in this kernel is the user's own, and `allow_download` loads what a record
        names as it names it; otherwise an item read from a file goes through its reader's `vet`,
        which loads only what the user named or allowed, or refuses in one line.
        """
        if self.loaded_from is None or allow_download:
            return self.settings.replace(**overrides)
        if self.vet is None:
            raise ValueError(f"{self.file} was read without its reader's check of what it names: read it with load")
        return self.vet(self, overrides)

    @property
    def foreign(self) -> bool:
        """Whether another tool made it: read from its PNG, with no generator state of nbbatch's."""
        return self.origin == "foreign"

    @property
    def depth(self) -> int:
        """How many refinements lie between this item and the image it started from."""
        return 0 if self.origin != "refine" or self.parent is None else self.parent.depth + 1

    @property
    def file(self) -> str | None:
        """The name of the file it was read from (None when it was made in this kernel)."""
        return None if self.loaded_from is None else os.path.basename(self.loaded_from)

    @property
    def cell(self) -> dict[str, tuple[str, Any]]:
        """Where this image sits in an X/Y/Z grid: ``{"x": ("steps", 20), ...}``; empty outside a grid."""
        return dict(self.provenance.axes)

    @property
    def label(self) -> str:
        """The grid caption: ``seed 5``, ``seed 5 · r2``, ``seed 12 · vary of 5``, ``seed 5 · steps: 20``.

        An input picture read from a file adds its name: ``seed 3 · cat.png``.

        A refinement is ``r`` and its depth, with a letter where one refine made several
        (``r1a``, ``r1b``): distinct within the refinements of one image; an edit likewise
        ``edit e1`` (``edit e1b of 5`` from another seed's noise).
        """
        if self.origin == "refine":
            text = f"seed {self.seed} · {self.provenance.step or f'r{self.depth}'}"
        elif self.origin == "edit":
            of = f" of {self.parent.seed}" if self.parent is not None and self.parent.seed != self.seed else ""
            text = f"seed {self.seed} · edit {self.provenance.step or 'e1'}{of}"
        elif self.origin == "inpaint":
            text = f"seed {self.seed} · inpaint"
        elif self.origin == "hires" and self.provenance.hires is not None:
            text = f"seed {self.seed} · hires x{self.provenance.hires.scale:g}"
        elif self.origin == "vary" and self.parent is not None:
            text = f"seed {self.seed} · vary of {self.parent.seed}"
        else:
            text = f"seed {self.seed}"
        picture = [self.provenance.picture] if self.provenance.picture else []
        return " · ".join([text, *picture, *(axis_label(name, value) for name, value in self.cell.values())])

    def favourite(self, on: bool = True) -> None:
        """Mark this image as a favourite (``on=False``: unmark it); `nbbatch.favourites()` gathers them."""
        from nbbatch.core.history import mark

        mark(self, on)

    @property
    def is_favourite(self) -> bool:
        """Whether this image is marked as a favourite."""
        from nbbatch.core.history import is_marked

        return is_marked(self)

    def lineage(self) -> tuple[Item, ...]:
        """The ancestors of this item and itself, the first image first."""
        chain = [self]
        while chain[-1].parent is not None:
            chain.append(chain[-1].parent)
        return tuple(reversed(chain))

    def code(self) -> str:
        """Python that makes this image again with diffusers alone (see `nbbatch.formats.code`), ending in ``image``."""
        from nbbatch.formats.code import item_code

        return item_code(self)
