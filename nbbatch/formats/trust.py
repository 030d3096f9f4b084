"""What a loaded picture's record may make nbbatch load: only what the user named or allowed.

A PNG from someone else names a model, LoRAs and embeddings. Reading, showing and
exporting it reads nothing else; making it again (`reproduce`, `refine`, `vary`,
`verify`) loads only:

- built-in models (``nbbatch:shapes``, the tiny pipelines), but no full-size stand-in
  (gigabytes built in memory);
- LoRA and embedding files found *in the picture's own folder*, by their file name
  (wherever the record says they were);
- hub ids already in the local Hugging Face cache (and, for a model its repo leaves a part of out, such as
  HiDream's Llama, that part's repo too: loading it would fetch it);
- anything else only with ``allow_download=True`` (``--allow-download``), which loads
  what the record names, as it names it: a hub download, a local folder elsewhere.

Otherwise a one-line ValueError lists exactly what it would have loaded. What the user
passes (``model=``, ``loras=``, ``embeddings=``) replaces the record's and is theirs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbbatch.core.item import Item
    from nbbatch.core.spec import Settings

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def settings_to_remake(item: Item, overrides: Mapping[str, Any]) -> Settings:
    """`item`'s settings with `overrides`, once what they load is allowed (see the module's text).

    The `vet` of every item the PNG reader makes (`nbbatch.core.item.Item.settings_to_remake`
    calls it for an item read from a file, unless downloads are allowed).
    """
    if item.loaded_from is None:  # made in this kernel: the user's own
        return item.settings.replace(**overrides)
    folder = Path(item.loaded_from).parent
    settings, refused, changes = item.settings, [], {}
    if "model" not in overrides:
        refused += _model_refusal(settings.model)
    if "refiner" not in overrides and settings.refiner is not None:
        refused += [f"refiner {what}" for what in _model_refusal(settings.refiner)]
    if "loras" not in overrides:
        loras = [(_beside(folder, source) or source, weight) for source, weight in settings.loras]
        refused += [f"LoRA {source!r}" for source, _ in loras if not _allowed(folder, source)]
        changes["loras"] = tuple(loras)
    if "embeddings" not in overrides:
        embeddings = [(_beside(folder, source) or source, token) for source, token in settings.embeddings]
        refused += [f"embedding {source!r}" for source, _ in embeddings if not _allowed(folder, source)]
        changes["embeddings"] = tuple(embeddings)
    if refused:
        raise ValueError(
            f"{os.path.basename(item.loaded_from)} names what nbbatch loads only when you allow it: "
            f"{', '.join(refused)}; put its files beside it, pass your own (model=, loras=, embeddings=), "
            "or allow_download=True (--allow-download) to load them as named"
        )
    return settings.replace(**{**changes, **overrides})


def _model_refusal(model: str) -> list[str]:
    from nbbatch.models.pipelines import BUILTIN_NAMES
    from nbbatch.models.standins import STANDINS

    if model in STANDINS:
        return [f"the stand-in {model!r} (a full-size model built in memory)"]
    if model in BUILTIN_NAMES:
        return []
    if _HUB_ID.fullmatch(model) and _cached(model, "model_index.json"):
        return _companion_refusal(model)
    kind = "hub model" if _HUB_ID.fullmatch(model) else "model folder"
    return [f"{kind} {model!r}"]


def _companion_refusal(repo: str) -> list[str]:
    """The repo loading cached `repo` would fetch besides (HiDream's Llama), where that is not cached; else none."""
    import json

    from huggingface_hub import try_to_load_from_cache

    from nbbatch.models.families import family_named

    try:
        index = json.loads(Path(str(try_to_load_from_cache(repo, "model_index.json"))).read_text(encoding="utf-8"))
        companion = family_named(str(index.get("_class_name", ""))).companion
    except (OSError, ValueError, AttributeError):  # unreadable: loading it fails on its own, fetching nothing
        return []
    if companion is None or not companion.missing(index) or _cached(companion.repo, "config.json"):
        return []
    return [f"hub model {companion.repo!r} (its model card loads it beside {repo!r})"]


def _beside(folder: Path, source: str) -> str | None:
    """The file of `source`'s name in `folder` (and truly in it, not a link out), or None."""
    name = source.replace("\\", "/").rsplit("/", 1)[-1]
    if not name or name.startswith("."):
        return None
    path = folder / name
    if path.is_file() and Path(os.path.realpath(path)).parent == Path(os.path.realpath(folder)):
        return str(path.resolve())
    return None


def _allowed(folder: Path, source: str) -> bool:
    if _beside(folder, source) == source:
        return True
    return _HUB_ID.fullmatch(source) is not None and not os.path.exists(source) and _cached(source)


def _cached(repo: str, filename: str | None = None) -> bool:
    """Whether the hub repository `repo` (or its `filename`) is in the local download cache; nothing is fetched."""
    from huggingface_hub import constants, try_to_load_from_cache

    if filename is not None:
        return isinstance(try_to_load_from_cache(repo, filename), str)
    snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())
