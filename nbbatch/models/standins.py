"""Full-size stand-ins: the SD 1.5 and SDXL base architectures with random weights, for speed and memory.

Speed and memory depend on the architecture, not on the weights' values, so these measure
real images per second and peak memory on any GPU with no download. The configs are the
public ones of ``stable-diffusion-v1-5`` and ``stable-diffusion-xl-base-1.0`` (UNet, VAE,
CLIP text encoders), written out here; the tokenizer is the built-in byte-level one. The
models are built on the meta device (nothing allocated), then materialised on the target
device with ``to_empty`` and each layer's own initialiser from a fixed seed, so a GPU run
never fills CPU memory first. Their images are noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

STANDINS = {"nbbatch:sd15-random": "sd15", "nbbatch:sdxl-random": "sdxl"}
"""The stand-ins' names and their architectures."""

UNET = {
    "sd15": {
        "sample_size": 64,
        "block_out_channels": (320, 640, 1280, 1280),
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    },
    "sdxl": {
        "sample_size": 128,
        "block_out_channels": (320, 640, 1280),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2, 10),
        "attention_head_dim": (5, 10, 20),
        "cross_attention_dim": 2048,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "use_linear_projection": True,
    },
}
"""The UNets' configs (what differs from `UNet2DConditionModel`'s defaults, which are SD's)."""

VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12}
CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32}
IMAGE_SIDE = {"sd15": 512, "sdxl": 1024}
"""The side each was trained at: the size the benchmark measures."""


def build_pipeline(name: str, device: str = "cpu", dtype: torch.dtype | None = None) -> DiffusionPipeline:
    """Stand-in `name` (``nbbatch:sd15-random`` or ``nbbatch:sdxl-random``) on `device`, in `dtype` (float32).

    ``device="meta"`` allocates nothing: the architecture alone, for parameter counts and FLOPs.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nbbatch.models.quiet import quiet_loading
    from nbbatch.models.tiny import assemble, byte_tokenizer

    if name not in STANDINS:
        raise ValueError(f"unknown stand-in {name!r}: choose {' or '.join(STANDINS)}")
    kind = STANDINS[name]
    tokenizer = byte_tokenizer()
    common = {
        "vocab_size": 49408,  # CLIP's: the byte-level tokenizer uses the first 514 ids
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    xl = kind == "sdxl"
    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNET[kind])
        vae = AutoencoderKL(
            **VAE, sample_size=IMAGE_SIDE[kind], scaling_factor=0.13025 if xl else 0.18215, force_upcast=xl
        )
        encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L, **common, hidden_act="quick_gelu", projection_dim=768))
        encoder_2 = (
            CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G, **common, hidden_act="gelu", projection_dim=1280))
            if xl
            else None
        )
    models = [model for model in (unet, vae, encoder, encoder_2) if model is not None]
    if device != "meta":
        with quiet_loading(), torch.random.fork_rng(devices=[device] if device.startswith("cuda") else []):
            torch.manual_seed(0)
            for model in models:
                _materialise(model, device, dtype or torch.float32)
    return assemble(vae, unet, tokenizer, encoder, encoder_2)


def _materialise(model: Any, device: str, dtype: torch.dtype) -> None:
    """Allocate `model`'s meta tensors on `device` and fill them as its layers' constructors would."""
    import torch

    model.to_empty(device=device)
    with torch.no_grad():
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if own and not hasattr(module, "reset_parameters"):
                raise ValueError(f"cannot initialise {type(module).__name__}: it has no reset_parameters")
            if own:
                module.reset_parameters()
        for name, buffer in model.named_buffers():
            if not name.endswith("position_ids"):
                raise ValueError(f"cannot initialise buffer {name}")
            buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
    model.to(dtype)
    model.eval()


def parameter_count(model: Any) -> int:
    """How many parameters `model` has (works on the meta device)."""
    return sum(parameter.numel() for parameter in model.parameters())


def unet_flops(pipe: Any, side: int) -> int:
    """FLOPs of one UNet forward for one image of `side` x `side` pixels, counted by torch on the meta device.

    A pipeline built with ``device="meta"`` costs nothing to count; the count is torch's
    `FlopCounterMode` (2 FLOPs per multiply-add of every matmul, convolution and attention).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = pipe.unet
    latent = side // pipe.vae_scale_factor
    with torch.device("meta"):
        sample = torch.empty(1, unet.config.in_channels, latent, latent)
        context = torch.empty(1, 77, unet.config.cross_attention_dim)
        extra = {}
        if unet.config.addition_embed_type == "text_time":
            pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
            extra["added_cond_kwargs"] = {"text_embeds": torch.empty(1, pooled), "time_ids": torch.empty(1, 6)}
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            unet(sample, torch.tensor([500]), encoder_hidden_states=context, **extra)
    return int(counter.get_total_flops())
