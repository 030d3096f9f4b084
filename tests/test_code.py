"""`result.code(seed)`, `%batchgen --code SEED` and the panel's Code: diffusers code that makes the image again.

The code of each image is run with ``python`` in one fresh process that cannot import
nbbatch, and must make the same pixels (within 1: a batched call against a single one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import pytest
from conftest import FAST, make_embedding, make_lora, max_difference
from IPython.core.error import UsageError
from PIL import Image

import nbbatch

RUNNER = """
import runpy, sys
sys.modules["nbbatch"] = None  # the code must need diffusers alone
for path in sys.argv[1:]:
    runpy.run_path(path)["image"].save(path + ".png")
"""


def run_codes(codes: dict[str, str], folder) -> dict[str, Image.Image]:
    """Run each code in one fresh ``python`` and return the picture each left in ``image``."""
    paths = []
    for name, code in codes.items():
        path = folder / f"{name}.py"
        path.write_text(code, encoding="utf-8")
        paths.append(str(path))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", RUNNER, *paths], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: Image.open(folder / f"{name}.py.png").convert("RGB") for name in codes}


def test_code_of_an_image_a_refinement_an_img2img_and_a_variation_makes_the_same_pixels(tmp_path):
    lora = make_lora("nbbatch:tiny-sd", tmp_path / "lora")
    expected, codes = {}, {}
    for model in ("nbbatch:tiny-sd", "nbbatch:tiny-sdxl"):
        short = model.split("-")[-1]
        batch = nbbatch.generate(["a red cat", "a blue dog"], [3, 4], model=model, negative_prompt="blurry", **FAST)
        refined = batch.refine(4, "a green cat", prompt_index=1, scheduler="dpm++2m-karras")
        varied = batch.vary(3, seeds=[11], strength=0.6, prompt_index=0)
        noise = nbbatch.generate("a red cat", [5], model=model, variation_seed=9, variation_strength=0.4, **FAST)
        for name, result, seed in [("batch", batch, 4), ("refine", refined, 4), ("img2img", varied, 11)]:
            item = result.by_seed(seed, 1 if name == "batch" else None)
            expected[f"{short}-{name}"], codes[f"{short}-{name}"] = item.image, item.code()
        expected[f"{short}-variation"], codes[f"{short}-variation"] = noise[0].image, noise.code(5)
    with_lora = nbbatch.generate("a red cat", [2], model="nbbatch:tiny-sd", loras=[(lora, 0.7)], **FAST)
    expected["sd-lora"], codes["sd-lora"] = with_lora[0].image, with_lora.code(2)
    for model, xl in (("nbbatch:tiny-sd", False), ("nbbatch:tiny-sdxl", True)):
        path = make_embedding(tmp_path, f"cattoy{int(xl)}", xl=xl)
        token = nbbatch.generate("a cattoy on a mat", [1], model=model, embeddings=[f"{path}:cattoy"], **FAST)
        name = f"{model.split('-')[-1]}-embedding"
        expected[name], codes[name] = token[0].image, token.code(1)

    made = run_codes(codes, tmp_path)
    for name, image in made.items():
        assert max_difference(image, expected[name]) <= 1, name
    assert "import nbbatch" not in "".join(codes.values())
    assert "DPMSolverMultistepScheduler" in codes["sd-refine"] and "'use_karras_sigmas': True" in codes["sd-refine"]
    assert "init_image = Image.open" in codes["sd-img2img"] and "strength=0.6" in codes["sd-img2img"]
    assert "negative_prompt='blurry'" in codes["sd-batch"] and ".manual_seed(4)" in codes["sd-batch"]
    assert "pipe.set_adapters(['lora0'], adapter_weights=[0.7])" in codes["sd-lora"]
    assert "vectors['clip_g']" in codes["sdxl-embedding"] and "token='cattoy'" in codes["sd-embedding"]


def test_a_saved_generator_state_that_is_not_the_seeds_is_set_in_the_code(tmp_path):
    import torch

    from nbbatch.core.result import run_batch
    from nbbatch.core.spec import Job
    from nbbatch.session import default_session

    generator = torch.Generator().manual_seed(7)
    torch.randn(3, generator=generator)  # a state past the seed's: the code must set it, not seed
    state = generator.get_state().numpy().tobytes()
    seeded = nbbatch.generate("a red cat", [7], **FAST)[0]
    item = run_batch(seeded.settings, [Job("a red cat", 7, state=state)], runner=default_session().runner())[0]
    assert max_difference(item.image, seeded.image) > 0, "another state must make another image"
    code = item.code()
    assert ".manual_seed(" not in code and "generator.set_state(" in code
    assert max_difference(run_codes({"state": code}, tmp_path)["state"], item.image) <= 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompts": "a (red:1.3) cat"}, "A1111 weights or BREAK in its prompt"),
        ({"prompts": "a cat", "clip_skip": 2}, "clip skip 2"),
        ({"prompts": "a cat " * 60}, "a prompt longer than 75 tokens"),
    ],
)
def test_what_diffusers_alone_cannot_repeat_is_refused_in_one_line(options, message):
    prompts = options.pop("prompts")
    result = nbbatch.generate(prompts, [1], **options, **FAST)
    with pytest.raises(ValueError, match="nbbatch encoded this image's prompt itself with compel") as error:
        result.code(1)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_image_from_another_tool_has_no_code(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 32x32")
    Image.new("RGB", (32, 32)).save(tmp_path / "a1111.png", pnginfo=info)
    with pytest.raises(ValueError, match="made by another tool: its noise came from another generator"):
        nbbatch.load(tmp_path / "a1111.png").code(5)


def test_magic_code_puts_the_code_into_the_next_cell_and_shows_it(shell, capsys):
    shell.run_cell_magic("batchgen", "--seeds 2-3 --steps 4 --width 32 --height 32 --no-display", "a red cat")
    capsys.readouterr()
    shell.run_line_magic("batchgen", "--code 3")
    shown = capsys.readouterr().out
    assert shell.rl_next_input == shown == shell.user_ns["_batch"].code(3)
    assert shown.startswith("# seed 3 of 'a red cat'") and shown.rstrip().endswith(").images[0]")


@pytest.mark.parametrize(
    ("line", "cell", "message"),
    [
        ("--code 9", None, "seed 9 is not in this result; its seeds are 3"),
        ("--code 3 --steps 5", None, "--code makes no images: it takes only --from and --prompt-index, not --steps"),
        ("--code 3", "a blue cat", "--code makes no images: it takes only --from and --prompt-index, not prompts"),
    ],
)
def test_magic_code_refuses_in_one_line(shell, line, cell, message):
    shell.run_cell_magic("batchgen", "--seeds 3 --steps 4 --width 32 --height 32 --no-display", "a red cat")
    magic = shell.run_line_magic if cell is None else partial(shell.run_cell_magic, cell=cell)
    run = partial(magic, "batchgen", line)
    with pytest.raises(UsageError, match=message):
        run()


def test_panel_code_shows_the_selected_images_code_and_hides_it_for_another():
    from nbbatch.notebook.panel import Panel

    panel = Panel(prompts="a red cat", seeds="0-1", steps=4)
    panel.set(width=32, height=32)
    panel.generate()
    panel.wait(120)
    first, second = panel._current().items
    panel.show_code()
    assert "select an image first" in panel.message.value
    panel.select(first)
    panel.show_code()
    assert panel.code.value == first.code() and panel.code.layout.display == "flex"
    panel.select(second)
    assert panel.code.value == "" and panel.code.layout.display == "none"
