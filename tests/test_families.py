"""Model families beyond SD: every feature on each family's tiny pipeline, equal to raw diffusers within one level.

The tiny pipelines have their family's latent channels, VAE scaling and scheduler: ``nbbatch:tiny-flux`` FLUX.1-dev's
(dynamic shift, ``mu`` from the image's size, embedded guidance), ``nbbatch:tiny-flux-schnell`` a static shift and no
guidance, ``nbbatch:tiny-sd3`` SD3.5's (three text encoders, unpacked latents), ``nbbatch:tiny-chroma`` Chroma's (T5
alone, packed latents, real CFG), ``nbbatch:tiny-cogview4`` CogView4's (a GLM encoder that pads every prompt to the
batch's longest with no mask, its own shift rule, float32 noise, no image-to-image pipeline),
``nbbatch:tiny-qwen-image`` Qwen-Image's (a Qwen2.5-VL encoder, packed latents, its own VAE and shift, CFG as
``true_cfg_scale``), ``nbbatch:tiny-z-image`` Z-Image's (a Qwen3 encoder under a chat template, float32 noise),
``nbbatch:tiny-flux2-klein`` FLUX.2 Klein's (a Qwen3 encoder read at three depths, noise drawn as 2x2 patches, no
negative prompt, no image-to-image: it edits from a reference picture), ``nbbatch:tiny-lumina2`` Lumina 2's (Gemma 2
under its system prompt, no image-to-image pipeline), ``nbbatch:tiny-hidream`` HiDream-I1's (two CLIPs, T5 and a Llama
read at every layer, a mixture-of-experts transformer, every size drawn at its 128 px area, loaded with
`DiffusionPipeline`). Each test is named by the feature and parametrized by the family, so a failure says which cell
of the matrix broke.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import diffusers
import pytest
import torch
from conftest import direct_call, max_difference
from test_code import run_codes

import nbbatch
from nbbatch.core.seeds import slerp
from nbbatch.formats.png import a1111_parameters
from nbbatch.models.tiny import builtin_path


@dataclass(frozen=True)
class Case:
    model: str
    pipeline: str
    image_to_image: str | None
    negative: bool = True
    refusal: str = "^FLUX.1 ignores a negative prompt without true CFG"
    """The one-line refusal of a negative prompt, where the family has none (`negative` False)."""
    guidance: bool = True
    cfg: str = "guidance_scale"
    """The call argument nbbatch's guidance sets (Qwen-Image's CFG is ``true_cfg_scale``)."""
    long: str = ""
    """A long prompt the family reads whole (default `LONG`)."""
    raw: tuple[tuple[str, str], ...] = ()
    """What a raw call adds to do what nbbatch does by default (Qwen-Image: an empty negative turns its CFG on)."""
    noise: tuple[int, ...] = (1, 16, 8, 8)
    """One image's starting noise at 64x64 (16 latent channels at 1/8; PixArt-Σ: 4 channels of its 256 px bin)."""
    lora: bool = True
    weights: bool = False
    """Whether A1111 weights are read (FLUX.1's, Chroma's, PixArt-Σ's and AuraFlow's T5, SD3's three encoders)."""


CASES = {
    "flux-dev": Case("nbbatch:tiny-flux", "FluxPipeline", "FluxImg2ImgPipeline", negative=False, weights=True),
    "flux-schnell": Case(
        "nbbatch:tiny-flux-schnell", "FluxPipeline", "FluxImg2ImgPipeline", negative=False, guidance=False, weights=True
    ),
    "sd3": Case("nbbatch:tiny-sd3", "StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", weights=True),
    "chroma": Case("nbbatch:tiny-chroma", "ChromaPipeline", "ChromaImg2ImgPipeline", weights=True),
    "cogview4": Case("nbbatch:tiny-cogview4", "CogView4Pipeline", None),  # pads to the batch's longest prompt
    "qwen-image": Case(
        "nbbatch:tiny-qwen-image",
        "QwenImagePipeline",
        "QwenImageImg2ImgPipeline",
        cfg="true_cfg_scale",
        raw=(("negative_prompt", ""),),
    ),
    "flux2-klein": Case(
        "nbbatch:tiny-flux2-klein",
        "Flux2KleinPipeline",
        None,
        negative=False,
        refusal="^FLUX.2 Klein reads no negative prompt: diffusers' Flux2KleinPipeline guides against an empty one",
        noise=(1, 128, 4, 4),  # 2x2 patches of 32 channels, at 1/16
    ),  # no image-to-image: a picture is a reference it edits from
    "z-image": Case("nbbatch:tiny-z-image", "ZImagePipeline", "ZImageImg2ImgPipeline"),
    "lumina2": Case("nbbatch:tiny-lumina2", "Lumina2Pipeline", None, long="a small blue dog in a green park"),
    "pixart": Case("nbbatch:tiny-pixart", "PixArtSigmaPipeline", None, noise=(1, 4, 32, 32), lora=False, weights=True),
    "auraflow": Case("nbbatch:tiny-auraflow", "AuraFlowPipeline", None, noise=(1, 4, 8, 8), weights=True),  # SDXL's VAE
    "sana": Case("nbbatch:tiny-sana", "SanaPipeline", None, noise=(1, 8, 16, 16)),  # its 512 px bin, at 1/32
    "hidream": Case(
        "nbbatch:tiny-hidream",
        "HiDreamImagePipeline",
        None,
        long="a very long prompt about a small blue dog running through a green park on a sunny day",  # 128 tokens
        noise=(1, 16, 128, 128),  # at 128 px whatever the size asked: its pipeline keeps (128 x its VAE's scale)²
    ),
}
SIZE = {"steps": 2, "width": 64, "height": 64}
SIZE64 = {"width": 64, "height": 64}
RAW = {"num_inference_steps": 2, "width": 64, "height": 64}
LONG = "a very long prompt about a small blue dog running through a green park on a sunny day, " * 3


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


def raw_pipeline(model: str):
    """diffusers' own pipeline of a built-in model (or a folder), with no nbbatch code in it."""
    from diffusers import DiffusionPipeline

    source = builtin_path(model) if model.startswith("nbbatch:") else model
    pipe = DiffusionPipeline.from_pretrained(str(source), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_batch_of_prompts_of_other_lengths_and_sizes_equals_diffusers_alone(case):
    negative = {"negative_prompt": "blurry"} if case.negative else {}
    made = nbbatch.generate(["a red cat", case.long or LONG], [1, 2], model=case.model, **SIZE, **negative)
    assert [item.call.pipeline for item in made] == [case.pipeline] * 4
    for item in made:
        alone = direct_call(case.model, item.prompt, item.seed, **RAW, **{**dict(case.raw), **negative})
        assert max_difference(item.image, alone) <= 1, (item.prompt[:20], item.seed)
    wide = nbbatch.generate("a red cat", [3], model=case.model, steps=2, width=128, height=64)[0]  # another mu
    expected = direct_call(case.model, "a red cat", 3, num_inference_steps=2, width=128, height=64, **dict(case.raw))
    assert max_difference(wide.image, expected) <= 1


def test_refine_keeps_the_starting_noise(case):
    made = nbbatch.generate("a red cat", [4, 5], model=case.model, **SIZE)
    refined = made.refine(5, "a green cat")[0]
    assert refined.label == "seed 5 · r1"
    assert max_difference(refined.image, direct_call(case.model, "a green cat", 5, **RAW, **dict(case.raw))) <= 1
    assert made.verify(4) <= 1


def test_vary_is_the_family_s_own_image_to_image_pipeline(case):
    made = nbbatch.generate("a red cat", [1], model=case.model, **SIZE)
    if case.image_to_image is None:
        refused = r"has no image-to-image pipeline in diffusers: (--image, )?vary and hires"
        with pytest.raises(ValueError, match=refused):
            made.vary(1, seeds=[7], strength=0.6)
        return
    varied = made.vary(1, seeds=[7], strength=0.6)[0]
    assert varied.call.pipeline == case.image_to_image and varied.image.size == (64, 64), "the picture's size"
    pipe = getattr(diffusers, case.image_to_image).from_pipe(raw_pipeline(case.model))
    expected = pipe(
        "a red cat",
        image=made[0].image,
        strength=0.6,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(7),
        **({"width": 64, "height": 64} if "height" in inspect.signature(pipe.__call__).parameters else {}),
        **dict(case.raw),
    ).images[0]
    assert max_difference(varied.image, expected) <= 1


def test_variation_seeds_blend_the_noise_as_diffusers_takes_it(case):
    from diffusers.utils.torch_utils import randn_tensor

    plain = nbbatch.generate("a red cat", [2], model=case.model, **SIZE)[0]
    none = nbbatch.generate("a red cat", [2], model=case.model, variation_seed=9, variation_strength=0.0, **SIZE)[0]
    assert max_difference(plain.image, none.image) <= 1
    half = nbbatch.generate("a red cat", [2], model=case.model, variation_seed=9, variation_strength=0.5, **SIZE)[0]
    pipe = raw_pipeline(case.model)
    shape = case.noise
    own, other = (randn_tensor(shape, generator=torch.Generator().manual_seed(s)) for s in (2, 9))
    latents = slerp(0.5, own, other)
    if len(inspect.signature(getattr(pipe, "_pack_latents", lambda x: x)).parameters) > 1:
        latents = pipe._pack_latents(latents, *shape)  # FLUX.1, Chroma and Qwen-Image take 2x2 patches as tokens
    expected = pipe(prompt="a red cat", latents=latents, **RAW, **dict(case.raw)).images[0]
    assert max_difference(half.image, expected) <= 1
    assert max_difference(half.image, plain.image) > 1


def test_save_load_and_reproduce_make_the_same_pixels(case, tmp_path):
    made = nbbatch.generate("a red cat", [3], model=case.model, **SIZE)
    (path,) = made.save(tmp_path / "plain", grid=False)
    again = nbbatch.reproduce(path)[0]
    assert max_difference(again.image, made[0].image) == 0 and again.call.pipeline == case.pipeline


def test_the_code_export_of_every_family_remakes_its_pictures_with_diffusers_alone(tmp_path):
    expected, codes = {}, {}
    for name, case in CASES.items():  # one fresh python for all: starting one takes seconds
        made = nbbatch.generate("a red cat", [3], model=case.model, **SIZE)
        varied = nbbatch.generate("a red cat", [3], model=case.model, variation_seed=9, variation_strength=0.4, **SIZE)
        for kind, result in (("plain", made), ("variation", varied)):
            expected[f"{name}-{kind}"], codes[f"{name}-{kind}"] = result[0].image, result.code(3)
    pictures = run_codes(codes, tmp_path)
    assert {name: max_difference(pictures[name], image) for name, image in expected.items()} == dict.fromkeys(
        expected, pytest.approx(0, abs=1)
    )


def test_a_guidance_grid_changes_the_picture_and_each_cell_equals_diffusers(case):
    if not case.guidance:
        with pytest.raises(ValueError, match=r"^this FLUX.1 model has no guidance: its transformer embeds none"):
            nbbatch.generate("a red cat", [1], model=case.model, x=("guidance", [1.0, 30.0]), **SIZE)
        made = nbbatch.generate("a red cat", [1], model=case.model, **SIZE)[0]
        assert made.call.guidance_scale is None, "an unused guidance is not recorded"
        return
    grid = nbbatch.generate("a red cat", [1], model=case.model, x=("guidance", [1.0, 30.0]), **SIZE)
    assert [getattr(item.call, case.cfg) for item in grid] == [1.0, 30.0]
    assert max_difference(grid[0].image, grid[1].image) > 1
    for item in grid:
        scale = {case.cfg: getattr(item.call, case.cfg)}
        expected = direct_call(case.model, "a red cat", 1, **scale, **RAW, **dict(case.raw))
        assert max_difference(item.image, expected) <= 1


def test_what_the_family_would_ignore_is_refused_in_one_line(case):
    if case.weights:
        refusals = [
            (
                "a red cat BREAK a blue sky",
                {},
                r"^BREAK splits CLIP's 75-token windows; (FLUX.1|SD3|Chroma|PixArt-Σ|AuraFlow) reads one",
            )
        ]
    else:
        refusals = [
            (
                "a (red:1.3) cat",
                {},
                "^prompt weights are read on Stable Diffusion, SDXL, SD3, FLUX.1, Chroma, PixArt-Σ and AuraFlow "
                "pipelines;",
            )
        ]
    if not case.negative:
        refusals.append(("a red cat", {"negative_prompt": "blurry"}, case.refusal))
    for prompt, options, message in refusals:
        with pytest.raises(ValueError, match=message) as error:
            nbbatch.generate(prompt, [1], model=case.model, **SIZE, **options)
        assert "\n" not in str(error.value)


def _t5_compel(tokenizer, encoder, window, **options):
    """compel on a T5 encoder reading `window` tokens, built as its own docs build it."""
    import copy

    from compel import Compel

    tokenizer = copy.copy(tokenizer)
    tokenizer.model_max_length = window
    return Compel(tokenizer=tokenizer, text_encoder=encoder, **options), tokenizer


def flux_by_hand(pipe, weighted, plain):
    """FLUX.1: compel's own CompelForFlux (its T5 weighted, CLIP's pooled embedding of the plain text)."""
    from compel import CompelForFlux

    made = CompelForFlux(pipe)(weighted)
    return made.embeds, made.pooled_embeds, "pooled_prompt_embeds"


def sd3_by_hand(pipe, weighted, plain):
    """SD3: compel on each of the three encoders, joined as diffusers' encode_prompt joins them."""
    from compel import Compel, ReturnedEmbeddingsType

    states = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED  # what SD3 reads of its CLIPs
    clip_l = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, returned_embeddings_type=states)
    clip_g = Compel(tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2, returned_embeddings_type=states)
    t5, _ = _t5_compel(pipe.tokenizer_3, pipe.text_encoder_3, 256)  # SD3's default max_sequence_length
    sequences = [clip_l(weighted), clip_g(weighted), t5(weighted)]
    width = sequences[2].shape[-1] - sequences[0].shape[-1] - sequences[1].shape[-1]
    clip = torch.nn.functional.pad(torch.cat(sequences[:2], -1), (0, width))
    _, _, pooled, _ = pipe.encode_prompt(plain, None, None, do_classifier_free_guidance=False)
    return torch.cat([clip, sequences[2]], -2), pooled, "pooled_prompt_embeds"


def chroma_by_hand(pipe, weighted, plain):
    """Chroma: compel on its T5 with the padding masked; the mask of the tokens and one padding token."""
    compel, tokenizer = _t5_compel(pipe.tokenizer, pipe.text_encoder, 512, padding_attention_mask_value=0)
    read = tokenizer(plain, padding="max_length", truncation=True, return_tensors="pt").attention_mask.sum()
    return compel(weighted), (torch.arange(512)[None] <= read).float(), "prompt_attention_mask"


def auraflow_by_hand(pipe, weighted, plain):
    """AuraFlow: compel on its UMT5 with the padding masked, then zeroed; the mask spread over every feature."""
    compel, tokenizer = _t5_compel(pipe.tokenizer, pipe.text_encoder, 256, padding_attention_mask_value=0)
    kept = tokenizer(plain, padding="max_length", truncation=True, return_tensors="pt").attention_mask[..., None]
    embeds = compel(weighted) * kept
    return embeds, kept.expand(embeds.shape).reshape(1, -1), "prompt_attention_mask"


def pixart_by_hand(pipe, weighted, plain):
    """PixArt-Σ: compel on its T5 with the padding masked; the mask of the prompt's tokens (lowercase already)."""
    compel, tokenizer = _t5_compel(pipe.tokenizer, pipe.text_encoder, 300, padding_attention_mask_value=0)
    mask = tokenizer(plain, padding="max_length", truncation=True, return_tensors="pt").attention_mask
    return compel(weighted), mask, "prompt_attention_mask"


REAL_CFG = ("guidance", "guidance_scale", 30.0)
WEIGHTED = {
    "flux": ("nbbatch:tiny-flux", flux_by_hand, ("true_cfg", "true_cfg_scale", 50.0)),  # its guidance is distilled
    "sd3": ("nbbatch:tiny-sd3", sd3_by_hand, REAL_CFG),
    "chroma": ("nbbatch:tiny-chroma", chroma_by_hand, REAL_CFG),
    "auraflow": ("nbbatch:tiny-auraflow", auraflow_by_hand, REAL_CFG),
    "pixart": ("nbbatch:tiny-pixart", pixart_by_hand, REAL_CFG),
}
"""The families that read A1111 weights on their T5 (and SD3's CLIPs): their tiny model, the embeddings compel
gives by hand, and the CFG, strong enough that a weight shows on random weights (nbbatch's setting, diffusers')."""


@pytest.mark.parametrize(("model", "by_hand", "cfg"), WEIGHTED.values(), ids=WEIGHTED)
def test_weights_equal_compel_s_own_embeddings_given_to_diffusers_by_hand(model, by_hand, cfg):
    setting, argument, scale = cfg
    options = {setting: scale, "negative_prompt": "blurry", "steps": 4, **SIZE64}
    made = nbbatch.generate(["a (red:3) cat", "a red cat", "a (red:1.0) cat"], [1], model=model, **options)
    assert made[0].call.encoded_by == "compel" and made[1].call.encoded_by is None
    assert max_difference(made[0].image, made[1].image) > 1, "the weight changes the picture"
    assert max_difference(made[2].image, made[1].image) <= 1, "a weight of 1 is the plain prompt"
    pipe = raw_pipeline(model)

    def by_diffusers(negative_prompt: str):
        with torch.no_grad():  # compel's own syntax for (red:3)
            embeds, second, name = by_hand(pipe, "a (red)3 cat", "a red cat")
            negative, negative_second, _ = by_hand(pipe, negative_prompt, negative_prompt)
        return pipe(
            prompt_embeds=embeds,
            negative_prompt_embeds=negative,
            negative_prompt=None,
            **{name: second, f"negative_{name}": negative_second},
            **{argument: scale},
            generator=torch.Generator().manual_seed(1),
            num_inference_steps=4,
            **SIZE64,
        ).images[0]  # negative_prompt=None: PixArt-Σ's default, "", is refused beside embeddings

    assert max_difference(made[0].image, by_diffusers("blurry")) <= 1
    alone = nbbatch.generate("a (red:3) cat", [1], model=model, **options)[0]
    assert max_difference(alone.image, made[0].image) <= 1, "the same beside plain prompts as alone"
    bare = nbbatch.generate("a (red:3) cat", [1], model=model, **{**options, "negative_prompt": ""})[0]
    assert max_difference(bare.image, by_diffusers("")) <= 1, "no negative prompt: the empty prompt's embeddings"
    with pytest.raises(ValueError, match="diffusers alone cannot"):
        made[0].code()


def test_cogview4_short_prompt_beside_a_long_one_equals_it_alone_where_diffusers_batched_does_not():
    model = "nbbatch:tiny-cogview4"
    made = nbbatch.generate(["a red cat", LONG], [1], model=model, **SIZE)
    alone = direct_call(model, "a red cat", 1, **RAW)
    assert max_difference(made[0].image, alone) <= 1
    pipe = raw_pipeline(model)  # diffusers' own batch pads "a red cat" to the long prompt, unmasked
    generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)]
    batched = pipe(["a red cat", LONG], generator=generators, **RAW).images[0]
    assert max_difference(batched, alone) > 10


@pytest.mark.parametrize(
    ("kind", "factors"),
    [
        ("flux", "FLUX"),
        ("chroma", "FLUX"),
        ("sd3", "SD3"),
        ("z-image", "FLUX"),
        ("lumina2", "FLUX"),
        ("qwen-image", "WAN21"),
        ("pixart", "SDXL"),
        ("flux2-klein", "FLUX2"),
        ("hidream", "FLUX"),
    ],
)
def test_step_previews_map_the_family_s_latents_with_comfyui_s_factors(kind, factors, tmp_path, monkeypatch):
    """The last preview is the published factors applied to the latents the VAE decodes (unpacked where packed)."""
    from nbbatch.core import engine
    from nbbatch.models import previews

    monkeypatch.setattr(engine, "PREVIEW_EVERY", 0.0)  # a preview at every step
    folder = tmp_path / kind
    nbbatch.build_tiny_pipeline(kind).save_pretrained(folder)  # no nbbatch.json: the map comes from its VAE
    shown = []
    nbbatch.generate("a red cat", [1], model=str(folder), observer=nbbatch.Observer(preview=shown.append), **SIZE)
    assert [preview.step for preview in shown] == [1, 2]
    pipe = raw_pipeline(str(folder))
    latents = pipe(prompt="a red cat", generator=torch.Generator().manual_seed(1), output_type="latent", **RAW).images
    if latents.ndim == 3:  # packed: 16 channels of 8 x 8 in 2x2 patches
        latents = latents.view(1, 4, 4, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, 16, 8, 8)
    if kind == "flux2-klein":  # given back unpatched (32 x 8 x 8) and out of its batch norm, which starts at 0, 1
        latents = latents / torch.sqrt(torch.tensor(1.0 + pipe.vae.config.batch_norm_eps))
    mapping = previews.LatentMap(getattr(previews, f"{factors}_FACTORS"), getattr(previews, f"{factors}_BIAS"))
    (expected,) = mapping.images(latents, shown[-1].images[0].size)
    assert max_difference(shown[-1].images[0], expected) <= 1


def test_no_step_previews_for_a_latent_space_without_published_colours(tmp_path, monkeypatch):
    from nbbatch.core import engine

    monkeypatch.setattr(engine, "PREVIEW_EVERY", 0.0)
    folder = tmp_path / "cogview4"
    nbbatch.build_tiny_pipeline("cogview4").save_pretrained(folder)
    shown = []
    nbbatch.generate("a red cat", [1], model=str(folder), observer=nbbatch.Observer(preview=shown.append), **SIZE)
    assert shown == []


def test_a_lora_on_the_transformer_equals_diffusers_own_loader(case, tmp_path):
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    if not case.lora:
        with pytest.raises(ValueError, match=r"^loras: \w+ has no LoRA loader in diffusers$"):
            nbbatch.generate("a red cat", [1], model=case.model, loras=[(str(tmp_path / "x.safetensors"), 1)], **SIZE)
        return
    pipe = raw_pipeline(case.model)  # a random LoRA on the transformer, saved as diffusers saves one
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for name, parameter in pipe.transformer.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.transformer))
    type(pipe).save_lora_weights(str(tmp_path), transformer_lora_layers=layers, weight_name="style.safetensors")
    path = str(tmp_path / "style.safetensors")
    made = nbbatch.generate("a red cat", [1], model=case.model, loras=[(path, 0.7)], **SIZE)[0]
    assert made.call.loras[0].weight == 0.7

    def prepare(raw):
        raw.load_lora_weights(path, adapter_name="style")
        raw.set_adapters(["style"], adapter_weights=[0.7])

    raw = dict(case.raw)
    assert max_difference(made.image, direct_call(case.model, "a red cat", 1, prepare=prepare, **RAW, **raw)) <= 1
    plain = nbbatch.generate("a red cat", [1], model=case.model, **SIZE)[0]  # the LoRA off again
    assert max_difference(plain.image, direct_call(case.model, "a red cat", 1, **RAW, **raw)) <= 1
    assert max_difference(made.image, plain.image) > 1


def test_true_cfg_on_flux_is_diffusers_true_cfg_scale_with_the_negative_prompt_or_an_empty_one(tmp_path):
    model = "nbbatch:tiny-flux"
    made = nbbatch.generate("a red cat", [1, 2], model=model, true_cfg=2.5, negative_prompt="blurry", **SIZE)
    plain = nbbatch.generate("a red cat", [1], model=model, true_cfg=2.5, **SIZE)[0]
    for item in made:
        expected = direct_call(model, "a red cat", item.seed, true_cfg_scale=2.5, negative_prompt="blurry", **RAW)
        assert max_difference(item.image, expected) <= 1
    empty = direct_call(model, "a red cat", 1, true_cfg_scale=2.5, negative_prompt="", **RAW)
    assert max_difference(plain.image, empty) <= 1
    assert max_difference(plain.image, direct_call(model, "a red cat", 1, **RAW)) > 1, "the second pass ran"
    assert "CFG scale: 2.5, Distilled CFG Scale: 3.5" in a1111_parameters(made[0])
    path = made.save(tmp_path, grid=False)[0]
    assert max_difference(nbbatch.reproduce(path)[0].image, made[0].image) == 0
    pictures = run_codes({"negative": made.code(1), "empty": plain.code()}, tmp_path)
    assert max_difference(pictures["negative"], made[0].image) <= 1
    assert max_difference(pictures["empty"], plain.image) <= 1


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("nbbatch:tiny-sd3", r"^true_cfg is FLUX.1's real CFG beside its distilled guidance; for SD3 guidance is"),
        ("nbbatch:tiny-qwen-image", r"for Qwen-Image guidance is its CFG \(true_cfg_scale\)"),
    ],
)
def test_true_cfg_where_guidance_is_already_real_cfg_is_refused_in_one_line(model, message):
    with pytest.raises(ValueError, match=message):
        nbbatch.generate("a red cat", [1], model=model, true_cfg=3.0, **SIZE)


def test_a_negative_prompt_on_flux_works_with_true_cfg_and_is_refused_without():
    with pytest.raises(ValueError, match=r"pass --true-cfg above 1"):
        nbbatch.generate("a red cat", [1], model="nbbatch:tiny-flux", negative_prompt="blurry", **SIZE)


def test_qwen_image_guidance_is_its_true_cfg_with_an_empty_negative_as_its_model_card_runs_it():
    model = "nbbatch:tiny-qwen-image"
    made = nbbatch.generate("a red cat", [1], model=model, **SIZE)[0]
    assert made.call.true_cfg_scale == 4.0 and made.call.guidance_scale is None, "the pipeline's default"
    assert "CFG scale: 4.0," in a1111_parameters(made) and "Distilled" not in a1111_parameters(made)
    expected = direct_call(model, "a red cat", 1, true_cfg_scale=4.0, negative_prompt="", **RAW)
    assert max_difference(made.image, expected) <= 1
    strong = nbbatch.generate("a red cat", [1], model=model, guidance=30.0, **SIZE)[0]
    off = direct_call(model, "a red cat", 1, true_cfg_scale=30.0, **RAW)  # diffusers: no negative prompt, no CFG
    assert max_difference(strong.image, off) > 1


@pytest.mark.parametrize("model", ["nbbatch:tiny-flux", "nbbatch:tiny-qwen-image", "nbbatch:tiny-z-image"])
def test_max_sequence_length_reads_that_many_tokens_as_diffusers_does(model):
    with pytest.warns(UserWarning, match="is cut off"):
        made = nbbatch.generate(LONG, [1], model=model, max_sequence_length=16, **SIZE)[0]
    assert made.call.max_sequence_length == 16
    raw = dict(CASES["qwen-image"].raw) if "qwen" in model else {}
    assert max_difference(made.image, direct_call(model, LONG, 1, max_sequence_length=16, **RAW, **raw)) <= 1
    full = nbbatch.generate(LONG, [1], model=model, **SIZE)[0]
    assert max_difference(made.image, full.image) > 1, "the rest of the prompt mattered"


def test_a_prompt_past_the_max_sequence_length_is_a_warning_that_says_how_to_read_more():
    with pytest.warns(UserWarning, match=r"is cut off \(FluxPipeline: raise --max-sequence-length \(up to 512\)\)"):
        nbbatch.generate(LONG, [1], model="nbbatch:tiny-flux", max_sequence_length=16, **SIZE)


@pytest.mark.parametrize(
    ("model", "length", "message"),
    [
        (
            "nbbatch:tiny-sd",
            64,
            r"^max_sequence_length is for the T5 and LLM .*; StableDiffusionPipeline reads a fixed number",
        ),
        ("nbbatch:tiny-flux", 513, r"^max_sequence_length must be from 1 to 512 for FLUX.1, not 513$"),
        ("nbbatch:tiny-qwen-image", 1025, r"^max_sequence_length must be from 1 to 1024 for Qwen-Image, not 1025$"),
    ],
)
def test_a_max_sequence_length_the_family_cannot_use_is_refused_in_one_line(model, length, message):
    with pytest.raises(ValueError, match=message):
        nbbatch.generate("a red cat", [1], model=model, max_sequence_length=length, steps=2, width=64, height=64)


def test_the_magic_takes_true_cfg_and_max_sequence_length(shell):
    from IPython.utils.capture import capture_output

    with capture_output():
        shell.run_cell_magic(
            "batchgen", "-m nbbatch:tiny-flux --seeds 1 --steps 2 --width 64 --height 64 --true-cfg 2.5 "
            "--max-sequence-length 16 --negative blurry", "a red cat"
        )  # fmt: skip
    item = shell.user_ns["_batch"][0]
    assert (item.call.true_cfg_scale, item.call.max_sequence_length) == (2.5, 16)
    expected = direct_call(
        "nbbatch:tiny-flux", "a red cat", 1, true_cfg_scale=2.5, max_sequence_length=16, negative_prompt="blurry", **RAW
    )
    assert max_difference(item.image, expected) <= 1


def test_lumina2_reads_its_system_prompt_first_so_a_prompt_is_cut_sooner_and_the_warning_says_so():
    model = "nbbatch:tiny-lumina2"
    with pytest.warns(UserWarning, match=r"is cut off \(Lumina2Pipeline: 256 tokens is the most it reads\)") as caught:
        made = nbbatch.generate([LONG, LONG + " in red"], [1], model=model, **SIZE)
    cut = str(caught[0].message).split("' is cut off")[0].rsplit("'", 1)[-1]
    assert LONG.strip().endswith(cut) and len(cut) > 100, "the system prompt's tokens count against the window"
    assert max_difference(made[0].image, made[1].image) == 0, "what is cut off changes nothing"


def test_a_pipeline_of_no_family_nbbatch_knows_is_refused_in_one_line_before_the_last_one_leaves(tmp_path):
    import json
    import shutil

    from nbbatch.session import default_session

    cache = default_session().pipelines.loaded

    folder = tmp_path / "pag"
    shutil.copytree(builtin_path("nbbatch:tiny-sd"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPAGPipeline"}))
    nbbatch.generate("a red cat", [1], model="nbbatch:tiny-sd", steps=2, width=32, height=32)
    loaded = dict(cache)
    with pytest.raises(ValueError, match="^nbbatch does not know") as error:
        nbbatch.generate("a red cat", [1], model=str(folder), steps=2, width=32, height=32)
    message = str(error.value)
    assert message.startswith(
        "nbbatch does not know the StableDiffusionPAGPipeline family yet: it runs Stable Diffusion"
    )
    assert "Qwen-Image" in message and "\n" not in message
    assert cache == loaded, "the pipeline loaded before stays loaded"


INPAINT = {
    "flux-dev": "FluxInpaintPipeline",
    "flux-schnell": "FluxInpaintPipeline",
    "sd3": "StableDiffusion3InpaintPipeline",
    "qwen-image": "QwenImageInpaintPipeline",
    "z-image": "ZImageInpaintPipeline",
}


def test_inpaint_is_the_family_s_own_inpaint_pipeline_with_the_original_pasted_back_outside(case):
    from nbbatch.core.masks import make_mask

    made = nbbatch.generate("a red cat", [1], model=case.model, **SIZE)
    name = next((key for key, value in CASES.items() if value is case), "")
    if name not in INPAINT:
        with pytest.raises(ValueError, match=r"has no working inpaint pipeline in diffusers: inpaint needs one$"):
            made.inpaint(1, "box:16,16,48,48", "a blue dog")
        return
    inpainted = made.inpaint(1, "box:16,16,48,48", "a blue dog", strength=0.8)[0]
    assert inpainted.call.pipeline == INPAINT[name] and inpainted.image.size == (64, 64)
    pipe = getattr(diffusers, INPAINT[name]).from_pipe(raw_pipeline(case.model))
    mask = make_mask("box:16,16,48,48", (64, 64))
    expected = pipe(
        "a blue dog",
        image=made[0].image,
        mask_image=mask,
        strength=0.8,
        num_inference_steps=2,
        width=64,
        height=64,
        generator=torch.Generator().manual_seed(1),
        **dict(case.raw),
    ).images[0]
    expected = pipe.image_processor.apply_overlay(mask, made[0].image, expected)
    assert max_difference(inpainted.image, expected) <= 1
    assert max_difference(inpainted.image.crop((0, 0, 64, 16)), made[0].image.crop((0, 0, 64, 16))) == 0


def test_a_step_distilled_flux2_klein_refuses_guidance_and_records_none(tmp_path):
    pipe = raw_pipeline("nbbatch:tiny-flux2-klein")
    pipe.register_to_config(is_distilled=True)  # as FLUX.2 [klein] 4B's own model_index.json says
    pipe.save_pretrained(tmp_path / "klein-distilled")
    model = str(tmp_path / "klein-distilled")
    with pytest.raises(ValueError, match=r"^this FLUX.2 Klein model is step-distilled: it has no guidance"):
        nbbatch.generate("a red cat", [1], model=model, guidance=4.0, **SIZE)
    made = nbbatch.generate("a red cat", [1], model=model, **SIZE)[0]
    assert made.call.guidance_scale is None
    expected = pipe(prompt="a red cat", generator=torch.Generator().manual_seed(1), **RAW).images[0]
    assert max_difference(made.image, expected) <= 1


def test_a_hidream_repo_without_its_llama_loads_it_from_the_repo_its_model_card_names(tmp_path, monkeypatch):
    """HiDream-I1's repos hold no Llama: nbbatch loads it as the model card does, records it and exports it."""
    import dataclasses
    import json
    import shutil

    from nbbatch.models import families

    full = builtin_path("nbbatch:tiny-hidream")
    folder = tmp_path / "hidream-without-llama"  # as published: no text_encoder_4, no tokenizer_4
    shutil.copytree(full, folder, ignore=shutil.ignore_patterns("text_encoder_4", "tokenizer_4"))
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "text_encoder_4": [None, None]}))
    del index["tokenizer_4"]
    llama = tmp_path / "llama"  # as the Llama's repo holds it: the model and its tokenizer side by side
    shutil.copytree(full / "text_encoder_4", llama)
    shutil.copytree(full / "tokenizer_4", llama, dirs_exist_ok=True)
    hidream = families.family_named("HiDreamImagePipeline")

    def named(repo):
        moved = dataclasses.replace(hidream, companion=dataclasses.replace(hidream.companion, repo=str(repo)))
        monkeypatch.setattr(families, "FAMILIES", tuple(moved if f.name == "HiDream" else f for f in families.FAMILIES))

    named(tmp_path / "nowhere")
    with pytest.raises(
        ValueError, match=r"this model's repo has no text_encoder_4: its model card loads it from"
    ) as no:
        nbbatch.generate("a red cat", [1], model=str(folder), **SIZE)
    assert "\n" not in str(no.value)
    named(llama)
    made = nbbatch.generate("a red cat", [1], model=str(folder), **SIZE)[0]
    assert made.call.companion == str(llama)
    expected = direct_call("nbbatch:tiny-hidream", "a red cat", 1, **RAW)
    assert max_difference(made.image, expected) <= 1
    own = nbbatch.generate("a red cat", [1], model="nbbatch:tiny-hidream", **SIZE)[0]
    assert own.call.companion is None, "a folder that holds its Llama loads nothing else"
    code = made.code()
    assert f"text_encoder_4 = LlamaForCausalLM.from_pretrained({str(llama)!r}, dtype=torch.float32)" in code
    assert max_difference(run_codes({"hidream": code}, tmp_path)["hidream"], made.image) <= 1


def test_a_size_hidream_scales_to_its_area_is_recorded_as_asked_so_it_reproduces(tmp_path):
    """HiDream draws 32 x 96 at 72 x 220, and 72 x 220 at 72 x 222: the record keeps the size asked for."""
    model = "nbbatch:tiny-hidream"
    made = nbbatch.generate("a red cat", [1], model=model, steps=2, width=32, height=96)[0]
    assert made.image.size == (72, 220) and (made.call.width, made.call.height) == (32, 96)
    expected = direct_call(model, "a red cat", 1, num_inference_steps=2, width=32, height=96)
    assert max_difference(made.image, expected) <= 1
    assert direct_call(model, "a red cat", 1, num_inference_steps=2, width=72, height=220).size == (72, 222)
    (path,) = nbbatch.generate("a red cat", [1], model=model, steps=2, width=32, height=96).save(tmp_path, grid=False)
    assert max_difference(nbbatch.reproduce(path)[0].image, made.image) == 0
    varied = nbbatch.generate("a red cat", [1], model=model, steps=2, width=32, height=96, variation_seed=9,
                              variation_strength=0.4)[0]  # fmt: skip
    pictures = run_codes({"asked": made.code(), "varied": varied.code()}, tmp_path)
    assert max_difference(pictures["asked"], made.image) <= 1 and max_difference(pictures["varied"], varied.image) <= 1
    assert max_difference(varied.image, made.image) > 1
    default = nbbatch.generate("a red cat", [1], model=model, steps=2)[0]
    assert (default.call.width, default.call.height) == (128, 128) == default.image.size


def test_pixart_weights_read_each_fragment_as_its_pipeline_reads_a_prompt_lowercased():
    """PixArt-Σ lowercases (or, with bs4 and ftfy, cleans) every prompt: a weighted one's fragments are read alike."""
    model = "nbbatch:tiny-pixart"
    made = nbbatch.generate(["A (Red:1.0) CAT", "A (Red:3) CAT", "a (red:3) cat"], [1], model=model, **SIZE)
    assert made[0].call.encoded_by == "compel"
    assert max_difference(made[0].image, direct_call(model, "A Red CAT", 1, **RAW)) <= 1
    assert max_difference(made[1].image, made[2].image) <= 1
    assert max_difference(made[1].image, made[0].image) > 1
