"""Step previews and the grid that fills: pictures of the images in flight, then the finished images."""

import threading
import types

import numpy as np
import pytest
from PIL import Image

import nbbatch
from nbbatch.core import engine
from nbbatch.core.result import plan_grid
from nbbatch.core.spec import Job
from nbbatch.models.previews import SD_FACTORS, LatentMap, latent_map

SHAPES = {"model": "nbbatch:shapes", "steps": 12, "batch_size": 2}
PROMPTS = ["a red circle on a blue background", "a yellow square on a black background"]


@pytest.fixture
def every_step(monkeypatch):
    """Previews at every step (the four-a-second limit would skip most steps of these fast runs)."""
    monkeypatch.setattr(engine, "PREVIEW_EVERY", 0.0)


def distance(a: Image.Image, b: Image.Image) -> float:
    """The mean absolute difference of two pictures of one size, in levels."""
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def mean_colour(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


@pytest.mark.usefixtures("every_step")
@pytest.mark.parametrize("scheduler", [None, "dpm++2m"])
def test_previews_arrive_per_chunk_with_steps_and_end_as_the_finished_image(scheduler):
    shown = []
    made = nbbatch.generate(
        PROMPTS, [0, 1], observer=nbbatch.Observer(preview=shown.append), scheduler=scheduler, **SHAPES
    )
    assert [p.positions for p in shown] == [(0, 1)] * 12 + [(2, 3)] * 12, "per chunk of two, every step"
    assert [p.step for p in shown[:12]] == list(range(1, 13)) and {p.steps for p in shown} == {12}
    assert all(isinstance(picture, Image.Image) and picture.size == (64, 64) for p in shown for picture in p.images)
    last = {position: picture for p in shown for position, picture in zip(p.positions, p.images)}
    offs = [np.abs(mean_colour(last[n]) - mean_colour(item.image)).max() for n, item in enumerate(made)]
    # On 240 unseen pictures the map's mean colour is 3.5 levels off (median; p90 12): here 2-7, and 15 for the big
    # red circle, which the decoder draws larger than its latent's blob (a per-pixel map cannot see that)
    assert np.median(offs) < 8 and max(offs) < 20, f"preview mean colours {np.round(offs, 1)} levels off"
    for position, item in enumerate(made):
        nearest = min(made, key=lambda other: distance(last[position], other.image))
        assert nearest is item, f"image {position}'s last preview looks most like another image"
    first = {position: picture for p in reversed(shown) for position, picture in zip(p.positions, p.images)}
    assert distance(first[0], made[0].image) > distance(last[0], made[0].image), "previews converge"


def test_previews_stop_when_the_run_stops(every_step):
    cancel = threading.Event()
    shown = []

    def preview(p):
        shown.append(p)
        if p.step == 3:
            cancel.set()

    stopped = nbbatch.generate(PROMPTS, [0, 1], observer=nbbatch.Observer(preview=preview), cancel=cancel, **SHAPES)
    assert stopped.status == "cancelled" and len(stopped) == 0
    assert [p.step for p in shown] == [1, 2, 3], "no preview after the step that cancelled"


def test_no_previews_for_an_observer_that_wants_none_or_for_latents_of_unknown_colours(every_step):
    shown, progress = [], []

    class Unwanted(nbbatch.Observer):
        wants_previews = False

        def preview(self, preview):
            shown.append(preview)

    nbbatch.generate(PROMPTS, [0], observer=Unwanted(progress=progress.append), **SHAPES)
    assert progress and shown == [], "told of the progress, shown no picture"
    nbbatch.generate(PROMPTS, [0], observer=nbbatch.Observer(progress=progress.append), **SHAPES)
    nbbatch.generate(
        "a red cat", [0], observer=nbbatch.Observer(preview=shown.append), steps=4, width=32, height=32
    )  # tiny-sd: random
    assert shown == []


def test_at_most_four_previews_a_second():
    shown = []
    made = nbbatch.generate(
        PROMPTS * 4, [0, 1], observer=nbbatch.Observer(preview=shown.append), **{**SHAPES, "steps": 20}
    )
    elapsed = made.elapsed
    assert 0 < len(shown) <= 4 * elapsed + 1


def test_the_published_factors_are_chosen_by_the_vae_and_a_folder_can_say_none():
    def pipe(scaling, channels=4):
        return types.SimpleNamespace(
            vae=types.SimpleNamespace(config={"scaling_factor": scaling, "latent_channels": channels})
        )

    assert latent_map(pipe(0.18215), {}) == LatentMap(SD_FACTORS)
    assert latent_map(pipe(0.13025), {}).bias == (0.1084, -0.0175, -0.0011)
    assert latent_map(pipe(0.5), {}) is None and latent_map(pipe(0.18215, 16), {}) is None
    assert latent_map(pipe(1.5305, 16), {}).bias == (0.2394, 0.2135, 0.1925)  # SD3's 16 channels
    assert latent_map(pipe(0.3611, 16), {}).bias == (-0.0329, -0.0718, -0.0851)  # FLUX.1's
    assert latent_map(pipe(1.0, 16), {}) is None  # CogView4's: no published colours
    assert latent_map(pipe(0.18215), {"latent_rgb": None}) is None


def test_a_latent_map_draws_each_channel_in_its_colour():
    import torch

    latents = torch.zeros(1, 4, 2, 2)
    latents[0, 0] = 1.0  # channel 0 alone: SD's first row of factors
    (picture,) = LatentMap(SD_FACTORS).images(latents)
    expected = [round((1 + f) * 127.5) for f in SD_FACTORS[0]]
    assert picture.getpixel((0, 0)) == tuple(expected)


def test_a_palette_map_snaps_colours_a_linear_map_cannot_and_round_trips_through_json():
    import json

    import torch

    from nbbatch.models.previews import fit_latent_map, fit_palette

    colours = [(-1.0, -1.0, -1.0), (1.0, -1.0, -1.0), (-1.0, -1.0, 1.0), (1.0, 1.0, 1.0)]
    palette = torch.tensor(colours)
    generator = torch.Generator().manual_seed(3)
    count = 24
    fg, bg = torch.randint(4, (count,), generator=generator), torch.randint(4, (count,), generator=generator)
    inside = torch.zeros(count, 1, 6, 6)
    inside[:, :, 1:4, 2:5] = 1.0
    push = 1 + torch.rand(count, 1, 1, 1, generator=generator)  # guidance-like: pushed by a varying factor
    shift = torch.tensor([0.8, 0.0, 0.0] * 2)[None, :, None, None]  # and off the palette: nearest colour is wrong
    fields = 0.4 * push * torch.cat([palette[fg], palette[bg]], dim=1)[:, :, None, None].expand(-1, -1, 6, 6) + shift
    latents = torch.cat([2 * inside - 1, fields], dim=1) + 0.05 * torch.randn(count, 7, 6, 6, generator=generator)
    pictures = palette[bg][:, :, None, None] + inside * (palette[fg] - palette[bg])[:, :, None, None]
    mapping = fit_palette(latents, pictures, colours, mask=0, shape=(1, 2, 3), background=(4, 5, 6), steps=300)
    start = fit_palette(latents, pictures, colours, mask=0, shape=(1, 2, 3), background=(4, 5, 6), steps=0)

    def error(candidate):
        return float((candidate.rgb(latents).clamp(-1, 1).permute(0, 3, 1, 2) - pictures).abs().mean())

    assert error(mapping) < 0.05 and error(start) > 0.1, "it learns which colour the decoder picks"
    assert error(fit_latent_map(latents, pictures)) > 0.2, "which no linear map draws"
    again = LatentMap.from_notes(json.loads(json.dumps(mapping.as_notes())))
    assert again == mapping and error(again) == error(mapping)
    assert fit_palette(latents, pictures, colours, 0, (1, 2, 3), (4, 5, 6), steps=300) == mapping, "deterministic"


def test_a_stopped_batch_draws_the_images_not_made_as_grey_cells():
    cancel = threading.Event()
    made = nbbatch.generate(
        PROMPTS, [0, 1], cancel=cancel, observer=nbbatch.Observer(progress=lambda p: p.done and cancel.set()), **SHAPES
    )
    assert made.status == "cancelled" and len(made) == 2
    full = nbbatch.generate(PROMPTS, [0, 1], **SHAPES)
    assert made.grid().size == full.grid().size, "all four cells are drawn"
    grey = (np.asarray(made.grid()) == 232).all(axis=-1).sum()
    assert grey >= 2 * 250 * 250, "the two images not made are grey cells"
    assert (np.asarray(full.grid()) == 232).all(axis=-1).sum() < grey


def test_plan_grid_puts_pictures_where_they_are_and_grey_elsewhere():
    jobs = [Job("a", 0, 0), Job("a", 1, 0), Job("b", 0, 1)]
    red = Image.new("RGB", (64, 64), (255, 0, 0))
    grid = plan_grid(jobs, {1: red}, {1: "seed 1 · step 3/10"}, cell=64, columns=2)
    pixels = np.asarray(grid)
    assert (pixels == (232, 232, 232)).all(axis=-1).sum() >= 2 * 60 * 60, "two grey cells"
    assert (pixels == (255, 0, 0)).all(axis=-1).sum() >= 60 * 60, "the red picture in its cell"


def test_the_magic_grid_fills_in_place_and_leaves_only_the_final_grid(shell, monkeypatch, every_step):
    from IPython.utils.capture import capture_output

    monkeypatch.setattr(shell, "kernel", types.SimpleNamespace(), raising=False)  # as in Jupyter: displays update
    with capture_output() as captured:
        shell.run_cell_magic(
            "batchgen", "--model nbbatch:shapes --seeds 0-1 --steps 6 --batch-size 2", "\n".join(PROMPTS)
        )
    outputs = captured.outputs
    grid_id = next(o.transient["display_id"] for o in outputs if "nbbatch-live" in o.data.get("text/html", ""))
    frames = [o for o in outputs if o.transient and o.transient.get("display_id") == grid_id]
    texts = [o.data["text/plain"] for o in frames]
    assert "2 of 4 images" in texts and "0 of 4 images" in texts, "previews, then the first chunk, in place"
    assert all(o.update for o in frames[1:]) and frames[-1].data == {"text/plain": ""}, "emptied at the end"
    assert "nbbatch-result" in outputs[-1].data["text/html"] and not outputs[-1].update, "then the final grid"
    assert shell.user_ns["_batch"].complete


def test_no_preview_keeps_the_bar_alone(shell, monkeypatch):
    from IPython.utils.capture import capture_output

    monkeypatch.setattr(shell, "kernel", types.SimpleNamespace(), raising=False)
    with capture_output() as captured:
        shell.run_cell_magic("batchgen", "--model nbbatch:shapes --seeds 0 --steps 4 --no-preview", PROMPTS[0])
    assert not [o for o in captured.outputs if "nbbatch-live" in o.data.get("text/html", "")]
    assert "nbbatch-result" in captured.outputs[-1].data["text/html"]
