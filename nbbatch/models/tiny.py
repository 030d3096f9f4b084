"""The built-in offline pipelines: tiny models of every family nbbatch knows, with random weights.

They exist so that the demo and the tests run the real diffusers code (tokenizer, text
encoders, UNet, VAE, scheduler, `from_pretrained`) with no download. The weights are
random, so the images are coloured noise: they show the plumbing, not the art.
Each is built once, deterministically, into a folder and loaded from there like any model.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbbatch.models.quiet import quiet_loading

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from transformers import CLIPTokenizer

BUILTIN_MODELS = {
    "nbbatch:tiny-sd": "sd",
    "nbbatch:tiny-sdxl": "sdxl",
    "nbbatch:tiny-sdxl-refiner": "sdxl-refiner",
    "nbbatch:tiny-flux": "flux",
    "nbbatch:tiny-flux-schnell": "flux-schnell",
    "nbbatch:tiny-flux-kontext": "flux-kontext",
    "nbbatch:tiny-sd3": "sd3",
    "nbbatch:tiny-chroma": "chroma",
    "nbbatch:tiny-cogview4": "cogview4",
    "nbbatch:tiny-flux2-klein": "flux2-klein",
    "nbbatch:tiny-qwen-image": "qwen-image",
    "nbbatch:tiny-z-image": "z-image",
    "nbbatch:tiny-lumina2": "lumina2",
    "nbbatch:tiny-pixart": "pixart",
    "nbbatch:tiny-auraflow": "auraflow",
    "nbbatch:tiny-sana": "sana",
    "nbbatch:tiny-hidream": "hidream",
}
_VERSION = "v2"
_UNET_SHAPE = {
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 4,
    "attention_head_dim": 2,
}
"""The tiny SD, SDXL and SDXL refiner UNets' shape (their conditioning differs)."""
_MAX_TOKENS = 77  # as real CLIP: prompts are cut after 77 tokens (here, bytes)


def cache_dir() -> Path:
    """Where built-in pipelines are saved: ``$NBBATCH_HOME`` or ``~/.cache/nbbatch``."""
    return Path(os.environ.get("NBBATCH_HOME") or Path.home() / ".cache" / "nbbatch")


def builtin_path(name: str) -> Path:
    """The folder of built-in pipeline `name`, built and saved there on first use."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown built-in model {name!r}: choose {' or '.join(BUILTIN_MODELS)}")
    target = cache_dir() / f"{name.split(':', 1)[1]}-{_VERSION}"
    if not (target / "model_index.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".building-") as staging, quiet_loading():
            build_tiny_pipeline(BUILTIN_MODELS[name]).save_pretrained(staging)
            notes = {"latent_rgb": None, "why": "random weights: its latents have no colours to preview"}
            (Path(staging) / "nbbatch.json").write_text(json.dumps(notes, indent=1), encoding="utf-8")
            _share(Path(staging))
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / "model_index.json").is_file():  # not a concurrent build that won
                    raise
            Path(staging).mkdir(exist_ok=True)  # let TemporaryDirectory clean up after the rename
    return target


def _share(folder: Path) -> None:
    """Make a built folder readable by group and others (a shared ``NBBATCH_HOME``): temporary folders are 0700."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def build_tiny_pipeline(kind: str = "sd") -> DiffusionPipeline:
    """Build a tiny pipeline in memory: ``"sd"`` (StableDiffusionPipeline), ``"sdxl"``, or a transformer family's.

    The weights come from a fixed seed, so every build is the same; the global
    random state of torch is left as it was.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if kind in (
        "flux",
        "flux-schnell",
        "flux-kontext",
        "sd3",
        "chroma",
        "cogview4",
        "qwen-image",
        "flux2-klein",
        "z-image",
        "lumina2",
        "pixart",
        "auraflow",
        "sana",
        "hidream",
    ):
        return _tiny_transformer(kind)
    if kind == "sdxl-refiner":
        return _sdxl_refiner()
    if kind not in ("sd", "sdxl"):
        raise ValueError(f"unknown tiny pipeline kind {kind!r}: choose {', '.join(BUILTIN_MODELS.values())}")
    tokenizer = byte_tokenizer()
    text_config = clip_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(
            block_out_channels=(8, 16),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=32,
        )
        if kind == "sd":
            encoder = CLIPTextModel(text_config)  # made in this order, so the weights are those of earlier builds
            return assemble(vae, UNet2DConditionModel(cross_attention_dim=32, **_UNET_SHAPE), tokenizer, encoder)
        unet = UNet2DConditionModel(
            cross_attention_dim=64,  # both text encoders' hidden states, side by side
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids and the pooled text embedding
            use_linear_projection=True,
            **_UNET_SHAPE,
        )
        encoder = CLIPTextModel(text_config)
        return assemble(vae, unet, tokenizer, encoder, CLIPTextModelWithProjection(text_config))


def _sdxl_refiner() -> DiffusionPipeline:
    """SDXL's refiner: image-to-image reading only the second text encoder, with an aesthetic score among its time ids.

    Its VAE, second text encoder and tokenizer are ``nbbatch:tiny-sdxl``'s very ones (the
    real refiner shares them with the base, as the diffusers SDXL guide loads it); its UNet is its own.
    """
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel

    base = build_tiny_pipeline("sdxl")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        unet = UNet2DConditionModel(
            cross_attention_dim=32,  # the second text encoder's hidden states alone
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=5 * 8 + 32,  # five time ids (an aesthetic score) and the pooled text
            use_linear_projection=True,
            **_UNET_SHAPE,
        )
    return StableDiffusionXLImg2ImgPipeline(
        vae=base.vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=base.text_encoder_2,
        tokenizer_2=base.tokenizer_2,
        unet=unet,
        scheduler=base.scheduler,
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )


def assemble(
    vae: Any, unet: Any, tokenizer: Any, encoder: Any, encoder_2: Any = None, scheduler: Any = None
) -> DiffusionPipeline:
    """An SD pipeline of these parts, or SDXL with a second text encoder; SD's Euler scheduler unless given.

    No safety checker and no watermark: the built-in models draw noise or shapes.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = scheduler or EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    if encoder_2 is None:
        return StableDiffusionPipeline(
            vae=vae,
            text_encoder=encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=encoder,
        text_encoder_2=encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def _tiny_transformer(kind: str) -> DiffusionPipeline:
    """A tiny transformer pipeline with the real family's latent channels, VAE scaling and shift, and scheduler.

    ``flux``: FLUX.1-dev (CLIP + T5, packed latents, embedded guidance, a scheduler that
    shifts by the image's size); ``flux-schnell``: no guidance embedding, a static shift;
    ``flux-kontext``: FLUX.1 Kontext, the editing pipeline, with ``flux``'s very weights;
    ``sd3``: SD3.5 (two CLIPs + T5, unpacked latents, shift 3); ``chroma``: T5 alone,
    packed latents, real CFG; ``cogview4``: a GLM encoder that pads every prompt to the
    batch's longest, on the left, with no mask, and its own dynamic shift; ``qwen-image``: a
    Qwen2.5-VL encoder under its chat template, packed latents, true CFG and Qwen-Image's own
    causal VAE (Wan's latent statistics) and exponential dynamic shift; ``z-image``: a Qwen3
    encoder through a chat template, unpacked latents drawn in float32; ``flux2-klein``: FLUX.2 Klein
    (a Qwen3 encoder read at three depths, FLUX.2's 32-channel VAE, noise drawn as 2x2 patches,
    real CFG against an empty prompt, FLUX.2's empirical shift); ``lumina2``: a Gemma 2
    encoder under its system prompt; ``pixart``: PixArt-Σ's (T5, SDXL's VAE, aspect-ratio bins, the old
    step callback); ``auraflow``: AuraFlow's (a UMT5 encoder, SDXL's 4-channel VAE, a static shift,
    1024 px unless a size is given); ``sana``: Sana's (a Gemma 2 encoder after its complex human
    instruction, a deep-compression VAE that scales by 32 as the real one, aspect-ratio bins, noise
    in float32); ``hidream``: HiDream-I1 Full's (two long CLIPs, T5 and a Llama 3 read at every layer, a
    mixture-of-experts transformer, FLUX.1's VAE statistics, UniPC on flow sigmas). Every other VAE scales by 8 as
    the real ones; HiDream's does not scale (its pipeline draws every picture at (128 x the VAE's scale)² pixels,
    so a scale of 8 would make 1024 px pictures: these are 128 px).
    """
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    tokenizer, t5_tokenizer = byte_tokenizer(), unigram_tokenizer()
    clip = clip_config(tokenizer)
    t5_width = 64 if kind == "sd3" else 32  # SD3 pads the two CLIPs' 32 + 32 to T5's width
    t5_options = dict(
        vocab_size=len(t5_tokenizer),
        d_model=t5_width,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=t5_tokenizer.pad_token_id,
        eos_token_id=t5_tokenizer.eos_token_id,
        decoder_start_token_id=t5_tokenizer.pad_token_id,
    )
    t5_config = T5Config(**t5_options)
    sdxl_vae = (0.13025, None)  # PixArt-Σ and AuraFlow decode with SDXL's 4-channel VAE
    scaling, shift = {"sd3": (1.5305, 0.0609), "cogview4": (1.0, None), "pixart": sdxl_vae, "auraflow": sdxl_vae}.get(
        kind, (0.3611, 0.1159)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 16, 16),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4 if scaling == sdxl_vae[0] else 16,
            norm_num_groups=4,
            sample_size=64,
            use_quant_conv=False,
            use_post_quant_conv=False,
            scaling_factor=scaling,
            shift_factor=shift,
        )
        if kind == "cogview4":
            return _cogview4(vae)
        if kind == "qwen-image":
            return _qwen_image()
        if kind == "flux2-klein":
            return _flux2_klein()
        if kind == "z-image":
            return _z_image(vae)
        if kind == "lumina2":
            return _lumina2(vae)
        if kind == "auraflow":
            return _auraflow(vae, t5_tokenizer, {**t5_options, "num_layers": 1})
        if kind == "sana":
            return _sana()
        if kind == "hidream":
            return _hidream(tokenizer, t5_tokenizer, T5EncoderModel(t5_config), scaling, shift)
        t5 = T5EncoderModel(t5_config)
        if kind == "sd3":
            return _sd3(vae, tokenizer, t5_tokenizer, clip, t5)
        if kind == "chroma":
            return _chroma(vae, t5_tokenizer, t5)
        if kind == "pixart":
            return _pixart(vae, t5_tokenizer, t5)
        return _flux(vae, tokenizer, t5_tokenizer, CLIPTextModel(clip), t5, kind)


def clip_config(tokenizer: Any, positions: int = _MAX_TOKENS) -> Any:
    """The tiny CLIP text encoder's config: two layers of width 32 over `tokenizer`'s vocabulary, 77 positions."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=positions,
        projection_dim=32,
    )


def flow_scheduler(dynamic: bool, shift: float) -> Any:
    """FLUX.1's flow-matching scheduler: a shift by the image's size (dev) or a static one (schnell)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=shift,
        use_dynamic_shifting=dynamic,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def _flux(vae: Any, tokenizer: Any, t5_tokenizer: Any, clip: Any, t5: Any, kind: str) -> DiffusionPipeline:
    """FLUX.1-dev, schnell or Kontext (`kind`); dev and Kontext share every weight, as the seed is the same."""
    from diffusers import FluxKontextPipeline, FluxPipeline, FluxTransformer2DModel

    schnell = kind == "flux-schnell"

    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels in 2x2 patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
        guidance_embeds=not schnell,
    )
    return (FluxKontextPipeline if kind == "flux-kontext" else FluxPipeline)(
        scheduler=flow_scheduler(dynamic=not schnell, shift=1.0 if schnell else 3.0),
        vae=vae,
        text_encoder=clip,
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )


def _sd3(vae: Any, tokenizer: Any, t5_tokenizer: Any, clip: Any, t5: Any) -> DiffusionPipeline:
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,  # the two CLIPs' pooled 32 + 32
        out_channels=16,
        pos_embed_max_size=64,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=flow_scheduler(dynamic=False, shift=3.0),
        vae=vae,
        text_encoder=CLIPTextModelWithProjection(clip),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip),
        tokenizer_2=tokenizer,
        text_encoder_3=t5,
        tokenizer_3=t5_tokenizer,
    )


def _chroma(vae: Any, t5_tokenizer: Any, t5: Any) -> DiffusionPipeline:
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),
        approximator_num_channels=8,
        approximator_hidden_dim=32,
        approximator_layers=1,
    )
    return ChromaPipeline(
        scheduler=flow_scheduler(dynamic=True, shift=3.0),
        vae=vae,
        text_encoder=t5,
        tokenizer=t5_tokenizer,
        transformer=transformer,
    )


def _cogview4(vae: Any) -> DiffusionPipeline:
    from diffusers import CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import GlmConfig, GlmModel

    tokenizer = glm_tokenizer()
    encoder = GlmModel(GlmConfig(**_text_model(tokenizer), head_dim=8))
    transformer = CogView4Transformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        text_embed_dim=32,
        time_embed_dim=16,
        condition_dim=8,
        pos_embed_max_size=64,
        sample_size=32,
        rope_axes_dim=(4, 4),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(  # CogView4's: a linear time shift from its own mu
        base_shift=0.25, max_shift=0.75, base_image_seq_len=256, use_dynamic_shifting=True, time_shift_type="linear"
    )
    return CogView4Pipeline(
        tokenizer=tokenizer, text_encoder=encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def _qwen_image() -> DiffusionPipeline:
    from diffusers import (
        AutoencoderKLQwenImage,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = qwen_tokenizer()
    token = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            **_qwen_text(tokenizer),
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
        },
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 32},
        image_token_id=token("<|image_pad|>"),
        video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"),
        vision_end_token_id=token("<|vision_end|>"),
    )
    vae = AutoencoderKLQwenImage(  # three downsamplings: scales by 8; Wan's latent mean and std by default
        base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    return QwenImagePipeline(
        scheduler=qwen_image_scheduler(),
        vae=vae,
        text_encoder=Qwen2_5_VLForConditionalGeneration(config).eval(),
        tokenizer=tokenizer,
        transformer=transformer,
    )


def qwen_image_scheduler() -> Any:
    """Qwen-Image's own scheduler configuration: an exponential dynamic shift that ends at 0.02."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=8192,
        max_shift=0.9,
        shift=1.0,
        shift_terminal=0.02,
        time_shift_type="exponential",
        use_dynamic_shifting=True,
    )


def _flux2_klein() -> DiffusionPipeline:
    """FLUX.2 Klein (its base, with guidance): the text encoder's layers 9, 18 and 27 are what it reads."""
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = qwen_tokenizer(chat=True)
    encoder = Qwen3ForCausalLM(Qwen3Config(**{**_qwen_text(tokenizer), "num_hidden_layers": 27}, head_dim=8))
    vae = AutoencoderKLFlux2(  # FLUX.2's 32 latent channels at 1/8, patched 2x2 into the transformer's 128
        block_out_channels=(8, 8, 16, 16),
        latent_channels=32,
        norm_num_groups=4,
        sample_size=64,
    )
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=96,  # the encoder's three layers of 32, side by side
        timestep_guidance_channels=16,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    return Flux2KleinPipeline(
        scheduler=flow_scheduler(dynamic=True, shift=3.0),
        vae=vae,
        text_encoder=encoder.eval(),
        tokenizer=tokenizer,
        transformer=transformer,
    )


def _z_image(vae: Any) -> DiffusionPipeline:
    from diffusers import ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = qwen_tokenizer(chat=True)
    encoder = Qwen3Model(Qwen3Config(**_qwen_text(tokenizer), head_dim=8))
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=32,
        axes_dims=[4, 6, 6],
        axes_lens=[1024, 64, 64],
    )
    scheduler = flow_scheduler(dynamic=False, shift=3.0)  # Z-Image-Turbo's static shift
    return ZImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=encoder, tokenizer=tokenizer, transformer=transformer
    )


def _pixart(vae: Any, t5_tokenizer: Any, t5: Any) -> DiffusionPipeline:
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    transformer = PixArtTransformer2DModel(
        sample_size=32,  # its smallest bins: 256 px
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        out_channels=8,
        cross_attention_dim=16,
        caption_channels=32,
        norm_num_groups=4,
    )
    return PixArtSigmaPipeline(
        tokenizer=t5_tokenizer,
        text_encoder=t5,
        vae=vae,
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )


def _auraflow(vae: Any, tokenizer: Any, t5_options: dict[str, Any]) -> DiffusionPipeline:
    import torch
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel
    from transformers import UMT5Config, UMT5EncoderModel

    encoder = UMT5EncoderModel(UMT5Config(**t5_options))  # the other tiny T5s' shape, one layer
    transformer = AuraFlowTransformer2DModel(
        sample_size=32, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32,
        out_channels=4, pos_embed_max_size=4096,  # 64 x 64 patches: its 1024 px default
    )  # fmt: skip
    with torch.no_grad():  # at the default init its gates and feed-forwards let no prompt (or LoRA) reach the picture
        for name, weight in transformer.named_parameters():
            if name.endswith(("ff.linear_2.weight", "out_projection.weight", "to_out.0.weight", "norm1.linear.weight")):
                weight.mul_(4)
    return AuraFlowPipeline(
        tokenizer=tokenizer,
        text_encoder=encoder,
        vae=vae,
        transformer=transformer,
        scheduler=flow_scheduler(dynamic=False, shift=1.73),  # AuraFlow 0.3's static shift
    )


def _sana() -> DiffusionPipeline:
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = gemma_tokenizer()
    config = Gemma2Config(
        **_text_model(tokenizer), head_dim=8, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    blocks = 6  # five halvings: 32x, as the real DC-AE f32
    vae = AutoencoderDC(
        in_channels=3, latent_channels=8, attention_head_dim=2, encoder_block_types=("ResBlock",) * blocks,
        decoder_block_types=("ResBlock",) * blocks, encoder_block_out_channels=(8,) * blocks,
        decoder_block_out_channels=(8,) * blocks, encoder_qkv_multiscales=((),) * blocks,
        decoder_qkv_multiscales=((),) * blocks, encoder_layers_per_block=(1,) * blocks,
        decoder_layers_per_block=(1,) * blocks, upsample_block_type="interpolate", downsample_block_type="conv",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    )  # fmt: skip
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=8, out_channels=8, num_layers=1, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=32,
        sample_size=16,  # its 512 px bins
    )  # fmt: skip
    scheduler = DPMSolverMultistepScheduler(  # Sana's: DPM-Solver++ on flow sigmas, shift 3
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    return SanaPipeline(
        tokenizer=tokenizer, text_encoder=Gemma2Model(config), vae=vae, transformer=transformer, scheduler=scheduler
    )


def _lumina2(vae: Any) -> DiffusionPipeline:
    from diffusers import Lumina2Pipeline, Lumina2Transformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = gemma_tokenizer()
    encoder = Gemma2Model(
        Gemma2Config(
            **_text_model(tokenizer),
            head_dim=8,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    transformer = Lumina2Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        hidden_size=32,
        num_layers=1,
        num_refiner_layers=1,
        num_attention_heads=2,
        num_kv_heads=2,
        multiple_of=16,
        axes_dim_rope=(4, 6, 6),
        axes_lens=(1024, 64, 64),
        cap_feat_dim=32,
    )
    scheduler = flow_scheduler(dynamic=False, shift=6.0)  # Lumina-Image 2.0's static shift
    return Lumina2Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=encoder, tokenizer=tokenizer
    )


def _hidream(tokenizer: Any, t5_tokenizer: Any, t5: Any, scaling: float, shift: float) -> DiffusionPipeline:
    """HiDream-I1 Full: its CLIPs read 128 tokens (248 positions, as its long CLIPs), its Llama every layer."""
    from diffusers import AutoencoderKL, HiDreamImagePipeline, HiDreamImageTransformer2DModel, UniPCMultistepScheduler
    from transformers import CLIPTextModelWithProjection, LlamaConfig, LlamaForCausalLM

    clip = clip_config(tokenizer, positions=248)
    llama_tokenizer = llama3_tokenizer()
    llama = LlamaConfig(
        **_text_model(llama_tokenizer),
        head_dim=8,
        bos_token_id=llama_tokenizer.bos_token_id,
        eos_token_id=llama_tokenizer.eos_token_id,
    )
    vae = AutoencoderKL(  # one block: no downscaling (see _tiny_transformer)
        block_out_channels=(8,), latent_channels=16, norm_num_groups=4, sample_size=128, use_quant_conv=False,
        use_post_quant_conv=False, scaling_factor=scaling, shift_factor=shift,
    )  # fmt: skip
    transformer = HiDreamImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=1, caption_channels=[32, 32], text_emb_dim=64, num_routed_experts=4,
        num_activated_experts=2, axes_dims_rope=(4, 2, 2), max_resolution=(128, 128), llama_layers=(0, 1),
    )  # fmt: skip
    scheduler = UniPCMultistepScheduler(  # HiDream-I1 Full's: UniPC on flow sigmas, shift 3
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    return HiDreamImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=CLIPTextModelWithProjection(clip), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip), tokenizer_2=tokenizer, text_encoder_3=t5,
        tokenizer_3=t5_tokenizer, text_encoder_4=LlamaForCausalLM(llama).eval(), tokenizer_4=llama_tokenizer,
        transformer=transformer.eval(),
    )  # fmt: skip


def llama3_tokenizer() -> Any:
    """A Llama-3-style tokenizer: ``<|begin_of_text|>`` first, no padding token (HiDream pads with its end token)."""
    first = "<|begin_of_text|>"
    return _byte_bpe(
        (first, "<|end_of_text|>", "<|eot_id|>"), (first,), 131072, bos_token=first, eos_token="<|eot_id|>"
    )


def gemma_tokenizer() -> Any:
    """A Gemma-style tokenizer: ``<bos>`` first, padding on the right."""
    return _byte_bpe(
        ("<pad>", "<eos>", "<bos>", "<unk>"), ("<bos>",), 8192, pad_token="<pad>", eos_token="<eos>",
        bos_token="<bos>", unk_token="<unk>",
    )  # fmt: skip


def _text_model(tokenizer: Any) -> dict[str, Any]:
    """A two-layer decoder-style text model of width 32 over `tokenizer`'s vocabulary (GLM, Gemma 2, Qwen)."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _qwen_text(tokenizer: Any) -> dict[str, Any]:
    """`_text_model` with Qwen's start and end tokens."""
    token = tokenizer.convert_tokens_to_ids
    return {**_text_model(tokenizer), "bos_token_id": token("<|endoftext|>"), "eos_token_id": token("<|im_end|>")}


QWEN_CHAT = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The part of Qwen's chat template a text-to-image pipeline uses: each message, then the assistant's turn."""


def qwen_tokenizer(chat: bool = False) -> Any:
    """A Qwen-style tokenizer: Qwen's special tokens, padding on the right; with `chat`, `QWEN_CHAT` as its template.

    Z-Image applies a chat template to every prompt.
    """
    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>")  # fmt: skip
    options = {"chat_template": QWEN_CHAT} if chat else {}
    return _byte_bpe(
        specials, (), 32768, pad_token="<|endoftext|>", eos_token="<|im_end|>", additional_special_tokens=specials[1:],
        **options,
    )  # fmt: skip


def glm_tokenizer() -> Any:
    """A GLM-4-style tokenizer: ``[gMASK]<sop>`` first, padding on the left, as CogView4's is."""
    return _byte_bpe(
        ("<|endoftext|>", "[gMASK]", "<sop>"), ("[gMASK]", "<sop>"), 1024, pad_token="<|endoftext|>",
        eos_token="<|endoftext|>", additional_special_tokens=["[gMASK]", "<sop>"], padding_side="left",
    )  # fmt: skip


def _byte_bpe(specials: tuple[str, ...], first: tuple[str, ...], max_length: int, **options: Any) -> Any:
    """A byte-level BPE tokenizer with no merges: every byte a token, then `specials`, `first` before every text.

    Written to ``tokenizer.json`` and loaded back as `PreTrainedTokenizerFast`, as a saved LLM
    tokenizer is; `options` are its special tokens and settings.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: index for index, symbol in enumerate(_bytes_to_unicode().values())}
    for special in specials:
        vocab[special] = len(vocab)
    model = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    if first:
        model.post_processor = processors.TemplateProcessing(
            single=" ".join((*first, "$A")), special_tokens=[(token, vocab[token]) for token in first]
        )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, **options)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return PreTrainedTokenizerFast.from_pretrained(folder, model_max_length=max_length)


def unigram_tokenizer() -> Any:
    """A T5-style Unigram tokenizer (SentencePiece's ``▁`` word marks), its vocabulary written here: ASCII characters.

    Written to ``tokenizer.json`` and loaded back as `T5TokenizerFast`, as a saved T5 tokenizer is.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(chr(code), -3.0) for code in range(33, 127)] + [("▁" + chr(code), -2.5) for code in range(33, 127)]
    model = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    model.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    model.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    model.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = T5TokenizerFast(
        tokenizer_object=model, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0
    )
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return T5TokenizerFast.from_pretrained(folder, model_max_length=512)


def byte_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every byte is a token, written to vocab.json and merges.txt."""
    from transformers import CLIPTokenizer

    vocab = byte_vocabulary()
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as folder:
        vocab_file = Path(folder, "vocab.json")
        merges_file = Path(folder, "merges.txt")
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=_MAX_TOKENS)
        tokenizer.save_pretrained(folder)  # load it back from disk: what from_pretrained will do later
        return CLIPTokenizer.from_pretrained(folder)


def byte_vocabulary() -> dict[str, int]:
    """CLIP's byte-level symbols, each alone and as a word's last symbol (``</w>``): 512 tokens."""
    symbols = list(_bytes_to_unicode().values())
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab.update({symbol + "</w>": len(symbols) + index for index, symbol in enumerate(symbols)})
    return vocab


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which CLIP's byte-level BPE uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))
