"""LoRA files and textual-inversion embeddings on the cached pipeline, with diffusers' own loaders.

A LoRA is loaded once per kernel as a named peft adapter (`load_lora_weights`), and each
batch picks its own with `set_adapters` and their weights; a batch without LoRAs turns
them all off with `disable_lora`, which leaves the model's own weights untouched (nothing
is fused), so it equals a fresh pipeline. Embeddings (`load_textual_inversion`) add
tokens to the tokenizer; those a batch does not ask for are unloaded, so a word that was
once an embedding's token reads as a word again.

Loading happens before anything runs, so a bad file is a one-line error and the images
of the batch are never half made; a file that fails is taken out again (diffusers deletes
a half-loaded adapter itself), so the cached pipeline is as it was.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbbatch.core.errors import SettingError, first_line
from nbbatch.models.quiet import quiet_loading


@dataclass(frozen=True)
class AdapterFile:
    """A LoRA or embedding as loaded: where from, the adapter name or token, and A1111's short hash."""

    source: str
    name: str
    short_hash: str | None


@dataclass
class Adapters:
    """What is loaded into one cached pipeline: LoRAs by source (adapter names ``lora0``, ...), embeddings by token."""

    loras: dict[str, tuple[AdapterFile, str]] = field(default_factory=dict)
    embeddings: dict[str, AdapterFile] = field(default_factory=dict)

    def load_loras(self, pipe: Any, loras: tuple[tuple[str, float], ...]) -> list[dict[str, Any]]:
        """Load the LoRAs not loaded yet (none is turned on here); returns each one's name, source, weight and hash."""
        if loras and not hasattr(pipe, "load_lora_weights"):
            raise SettingError("loras", f"{type(pipe).__name__} has no LoRA loader in diffusers", predicate=False)
        records = []
        for source, weight in loras:
            path = _resolve(source, "LoRA")
            if path not in self.loras:
                adapter = f"lora{len(self.loras)}"
                _load_lora(pipe, path, adapter, source)
                self.loras[path] = (AdapterFile(path, Path(path).stem, _short_hash(path, lora=True)), adapter)
            loaded = self.loras[path][0]
            records.append({"name": loaded.name, "source": path, "weight": weight, "hash": loaded.short_hash})
        return records

    def activate(self, pipe: Any, loras: tuple[tuple[str, float], ...]) -> None:
        """Turn on exactly `loras` at their weights (all off when there are none); the weights stay unfused."""
        if not self.loras:
            return
        if not loras:
            pipe.disable_lora()
            return
        names = [self.loras[_resolve(source, "LoRA")][1] for source, _ in loras]
        pipe.enable_lora()
        pipe.set_adapters(names, adapter_weights=[float(weight) for _, weight in loras])

    def unload_loras(self, pipe: Any) -> None:
        """Take every LoRA out of the pipeline (`unload_lora_weights`): the model as it was loaded."""
        if self.loras:
            pipe.unload_lora_weights()
            self.loras.clear()

    def load_embeddings(self, pipe: Any, embeddings: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
        """Load the embeddings asked for and unload the others; returns each one's record (token, source, hash)."""
        wanted = {token: _resolve(source, "embedding") for source, token in embeddings}
        for token, loaded in list(self.embeddings.items()):
            if wanted.get(token) != loaded.source:
                _unload_embedding(pipe, token)
                del self.embeddings[token]
        for token, path in wanted.items():
            if token not in self.embeddings:
                _load_embedding(pipe, path, token)
                self.embeddings[token] = AdapterFile(path, token, _short_hash(path, lora=False))
        return [
            {"token": token, "source": self.embeddings[token].source, "hash": self.embeddings[token].short_hash}
            for token in wanted
        ]


def _resolve(source: str, kind: str) -> str:
    """A local file as an absolute path; a hub id as it is; a missing local file is a one-line error."""
    path = os.path.expanduser(source)
    if os.path.exists(path):
        return os.path.abspath(path)
    looks_local = source.startswith(("/", "./", "../", "~")) or source.count("/") != 1 or Path(source).suffix
    if looks_local:
        raise ValueError(f"{kind} file {source!r} does not exist")
    return source


def _load_lora(pipe: Any, path: str, adapter: str, source: str) -> None:
    try:
        with quiet_loading(), warnings.catch_warnings():  # peft notes that a model holds several adapters
            warnings.simplefilter("ignore", UserWarning)
            pipe.load_lora_weights(path, adapter_name=adapter)
    except Exception as error:  # a wrong file, another architecture, no network: the pipeline stays as it was
        raise ValueError(f"could not load LoRA {source!r}: {_reason(error)}") from None
    if not any(adapter in names for names in pipe.get_list_adapters().values()):
        raise ValueError(f"LoRA {source!r} has no layer this model has: is it made for another model?")


def _reason(error: BaseException) -> str:
    text = first_line(error)
    if "size mismatch" in str(error) or text.startswith("Error(s) in loading state_dict"):
        return "its layers do not fit this model (made for another architecture?)"
    return text


def _load_embedding(pipe: Any, path: str, token: str) -> None:
    """`load_textual_inversion`; an SDXL file (``clip_l`` and ``clip_g``) goes into both text encoders."""
    try:
        state = _read_tensors(path)
        if "clip_l" in state and getattr(pipe, "text_encoder_2", None) is not None:
            pipe.load_textual_inversion(state["clip_l"], token, pipe.tokenizer, pipe.text_encoder)
            pipe.load_textual_inversion(state["clip_g"], token, pipe.tokenizer_2, pipe.text_encoder_2)
        else:
            pipe.load_textual_inversion(path, token=token)
    except Exception as error:
        raise ValueError(f"could not load embedding {path!r}: {first_line(error)}") from None


def _unload_embedding(pipe: Any, token: str) -> None:
    pipe.unload_textual_inversion(token)
    if getattr(pipe, "text_encoder_2", None) is not None and token in pipe.tokenizer_2.get_vocab():
        pipe.unload_textual_inversion(token, pipe.tokenizer_2, pipe.text_encoder_2)


def _read_tensors(path: str) -> dict[str, Any]:
    if os.path.isfile(path) and path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return {}


def _short_hash(path: str, *, lora: bool) -> str | None:
    """A1111's short hash (12 hex digits): of a LoRA's tensor data (after the safetensors header), else of the file.

    A hub id has no local file and no hash.
    """
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        if lora and path.endswith(".safetensors"):
            header = int.from_bytes(file.read(8), "little")
            file.seek(8 + header)
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
