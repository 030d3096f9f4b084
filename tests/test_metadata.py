import json
import os
import re

import pytest
from conftest import FAST, fail_on_call, max_difference
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from PIL import Image, PngImagePlugin

import nbbatch


@pytest.fixture
def batch():
    return nbbatch.generate(
        ["a quiet harbour, at dawn: misty", "a red kite"],
        "4-5",
        negative_prompt="blurry, dark",
        scheduler="euler-a",
        **FAST,
    )


def test_save_writes_one_png_per_image_with_both_chunks_a_grid_and_an_index(batch, tmp_path):
    paths = batch.save(tmp_path)
    assert [p.name for p in paths] == ["p00-s4.png", "p00-s5.png", "p01-s4.png", "p01-s5.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grid.png",
        "index.jsonl",
        "p00-s4.png",
        "p00-s5.png",
        "p01-s4.png",
        "p01-s5.png",
    ]
    with Image.open(paths[1]) as png:
        assert png.text["parameters"].splitlines() == [
            "a quiet harbour, at dawn: misty",
            "Negative prompt: blurry, dark",
            "Steps: 4, Sampler: Euler a, Schedule type: Uniform, CFG scale: 7.5, Seed: 5, Size: 32x32, "
            f"Model: nbbatch-tiny-sd, RNG: CPU, Version: nbbatch {nbbatch.__version__}",
        ]
        record = json.loads(png.text["nbbatch"])
    assert record["seed"] == 5 and record["settings"]["scheduler"] == "euler-a"
    assert record["call"]["pipeline"] == "StableDiffusionPipeline" and record["call"]["guidance_scale"] == 7.5
    assert record["call"]["scheduler_config"]["_class_name"] == "EulerAncestralDiscreteScheduler"
    assert record["nbbatch_record"] == 2 and "provenance" not in record, "a plain batch's: nothing to say"
    assert record["generator"]["device"] == "cpu" and len(record["generator"]["state"]) > 6000
    assert set(record["versions"]) == {"nbbatch", "diffusers", "transformers", "torch", "python"}
    lines = (tmp_path / "index.jsonl").read_text().splitlines()
    assert [json.loads(line)["file"] for line in lines] == [p.name for p in paths]


def test_load_and_reproduce_give_the_same_pixels(batch, tmp_path):
    paths = batch.save(tmp_path)
    loaded = nbbatch.load(paths[3])
    assert (loaded[0].prompt, loaded[0].seed, loaded[0].negative_prompt) == ("a red kite", 5, "blurry, dark")
    assert loaded[0].image.tobytes() == batch[3].image.tobytes()
    assert loaded[0].state == batch[3].state
    again = nbbatch.reproduce(paths[3])
    assert max_difference(again[0].image, batch[3].image) <= 1
    everything = nbbatch.load(tmp_path)
    assert [(item.prompt_index, item.seed) for item in everything] == [(0, 4), (0, 5), (1, 4), (1, 5)]
    refined = everything.refine(4, "a red kite, storm", prompt_index=1)
    assert max_difference(refined[0].image, batch.refine(4, "a red kite, storm", prompt_index=1)[0].image) <= 1


def test_image_to_image_saves_its_input_once_and_reproduces(tmp_path):
    picture = Image.new("RGB", (32, 32), (10, 200, 30))
    batch = nbbatch.generate("a meadow", "0-2", images=[picture], strength=0.5, steps=4)
    paths = batch.save(tmp_path)
    inputs = [p.name for p in tmp_path.iterdir() if p.name.startswith("input-")]
    assert len(inputs) == 1
    assert nbbatch.load(paths[2])[0].call.strength == 0.5
    assert max_difference(nbbatch.reproduce(paths[2])[0].image, batch[2].image) <= 1


def test_saving_twice_never_overwrites(batch, tmp_path):
    first = batch.save(tmp_path)
    second = batch.save(tmp_path)
    assert [p.name for p in second] == ["p00-s4-1.png", "p00-s5-1.png", "p01-s4-1.png", "p01-s5-1.png"]
    assert (tmp_path / "grid-1.png").exists()
    assert all(p.exists() for p in first)
    assert len((tmp_path / "index.jsonl").read_text().splitlines()) == 8


def test_an_interrupted_write_leaves_no_partial_file(batch, tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        batch.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_png_from_another_tool_loads_what_its_parameters_hold(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "a fox in snow\nNegative prompt: text\nSteps: 25, Sampler: Euler, CFG scale: 5, "
        "Seed: 42, Size: 64x48, Model: other",
    )
    path = tmp_path / "foreign.png"
    Image.new("RGB", (64, 48)).save(path, pnginfo=info)
    (item,) = nbbatch.load(path)
    assert (item.prompt, item.negative_prompt, item.seed) == ("a fox in snow", "text", 42)
    assert (item.found.tool, item.found.steps, item.found.guidance) == ("AUTOMATIC1111", 25, 5)
    assert (item.settings.width, item.settings.height, item.call) == (64, 48, None), "its settings; no call of ours"
    with pytest.raises(ValueError, match="was not made by nbbatch: it has no generator state"):
        nbbatch.reproduce(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"not an image"), "cannot read .* as an image"),
        (lambda p: Image.new("RGB", (8, 8)).save(p, format="PNG"), "holds no generation parameters"),
        (lambda p: Image.new("RGB", (8, 8)).save(p, format="JPEG"), "is a JPEG image"),
    ],
    ids=["garbage", "no-chunks", "jpeg"],
)
def test_unreadable_or_foreign_files_are_clear_errors(tmp_path, make, message):
    path = tmp_path / "file.png"
    make(path)
    with pytest.raises(ValueError, match=message):
        nbbatch.load(path)


def test_a_damaged_record_is_named(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("nbbatch", '{"seed": ')
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png", pnginfo=info)
    with pytest.raises(ValueError, match="the nbbatch record in .* is damaged"):
        nbbatch.load(tmp_path / "x.png")


def test_a_folder_that_cannot_be_written_is_a_clear_error_and_nothing_is_written(batch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    with pytest.raises(ValueError, match=re.escape(f"cannot write to '{blocker / 'out'}'")):
        batch.save(blocker / "out")
    assert blocker.read_text() == "I am a file"


def test_magic_save_and_autosave(shell, tmp_path):
    with capture_output() as captured:
        shell.run_cell_magic("batchgen", f"--seeds 0-1 --steps 4 --save {tmp_path / 'kept'}", "a lamp")
    assert f"saved 2 images and the grid to {tmp_path / 'kept'}" in captured.stdout
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [
        "grid.png",
        "index.jsonl",
        "p00-s0.png",
        "p00-s1.png",
    ]
    with pytest.raises(UsageError, match="--save and --autosave do not go together"):
        shell.run_cell_magic("batchgen", f"--save {tmp_path} --autosave {tmp_path}", "a")


def test_a_save_that_fails_after_the_run_keeps_the_result(shell, tmp_path, monkeypatch):
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("nbbatch.formats.png.Saver.add", disk_full)
    with capture_output(), pytest.raises(UsageError, match="No space left on device.*the images are in _batch"):
        shell.run_cell_magic("batchgen", f"--seeds 0-1 --steps 4 --save {tmp_path}", "a lamp")
    assert len(shell.user_ns["_batch"]) == 2


def test_autosave_keeps_chunks_1_and_2_after_a_failure_in_chunk_3(shell, tmp_path, monkeypatch):
    fail_on_call(monkeypatch, 3, "CUDA error: an illegal memory access was encountered")
    with capture_output() as captured, pytest.raises(RuntimeError, match="^CUDA error: an illegal memory access"):
        shell.run_cell_magic(
            "batchgen", f"--seeds 0-7 --batch-size 2 --guidance 7 --steps 4 --autosave {tmp_path}", "a lamp"
        )
    assert "its 4 finished images are in _batch" in captured.stderr, "the GPU's own error, after what was kept"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["grid.png", "index.jsonl", "p00-s0.png", "p00-s1.png", "p00-s2.png", "p00-s3.png"]
    saved = nbbatch.load(tmp_path)
    assert [item.seed for item in saved] == [0, 1, 2, 3]
    assert saved[3].call.num_inference_steps == 4
    with Image.open(tmp_path / "p00-s3.png") as png:
        assert (
            "Steps: 4, Sampler: Euler, Schedule type: Uniform, CFG scale: 7.0, Seed: 3, Size: 32x32"
            in png.text["parameters"]
        )


def test_a_folder_with_refinements_and_two_saves_loads_every_image_with_parent_links(tmp_path):
    first = nbbatch.generate("a lighthouse", "4-5", **FAST)
    refined = first.refine(5, "a lighthouse at night")
    again = refined.refine(5, "a lighthouse at night, stars")
    for result in (first, refined, again, first):  # the batch is saved twice
        result.save(tmp_path, grid=False)
    loaded = nbbatch.load(tmp_path)
    assert len(loaded) == 6
    with pytest.raises(ValueError, match=r"seed 5 has 4 images here \(batch, refine\): say which with origin"):
        loaded.by_seed(5)
    deepest = loaded.by_file("p00-s5-refine-1.png")
    assert deepest.label == "seed 5 · r2"
    assert [step.prompt for step in deepest.lineage()] == [
        "a lighthouse",
        "a lighthouse at night",
        "a lighthouse at night, stars",
    ]
    assert loaded.by_file("p00-s4-1.png").image.tobytes() == first.by_seed(4).image.tobytes()
    with pytest.raises(ValueError, match="no image here was loaded from 'nothing.png'"):
        loaded.by_file("nothing.png")


def test_a_missing_input_image_a_damaged_index_line_and_an_index_past_the_end_are_one_line(tmp_path):
    picture = Image.new("RGB", (32, 32), (10, 200, 30))
    nbbatch.generate("a", [1], images=picture, steps=4).save(tmp_path, grid=False)
    with pytest.raises(ValueError, match=r"^there is no image 3 in .*: it holds 1 image"):
        nbbatch.reproduce(tmp_path, 3)
    next(tmp_path.glob("input-*.png")).unlink()
    with pytest.raises(ValueError, match=r"its image-to-image input 'input-\w+\.png' is missing from") as caught:
        nbbatch.load(tmp_path)
    assert "\n" not in str(caught.value)
    (tmp_path / "index.jsonl").write_text('{"file": "p00-s1.png"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1 of .* is damaged: not an index entry"):
        nbbatch.load(tmp_path)


def test_a_png_saved_in_record_layout_1_loads_as_the_same_record(tmp_path):
    grid = nbbatch.generate("a {red|blue} kite", [4], x=("steps", [3, 4]), random=1, random_seed=2, **FAST)
    refined = nbbatch.generate("a red kite", [5], **FAST).refine(5, "a green kite")
    paths = [*grid.save(tmp_path, grid=False), *refined.save(tmp_path, grid=False)]
    for path in paths:  # as wave 2 wrote them: the provenance inside the call, the scheduler config beside it
        with Image.open(path) as png:
            record, image = json.loads(png.text["nbbatch"]), png.copy()
            parameters = png.text["parameters"]
        record["call"] |= record.pop("provenance", {})
        record["scheduler_config"] = record["call"].pop("scheduler_config")
        record["nbbatch_record"] = 1
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters)
        info.add_text("nbbatch", json.dumps(record))
        image.save(path, pnginfo=info)
    loaded = nbbatch.load(tmp_path)
    made = [*grid, *refined]
    assert [item.label for item in loaded] == [item.label for item in made] == [
        "seed 4 · steps: 3", "seed 4 · steps: 4", "seed 5 · r1",
    ]  # fmt: skip
    assert [(item.call, item.provenance) for item in loaded] == [(item.call, item.provenance) for item in made]
    assert loaded[0].provenance.template == "a {red|blue} kite" and loaded[2].provenance.step == "r1"
    assert [item.code() for item in loaded] == [item.code() for item in made]
    assert max_difference(nbbatch.reproduce(paths[2])[0].image, refined[0].image) <= 1
