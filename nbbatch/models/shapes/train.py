"""Train the built-in model ``nbbatch:shapes`` from scratch on the CPU, deterministically.

    python -m nbbatch.models.shapes.train --out nbbatch/models/shapes/weights

The model is a plain diffusers `StableDiffusionPipeline` (CLIP tokenizer and text encoder,
UNet, AutoencoderKL, Euler scheduler with v-prediction) whose latent space is designed
rather than learned, because a learned one did not let the layout follow the noise
(shared/SHAPES-PROBE.md). Its 9 latent channels at 16x16 are:

- 0: a soft, blurred mask of the shape (where it is and how big);
- 1-3: the shape's RGB, 4-6: the background's RGB, each constant over the picture;
- 7-8: a code of the shape's kind (circle, square, triangle), constant over the picture.

Colour and kind are global, like the words that ask for them, and position lives in one
channel of its own: so the same starting noise keeps the shape in place when only a
colour word changes (refine), and the decoder draws a crisp circle, square or triangle
of the coded kind where the blob is (it is trained on blobs of a random kind's outline).
Three phases, each a fixed number of steps from a fixed seed (so the same command on the
same machine gives the same weights):

1. the VAE decoder learns to draw pictures from designed latents (with noise added, so
   that it forgives a slightly-off latent from the sampler); ``--decoder-from`` starts it
   from an earlier run's decoder (the shipped one was trained in two such stages);
2. the VAE encoder learns to produce the designed latents from pictures (img2img);
3. the UNet and the text encoder learn to denoise designed latents given the caption
   (v-prediction, 10% empty captions for classifier-free guidance, EMA weights).

A loss curve is written to ``training-log.csv`` in the output folder as it goes.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import AttnProcessor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from nbbatch.models.shapes.data import COLOURS, SHAPES, SIZE, Batch, render, sample

LATENT_SIZE = SIZE // 4
LATENT_CHANNELS = 9
MASK_SCALE = 1.5  # the mask channel spans +-1.5: position is what the loss should weigh most
BLUR_SIGMA = 0.8  # latent pixels
FRAME_WEIGHT = 5  # the decoder's loss on the picture's outer two pixels, against 1 inside
EDGE_WEIGHT = 4.0  # the decoder's loss within two pixels of the shape's edge (times the frame's)
GUIDANCE_OVERSHOOT = 2.5  # the largest factor by which the decoder's training latents are pushed past the designed
GUIDED_RANGE = (1.0, 8.0)  # the guidance scales at which the decoder's guided latents are sampled
GUIDED_STEPS = (12, 20, 30)  # and their step counts, one per sampling batch
_FIELDS = [field.name for field in fields(Batch)]
SPECKLE = 0.1  # coverage below this is the sampler's leftover noise (designed latents: sizes 1.5% off on average)
_KIND_AREA = (math.pi, 4.0, 2.0)  # a circle's, a square's and a triangle's area over its half size squared
SHAPE_CODES = torch.tensor([[math.cos(a), math.sin(a)] for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)])
WORDS = ("a", "on", "background", *COLOURS, *SHAPES)
EMPTY_CAPTIONS = 0.1
_TRAIN_BETAS = dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000)


def design_latents(batch: Batch) -> torch.Tensor:
    """The designed latents of a batch of pictures: (n, 9, 16, 16), see the module's docstring."""
    coverage = F.avg_pool2d(batch.masks, SIZE // LATENT_SIZE)
    radius = 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * BLUR_SIGMA**2))
    kernel = kernel / kernel.sum()
    blob = F.conv2d(F.pad(coverage, (radius,) * 4, mode="replicate"), kernel.view(1, 1, 1, -1))
    blob = F.conv2d(blob, kernel.view(1, 1, -1, 1))
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255 * 2 - 1
    constants = torch.cat([palette[batch.colour], palette[batch.background], SHAPE_CODES[batch.shape]], dim=1)
    fields = constants[:, :, None, None].expand(-1, -1, LATENT_SIZE, LATENT_SIZE)
    return torch.cat([MASK_SCALE * (2 * blob - 1), fields], dim=1)


def estimate_layout(mask: torch.Tensor, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (n, 2) and half sizes (n,) in pixels of the shapes whose latent mask channels are `mask` (n, 16, 16).

    The inverse of `design_latents` for place and size: the channel's coverage (clamped, as
    guidance pushes it past its range, and below `SPECKLE` taken as the sampler's leftover
    noise) gives the area, which with the kind (`shape`) gives
    the half size, and its centroid gives the centre (an upright triangle's centroid lies a
    third of its half size below its box's centre).
    """
    coverage = (mask / MASK_SCALE + 1).div(2).clamp(0, 1)
    coverage = torch.where(coverage < SPECKLE, 0.0, coverage)
    scale = SIZE / LATENT_SIZE
    area = coverage.sum(dim=(1, 2)).clamp_min(1e-3) * scale**2
    half = (area / torch.tensor(_KIND_AREA)[shape]).sqrt()
    axis = (torch.arange(LATENT_SIZE, dtype=torch.float32) + 0.5) * scale
    total = coverage.sum(dim=(1, 2)).clamp_min(1e-3)
    x = (coverage * axis[None, None, :]).sum(dim=(1, 2)) / total
    y = (coverage * axis[:, None]).sum(dim=(1, 2)) / total - (shape == 2).float() * half / 3
    return torch.stack([x, y], dim=1), half


def guided_pool(source: Path, count: int, seed: int) -> tuple[torch.Tensor, Batch]:
    """`count` latents that `source`'s sampler makes at guidance scales across `GUIDED_RANGE`, and their pictures.

    Guidance does more than push the latents past the designed ones: at 5 to 7 the blob's
    outline takes bumps and corners and its colour fields ripple, and a decoder that only
    saw designed latents draws those (shape kind right in 57% of pictures at guidance 5).
    The picture each should have given is the asked kind and colours drawn at the place
    and size of its blob (`estimate_layout`): the decoder learns to draw that from what the
    sampler really gives.
    """
    pipe = StableDiffusionPipeline.from_pretrained(source, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed + 5)
    latents, batches = [], []
    for index in range(0, count, 16):
        asked = sample(min(16, count - index), generator)
        guidance = GUIDED_RANGE[0] + (GUIDED_RANGE[1] - GUIDED_RANGE[0]) * torch.rand(1, generator=generator).item()
        steps = GUIDED_STEPS[int(torch.randint(len(GUIDED_STEPS), (1,), generator=generator))]
        seeds = torch.randint(2**31, (len(asked.shape),), generator=generator).tolist()
        made = (
            pipe(
                asked.captions(),
                guidance_scale=guidance,
                num_inference_steps=steps,
                height=SIZE,
                width=SIZE,
                generator=[torch.Generator().manual_seed(s) for s in seeds],
                output_type="latent",
            ).images
            / pipe.vae.config.scaling_factor
        )
        centre, half = estimate_layout(made[:, 0], asked.shape)
        latents.append(made)
        batches.append(render(asked.shape, asked.colour, asked.background, centre, half))
    pictures = Batch(*(torch.cat([getattr(b, name) for b in batches]) for name in _FIELDS))
    return torch.cat(latents), pictures


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is the bytes plus one token for each caption word.

    The merges are found by running the BPE on each word and adding the merge of its first
    pair until the word is one token, so the words encode whole (naive merges split some).
    """
    from nbbatch.models.tiny import byte_vocabulary

    vocab = byte_vocabulary()
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        while len(parts := _bpe(word, merges)) > 1:
            merges.append((parts[0], parts[1]))
            vocab.setdefault(parts[0] + parts[1], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
        Path(folder, "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(str(Path(folder, "vocab.json")), str(Path(folder, "merges.txt")), model_max_length=77)
        tokenizer.save_pretrained(folder)
        tokenizer = CLIPTokenizer.from_pretrained(folder)
    for word in WORDS:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(f"the tokenizer splits {word!r} into {ids}")
    return tokenizer


def _bpe(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """CLIP's BPE of one lower-case ASCII word under `merges` (earlier merges first)."""
    parts = [*word[:-1], word[-1] + "</w>"]
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(itertools.pairwise(parts))]
        rank, i = min(pairs)
        if rank == math.inf:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def build_models(tokenizer: CLIPTokenizer) -> tuple[AutoencoderKL, CLIPTextModel, UNet2DConditionModel]:
    """The untrained VAE, text encoder and UNet (their sizes are the model card's)."""
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=SIZE,
        scaling_factor=1.0,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_hidden_layers=3,
            max_position_embeddings=77,
            projection_dim=64,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    return vae, text_encoder, unet


def _schedule(steps: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 5% of the learning rate."""
    return lambda step: min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))


def _batches(size: int, seed: int) -> Iterator[Batch]:
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield sample(size, generator)


class _Log:
    """Appends (phase, step, loss, seconds) rows to a CSV file and prints a line now and then."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["phase", "step", "loss", "seconds"])
        self.start = time.monotonic()

    def __call__(self, phase: str, step: int, total: int, loss: float) -> None:
        seconds = time.monotonic() - self.start
        self.writer.writerow([phase, step, f"{loss:.6f}", f"{seconds:.1f}"])
        if step % 250 == 0 or step == total:
            self.file.flush()
            print(f"{phase} {step}/{total} loss {loss:.5f} ({seconds / 60:.1f} min)", flush=True)


def train_decoder(
    vae: AutoencoderKL,
    steps: int,
    batch: int,
    seed: int,
    log: _Log,
    edge_weight: float = EDGE_WEIGHT,
    guided: tuple[torch.Tensor, Batch] | None = None,
) -> None:
    """Phase 1: the decoder draws pictures from designed latents, softened and noised at random.

    The sampler's latents are a little blurrier and noisier than the designed ones: the
    decoder learns to draw the crisp shape of the coded kind from such a blob. The blob's
    outline is that of a kind drawn at random (same place and size), never told by the
    code: so the decoder takes the kind from the code (channels 7-8, which the UNet gets
    right) and only the place and size from the blob (whose outline the UNet draws less
    well: a square with bowed sides). Guidance pushes the sampler's latents past the
    designed ones (a colour field at 1.6 where the palette ends at 1): half the latents
    are scaled away from the colours' mean by up to `GUIDANCE_OVERSHOOT`, with the true
    picture as the target. The outer two pixels weigh
    `FRAME_WEIGHT` times more in the loss: zero padding leaves stray pixels in the
    corners otherwise, which read as part of the shape; the pixels within two of the
    shape's edge weigh `edge_weight` times more, for crisp corners. With a `guided` pool
    (`guided_pool`: the sampler's own latents and the pictures they should give), the
    second half of every batch is drawn from it.
    """
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    optimiser = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(steps, 200))
    generator = torch.Generator().manual_seed(seed + 1)
    centre = torch.zeros(1, LATENT_CHANNELS, 1, 1)  # the colour fields' mean: what guidance pushes away from
    centre[0, 1:7, 0, 0] = (torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255 * 2 - 1).mean(0).repeat(2)
    weights = torch.full((SIZE, SIZE), float(FRAME_WEIGHT))
    weights[2:-2, 2:-2] = 1.0
    for step, data in zip(range(1, steps + 1), _batches(batch, seed)):
        outline = torch.randint(len(SHAPES), (batch,), generator=generator)
        blob = design_latents(render(outline, data.colour, data.background, data.centre, data.half))[:, :1]
        latents = torch.cat([blob, design_latents(data)[:, 1:]], dim=1)
        softer = F.avg_pool2d(latents[:, :1], 3, stride=1, padding=1, count_include_pad=False)
        blend = torch.rand(batch, 1, 1, 1, generator=generator)
        latents = torch.cat([latents[:, :1] + blend * (softer - latents[:, :1]), latents[:, 1:]], dim=1)
        noise_level = 0.1 * torch.rand(batch, 1, 1, 1, generator=generator)
        latents = latents + noise_level * torch.randn(latents.shape, generator=generator)
        overshoot = torch.rand(batch, 1, 1, 1, generator=generator) < 0.5
        scale = 1 + (GUIDANCE_OVERSHOOT - 1) * torch.rand(batch, 1, 1, 1, generator=generator) * overshoot
        latents = centre + scale * (latents - centre)
        if guided is not None:
            take = torch.randint(len(guided[0]), (batch // 2,), generator=generator)
            latents = torch.cat([latents[: batch - batch // 2], guided[0][take]])
            data = Batch(
                *(
                    torch.cat([getattr(data, name)[: batch - batch // 2], getattr(guided[1], name)[take]])
                    for name in _FIELDS
                )
            )
        decoded = vae.decode(latents).sample
        inside = (data.masks > 0.5).float()
        band = F.max_pool2d(inside, 5, 1, 2) - (-F.max_pool2d(-inside, 5, 1, 2))  # dilated minus eroded
        w = weights * (1 + (edge_weight - 1) * band)
        loss = (w * (decoded - (data.images * 2 - 1)).abs()).sum() / (w.sum() * 3)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        log("decoder", step, steps, loss.item())


def train_encoder(vae: AutoencoderKL, steps: int, batch: int, seed: int, log: _Log) -> None:
    """Phase 2: the encoder's mean is the designed latent; its variance is made negligible afterwards."""
    params = [*vae.encoder.parameters(), *vae.quant_conv.parameters()]
    optimiser = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(steps, 200))
    for step, data in zip(range(1, steps + 1), _batches(batch, seed + 2)):
        moments = vae.quant_conv(vae.encoder(data.images * 2 - 1))
        loss = F.mse_loss(moments[:, :LATENT_CHANNELS], design_latents(data))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        log("encoder", step, steps, loss.item())
    with torch.no_grad():  # log-variance -30 (the clamp's floor): encoding is deterministic in effect
        vae.quant_conv.weight[LATENT_CHANNELS:] = 0
        vae.quant_conv.bias[LATENT_CHANNELS:] = -30


def train_denoiser(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    steps: int,
    batch: int,
    seed: int,
    log: _Log,
) -> None:
    """Phase 3: the UNet and the text encoder learn to denoise designed latents (v-prediction, EMA)."""
    noise_scheduler = DDPMScheduler(prediction_type="v_prediction", **_TRAIN_BETAS)
    params = [*unet.parameters(), *text_encoder.parameters()]
    ema = [p.detach().clone() for p in params]
    optimiser = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(steps, 500))
    generator = torch.Generator().manual_seed(seed + 3)
    for step, data in zip(range(1, steps + 1), _batches(batch, seed + 4)):
        latents = design_latents(data)
        captions = [
            "" if drop else text
            for text, drop in zip(data.captions(), (torch.rand(batch, generator=generator) < EMPTY_CAPTIONS).tolist())
        ]
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
        states = text_encoder(ids.input_ids).last_hidden_state
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, encoder_hidden_states=states).sample
        loss = F.mse_loss(prediction, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        scheduler.step()
        decay = min(0.999, (1 + step) / (10 + step))
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        log("denoiser", step, steps, loss.item())
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)


_HALVES = {"decoder": ("decoder", "post_quant_conv"), "encoder": ("encoder", "quant_conv")}


def _take_half(vae: AutoencoderKL, source: AutoencoderKL, half: str) -> None:
    """Copy `vae`'s decoder or encoder (`half`, with the 1x1 convolution beside it) from another VAE, `source`."""
    for name in _HALVES[half]:
        getattr(vae, name).load_state_dict(getattr(source, name).state_dict())


def train(
    out: Path,
    *,
    decoder_steps: int,
    encoder_steps: int,
    denoiser_steps: int,
    batches: tuple[int, int, int] = (16, 32, 64),
    seed: int = 0,
    threads: int = 2,
    reuse: tuple[str, ...] = (),
    reuse_from: Path | None = None,
    decoder_from: Path | None = None,
    edge_weight: float = EDGE_WEIGHT,
    guided_from: Path | None = None,
    guided: int = 1536,
) -> StableDiffusionPipeline:
    """Train the three phases (`batches`: their batch sizes), save the pipeline into `out` (fp16), return it (fp32).

    The phases share nothing but their starting weights (each has its own generators,
    parameters and the designed latents as targets), so a phase named in `reuse` can be
    taken from `reuse_from`, a pipeline trained with the same seed and that phase's steps
    and batch: its weights are what training the phase again would give, and its log rows
    are copied. This lets one phase be retrained alone. `decoder_from` starts the decoder
    from an earlier run's instead of from scratch (a fine-tune); `guided_from` names a
    pipeline whose sampler makes `guided` latents for the decoder to learn from
    (`guided_pool`).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    vae, text_encoder, unet = build_models(tokenizer)
    for model in (vae, unet):
        model.set_attn_processor(AttnProcessor())  # faster than SDPA's backward on the CPU
    log = _Log(out / "training-log.csv")
    steps = {"decoder": (decoder_steps, batches[0]), "encoder": (encoder_steps, batches[1])}
    steps["denoiser"] = (denoiser_steps, batches[2])
    earlier = _earlier_run(reuse_from, reuse, seed, steps, log)
    if "decoder" in reuse:
        _take_half(vae, earlier["vae"], "decoder")
    else:
        if decoder_from is not None:  # a fine-tune: the decoder starts from an earlier run's
            _take_half(vae, AutoencoderKL.from_pretrained(decoder_from / "vae", dtype=torch.float32), "decoder")
        pool = guided_pool(guided_from, guided, seed) if guided_from is not None else None
        train_decoder(vae, decoder_steps, batches[0], seed, log, edge_weight, pool)
    if "encoder" in reuse:
        _take_half(vae, earlier["vae"], "encoder")
    else:
        train_encoder(vae, encoder_steps, batches[1], seed, log)
    if "denoiser" in reuse:
        unet, text_encoder = earlier["unet"], earlier["text_encoder"]
    else:
        train_denoiser(unet, text_encoder, tokenizer, denoiser_steps, batches[2], seed, log)
    log.file.close()
    scheduler = EulerDiscreteScheduler(
        prediction_type="v_prediction", timestep_spacing="trailing", steps_offset=1, **_TRAIN_BETAS
    )
    from nbbatch.models.tiny import assemble

    pipe = assemble(vae, unet, tokenizer, text_encoder, scheduler=scheduler)
    pipe.to(torch.float16).save_pretrained(out)
    meta = dict(
        seed=seed,
        batches=batches,
        decoder_steps=decoder_steps,
        encoder_steps=encoder_steps,
        denoiser_steps=denoiser_steps,
        threads=threads,
        reused={phase: str(reuse_from) for phase in reuse},
        decoder_from=str(decoder_from) if decoder_from else None,
        edge_weight=edge_weight,
        guided_from=str(guided_from) if guided_from else None,
        guided=guided if guided_from else 0,
        minutes=round((time.monotonic() - log.start) / 60, 1),
        torch=torch.__version__,
    )
    (out / "training.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return pipe.to(torch.float32)


PHASES = ("decoder", "encoder", "denoiser")


def _earlier_run(
    folder: Path | None, phases: tuple[str, ...], seed: int, steps: dict[str, tuple[int, int]], log: _Log
) -> dict[str, Any]:
    """The models of an earlier run for the phases to reuse, after checking their settings; copies their log rows."""
    if not phases:
        return {}
    if folder is None or not set(phases) <= set(PHASES):
        raise ValueError(f"reuse needs a folder and phases among {PHASES}, not {phases} from {folder}")
    meta = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    for phase in phases:
        if (meta["seed"], meta[f"{phase}_steps"], meta["batches"][PHASES.index(phase)]) != (seed, *steps[phase]):
            raise ValueError(f"{folder} trained the {phase} with other settings: {meta}")
    with (folder / "training-log.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            if row["phase"] in phases:
                log.writer.writerow([row["phase"], row["step"], row["loss"], row["seconds"]])
    return {
        "vae": AutoencoderKL.from_pretrained(folder / "vae", dtype=torch.float32),
        "unet": UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32),
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32),
    }


def main(argv: list[str] | None = None) -> None:
    """The command line: ``python -m nbbatch.models.shapes.train --out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to save the pipeline into")
    parser.add_argument("--decoder-steps", type=int, default=3000)
    parser.add_argument("--encoder-steps", type=int, default=800)
    parser.add_argument("--denoiser-steps", type=int, default=2000)
    parser.add_argument("--batches", type=int, nargs=3, default=(16, 32, 64), help="batch size of each phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse", nargs="*", default=(), choices=PHASES, help="phases to take from --reuse-from")
    parser.add_argument("--reuse-from", type=Path, help="an earlier run with the same settings for those phases")
    parser.add_argument("--decoder-from", type=Path, help="start the decoder from this run's (a fine-tune)")
    parser.add_argument("--edge-weight", type=float, default=EDGE_WEIGHT, help="decoder loss near the shape's edge")
    parser.add_argument("--guided-from", type=Path, help="a pipeline whose guided latents the decoder also learns")
    parser.add_argument("--guided", type=int, default=1536, help="how many guided latents to make (default 1536)")
    args = parser.parse_args(argv)
    train(
        args.out,
        decoder_steps=args.decoder_steps,
        encoder_steps=args.encoder_steps,
        denoiser_steps=args.denoiser_steps,
        batches=tuple(args.batches),
        seed=args.seed,
        threads=args.threads,
        reuse=tuple(args.reuse),
        reuse_from=args.reuse_from,
        decoder_from=args.decoder_from,
        edge_weight=args.edge_weight,
        guided_from=args.guided_from,
        guided=args.guided,
    )


if __name__ == "__main__":
    main()
