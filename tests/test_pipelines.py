import re

import pytest
from conftest import FAST, direct_call, max_difference

import nbbatch
from nbbatch.core.spec import Settings
from nbbatch.models.pipelines import (
    Placement,
    apply_memory_options,
    choose_placement,
    generator_device,
    place,
    resolve_model,
)
from nbbatch.session import default_session


@pytest.mark.parametrize(
    ("device", "dtype", "cuda", "expected"),
    [
        ("auto", "auto", True, ("cuda", "float16")),
        ("auto", "auto", False, ("cpu", "float32")),
        ("auto", "bf16", True, ("cuda", "bfloat16")),
        ("cuda:1", "auto", True, ("cuda:1", "float16")),
        ("cpu", "auto", True, ("cpu", "float32")),
        ("cpu", "fp16", False, ("cpu", "float16")),
        ("mps", "auto", False, ("mps", "float16")),
    ],
)
def test_device_and_dtype_choice(device, dtype, cuda, expected, monkeypatch):
    monkeypatch.setattr("nbbatch.models.pipelines._mps_available", lambda: True)  # as on a Mac
    placement = choose_placement(device, dtype, cuda=cuda)
    assert (placement.device, placement.dtype) == expected
    assert placement.reason.startswith(f"{expected[0]}, {expected[1]} (")


def test_auto_says_why():
    assert choose_placement(cuda=True).reason == "cuda, float16 (CUDA is available; float16 is the default on cuda)"
    assert choose_placement(cuda=False).reason == "cpu, float32 (no CUDA device found; float32 is the default on cpu)"


def test_cuda_generators_follow_the_guide_when_cuda_is_there():
    assert generator_device(Settings(generator_device="cuda"), cuda=True) == "cuda"
    assert generator_device(Settings(), cuda=True) == "cpu", "CPU generators by default: same image on any machine"
    with pytest.raises(ValueError, match="needs CUDA"):
        generator_device(Settings(generator_device="cuda:0"), cuda=False)


class Recorder:
    def __init__(self):
        self.calls = []

    def to(self, device):
        self.calls.append(("to", device))

    def enable_model_cpu_offload(self, device):
        self.calls.append(("offload", device))


def test_offload_installs_cpu_offload_instead_of_moving_the_pipeline():
    pipe = Recorder()
    place(pipe, Placement("cuda", "float16", ""), offload=True)
    assert pipe.calls == [("offload", "cuda")]
    pipe = Recorder()
    place(pipe, Placement("cuda:1", "float16", ""), offload=False)
    assert pipe.calls == [("to", "cuda:1")]


def test_offload_is_refused_without_cuda():
    with pytest.raises(ValueError, match="it needs a CUDA device"):
        default_session().pipelines.get(Settings(offload=True), cuda=False)


def test_the_pipeline_is_loaded_once_and_image_to_image_shares_its_weights():
    nbbatch.clear_cache()
    first = default_session().pipelines.get(Settings())
    assert default_session().pipelines.get(Settings(steps=9, guidance=2.0)) is first
    img2img = first.view(True, None)
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert img2img.unet is first.pipe.unet and img2img.vae is first.pipe.vae
    euler_a = first.view(False, "euler-a")
    assert type(euler_a.scheduler).__name__ == "EulerAncestralDiscreteScheduler" and euler_a.unet is first.pipe.unet
    assert type(first.pipe.scheduler).__name__ == "EulerDiscreteScheduler", "the loaded pipeline is left as it was"
    assert first.view(True, None) is img2img


def test_vae_slicing_is_on_for_gpus_only_and_tiling_when_asked():
    tiled = nbbatch.generate("a", "0-1", steps=4, width=64, height=64, vae_tiling=True)
    pipe = default_session().pipelines.get(Settings()).pipe
    assert pipe.vae.use_tiling and not pipe.vae.use_slicing, "on the CPU the batch decodes at once"
    plain = nbbatch.generate("a", "0-1", steps=4, width=64, height=64)
    assert not pipe.vae.use_slicing and not pipe.vae.use_tiling
    assert tiled[0].image.size == plain[0].image.size == (64, 64)
    apply_memory_options(pipe, Settings(), "cuda")
    assert pipe.vae.use_slicing, "on a GPU the decode's memory must not grow with the batch"
    apply_memory_options(pipe, Settings(), "cpu")


def test_another_model_replaces_the_cached_one():
    sd = default_session().pipelines.get(Settings())
    sdxl = default_session().pipelines.get(Settings(model="nbbatch:tiny-sdxl"))
    assert sdxl is not sd and type(sdxl.pipe).__name__ == "StableDiffusionXLPipeline"
    assert default_session().pipelines.get(Settings()) is not sd, "only one pipeline is kept"


def test_a_saved_folder_loads_like_a_hub_model(tmp_path):
    nbbatch.build_tiny_pipeline("sd").save_pretrained(tmp_path / "my-model")
    result = nbbatch.generate("a cat", [1], model=str(tmp_path / "my-model"), steps=4, width=32, height=32)
    reference = nbbatch.generate("a cat", [1], steps=4, width=32, height=32)
    assert result[0].image.tobytes() == reference[0].image.tobytes(), "the built-in model is this same build"


def test_a_folder_saved_as_image_to_image_loads_as_its_text_to_image_pipeline(tmp_path):
    """As AutoPipelineForText2Image maps it: an SD image-to-image folder draws what the SD folder draws."""
    from diffusers import StableDiffusionImg2ImgPipeline

    StableDiffusionImg2ImgPipeline(**nbbatch.build_tiny_pipeline("sd").components).save_pretrained(tmp_path / "i2i")
    result = nbbatch.generate("a cat", [1], model=str(tmp_path / "i2i"), steps=4, width=32, height=32)[0]
    assert result.call.pipeline == "StableDiffusionPipeline"
    reference = nbbatch.generate("a cat", [1], steps=4, width=32, height=32)[0]
    assert result.image.tobytes() == reference.image.tobytes()


def test_a_weight_variant_loads_the_files_saved_in_it(tmp_path):
    nbbatch.build_tiny_pipeline("sd").save_pretrained(tmp_path / "model", variant="fp16")
    assert list((tmp_path / "model" / "unet").glob("*.fp16.safetensors"))
    result = nbbatch.generate("a cat", [1], model=str(tmp_path / "model"), variant="fp16", steps=4, width=32, height=32)
    reference = nbbatch.generate("a cat", [1], steps=4, width=32, height=32)
    assert result[0].image.tobytes() == reference[0].image.tobytes()
    with pytest.raises(ValueError, match="could not load model .*variant"):
        nbbatch.generate("a cat", [1], model=str(tmp_path / "model"), variant="bf16", steps=1)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("./missing", "model folder './missing' does not exist"),
        ("/tmp/no/such/model", "does not exist"),
        ("nbbatch:tiny-xl", "unknown built-in model"),
    ],
)
def test_missing_models_are_named(model, message):
    with pytest.raises(ValueError, match=message):
        resolve_model(model)


def test_a_folder_that_is_not_a_pipeline_is_named(tmp_path):
    with pytest.raises(ValueError, match="is not a diffusers pipeline: it has no model_index.json"):
        resolve_model(str(tmp_path))


def test_a_hub_id_is_passed_to_from_pretrained_and_its_failure_is_one_clear_line(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # no waiting for a network that isn't
    monkeypatch.setattr("diffusers.utils.hub_utils.HF_HUB_OFFLINE", True)
    assert resolve_model("stabilityai/stable-diffusion-xl-base-1.0") == "stabilityai/stable-diffusion-xl-base-1.0"
    with pytest.raises(ValueError, match=r"^could not load model 'someone/not-cached': [^\n]+$"):
        nbbatch.generate("a", [0], model="someone/not-cached", steps=1)


@pytest.mark.parametrize(
    ("scheduler", "steps", "message"),
    [
        ("pndm", 3, "steps must be at least 4 for the pndm scheduler, not 3"),
        ("FlowMatchEulerDiscreteScheduler", 4, "FlowMatchEulerDiscreteScheduler does not fit this pipeline"),
        ("lms", 4, r"scheduler LMSDiscreteScheduler needs the scipy package: pip install scipy"),
        ("DPMSolverSDEScheduler", 4, "needs the torchsde package: pip install torchsde"),
    ],
)
def test_schedulers_that_cannot_run_are_refused_before_anything_runs(scheduler, steps, message):
    with pytest.raises(ValueError, match=message):
        nbbatch.generate("a", [0], scheduler=scheduler, steps=steps, width=32, height=32)


@pytest.mark.parametrize(
    ("name", "cls", "options", "sampler"),
    [
        (
            "euler-karras",
            "EulerDiscreteScheduler",
            {"use_karras_sigmas": True},
            "Sampler: Euler, Schedule type: Karras",
        ),
        (
            "dpm++2m-sde-karras",
            "DPMSolverMultistepScheduler",
            {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"},
            "Sampler: DPM++ 2M SDE, Schedule type: Karras",
        ),
        (
            "dpm++2m-exponential",
            "DPMSolverMultistepScheduler",
            {"use_exponential_sigmas": True},
            "Schedule type: Exponential",
        ),
    ],
)
def test_schedules_equal_raw_diffusers_with_their_sigmas_and_are_written_as_a1111_does(
    model, name, cls, options, sampler, tmp_path
):
    import diffusers
    from PIL import Image

    made = nbbatch.generate("a red cat", [2], scheduler=name, model=model, **FAST)
    raw = direct_call(
        model,
        "a red cat",
        2,
        scheduler=getattr(diffusers, cls),
        scheduler_options=options,
        num_inference_steps=FAST["steps"],
        width=FAST["width"],
        height=FAST["height"],
    )
    assert max_difference(made[0].image, raw) <= 1
    (path,) = made.save(tmp_path, grid=False)
    with Image.open(path) as png:
        assert sampler in png.text["parameters"]


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [
        ("ddim-karras", "scheduler DDIMScheduler has no karras schedule: choose it without -karras"),
        ("euler-beta", "scheduler EulerDiscreteScheduler with the beta schedule needs the scipy package"),
        ("nope-karras", "unknown scheduler 'nope-karras'"),
    ],
)
def test_schedules_a_scheduler_lacks_are_one_line_errors(scheduler, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        nbbatch.generate("a", [0], scheduler=scheduler, **FAST)


@pytest.mark.parametrize("scheduler", ["heun", "pndm"])
def test_progress_of_multi_order_schedulers_ends_at_one_and_never_runs_backwards(scheduler):
    seen = []
    result = nbbatch.generate(
        "a", "0-3", scheduler=scheduler, batch_size=2, observer=nbbatch.Observer(progress=seen.append), **FAST
    )
    assert result.complete
    fractions = [p.fraction for p in seen]
    assert max(fractions) == pytest.approx(1.0) and all(0 <= f <= 1 for f in fractions)
    assert all(p.eta is None or p.eta >= 0 for p in seen)
    assert fractions == sorted(fractions), "progress only moves forward"


def test_mps_where_there_is_none_is_one_line_and_the_loaded_pipeline_stays():
    loaded = default_session().pipelines.get(Settings())
    with pytest.raises(ValueError, match="device: 'mps' asked for, but Apple's MPS is not available here"):
        nbbatch.generate("a", [0], device="mps", steps=1)
    with pytest.raises(ValueError, match="could not load model"):
        nbbatch.generate("a", [0], variant="bf16", steps=1)
    assert default_session().pipelines.get(Settings()) is loaded, "a failed load keeps the pipeline that was loaded"


def test_without_a_network_a_hub_id_fails_within_seconds_saying_so():
    import time

    start = time.monotonic()
    with pytest.raises(ValueError, match=r"cannot be reached \(no network\?\): pass a local folder"):
        nbbatch.generate("a", [0], model="someone/not-cached-anywhere", steps=1)
    assert time.monotonic() - start < 20


def test_built_in_model_folders_are_readable_by_the_group(tmp_path, monkeypatch):
    from nbbatch.models.tiny import builtin_path

    monkeypatch.setenv("NBBATCH_HOME", str(tmp_path))
    folder = builtin_path("nbbatch:tiny-sd")
    for path in [folder, *folder.rglob("*")]:
        assert path.stat().st_mode & 0o050 == 0o050 if path.is_dir() else path.stat().st_mode & 0o040


def test_clip_skip_equals_diffusers_own_clip_skip_counted_as_a1111_counts(model, tmp_path):
    """A1111's clip skip 2 is diffusers' clip_skip=1. On SD, diffusers' own path needs the `text_model` that
    transformers 5 dropped: the raw call gets it back as an alias, so it runs diffusers' code unchanged."""
    import torch
    from diffusers import AutoPipelineForText2Image
    from PIL import Image

    from nbbatch.models.tiny import builtin_path

    kwargs = {"num_inference_steps": FAST["steps"], "width": FAST["width"], "height": FAST["height"]}
    made = nbbatch.generate("a red cat", [4], clip_skip=2, guidance=7, model=model, negative_prompt="blue", **FAST)
    pipe = AutoPipelineForText2Image.from_pretrained(str(builtin_path(model)), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if not hasattr(pipe.text_encoder, "text_model"):
        object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)  # not a submodule: no cycle
    raw = pipe(
        prompt="a red cat",
        negative_prompt="blue",
        generator=torch.Generator("cpu").manual_seed(4),
        clip_skip=1,
        guidance_scale=7,
        **kwargs,
    ).images[0]
    assert max_difference(made[0].image, raw) <= 1
    plain = nbbatch.generate("a red cat", [4], guidance=7, model=model, negative_prompt="blue", **FAST)
    assert max_difference(made[0].image, plain[0].image) > 0, "the skip changed the picture"
    assert (
        nbbatch.generate("a red cat", [4], clip_skip=1, guidance=7, model=model, negative_prompt="blue", **FAST)[
            0
        ].image.tobytes()
        == plain[0].image.tobytes()
    ), "clip skip 1 is no skip"
    (path,) = made.save(tmp_path, grid=False)
    with Image.open(path) as png:
        assert "Clip skip: 2" in png.text["parameters"]
    assert max_difference(nbbatch.reproduce(path)[0].image, made[0].image) == 0


def test_a_clip_skip_out_of_range_is_a_one_line_error(shell):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=re.escape("--clip-skip must be a whole number from 1 to 12")):
        shell.run_cell_magic("batchgen", "--clip-skip 0 --no-display", "a cat")
