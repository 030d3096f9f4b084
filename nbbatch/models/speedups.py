"""Opt-in speedups of the cached pipeline, as the diffusers docs describe them: compile, channels-last, fused QKV.

Each is applied once to the cached pipeline's UNet (shared by every view of it), and
undone when a later batch asks for it off, so a batch without it equals an eager one:

- ``compile``: diffusers' regional compilation (``compile_repeated_blocks``, each
  transformer block compiled once and reused) where the UNet names its repeated blocks,
  else ``torch.compile`` of the whole UNet; in place (``nn.Module.compile``), undone by
  dropping the compiled call. With dynamic shapes: batch sizes and image sizes share one
  graph per block width (static shapes ran into torch's limit of 8 recompilations on SDXL
  with fullgraph, a hard failure). The first batch pays the compile time.
- ``channels_last``: the UNet's weights in channels-last memory format (faster
  convolutions on GPUs with tensor cores), undone by going back to contiguous.
- ``fuse_qkv``: ``fuse_qkv_projections`` (one matmul for query, key and value; diffusers
  calls it experimental), undone by ``unfuse_qkv_projections``.
"""

from __future__ import annotations

from typing import Any

from nbbatch.core.errors import SettingError

SPEEDUPS = ("compile", "channels_last", "fuse_qkv")
"""The names, as settings and in each image's record."""


def apply_speedups(pipe: Any, applied: set[str], wanted: set[str]) -> None:
    """Make `pipe`'s UNet have exactly the speedups in `wanted`; `applied` (what it has now) is updated in place.

    A speedup this pipeline cannot take is a one-line ValueError. Fused QKV needs the
    UNet without LoRA layers (peft wraps the projections it fuses): the caller unloads them.
    """
    import torch

    unet = getattr(pipe, "unet", None)
    if wanted and unet is None:
        raise ValueError(f"{', '.join(sorted(wanted))} need a pipeline with a UNet; {type(pipe).__name__} has none")
    if "fuse_qkv" in wanted - applied:
        try:
            pipe.fuse_qkv_projections(unet=True, vae=False)
        except (ValueError, AttributeError) as error:
            raise SettingError("fuse_qkv", f"does not fit this pipeline: {error}") from None
        applied.add("fuse_qkv")
    elif "fuse_qkv" in applied - wanted:
        pipe.unfuse_qkv_projections(unet=True, vae=False)
        applied.discard("fuse_qkv")
    if "channels_last" in wanted ^ applied:
        on = "channels_last" in wanted
        unet.to(memory_format=torch.channels_last if on else torch.contiguous_format)
        (applied.add if on else applied.discard)("channels_last")
    if "compile" in wanted - applied:
        if getattr(unet, "_repeated_blocks", None):  # dynamic: one graph per block width, any batch or size
            unet.compile_repeated_blocks(fullgraph=True, dynamic=True)
        else:
            unet.compile(dynamic=True)
        applied.add("compile")
    elif "compile" in applied - wanted:
        for module in unet.modules():
            module._compiled_call_impl = None  # nn.Module.compile's compiled call: eager again
        applied.discard("compile")
