"""Full-size stand-ins: SD 1.5, SDXL, FLUX.1-dev and Qwen-Image architectures with random weights.

Speed and memory depend on the architecture, not on the weights' values, so these measure
real images per second and peak memory on any GPU with no download. The configs are the
public ones of ``stable-diffusion-v1-5``, ``stable-diffusion-xl-base-1.0``,
``FLUX.1-dev`` and ``Qwen-Image`` (denoiser, VAE, text encoders), written out here; the
tokenizers are the built-in ones of the tiny pipelines. On the meta device nothing is
allocated: parameter counts and FLOPs cost nothing. The UNet ones are materialised on the
target device with ``to_empty`` and each layer's own initialiser from a fixed seed; the
transformer ones (12 and 29 billion parameters) are built on the target device directly,
in the target dtype, and only on a GPU. Either way a GPU run never fills CPU memory first.
Their images are noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

STANDINS = {
    "nbbatch:sd15-random": "sd15",
    "nbbatch:sdxl-random": "sdxl",
    "nbbatch:flux-dev-random": "flux-dev",
    "nbbatch:qwen-image-random": "qwen-image",
}
"""The stand-ins' names and their architectures."""
TRANSFORMERS = ("flux-dev", "qwen-image")
"""The stand-ins whose denoiser is a transformer (built only on the meta device or a GPU)."""

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
FLUX_DEV = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
FLUX_VAE = {**VAE, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False}
T5_XXL = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "feed_forward_proj": "gated-gelu",
}
QWEN_IMAGE = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "axes_dims_rope": (16, 56, 56),
}
QWEN_VL_TEXT = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128000,
    "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
}
QWEN_VL_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
"""FLUX.1-dev's transformer, VAE and T5-XXL, and Qwen-Image's transformer and Qwen2.5-VL-7B (the VAE is
`AutoencoderKLQwenImage`'s default): the published configs' values that differ from the classes' defaults."""
IMAGE_SIDE = {"sd15": 512, "sdxl": 1024, "flux-dev": 1024, "qwen-image": 1024}
"""The side each was trained at (Qwen-Image's pipeline default): the size the benchmark measures."""
FORWARDS_PER_STEP = {"sd15": 2, "sdxl": 2, "flux-dev": 1, "qwen-image": 1}
"""Denoiser forwards per step of a plain prompt: CFG's two for SD, one for FLUX.1-dev's embedded guidance and for
Qwen-Image with no negative prompt (its true CFG runs only with one)."""


def build_pipeline(name: str, device: str = "cpu", dtype: torch.dtype | None = None) -> DiffusionPipeline:
    """Stand-in `name` (one of `STANDINS`) on `device`, in `dtype` (float32).

    ``device="meta"`` allocates nothing: the architecture alone, for parameter counts and FLOPs.
    The FLUX.1-dev and Qwen-Image ones run on a GPU only (a CPU is refused in one line: they
    need 24 and 58 GB in 16 bits).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nbbatch.models.quiet import quiet_loading
    from nbbatch.models.tiny import assemble, byte_tokenizer

    if name not in STANDINS:
        raise ValueError(f"unknown stand-in {name!r}: choose {', '.join(STANDINS)}")
    kind = STANDINS[name]
    if kind in TRANSFORMERS:
        return _transformer_pipeline(kind, device, dtype or torch.float32)
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


def _transformer_pipeline(kind: str, device: str, dtype: torch.dtype) -> DiffusionPipeline:
    """FLUX.1-dev's or Qwen-Image's pipeline at full size, built where it will run (the meta device or a GPU)."""
    import torch

    from nbbatch.models.quiet import quiet_loading

    if device != "meta" and not device.startswith("cuda"):
        raise ValueError(
            f"the {kind} stand-in has {'16.9' if kind == 'flux-dev' else '28.8'} billion parameters: it runs on a "
            "GPU (device='cuda') or counts on the meta device, not on the CPU"
        )
    build = _flux_dev if kind == "flux-dev" else _qwen_image
    if device == "meta":
        with torch.device("meta"):
            return build()
    previous = torch.get_default_dtype()
    try:  # each layer's own initialiser, from a fixed seed, in the dtype it runs in: no float32 copy first
        torch.set_default_dtype(dtype)
        with quiet_loading(), torch.device(device), torch.random.fork_rng(devices=[device]):
            torch.manual_seed(0)
            pipe = build()
    finally:
        torch.set_default_dtype(previous)
    for model in pipe.components.values():
        if isinstance(model, torch.nn.Module):
            model.eval()
    return pipe


def _flux_dev() -> DiffusionPipeline:
    from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from nbbatch.models.tiny import byte_tokenizer, flow_scheduler, unigram_tokenizer

    tokenizer, t5_tokenizer = byte_tokenizer(), unigram_tokenizer()
    clip = CLIPTextConfig(
        **CLIP_L,
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    t5 = T5Config(
        **T5_XXL,
        pad_token_id=t5_tokenizer.pad_token_id,
        eos_token_id=t5_tokenizer.eos_token_id,
        decoder_start_token_id=t5_tokenizer.pad_token_id,
    )
    return FluxPipeline(
        scheduler=flow_scheduler(dynamic=True, shift=3.0),
        vae=AutoencoderKL(**FLUX_VAE, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=CLIPTextModel(clip),
        tokenizer=tokenizer,
        text_encoder_2=T5EncoderModel(t5),
        tokenizer_2=t5_tokenizer,
        transformer=FluxTransformer2DModel(**FLUX_DEV),
    )


def _qwen_image() -> DiffusionPipeline:
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from nbbatch.models.tiny import qwen_image_scheduler, qwen_tokenizer

    tokenizer = qwen_tokenizer()
    token = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            **QWEN_VL_TEXT,
            "bos_token_id": token("<|endoftext|>"),
            "eos_token_id": token("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config=QWEN_VL_VISION,
        image_token_id=token("<|image_pad|>"),
        video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"),
        vision_end_token_id=token("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    return QwenImagePipeline(
        scheduler=qwen_image_scheduler(),
        vae=AutoencoderKLQwenImage(),
        text_encoder=Qwen2_5_VLForConditionalGeneration(config),
        tokenizer=tokenizer,
        transformer=QwenImageTransformer2DModel(**QWEN_IMAGE),
    )


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


def denoiser_flops(pipe: Any, side: int) -> int:
    """FLOPs of one denoiser forward (UNet or transformer) for one image of `side` x `side` pixels, on the meta device.

    A pipeline built with ``device="meta"`` costs nothing to count; the count is torch's
    `FlopCounterMode` (2 FLOPs per multiply-add of every matmul, convolution and attention),
    with the text at its usual length: 77 CLIP tokens, FLUX's 512 T5 tokens, 64 for Qwen-Image.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    latent = side // pipe.vae_scale_factor
    with torch.device("meta"):
        if hasattr(pipe, "unet"):
            model, config = pipe.unet, pipe.unet.config
            inputs: dict[str, Any] = {
                "sample": torch.empty(1, config.in_channels, latent, latent),
                "timestep": torch.tensor([500]),
                "encoder_hidden_states": torch.empty(1, 77, config.cross_attention_dim),
            }
            if config.addition_embed_type == "text_time":
                pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
                inputs["added_cond_kwargs"] = {"text_embeds": torch.empty(1, pooled), "time_ids": torch.empty(1, 6)}
        else:
            model, config = pipe.transformer, pipe.transformer.config
            patches = (latent // 2) ** 2  # both pack 2x2 latent pixels into one token
            inputs = {"hidden_states": torch.empty(1, patches, 64), "timestep": torch.empty(1)}
            if "pooled_projection_dim" in config:  # FLUX.1
                inputs |= {
                    "encoder_hidden_states": torch.empty(1, 512, config.joint_attention_dim),
                    "pooled_projections": torch.empty(1, config.pooled_projection_dim),
                    "img_ids": torch.zeros(patches, 3),
                    "txt_ids": torch.zeros(512, 3),
                    "guidance": torch.empty(1),
                }
            else:  # Qwen-Image
                inputs |= {
                    "encoder_hidden_states": torch.empty(1, 64, config.joint_attention_dim),
                    "encoder_hidden_states_mask": torch.ones(1, 64),
                    "img_shapes": [[(1, latent // 2, latent // 2)]],
                }
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(**inputs)
    return int(counter.get_total_flops())
