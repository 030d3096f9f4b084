"""Weighted and long prompts: A1111's syntax read as A1111 reads it, encoded with compel, plain prompts unchanged."""

import types

import pytest
from conftest import FAST, direct_call, max_difference

import nbbatch
from nbbatch.core.attention import parse_attention, plain_text
from nbbatch.core.spec import Job

KWARGS = {"num_inference_steps": FAST["steps"], "width": FAST["width"], "height": FAST["height"]}
LONG = "a red cat sitting on a mat, " + "highly detailed, " * 20 + "sharp focus"


@pytest.mark.parametrize(
    ("prompt", "pieces"),
    [  # A1111's own examples (modules/prompt_parser.py), where they are balanced
        ("normal text", [[("normal text", 1.0)]]),
        ("an (important) word", [[("an ", 1.0), ("important", 1.1), (" word", 1.0)]]),
        ("\\(literal\\]", [[("(literal]", 1.0)]]),
        ("(unnecessary)(parens)", [[("unnecessaryparens", 1.1)]]),
        (
            "a ((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                [
                    ("a ", 1.0),
                    ("house", 1.3 * 1.1),
                    (" ", 1.0),
                    ("on", 1 / 1.1),
                    (" a ", 1.0),
                    ("hill", 0.5),
                    (", sun, ", 1.0),
                    ("sky", 1.1**3),
                    (".", 1.0),
                ]
            ],
        ),
        ("(red:1.0) cat", [[("red cat", 1.0)]]),
        ("a cat BREAK (a hat:1.2)", [[("a cat", 1.0)], [("a hat", 1.2)]]),
    ],
)
def test_weights_are_read_as_a1111_reads_them(prompt, pieces):
    got = parse_attention(prompt)
    assert [[text for text, _ in window] for window in got] == [[text for text, _ in window] for window in pieces]
    assert [w for window in got for _, w in window] == pytest.approx([w for window in pieces for _, w in window])


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a (red cat", r"unbalanced '\(' at character 3 of prompt 'a \(red cat': close it with '\)'"),
        ("a red) cat", r"unbalanced '\)' at character 6 of prompt 'a red\) cat': open it with '\('"),
        ("[a red cat", r"unbalanced '\[' at character 1"),
        (
            "a red cat <lora:film-grain:0.8>",
            r"prompt 'a red cat <lora:film-grain:0.8>' holds the A1111 tag '<lora:film-grain:0.8>', which "
            r"nbbatch does not read: load its file with --lora PATH:0.8 \(loras=\[\(PATH, 0.8\)\] in Python\) "
            r"and take the tag out",
        ),
        ("a <hypernet:anime> cat", r"nbbatch has no hypernet networks: take the tag out"),
    ],
)
def test_an_unbalanced_bracket_or_an_a1111_tag_is_a_one_line_error_before_anything_runs(prompt, message, shell):
    from IPython.core.error import UsageError

    with pytest.raises(ValueError, match=message):
        nbbatch.generate(prompt, [1], **FAST)
    with pytest.raises(UsageError, match=message) as error:
        shell.run_cell_magic("batchgen", "--seeds 1 --steps 4 --width 32 --height 32", prompt)
    assert "\n" not in str(error.value)
    assert "_batch" not in shell.user_ns


def test_weight_one_is_the_plain_prompt_and_other_weights_change_the_picture(model):
    plain = nbbatch.generate("a red cat", [1, 2], model=model, **FAST)
    same = nbbatch.generate("(a red cat:1.0)", [1, 2], model=model, **FAST)
    assert [i.image.tobytes() for i in same] == [i.image.tobytes() for i in plain]
    assert max_difference(plain[0].image, direct_call(model, "a red cat", 1, **KWARGS)) <= 1, "plain is unchanged"
    heavier = nbbatch.generate("a (red:1.6) cat", [1, 2], model=model, **FAST)
    assert max_difference(heavier[0].image, plain[0].image) > 0
    assert heavier[0].prompt == "a (red:1.6) cat", "the prompt is kept as written"


def test_weights_equal_compel_on_the_same_prompt():
    """nbbatch reads A1111's ``(red:1.6)``; compel's own syntax for it is ``(red)1.6``: the same embeddings."""
    import torch
    from compel import Compel

    model = "nbbatch:tiny-sd"
    made = nbbatch.generate("a (red:1.6) cat", [4], model=model, guidance=7, **FAST)
    from diffusers import AutoPipelineForText2Image

    from nbbatch.models.tiny import builtin_path

    pipe = AutoPipelineForText2Image.from_pretrained(str(builtin_path(model)), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, truncate_long_prompts=False)
    embeds = compel(["a (red)1.6 cat", ""])
    raw = pipe(
        prompt_embeds=embeds[:1],
        negative_prompt_embeds=embeds[1:],
        generator=torch.Generator("cpu").manual_seed(4),
        guidance_scale=7,
        **KWARGS,
    ).images[0]
    assert max_difference(made[0].image, raw) <= 1


def test_long_prompts_are_read_to_the_end(model):
    """diffusers alone cuts at 77 tokens, so these two would give one picture; nbbatch reads both to the end."""
    first, second = LONG + " under a blue sky", LONG + " under a green sky"
    assert max_difference(direct_call(model, first, 1, **KWARGS), direct_call(model, second, 1, **KWARGS)) == 0
    made = nbbatch.generate([first, second], [1], model=model, **FAST)
    assert max_difference(made[0].image, made[1].image) > 0


def test_an_image_is_the_same_alone_and_in_a_batch_of_other_lengths(model):
    prompts = ["a red cat", LONG, "a (red:1.4) cat", "a cat BREAK a hat"]
    together = nbbatch.generate(prompts, [1, 2], model=model, negative_prompt="blurry", **FAST)
    for prompt in prompts:
        alone = nbbatch.generate(prompt, [2], model=model, negative_prompt="blurry", **FAST)[0]
        (match,) = [item for item in together if item.prompt == prompt and item.seed == 2]
        assert max_difference(match.image, alone.image) <= 1, prompt  # the README's promise: within one level


def test_break_starts_a_new_window(model):
    joined = nbbatch.generate("a red cat, a blue hat", [1], model=model, **FAST)[0]
    broken = nbbatch.generate("a red cat BREAK a blue hat", [1], model=model, **FAST)[0]
    assert max_difference(joined.image, broken.image) > 0


def test_a_mixed_negative_on_sdxl_keeps_the_zeros_of_an_empty_one():
    """SDXL encodes a missing negative prompt as zeros: an image without one is the same beside one that has one."""
    model = "nbbatch:tiny-sdxl"
    alone = nbbatch.generate("a red cat", [1], model=model, **FAST)[0]
    from nbbatch.core.result import run_batch
    from nbbatch.core.spec import Settings
    from nbbatch.session import default_session

    jobs = [Job("a red cat", 1, 0, ""), Job("a blue hat", 1, 1, "blurry")]
    together = run_batch(Settings(model=model, **FAST), jobs, runner=default_session().runner())
    assert max_difference(together[0].image, alone.image) <= 1


def test_clip_skip_reaches_weighted_prompts(model):
    plain = nbbatch.generate("a (red:1.3) cat", [1], model=model, **FAST)[0]
    skipped = nbbatch.generate("a (red:1.3) cat", [1], model=model, clip_skip=2, **FAST)[0]
    assert max_difference(plain.image, skipped.image) > 0


def test_a_cut_prompt_is_a_warning_naming_what_was_cut_where_there_is_no_long_prompt_support():
    from nbbatch.core.spec import Settings
    from nbbatch.models.backend import check_prompts
    from nbbatch.session import default_session

    tokenizer = default_session().pipelines.get(Settings(model="nbbatch:tiny-sd")).pipe.tokenizer
    other = types.SimpleNamespace(tokenizer=tokenizer)  # a pipeline nbbatch cannot give embeddings to
    prompt = LONG + " under a blue sky"
    cut = r"prompt 'a red cat.*' is longer than the text encoder reads: '.*blue sky' is cut off"
    with pytest.warns(UserWarning, match=cut):
        check_prompts(other, [Job(prompt, 0)], None)
    with pytest.raises(
        ValueError,
        match="prompt weights are read on Stable Diffusion, SDXL, SD3, FLUX.1, Chroma, PixArt-Σ and AuraFlow pipelines",
    ):
        check_prompts(other, [Job("a (red:1.2) cat", 0)], None)


def test_plain_text_drops_the_syntax():
    assert plain_text("a ((red:1.3)) cat BREAK [blue] \\(hat\\)") == "a red cat blue (hat)"


def test_refine_and_vary_read_weights_too():
    plain = nbbatch.generate("a red cat", [1], **FAST)
    weighted = nbbatch.generate("(a red cat:1.0)", [1], **FAST)
    assert (
        weighted.vary(1, strength=0.5, seeds=[3])[0].image.tobytes()
        == plain.vary(1, strength=0.5, seeds=[3])[0].image.tobytes()
    ), "image-to-image reads the syntax: weight 1 is the plain prompt"
    refined = plain.refine(1, "a (blue:1.5) cat")[0]
    assert refined.image.tobytes() == nbbatch.generate("a (blue:1.5) cat", [1], **FAST)[0].image.tobytes()
