import base64
import io
import time
from datetime import datetime, timezone

import numpy as np
import pytest
from conftest import make_lora, max_difference, pixels
from PIL import Image

import nbbatch
from nbbatch.notebook.panel import Panel


@pytest.fixture
def panel():
    panel = Panel(prompts="a red cube\na blue ball", seeds="0-2", steps=4)
    panel.set(width=32, height=32)
    yield panel
    panel.cancel()
    panel.wait(60)


def thumbs(panel):
    return [[box for box in row.children[1].children] for row in panel.grid.children]


def labels(panel):
    return [[box.children[1].description for box in row] for row in thumbs(panel)]


def wait_for(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_generate_shows_seed_labelled_thumbnails_in_rows_by_prompt(panel):
    panel.generate_button.click()
    assert panel.generate_button.disabled and not panel.cancel_button.disabled
    panel.wait(60)
    (result,) = panel.results
    assert [(item.prompt, item.seed) for item in result] == [
        (p, s) for p in ("a red cube", "a blue ball") for s in (0, 1, 2)
    ]
    assert labels(panel) == [["seed 0", "seed 1", "seed 2"]] * 2
    assert panel.grid.children[0].children[0].value.endswith("prompt 0: a red cube</span>")
    assert Image.open(io.BytesIO(thumbs(panel)[0][1].children[0].value)).size == (128, 128)
    assert panel.progress.value == 1000 and panel.status.value.startswith("6 images in ")
    assert not panel.generate_button.disabled and panel.cancel_button.disabled
    assert panel.message.value == ""
    assert panel.batches.options == (("1: batch · 'a red cube' · 6 images", 0),)


def test_cancel_while_running_keeps_the_finished_images(panel):
    panel.seeds.value = "0-7"
    panel.set(steps=40, batch_size=1)
    panel.generate_button.click()
    wait_for(lambda: panel.progress.value >= 250)  # about two images done, the widgets still live
    panel.cancel_button.click()
    panel.wait(60)
    (result,) = panel.results
    assert result.status == "cancelled" and 2 <= len(result) < 16
    cells = [box for row in thumbs(panel) for box in row]
    assert len([box for box in cells if hasattr(box, "item")]) == len(result), "the finished ones, clickable"
    not_made = [box.children[1].value for box in cells if "nbbatch-not-made" in box._dom_classes]
    assert len(not_made) == 16 - len(result) and all(text.endswith(" · not made") for text in not_made)
    assert f"cancelled after {len(result)} of 16 images; they are kept" in panel.message.value
    reference = nbbatch.generate(["a red cube"], [0], steps=40, width=32, height=32)
    assert max_difference(reference[0].image, result[0].image) <= 1
    assert panel.progress.value == round(1000 * len(result) / 16)
    panel.seeds.value = "0"
    panel.set(steps=4, batch_size=None)
    panel.generate_button.click()
    panel.wait(60)
    panel.batches.value = 0
    assert f"cancelled after {len(result)} of 16 images" in panel.message.value, "shown again with its batch"
    panel.batches.value = 1
    assert panel.message.value == "" and panel.progress.value == 1000, "the message spoke of the other batch"
    assert panel.status.value.startswith("2 images in ")


def test_a_failed_generate_leaves_the_batch_shown_as_it_was(panel):
    panel.generate_button.click()
    panel.wait(60)
    before = labels(panel)
    panel.controls["model"].value = "./no/such/model"
    panel.generate_button.click()
    panel.wait(60)
    assert "model folder &#x27;./no/such/model&#x27; does not exist" in panel.message.value
    assert labels(panel) == before and all(hasattr(box, "item") for row in thumbs(panel) for box in row)
    assert panel.status.value.startswith("6 images in "), "not 'loading the pipeline…' for ever"
    assert "nbbatch-traceback" not in panel.message.value, "nbbatch's own refusal is one line, no traceback"


def test_a_library_error_is_one_line_with_its_traceback_folded_beneath(panel, monkeypatch):
    from conftest import fail_on_call

    fail_on_call(monkeypatch, 1, ValueError("shapes cannot be multiplied (2x8 and 9x4)"))
    panel.controls["guidance"].value = "7"
    panel.generate_button.click()
    panel.wait(60)
    line, _, folded = panel.message.value.partition("<details")
    assert "the batch failed before any image was made: shapes cannot be multiplied (2x8 and 9x4)" in line
    assert "<summary>traceback</summary>" in folded and "Traceback (most recent call last)" in folded
    assert "conftest.py" in folded and "ValueError: shapes cannot be multiplied" in folded, "where it came from"
    assert not panel.results and not panel.running


def test_a_second_generate_while_running_is_refused(panel):
    panel.set(steps=30)
    panel.generate_button.click()
    panel.generate()  # what a second click would do, were the button not disabled
    assert "a batch is already running: wait for it, or Cancel it" in panel.message.value
    panel.wait(60)
    assert len(panel.results) == 1


def test_selecting_a_thumbnail_highlights_it_and_opens_refine_with_its_prompt(panel):
    panel.generate_button.click()
    panel.wait(60)
    assert panel.refine_area.layout.display == "none"
    thumbs(panel)[1][2].children[1].click()
    assert panel.selected is panel.results[0].by_seed(2, prompt_index=1)
    selected = [box for row in thumbs(panel) for box in row if "nbbatch-selected" in box._dom_classes]
    assert [box.children[1].description for box in selected] == ["seed 2"]
    assert panel.refine_area.layout.display == "flex"
    assert panel.refine_prompts.value == "a blue ball"
    assert "Refine seed 2 (prompt 1)" in panel.refine_title.value


def test_refine_runs_the_core_refine_and_shows_lineage_labels(panel):
    panel.generate_button.click()
    panel.wait(60)
    thumbs(panel)[0][1].children[1].click()
    panel.refine_prompts.value = "a red cube\na red cube on a glass table"
    panel.refine_button.click()
    panel.wait(60)
    first, refined = panel.results
    assert labels(panel) == [["seed 1", "seed 1 · r1a", "seed 1 · r1b"]], "the story row: the original first"
    below = [[box.children[1].description for box in row.children[1].children] for row in panel.origin.children[1:]]
    assert below == [["seed 0", "seed 1", "seed 2"]] * 2, "the batch it came from stays on screen, below"
    assert max_difference(refined[0].image, first.by_seed(1, 0).image) <= 1
    assert refined.parent is first and refined[1].lineage()[0] is first.by_seed(1, 0)
    thumbs(panel)[0][2].children[1].click()  # r1b, in the story row
    panel.refine_prompts.value = "a red cube on a glass table, studio light"
    panel.refine_button.click()
    panel.wait(60)
    assert labels(panel) == [["seed 1", "seed 1 · r1b", "seed 1 · r2"]]
    assert len(panel.origin.children) == 3, "a refinement of a refinement: still the batch it all began in"
    assert [r for _, r in panel.batches.options] == [0, 1, 2]
    assert panel.status.value.startswith("1 image in ")
    panel.batches.value = 0
    assert labels(panel) == [["seed 0", "seed 1", "seed 2"]] * 2
    assert panel.status.value.startswith("6 images in "), "the status speaks of the batch shown"


def test_inpaint_repaints_the_mask_s_region_of_the_selected_image_beside_it(panel):
    panel.generate_button.click()
    panel.wait(60)
    thumbs(panel)[1][2].children[1].click()
    panel.inpaint_button.click()
    assert "draw the region to repaint on the picture, or give mask box:" in panel.message.value
    assert len(panel.results) == 1
    drawn = Image.new("L", (32, 32))
    drawn.paste(255, (0, 0, 16, 16))
    buffer = io.BytesIO()
    drawn.save(buffer, format="PNG")
    assert panel.maskpad.width == 32 and panel.maskpad.picture.startswith("data:image/png;base64,")
    panel.maskpad.mask = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()  # as a stroke sends it
    panel.refine_prompts.value = "a green ball"
    panel.inpaint_button.click()
    panel.wait(60)
    original, (repainted,) = panel.results[0].by_seed(2, prompt_index=1), panel.results[1]
    assert (repainted.origin, repainted.prompt, repainted.parent) == ("inpaint", "a green ball", original)
    assert labels(panel) == [["seed 2", "seed 2 · inpaint"]], "the story row: the original first"
    outside = np.ones((32, 32), bool)
    outside[:16, :16] = False
    assert np.abs(pixels(repainted.image) - pixels(original.image))[outside].max() == 0


def test_the_star_marks_the_selected_image_and_the_batch_list_names_each_batch(panel, monkeypatch):
    from nbbatch.core import history

    monkeypatch.setattr(history, "_favourites", [])
    panel.generate_button.click()
    panel.wait(60)
    thumbs(panel)[1][2].children[1].click()
    assert panel.favourite.value is False
    panel.favourite.value = True
    picked = panel.results[0].by_seed(2, prompt_index=1)
    assert list(nbbatch.favourites()) == [picked] and picked.is_favourite
    thumbs(panel)[0][0].children[1].click()
    assert panel.favourite.value is False, "the star shows the selected image's mark"
    thumbs(panel)[1][2].children[1].click()
    assert panel.favourite.value is True
    panel.favourite.value = False
    assert list(nbbatch.favourites()) == []
    panel.refine_prompts.value = "a blue ball on sand"
    panel.refine_button.click()
    panel.wait(60)
    assert [name for name, _ in panel.batches.options] == [
        "1: batch · 'a red cube' · 6 images",
        "2: refine · 'a blue ball on sand' · 1 image",
    ]
    assert nbbatch.history().results[-2:] == panel.results, "the panel's results are in the kernel's history"


def test_notices_of_a_batch_show_in_the_panel_not_in_the_kernel_log(panel):
    import warnings

    panel.controls["model"].value = "nbbatch:shapes"
    panel.prompts.value = "a red zebra on a white background"
    panel.set(width=64, height=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        panel.generate_button.click()
        panel.wait(120)
    assert len(panel.results) == 1 and [str(w.message) for w in caught if "zebra" in str(w.message)] == []
    assert "nbbatch:shapes does not know &#x27;zebra&#x27;" in panel.message.value
    assert "nbbatch-notice" in panel.message.value
    with pytest.warns(UserWarning, match="nbbatch:shapes does not know 'zebra'"):  # elsewhere, still a warning
        nbbatch.generate("a red zebra on a white background", [0], model="nbbatch:shapes", steps=2)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seeds", "7-0", "seed range &#x27;7-0&#x27; goes down"),
        ("prompts", "", "no prompt given"),
        ("width", "30", "width must be a multiple of 8"),
        ("guidance", "lots", "guidance must be a number, not &#x27;lots&#x27;"),
        ("batch_size", "x", "batch size must be a whole number from 1 to 100000 or auto, not &#x27;x&#x27;"),
        ("model", "./no/such/model", "model folder &#x27;./no/such/model&#x27; does not exist"),
        ("variation_seed", "near", "variation seed must be a whole number, not &#x27;near&#x27;"),
        ("prompts", "a {red|blue", "prompt line 1: the braces do not balance"),
    ],
)
def test_errors_show_in_the_panel_as_one_line_and_leave_it_usable(panel, field, value, message):
    control = panel.controls[field] if field in panel.controls.widgets else getattr(panel, field)
    control.value = value
    panel.generate_button.click()
    panel.wait(60)
    assert message in panel.message.value and "nbbatch-error" in panel.message.value
    assert "Traceback" not in panel.message.value
    assert not panel.generate_button.disabled and panel.results == []
    control.value = {
        "seeds": "0-2",
        "prompts": "a",
        "width": "32",
        "guidance": "",
        "batch_size": "",
        "model": "nbbatch:tiny-sd",
        "variation_seed": "",
    }.get(field, "a {red|blue}")
    panel.generate_button.click()
    panel.wait(60)
    assert len(panel.results) == 1 and panel.message.value == ""


def test_scheduler_and_clip_skip_from_the_panel_equal_generate(panel):
    panel.prompts.value, panel.seeds.value = "a red cube", "3"
    panel.set(scheduler="dpm++2m-karras", clip_skip=2, guidance=7)
    panel.generate_button.click()
    panel.wait(60)
    (result,) = panel.results
    expected = nbbatch.generate(
        "a red cube", seeds=[3], scheduler="dpm++2m-karras", clip_skip=2, guidance=7, steps=4, width=32, height=32
    )
    assert max_difference(result[0].image, expected[0].image) <= 1
    assert result[0].call.scheduler_config["use_karras_sigmas"] and result[0].call.clip_skip == 1
    panel.controls["scheduler"].value = "ddim-karras"
    panel.generate_button.click()
    panel.wait(60)
    assert "scheduler DDIMScheduler has no karras schedule" in panel.message.value and len(panel.results) == 1


def test_a_lora_from_the_panel_equals_generate_and_a_missing_one_is_an_error(panel, tmp_path):
    lora = make_lora("nbbatch:tiny-sd", tmp_path)
    panel.prompts.value, panel.seeds.value = "a red cube", "3"
    panel.set(loras=[(lora, 0.6)])
    panel.generate_button.click()
    panel.wait(60)
    (result,) = panel.results
    expected = nbbatch.generate("a red cube", seeds=[3], loras=[(lora, 0.6)], steps=4, width=32, height=32)
    assert max_difference(result[0].image, expected[0].image) <= 1
    assert result[0].call.loras[0].weight == 0.6
    panel.set(loras=[str(tmp_path / "gone.safetensors")])
    panel.generate_button.click()
    panel.wait(60)
    assert "LoRA file" in panel.message.value and "does not exist" in panel.message.value
    assert len(panel.results) == 1


def test_wildcards_from_a_folder_named_in_the_panel(panel, tmp_path):
    (tmp_path / "colour.txt").write_text("red\ngreen\n", encoding="utf-8")
    panel.prompts.value, panel.seeds.value = "a __colour__ cube", "0"
    panel.set(steps=2)
    panel.generate_button.click()
    panel.wait(60)
    assert "unknown wildcard __colour__" in panel.message.value and panel.results == []
    panel.wildcards.value = str(tmp_path)
    panel.generate_button.click()
    panel.wait(60)
    assert [item.prompt for item in panel.results[0]] == ["a green cube", "a red cube"]
    assert panel.results[0][0].provenance.template == "a __colour__ cube"


def test_variation_seed_and_template_prompts_from_the_panel_equal_generate(panel):
    panel.prompts.value = "a {red|blue} cube"
    panel.seeds.value = "4"
    panel.set(variation_seed=11, variation_strength=0.4)
    panel.generate_button.click()
    panel.wait(60)
    (result,) = panel.results
    expected = nbbatch.generate(
        "a {red|blue} cube", seeds=[4], variation_seed=11, variation_strength=0.4, steps=4, width=32, height=32
    )
    assert [item.prompt for item in result] == ["a red cube", "a blue cube"]
    assert all(max_difference(a.image, b.image) <= 1 for a, b in zip(result, expected))
    assert result[0].call.variation_seed == 11 and result[0].provenance.choices == ["red"]
    panel.controls["variation_seed"].value = ""
    panel.generate_button.click()
    panel.wait(60)
    assert "variation strength needs variation seed to blend towards" in panel.message.value and len(panel.results) == 1


def test_out_of_memory_is_shown_and_the_finished_images_kept(panel, monkeypatch):
    import torch
    from conftest import fail_on_call

    fail_on_call(monkeypatch, 2, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB"))
    panel.controls["batch_size"].value, panel.controls["guidance"].value = "2", "7"
    panel.generate_button.click()
    panel.wait(60)
    assert "the batch stopped: CUDA out of memory. Tried to allocate 1 GiB; its 2 finished images are kept" in (
        panel.message.value
    )
    cells = [box for row in thumbs(panel) for box in row]
    assert len([box for box in cells if hasattr(box, "item")]) == 2, "the finished ones, clickable"
    assert len([box for box in cells if "nbbatch-not-made" in box._dom_classes]) == 4, "the rest, greyed"


def _upload(picture, name):
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    content = buffer.getvalue()
    when = datetime.now(timezone.utc)
    return (
        {
            "name": name,
            "type": "image/png",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": when,
        },
    )


def test_image_to_image_from_an_upload_and_an_inpaint_with_an_uploaded_mask(panel):
    panel.upload.value = _upload(Image.new("RGB", (32, 32), "orange"), "orange.png")
    panel.set(strength=0.5)
    panel.generate_button.click()
    panel.wait(60)
    (result,) = panel.results
    assert result[0].call.strength == 0.5 and result[0].init_image.getpixel((0, 0)) == (255, 165, 0)
    assert result[0].label == "seed 0 · orange.png"
    mask = Image.new("L", (32, 32))
    mask.paste(255, (16, 0, 32, 32))  # the right half repainted
    panel.image_mask.value = _upload(mask, "right.png")
    panel.generate_button.click()
    panel.wait(60)
    inpainted = panel.results[1]
    alone = nbbatch.generate(
        ["a red cube", "a blue ball"], "0-2", images=result[0].init_image, mask=mask, strength=0.5, steps=4
    )
    assert [item.origin for item in inpainted] == [item.origin for item in alone]
    for made, expected in zip(inpainted, alone):
        assert max_difference(made.image, expected.image) <= 1
    left = pixels(inpainted[0].image)[:, :16]
    assert np.abs(left - pixels(result[0].init_image)[:, :16]).max() <= 3, "outside the mask: the picture kept"


def test_save_to_a_folder_from_the_panel(panel, tmp_path):
    panel.save_to.value = str(tmp_path)
    panel.generate_button.click()
    panel.wait(60)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "grid.png",
        "p00-s0.png",
        "p00-s1.png",
        "p00-s2.png",
        "p01-s0.png",
        "p01-s1.png",
        "p01-s2.png",
    ]


def test_the_line_magic_and_the_function_give_a_panel(shell):
    assert isinstance(shell.run_line_magic("batchgen_panel", ""), Panel)
    shown = nbbatch.panel(prompts="x")._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in shown


def test_thumbnails_show_previews_then_finished_images_then_the_final_grid(panel, monkeypatch):
    from nbbatch.core import engine
    from nbbatch.notebook.panel import _LiveGrid

    monkeypatch.setattr(engine, "PREVIEW_EVERY", 0.0)
    seen = []

    def watching(method):
        def watched(self, *args):
            method(self, *args)
            states = [
                "done"
                if "nbbatch-done" in c._dom_classes
                else "preview"
                if "nbbatch-preview" in c._dom_classes
                else "pending"
                for c in self.cells
            ]
            seen.append((method.__name__, states, [c.children[1].value for c in self.cells]))

        return watched

    monkeypatch.setattr(_LiveGrid, "preview", watching(_LiveGrid.preview))
    monkeypatch.setattr(_LiveGrid, "made", watching(_LiveGrid.made))
    panel.set(model="nbbatch:shapes", steps=3, batch_size=2)
    panel.set(width=None, height=None)
    panel.prompts.value, panel.seeds.value = "a red circle on a blue background", "0-3"
    panel.generate_button.click()
    panel.wait(120)
    assert seen[0] == (
        "preview",
        ["preview", "preview", "pending", "pending"],
        ["seed 0 · step 1/3", "seed 1 · step 1/3", "seed 2", "seed 3"],
    )
    first_chunk = next(s for s in seen if s[0] == "made")
    assert first_chunk[1] == ["done", "done", "pending", "pending"] and first_chunk[2][:2] == ["seed 0", "seed 1"]
    assert seen[-1][1] == ["done"] * 4
    assert [[box.item.seed for box in row] for row in thumbs(panel)] == [[0, 1, 2, 3]], "then the final, clickable grid"


def test_hires_fix_makes_the_selected_image_twice_as_large_keeping_the_original(panel):
    panel.generate_button.click()
    panel.wait(60)
    thumbs(panel)[0][1].children[1].click()
    panel.hires_button.click()
    panel.wait(60)
    first, hires = panel.results
    assert hires[0].image.size == tuple(2 * side for side in first.by_seed(1, 0).image.size)
    assert hires[0].parent is first.by_seed(1, 0) and labels(panel) == [["seed 1", "seed 1 · hires x2"]]
    assert max_difference(hires[0].image, first.upscale(1, prompt_index=0)[0].image) <= 1, "equals the result's own"
    panel.batches.value = 0
    thumbs(panel)[0][2].children[1].click()
    panel.hires_scale.value, panel.hires_strength.value, panel.hires_upscaler.value = 1.5, 0.3, "latent"
    panel.hires_button.click()
    panel.wait(60)
    assert labels(panel) == [["seed 2", "seed 2 · hires x1.5"]] and panel.results[2][0].image.size == (48, 48)
    again = first.upscale(2, scale=1.5, strength=0.3, upscaler="latent", prompt_index=0)
    assert max_difference(panel.results[2][0].image, again[0].image) <= 1


def test_vary_makes_variations_of_the_selected_image_at_the_vary_strength_with_its_seeds(panel):
    panel.generate_button.click()
    panel.wait(60)
    thumbs(panel)[1][0].children[1].click()  # prompt 1, seed 0
    panel.vary_seeds.value, panel.vary_strength.value = "5,6", 0.4
    panel.vary_button.click()
    panel.wait(60)
    first, varied = panel.results
    expected = first.vary(0, strength=0.4, seeds=[5, 6], prompt_index=1)
    assert [item.seed for item in varied] == [5, 6] and varied[0].parent is first.by_seed(0, 1)
    for made, alone in zip(varied, expected):
        assert max_difference(made.image, alone.image) <= 1
    assert labels(panel)[0][0] == "seed 0" and len(labels(panel)[0]) == 3, "the original, then its variations"
    thumbs(panel)[0][0].children[1].click()  # the original again: a finished run clears the selection
    panel.vary_seeds.value = "7-"
    panel.vary_button.click()
    assert "7-" in panel.message.value and len(panel.results) == 2


def test_x_y_axes_random_draws_and_several_loras_from_the_panel_equal_generate(panel, tmp_path):
    first, second = make_lora("nbbatch:tiny-sd", tmp_path / "a"), make_lora("nbbatch:tiny-sd", tmp_path / "b")
    panel.prompts.value, panel.seeds.value = "a {red|green|blue} cube", "3"
    panel.axes[0].value, panel.axes[1].value = "steps=2,4", "guidance=3,7"
    panel.draws.value, panel.draw_seed.value = 2, "11"
    panel.set(loras=[(first, 0.6), second])
    panel.generate_button.click()
    panel.wait(120)
    (result,) = panel.results
    expected = nbbatch.generate(
        "a {red|green|blue} cube", [3], x="steps=2,4", y="guidance=3,7", random=2, random_seed=11,
        loras=[(first, 0.6), (second, 1.0)], steps=4, width=32, height=32,
    )  # fmt: skip
    assert len(result) == len(expected) == 8 and result[0].call.loras == expected[0].call.loras
    for made, alone in zip(result, expected):
        assert (made.prompt, made.provenance.axes) == (alone.prompt, alone.provenance.axes)
        assert max_difference(made.image, alone.image) <= 1
    panel.draw_seed.value = "soon"
    panel.generate_button.click()
    assert panel.message.value.endswith("draw seed must be a whole number, not &#x27;soon&#x27;</span>")


def test_edit_the_selected_image_with_an_editing_model_equals_the_result_s_edit():
    panel = Panel(prompts="a red cat on a mat", seeds="4", model="nbbatch:tiny-flux", steps=2, width=64, height=64)
    panel.generate_button.click()
    panel.wait(120)
    thumbs(panel)[0][0].children[1].click()
    panel.refine_prompts.value = "make it green"
    panel.edit_button.click()
    assert "give the edit model" in panel.message.value and len(panel.results) == 1
    panel.edit_model.value = "nbbatch:tiny-flux-kontext"
    panel.edit_button.click()
    panel.wait(120)
    first, edited = panel.results
    assert labels(panel) == [["seed 4", "seed 4 · edit e1"]]
    alone = first.edit(4, "make it green", model="nbbatch:tiny-flux-kontext")
    assert max_difference(edited[0].image, alone[0].image) <= 1
