import threading

import numpy as np
import pytest
import torch
from conftest import FAST, direct_call, fail_on_call, max_difference
from PIL import Image

import nbbatch
from nbbatch.models.pipelines import Loaded


def test_prompts_times_seeds_make_one_image_each_with_its_seed_prompt_and_size(model):
    result = nbbatch.generate(["a red cube", "a blue ball"], "0-2,9", model=model, **FAST)
    assert len(result) == 8 and result.complete
    assert [(item.prompt, item.seed) for item in result] == [
        (prompt, seed) for prompt in ("a red cube", "a blue ball") for seed in (0, 1, 2, 9)
    ]
    assert {item.image.size for item in result} == {(32, 32)}
    assert result.seeds == [0, 1, 2, 9]
    assert result.by_seed(9, prompt_index=1).prompt == "a blue ball"
    assert len({item.image.tobytes() for item in result}) == 8, "every image has its own noise"


def test_every_image_equals_the_image_made_alone_and_by_diffusers_directly(model):
    result = nbbatch.generate(["a red cube", "a blue ball"], [3, 4, 5], model=model, **FAST)
    for item in result:
        alone = nbbatch.generate(item.prompt, item.seed, model=model, **FAST)
        assert max_difference(alone[0].image, item.image) <= 1
    item = result.by_seed(4, prompt_index=1)
    direct = direct_call(model, "a blue ball", 4, num_inference_steps=4, width=32, height=32)
    assert max_difference(direct, item.image) <= 1


def test_chunks_of_the_batch_size_give_the_same_images_as_one_call():
    whole = nbbatch.generate(["a", "b"], "0-4", **FAST)
    chunked = nbbatch.generate(["a", "b"], "0-4", batch_size=3, **FAST)
    assert chunked.batch_size == 3
    assert max(max_difference(x.image, y.image) for x, y in zip(whole, chunked)) <= 1


def test_items_record_every_parameter_and_the_generator_state():
    result = nbbatch.generate("a cat", [7], negative_prompt="blurry", guidance=6.0, **FAST)
    item = result[0]
    assert item.negative_prompt == "blurry"
    recorded = item.call.model_dump(exclude_defaults=True)
    assert recorded.pop("scheduler_config")["_class_name"] == "EulerDiscreteScheduler"
    assert item.provenance.as_plain() == {}, "a plain batch: no template, grid cell or refinement"
    assert recorded == {
        "model": "nbbatch:tiny-sd",
        "pipeline": "StableDiffusionPipeline",
        "scheduler": "EulerDiscreteScheduler",
        "dtype": "float32",
        "device": "cpu",
        "generator_device": "cpu",
        "num_inference_steps": 4,
        "guidance_scale": 6.0,
        "width": 32,
        "height": 32,
    }
    assert item.state == torch.Generator().manual_seed(7).get_state().numpy().tobytes()


def test_pipeline_default_guidance_is_recorded(model):
    result = nbbatch.generate("a cat", [0], model=model, **FAST)
    assert result[0].call.guidance_scale == (7.5 if model.endswith("tiny-sd") else 5.0)


def test_image_to_image_makes_every_picture_with_every_prompt_and_seed(model):
    red = Image.new("RGB", (40, 40), (220, 30, 30))
    blue = Image.new("RGB", (40, 40), (30, 30, 220))
    result = nbbatch.generate(["warm", "cold"], "0-1", images=[red, blue], strength=0.5, model=model, steps=4)
    assert len(result) == 8 and {item.image.size for item in result} == {(40, 40)}
    assert [item.init_image for item in result] == [red] * 4 + [blue] * 4
    assert result[0].call.pipeline.endswith("Img2ImgPipeline") and result[0].call.strength == 0.5
    blue_cold = result[7]
    assert (blue_cold.prompt, blue_cold.seed) == ("cold", 1)
    direct = direct_call(model, "cold", 1, image=blue, strength=0.5, num_inference_steps=4)
    assert max_difference(direct, blue_cold.image) <= 1
    wrong_picture = direct_call(model, "cold", 1, image=red, strength=0.5, num_inference_steps=4)
    assert max_difference(wrong_picture, blue_cold.image) > 1, "the input image matters"


def test_cpu_float16_runs_and_says_so():
    result = nbbatch.generate("a cat", "0-1", dtype="fp16", **FAST)
    assert result[0].call.dtype == "float16"
    assert "float16" in result.placement
    assert not result.broken and len(result) == 2


def test_progress_covers_every_image_and_ends_at_one():
    seen = []
    nbbatch.generate(["a", "b"], "0-2", batch_size=4, observer=nbbatch.Observer(progress=seen.append), **FAST)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    first_chunk, second_chunk = (p.describe() for p in seen if p.chunk and p.step == 2)
    assert first_chunk.startswith("images 1-4 of 6 · step 2/4 · ") and first_chunk.endswith(" s left")
    assert second_chunk.startswith("images 5-6 of 6 · step 2/4")
    assert seen[-1].describe() == "6 of 6 images"


def test_cancel_keeps_the_finished_chunks_and_drops_the_half_denoised_one():
    cancel = threading.Event()

    def on_progress(progress):
        if progress.done == 2 and progress.step == 2:
            cancel.set()

    result = nbbatch.generate(
        "a", "0-5", batch_size=2, observer=nbbatch.Observer(progress=on_progress), cancel=cancel, **FAST
    )
    assert result.status == "cancelled" and not result.complete
    assert [item.seed for item in result] == [0, 1]
    full = nbbatch.generate("a", "0-1", **FAST)
    assert max(max_difference(a.image, b.image) for a, b in zip(full, result)) <= 1


def test_kernel_interrupt_at_image_5_of_8_keeps_images_1_to_4():
    def on_progress(progress):
        if progress.done == 4 and progress.step == 1:
            raise KeyboardInterrupt

    result = nbbatch.generate("a", "0-7", batch_size=1, observer=nbbatch.Observer(progress=on_progress), **FAST)
    assert result.status == "interrupted" and not result.complete
    assert [item.seed for item in result] == [0, 1, 2, 3]
    assert "4 of 8 images" in result.summary() and "interrupted" in result.summary()


class OutOfMemoryAbove:
    """Wraps a pipeline and raises torch.OutOfMemoryError for calls of more than `limit` images."""

    def __init__(self, pipe, limit):
        self.pipe, self.limit, self.calls = pipe, limit, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        self.calls.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.pipe(**kwargs)


# The wrappers hide the pipeline's signature, so these tests give the guidance scale themselves.
WRAPPED = {**FAST, "guidance": 7.5}


@pytest.fixture
def out_of_memory_above_3(monkeypatch):
    wrappers = {}
    original = Loaded.view

    def view(self, image_to_image, scheduler, inpaint=False):
        pipe = original(self, image_to_image, scheduler, inpaint)
        return wrappers.setdefault(id(pipe), OutOfMemoryAbove(pipe, 3))

    monkeypatch.setattr(Loaded, "view", view)
    nbbatch.clear_cache()
    yield wrappers
    nbbatch.clear_cache()


def test_auto_batch_size_halves_on_out_of_memory_and_keeps_every_image(out_of_memory_above_3):
    result = nbbatch.generate(["a", "b"], "0-4", batch_size="auto", **WRAPPED)
    (wrapper,) = out_of_memory_above_3.values()
    assert wrapper.calls == [10, 5, 2, 2, 2, 2, 2]
    assert result.complete and result.batch_size == 2
    assert "batch size 2 (auto)" in result.summary()
    wrapper.limit = 10  # now the whole batch fits: the unchunked reference
    reference = nbbatch.generate(["a", "b"], "0-4", **WRAPPED)
    assert wrapper.calls[-1] == 10
    assert max(max_difference(x.image, y.image) for x, y in zip(reference, result)) <= 1


def test_the_working_batch_size_is_reused_by_the_next_run(out_of_memory_above_3):
    nbbatch.generate("a", "0-7", batch_size="auto", **WRAPPED)
    (wrapper,) = out_of_memory_above_3.values()
    wrapper.calls.clear()
    nbbatch.generate("b", "0-3", batch_size="auto", **WRAPPED)
    assert wrapper.calls == [2, 2]


def test_out_of_memory_with_a_fixed_batch_size_fails_clearly_and_keeps_nothing_half_done(out_of_memory_above_3):
    with pytest.raises(nbbatch.BatchError, match="CUDA out of memory") as caught:
        nbbatch.generate("a", "0-5", batch_size=4, **WRAPPED)
    assert len(caught.value.result) == 0 and caught.value.result.status == "failed"


class NaNForPrompt:
    """Wraps a pipeline so that images of prompts containing 'overflow' come back NaN, like an fp16 VAE overflow."""

    def __init__(self, pipe):
        self.pipe = pipe

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        output = self.pipe(**kwargs)
        for index, prompt in enumerate(kwargs["prompt"]):
            if "overflow" in prompt:
                output.images[index][:] = np.nan
        return output


@pytest.mark.parametrize(
    ("dtype", "advice"),
    [
        ("fp16", "In float16 this is usually the VAE overflowing.*fp16-fixed VAE"),
        ("fp32", "The run was already in float32"),
    ],
)
def test_nan_images_are_flagged_and_warned_about_naming_the_seeds(monkeypatch, dtype, advice):
    original = Loaded.view
    monkeypatch.setattr(Loaded, "view", lambda self, i, s, inpaint=False: NaNForPrompt(original(self, i, s, inpaint)))
    with pytest.warns(
        RuntimeWarning, match=r"2 image\(s\) came out NaN or all black \(seeds 4, 5\)\. " + advice
    ) as seen:
        result = nbbatch.generate(["fine", "overflow"], "4-5", dtype=dtype, **WRAPPED)
    assert all("fp32" not in str(w.message) for w in seen if dtype == "fp32"), "no fp32 advice to an fp32 run"
    assert [(item.prompt, item.seed) for item in result.broken] == [("overflow", 4), ("overflow", 5)]
    assert "broken (NaN or black): seeds 4, 5" in result.summary()
    assert len(result) == 4, "broken images are shown, not hidden"


def test_a_failure_in_a_later_chunk_keeps_the_earlier_ones(monkeypatch):
    fail_on_call(monkeypatch, 3, "disk on fire")
    with pytest.raises(nbbatch.BatchError, match="4 of 8 images.*failed, incomplete: disk on fire") as caught:
        nbbatch.generate("a", "0-7", batch_size=2, **WRAPPED)
    assert [item.seed for item in caught.value.result] == [0, 1, 2, 3]


def test_a_second_batch_while_one_runs_is_refused_clearly():
    started, release = threading.Event(), threading.Event()

    def hold(progress):
        started.set()
        release.wait(30)

    worker = threading.Thread(
        target=nbbatch.generate, args=("a", [0]), kwargs={"observer": nbbatch.Observer(progress=hold), **FAST}
    )
    worker.start()
    try:
        assert started.wait(30)
        with pytest.raises(ValueError, match="another batch is running"):
            nbbatch.generate("b", [1], **FAST)
    finally:
        release.set()
        worker.join(30)
    assert len(nbbatch.generate("b", [1], **FAST)) == 1


def test_an_error_in_the_callers_on_progress_ends_the_run_keeping_finished_images():
    def explode(progress):
        if progress.done == 2 and progress.step == 1:
            raise RuntimeError("my callback broke")

    with pytest.raises(nbbatch.BatchError, match="my callback broke") as caught:
        nbbatch.generate("a", "0-5", batch_size=2, observer=nbbatch.Observer(progress=explode), **FAST)
    assert [item.seed for item in caught.value.result] == [0, 1]


def test_refine_and_vary_raise_batch_error_with_the_finished_images(monkeypatch):
    batch = nbbatch.generate("a", "0-1", guidance=7.0, **FAST)
    fail_on_call(monkeypatch, 1, "GPU fell over")
    with pytest.raises(nbbatch.BatchError, match="GPU fell over") as caught:
        batch.refine(0, "b")
    assert len(caught.value.result) == 0 and caught.value.result.status == "failed"
    assert isinstance(caught.value.__cause__, RuntimeError), "the library's error and traceback, as the cause"
    fail_on_call(monkeypatch, 1, "GPU fell over")
    with pytest.raises(nbbatch.BatchError, match="GPU fell over"):
        batch.vary(0, seeds=[3], guidance=7.0)


def test_text_with_several_lines_is_several_prompts_and_numpy_integers_are_seeds():
    result = nbbatch.generate("a red cube\n# not a prompt\n\na blue ball", np.arange(2, 4), **FAST)
    assert [(item.prompt, item.seed) for item in result] == [
        ("a red cube", 2),
        ("a red cube", 3),
        ("a blue ball", 2),
        ("a blue ball", 3),
    ]
    assert nbbatch.generate("a", np.int64(7), **FAST)[0].seed == 7
    with pytest.raises(ValueError, match="seeds must be whole numbers, not 1.5"):
        nbbatch.generate("a", [1.5], **FAST)


def test_numpy_arrays_and_tensors_are_input_images_like_the_pil_image():
    picture = Image.new("RGB", (32, 32), (200, 40, 40))
    picture.paste((20, 60, 220), (8, 8, 24, 24))
    array = np.asarray(picture)
    expected = nbbatch.generate("a", [1], images=picture, steps=4)[0].image
    for given in (array, array.astype(np.float32) / 255, torch.tensor(array).permute(2, 0, 1) / 255.0):
        assert max_difference(nbbatch.generate("a", [1], images=given, steps=4)[0].image, expected) == 0


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("a string", "the input images: 'a string' is no picture file, folder or glob"),
        ({"a": 1}, "input image 0 is a dict: give a PIL image, a NumPy array or a torch tensor"),
        (np.zeros((4, 4, 4, 3)), r"input image 0 is an array of shape \(4, 4, 4, 3\): pictures are HxWx3"),
        (np.full((16, 16, 3), 7.0), "values outside 0-1"),
    ],
)
def test_other_inputs_are_named_by_type_never_printed(given, message):
    with pytest.raises(ValueError, match=message) as caught:
        nbbatch.generate("a", [1], images=given, steps=4)
    assert "[[" not in str(caught.value), "no array is printed"
