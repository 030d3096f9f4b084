import dataclasses
import re

import pytest
from conftest import FAST, direct_call, max_difference
from diffusers import EulerAncestralDiscreteScheduler
from PIL import Image

import nbbatch


@pytest.fixture
def batch(model):
    return nbbatch.generate(["a house on a hill", "a boat at sea"], "3-6", model=model, **FAST)


def test_refining_with_the_same_prompt_reproduces_the_image(batch):
    original = batch.by_seed(5, prompt_index=1)
    again = batch.refine(5, "a boat at sea", prompt_index=1)
    assert max_difference(again[0].image, original.image) <= 1


def test_verify_reports_the_difference_from_a_single_image_run(batch):
    assert batch.verify(4, prompt_index=0) in (0, 1)
    tampered = dataclasses.replace(batch.by_seed(4, 0), image=Image.new("RGB", (32, 32), (255, 255, 255)))
    assert nbbatch.BatchResult([tampered], batch.settings, total=1, runner=batch.runner).verify(4) > 100
    with pytest.raises(ValueError, match="^this result has no runner to make images with"):
        nbbatch.BatchResult([tampered], batch.settings, total=1).verify(4)


def test_refining_with_a_new_prompt_equals_diffusers_with_that_prompt_and_seed(batch, model):
    refined = batch.refine(5, "a boat at sea at sunset, detailed", prompt_index=1)
    direct = direct_call(model, "a boat at sea at sunset, detailed", 5, num_inference_steps=4, width=32, height=32)
    assert max_difference(refined[0].image, direct) <= 1
    assert max_difference(refined[0].image, batch.by_seed(5, prompt_index=1).image) > 1, "the prompt matters"


def test_ancestral_scheduler_refinement_restores_the_whole_random_stream(model):
    batch = nbbatch.generate(["a cat", "a dog"], "0-3", model=model, scheduler="euler-a", **FAST)
    assert batch[0].call.scheduler == "EulerAncestralDiscreteScheduler"
    again = batch.refine(2, "a dog", prompt_index=1)
    assert max_difference(again[0].image, batch.by_seed(2, prompt_index=1).image) <= 1
    new = batch.refine(2, "a dog in the snow", prompt_index=1)
    direct = direct_call(
        model,
        "a dog in the snow",
        2,
        num_inference_steps=4,
        width=32,
        height=32,
        scheduler=EulerAncestralDiscreteScheduler,
    )
    assert max_difference(new[0].image, direct) <= 1


def test_refinements_keep_their_lineage_and_the_same_generator_state(batch):
    first = batch.refine(4, ["a house on a hill, at dawn", "a house on a hill, in fog"], prompt_index=0)
    assert [item.label for item in first] == ["seed 4 · r1a", "seed 4 · r1b"]
    second = first.refine(4, "a house on a hill, in fog, oil painting", prompt_index=1)
    item = second[0]
    assert item.label == "seed 4 · r2"
    assert [step.prompt for step in second.lineage(4)] == [
        "a house on a hill",
        "a house on a hill, in fog",
        "a house on a hill, in fog, oil painting",
    ]
    assert item.state == batch.by_seed(4, prompt_index=0).state
    assert second.parent is first and first.parent is batch
    assert [group.title for group in second.groups()] == [
        "refine of seed 4 · r1b: a house on a hill, in fog, oil painting"
    ]


def test_refine_may_override_settings_but_not_the_size(batch):
    more = batch.refine(3, "a boat at sea", prompt_index=1, steps=6, guidance=3.0)
    assert more[0].call.num_inference_steps == 6 and more[0].call.guidance_scale == 3.0
    assert more[0].image.size == (32, 32)
    with pytest.raises(ValueError, match=re.escape("its size stays 32x32: width 64 would change it")):
        batch.refine(3, "x", prompt_index=1, width=64)


def test_refining_a_seed_that_is_not_there_lists_the_seeds_that_are(batch):
    with pytest.raises(ValueError, match=re.escape("seed 9 is not in this result; its seeds are 3, 4, 5, 6")):
        batch.refine(9, "x")
    with pytest.raises(ValueError, match="prompt_index is needed: seed 3 was used with prompts 0, 1"):
        batch.refine(3, "x")


def test_random_seeds_refine_exactly_from_their_stored_state():
    batch = nbbatch.generate("a lamp", num=3, **FAST)
    assert len(set(batch.seeds)) == 3
    seed = batch.seeds[1]
    again = batch.refine(seed, "a lamp")
    assert max_difference(again[0].image, batch.by_seed(seed).image) <= 1


def test_image_to_image_items_refine_with_their_input_and_strength(model):
    picture = Image.new("RGB", (32, 32), (40, 160, 90))
    batch = nbbatch.generate("a field", "0-2", images=[picture], strength=0.75, model=model, steps=4)
    again = batch.refine(1, "a field")
    assert max_difference(again[0].image, batch.by_seed(1).image) <= 1
    new = batch.refine(1, "a field of flowers")
    assert new[0].init_image is batch.by_seed(1).init_image and new[0].call.strength == 0.75
    direct = direct_call(model, "a field of flowers", 1, image=picture, strength=0.75, num_inference_steps=4)
    assert max_difference(new[0].image, direct) <= 1


def test_vary_makes_image_to_image_variations_of_the_chosen_picture(batch, model):
    chosen = batch.by_seed(6, prompt_index=0)
    variations = batch.vary(6, seeds=[10, 11], strength=0.5, prompt_index=0, steps=4)
    assert [item.label for item in variations] == ["seed 10 · vary of 6", "seed 11 · vary of 6"]
    assert all(item.init_image is chosen.image and item.prompt == chosen.prompt for item in variations)
    direct = direct_call(model, chosen.prompt, 11, image=chosen.image, strength=0.5, num_inference_steps=4)
    assert max_difference(variations[1].image, direct) <= 1
    assert len(batch.vary(6, prompt_index=0, steps=4)) == 4, "four random seeds by default"
    assert batch.vary(6, prompt_index=0, steps=4, seeds="20-21").seeds == [20, 21]
    with pytest.raises(ValueError, match="bad seed '-1'"):
        batch.vary(6, prompt_index=0, seeds=[-1])


def test_grid_labels_every_image_with_its_seed_in_rows_by_prompt(batch):
    grid = batch.grid(cell=64)
    assert [g.title for g in batch.groups()] == ["prompt 0: a house on a hill", "prompt 1: a boat at sea"]
    assert [g.indices for g in batch.groups()] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert grid.width >= 4 * 64 and grid.height >= 2 * 64


def test_rich_display_is_a_compressed_preview_with_a_summary(batch):
    html = batch._repr_html_()
    assert html.count("data:image/jpeg;base64,") == 1
    assert "8 images · nbbatch:tiny-sd" in html or "8 images · nbbatch:tiny-sdxl" in html
    assert "seed 3, seed 4" in html
    assert "seeds 3, 4, 5, 6" in repr(batch)


def test_matplotlib_figure_has_one_titled_axes_per_image(batch):
    figure = batch.figure(columns=4)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == [item.label for item in batch]


def test_a_4096_image_batch_previews_a_part_and_says_how_many_are_not_shown():
    from nbbatch.testing import picture_result, synthetic_picture

    result = picture_result([synthetic_picture(i % 16, size=8) for i in range(4096)])
    html = result._repr_html_()
    assert len(html) < 2_000_000
    assert "the first 256 images are shown; 3840 more are not: result.grid() draws them all" in html
    assert "seed 255" in html and "seed 256," not in html


def test_figure_titles_each_prompt_above_its_group_and_cuts_long_titles():
    from nbbatch.testing import picture_result, synthetic_picture

    long_prompt = "a very long prompt " * 20
    result = picture_result([synthetic_picture(i, size=16) for i in range(3)], prompt=long_prompt)
    figure = result.figure(columns=3)
    (text,) = [t for ax in figure.axes for t in ax.texts]
    assert text.get_text().startswith("prompt 0: a very long prompt") and text.get_text().endswith("…")
    assert len(text.get_text()) <= 3 * 14
    assert text.get_position()[1] > 1, "above the images, not below"


def test_a_refinement_shows_its_story_the_original_first_then_each_refinement_captioned_by_what_changed(batch):
    from nbbatch.core.grid import Group, make_grid

    original = batch.by_seed(4, prompt_index=0)
    refined = batch.refine(4, ["a house on a hill at dawn", "a house on a hill"], prompt_index=0, steps=6)
    labels = ["seed 4", "seed 4 · r1a: +at +dawn, steps 4->6", "seed 4 · r1b: steps 4->6"]
    row = [Group("the story of seed 4: a house on a hill", (0, 1, 2))]
    expected = make_grid([original.image, *refined.images], labels, row, cell=64)
    assert refined.grid(cell=64).tobytes() == expected.tobytes(), "one row: the original, then r1a and r1b"
    deeper = refined.refine(4, "a house on a hill at dusk", prompt_index=0)
    assert [item.label for item in deeper.lineage(4)] == ["seed 4", "seed 4 · r1a", "seed 4 · r2"]
    story = make_grid(
        [original.image, refined[0].image, deeper[0].image],
        ["seed 4", labels[1], "seed 4 · r2: -dawn +dusk"],
        row,
        cell=64,
    )
    assert deeper.lineage(4).grid(cell=64).tobytes() == story.tobytes(), "a refine of a refine: the whole chain"


def test_lineage_is_a_result_that_refines_and_saves_as_any_other(batch, tmp_path):
    refined = batch.refine(3, "a boat at sea, at night", prompt_index=1)
    chain = refined.lineage(3)
    assert isinstance(chain, nbbatch.BatchResult) and [i.origin for i in chain] == ["batch", "refine"]
    again = chain.refine(3, "a boat at sea, in a storm", prompt_index=1)  # prompt 1 of seed 3: the original
    assert again[0].label == "seed 3 · r1" and again[0].parent is chain[0] and again.runner is batch.runner
    assert len(chain.save(tmp_path, grid=False)) == 2


def test_compare_shows_images_side_by_side_captioned_by_their_differences(batch):
    from nbbatch.core.grid import Group, make_grid

    more = batch.refine(5, "a boat at sea", prompt_index=1, steps=6, guidance=3.0)
    compared = batch.compare(batch.by_seed(5, 1), more[0], batch.by_seed(6, 1))
    labels = ["seed 5", "seed 5 · r1: steps 4->6, guidance default->3", "seed 6: same settings"]
    group = [Group("compared with the first", (0, 1, 2))]
    expected = make_grid([item.image for item in compared], labels, group, cell=64)
    assert compared.grid(cell=64).tobytes() == expected.tobytes()
    with pytest.raises(ValueError, match="^compare needs two images or more"):
        batch.compare(5)
