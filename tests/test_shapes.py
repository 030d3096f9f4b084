"""nbbatch:shapes: its data and judge, its training script, and that the shipped weights follow prompts."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import nbbatch
from nbbatch.models import shapes
from nbbatch.models.shapes.data import COLOURS, SHAPES, caption, iou, judge, sample, to_uint8
from nbbatch.models.shapes.evaluate import GUIDANCES, MARKERS, card_tables
from nbbatch.models.shapes.train import build_tokenizer, design_latents, estimate_layout, train

MODEL = shapes.NAME
NAMES = list(COLOURS)
SHAPES_PACKAGE = Path(shapes.__file__).parent


def test_the_data_is_deterministic_and_the_judge_reads_true_pictures_right():
    first, again = sample(96, torch.Generator().manual_seed(3)), sample(96, torch.Generator().manual_seed(3))
    assert torch.equal(first.images, again.images)
    assert (first.colour != first.background).all(), "shape and background colours differ"
    assert first.captions()[0] == caption(SHAPES[first.shape[0]], NAMES[first.colour[0]], NAMES[first.background[0]])
    for picture, s, c, b in zip(to_uint8(first.images), first.shape, first.colour, first.background):
        seen = judge(picture)
        assert (seen.shape, seen.colour, seen.background) == (SHAPES[s], NAMES[c], NAMES[b])
    assert design_latents(first).shape == (96, 9, 16, 16)


def test_every_caption_word_is_one_token_of_the_shipped_tokenizer():
    from transformers import CLIPTokenizer

    shipped = CLIPTokenizer.from_pretrained(shapes.WEIGHTS / "tokenizer")
    built = build_tokenizer()
    for word in ("a", "on", "background", *COLOURS, *SHAPES):
        assert len(shipped(word, add_special_tokens=False).input_ids) == 1
        assert shipped(word).input_ids == built(word).input_ids


def test_the_weights_ship_in_the_package_small_and_load_with_from_pretrained():
    from diffusers import StableDiffusionPipeline

    size = sum(f.stat().st_size for f in shapes.WEIGHTS.rglob("*.safetensors"))
    assert size <= 20 * 2**20
    pipe = StableDiffusionPipeline.from_pretrained(shapes.WEIGHTS, dtype=torch.float32)
    assert type(pipe.unet).__name__ == "UNet2DConditionModel" and type(pipe.vae).__name__ == "AutoencoderKL"
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def test_nbbatch_images_equal_raw_diffusers_with_the_models_default_guidance():
    from diffusers import StableDiffusionPipeline

    result = nbbatch.generate("a red circle on a blue background", [4], model=MODEL, steps=20)
    guidance = result[0].call.guidance_scale
    assert guidance == shapes_defaults()["guidance"]
    pipe = StableDiffusionPipeline.from_pretrained(shapes.WEIGHTS, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    raw = pipe(
        "a red circle on a blue background",
        num_inference_steps=20,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(4),
    ).images[0]
    assert np.abs(np.asarray(raw, int) - np.asarray(result[0].image, int)).max() <= 1
    varied = result.vary(4, seeds=[5])[0]  # image-to-image takes the model's own image-to-image default
    assert varied.call.guidance_scale == shapes_defaults()["image_to_image"]["guidance"] != guidance


def shapes_defaults():
    import json

    return json.loads((shapes.WEIGHTS / "nbbatch.json").read_text())["defaults"]


PROMPTS = [(SHAPES[i % 3], NAMES[i % 8], NAMES[(i * 3 + 1) % 8]) for i in range(12)]


FLOORS = {None: (0.95, 0.95, 0.9), 1.5: (0.95, 0.95, 0.9), 5.0: (0.95, 0.95, 0.9), 7.0: (0.95, 0.95, 0.8)}
"""Background, shape colour and kind right, at least, on these 24 pictures at 20 steps by guidance: the shipped
weights get 100% at each but the kind at 7 (87.5%; chance: 1/7 a colour, 1/3 a kind); before stage 3's decoder,
92/75/75% at 5 and 71/67/54% at 7."""


@pytest.mark.parametrize("guidance", GUIDANCES, ids=[f"guidance-{g or 'default'}" for g in GUIDANCES])
def test_the_model_draws_the_asked_colours_and_shapes(guidance):
    options = {"guidance": guidance} if guidance is not None else {}
    result = nbbatch.generate([caption(*p) for p in PROMPTS], [0, 1], model=MODEL, steps=20, **options)
    seen = [judge(item.image) for item in result]
    asked = [PROMPTS[item.prompt_index] for item in result]
    backgrounds = np.mean([s.background == a[2] for s, a in zip(seen, asked)])
    colours = np.mean([s.colour == a[1] for s, a in zip(seen, asked)])
    kinds = np.mean([s.shape == a[0] for s, a in zip(seen, asked)])
    low_background, low_colour, low_kind = FLOORS[guidance]
    assert backgrounds >= low_background and colours >= low_colour and kinds >= low_kind, (backgrounds, colours, kinds)


def test_the_docs_quote_the_evaluation_file_s_figures():
    figures = json.loads((SHAPES_PACKAGE / "evaluation.json").read_text(encoding="utf-8"))
    default, *others = figures["runs"]
    text = " ".join((SHAPES_PACKAGE.parents[2] / "docs" / "models.md").read_text(encoding="utf-8").split())
    quoted = [
        f"guidance {default['guidance_scale']:g}), on 96 prompt x seed pairs",
        f"the asked one in {default['shape']:.1%}**, its colour in {default['colour']:.1%} "
        f"and the background's in {default['background']:.1%}",
        f"median IoU {default['refine_median_iou']:.2f} over 16 seeds, against {default['control_median_iou']:.2f}",
        f"take {figures['seconds_16_images_20_steps']} s",
        f"at 5 and 7 the kind is right in {others[1]['shape']:.1%} and {others[2]['shape']:.1%}",
    ]
    assert [line for line in quoted if line not in text] == []
    every_pair = "every one of the 28 pairs of palette colours comes out right"
    assert (every_pair in text) == all(rate == 1 for rate in figures["colour_pairs"].values())
    readme = " ".join((SHAPES_PACKAGE.parents[2] / "README.md").read_text(encoding="utf-8").split())
    assert (
        f"the asked one in {default['shape']:.1%} of the evaluation's 96 pictures, its colour in "
        f"{default['colour']:.1%} and the background's in {default['background']:.1%}, and at guidance 5 and 7 the "
        f"kind in {others[1]['shape']:.1%} and {others[2]['shape']:.1%}" in readme
    )


def test_the_model_card_shows_the_evaluation_file_s_figures():
    figures = json.loads((SHAPES_PACKAGE / "evaluation.json").read_text(encoding="utf-8"))
    assert [run["guidance"] for run in figures["runs"]] == ["default", *GUIDANCES[1:]]
    assert len(figures["colour_pairs"]) == 28, "every pair of the eight palette colours"
    card = (SHAPES_PACKAGE / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"{MARKERS[0]}\n{card_tables(figures)}\n{MARKERS[1]}" in card


def test_refine_changes_the_colour_and_keeps_the_place():
    result = nbbatch.generate("a red square on a white background", "0-5", model=MODEL, steps=20)
    ious, controls = [], []
    for seed in range(6):
        green = result.refine(seed, "a green square on a white background")[0]
        assert judge(green.image).colour == "green"
        ious.append(iou(judge(result.by_seed(seed).image).mask, judge(green.image).mask))
        controls.append(iou(judge(result.by_seed(seed).image).mask, judge(result.by_seed((seed + 1) % 6).image).mask))
    assert np.median(ious) >= 0.6 and np.median(ious) > np.median(controls) + 0.2, (ious, controls)


def test_image_to_image_keeps_a_hand_drawn_shape_in_its_place():
    picture = Image.new("RGB", (64, 64), COLOURS["white"])
    ImageDraw.Draw(picture).ellipse((8, 30, 30, 52), fill=COLOURS["red"])
    result = nbbatch.generate("a blue circle on a white background", [0], images=picture, strength=0.5, model=MODEL)
    seen = judge(result[0].image)
    assert seen.background == "white" and seen.colour == "blue"
    ys, xs = np.nonzero(seen.mask)
    assert xs.mean() < 32 and ys.mean() > 32, "the shape stays in the lower left, where it was drawn"


def digest(folder):
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*.safetensors"))
    }


def test_training_runs_end_to_end_is_reproducible_and_retrains_one_phase_alone(tmp_path):
    threads = torch.get_num_threads()
    short = dict(encoder_steps=2, denoiser_steps=2, batches=(4, 4, 4))
    from_a = dict(reuse=("encoder", "denoiser"), reuse_from=tmp_path / "a")
    guided = dict(guided_from=tmp_path / "a", guided=4)
    try:
        first = train(tmp_path / "a", decoder_steps=2, **short)
        train(tmp_path / "b", decoder_steps=2, **short)
        longer, reused = tmp_path / "c", tmp_path / "d"
        train(longer, decoder_steps=3, **short)
        train(reused, decoder_steps=3, **short, **from_a)
        for name in ("e", "f"):  # the decoder fine-tuned from run a's, the rest reused
            train(tmp_path / name, decoder_steps=2, **short, **from_a, decoder_from=tmp_path / "a")
        for name in ("g", "h"):  # and on run a's own guided latents as well
            train(tmp_path / name, decoder_steps=2, **short, **from_a, decoder_from=tmp_path / "a", **guided)
    finally:
        torch.set_num_threads(threads)
    assert digest(tmp_path / "a") == digest(tmp_path / "b"), "the same script and seed give the same weights"
    assert digest(reused) == digest(longer), "a phase retrained alone gives what a full run gives"
    tuned = digest(tmp_path / "e")
    assert tuned == digest(tmp_path / "f"), "a fine-tune of the decoder is reproducible too"
    assert (
        tuned["vae/diffusion_pytorch_model.safetensors"]
        != digest(tmp_path / "a")["vae/diffusion_pytorch_model.safetensors"]
    )
    on_guided = digest(tmp_path / "g")
    assert on_guided == digest(tmp_path / "h"), "so is one that learns from the sampler's guided latents"
    assert on_guided["vae/diffusion_pytorch_model.safetensors"] != tuned["vae/diffusion_pytorch_model.safetensors"]
    assert {k: v for k, v in tuned.items() if not k.startswith("vae/")} == {
        k: v for k, v in digest(tmp_path / "a").items() if not k.startswith("vae/")
    }, "the rest is run a's"
    assert (tmp_path / "a" / "training-log.csv").read_text().count("\n") == 7
    image = first(caption("circle", "red", "blue"), num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3)
    assert os.path.isfile(tmp_path / "a" / "model_index.json")


def test_the_place_and_size_of_a_designed_latent_s_shape_are_read_back():
    pictures = sample(64, torch.Generator().manual_seed(7))
    centre, half = estimate_layout(design_latents(pictures)[:, 0], pictures.shape)
    assert (centre - pictures.centre).norm(dim=1).max() < 0.5, "pixels"
    assert ((half - pictures.half) / pictures.half).abs().max() < 0.05, "the guided latents' pictures are drawn so"


def test_the_shipped_vocabulary_is_the_training_data_s_own():
    import json

    from nbbatch.models.shapes import data

    notes = json.loads((shapes.WEIGHTS / "nbbatch.json").read_text())
    vocabulary = notes["vocabulary"]
    assert vocabulary["colours"] == list(data.COLOURS) and vocabulary["shapes"] == list(data.SHAPES)
    words = {w for s in data.SHAPES for c in data.COLOURS for w in data.caption(s, c, "red").split()}
    assert words <= {*vocabulary["colours"], *vocabulary["shapes"], *vocabulary["words"]}


@pytest.mark.parametrize(
    ("prompt", "named"),
    [
        ("a photo of a cat", "'photo', 'of', 'cat'"),
        ("a pink circle on a grey background", "'pink', 'grey'"),
        ("an orange square on a yellow background", "'an'"),  # its captions say "a orange": "an" was never seen
        ("a red hexagon on a white background", "'hexagon'"),
    ],
)
def test_words_the_built_in_model_does_not_know_are_one_warning_per_batch_naming_them(prompt, named):
    with pytest.warns(UserWarning, match="does not know") as caught:
        made = nbbatch.generate([prompt, "a red circle on a white background"], "0-3", model="nbbatch:shapes", steps=4)
    warned = [str(w.message) for w in caught if "does not know" in str(w.message)]
    assert len(made) == 8 and len(warned) == 1, "the pictures are made; one warning for the whole batch"
    assert warned[0].startswith(f"nbbatch:shapes does not know {named}: it draws only 'a <colour> <shape> on a")
    assert "colours red, orange, yellow, green, blue, purple, white, black and shapes circle, square" in warned[0]
    assert "\n" not in warned[0]


def test_known_words_and_other_models_get_no_vocabulary_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        nbbatch.generate("A Red circle, on a WHITE background", [1], model="nbbatch:shapes", steps=4)
        nbbatch.generate("a photo of a cat", [1], model="nbbatch:tiny-sd", steps=2, width=32, height=32)
