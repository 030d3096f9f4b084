"""Full-size stand-ins (SD 1.5 and SDXL architectures, random weights) and the opt-in speedups."""

import pytest
from conftest import FAST, max_difference

import nbbatch
from nbbatch.models.standins import IMAGE_SIDE, STANDINS, build_pipeline, denoiser_flops, parameter_count

# The real models' parameter counts (their published weight files): SD 1.5's UNet 859.5 M, SDXL base's 2.567 B,
# FLUX.1-dev's transformer 11.9 B (T5-XXL's encoder 4.76 B), Qwen-Image's 20.4 B (Qwen2.5-VL-7B 8.29 B).
REAL = {
    "nbbatch:sd15-random": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "nbbatch:sdxl-random": {
        "unet": 2_567_463_684,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    },
    "nbbatch:flux-dev-random": {
        "transformer": 11_901_408_320,
        "vae": 83_819_683,
        "text_encoder": 123_060_480,
        "text_encoder_2": 4_762_310_656,
    },
    "nbbatch:qwen-image-random": {
        "transformer": 20_430_401_088,
        "vae": 126_892_531,
        "text_encoder": 8_292_166_656,
    },
}


@pytest.mark.parametrize("name", STANDINS)
def test_stand_ins_have_the_real_models_parameter_counts_and_allocate_nothing_on_meta(name):
    pipe = nbbatch.build_pipeline(name, device="meta")
    assert {part: parameter_count(getattr(pipe, part)) for part in REAL[name]} == REAL[name]
    assert all(p.is_meta for part in REAL[name] for p in getattr(pipe, part).parameters())


def test_flops_are_counted_on_the_meta_device():
    """A denoiser forward at the trained size: SD 1.5 about 0.8 TFLOP at 512, SDXL about 6.8 at 1024; FLUX.1-dev
    about 74 (4096 image and 512 text tokens through 12 B parameters) and Qwen-Image about 69 at 1024."""
    flops = {
        name: denoiser_flops(build_pipeline(name, device="meta"), IMAGE_SIDE[kind]) for name, kind in STANDINS.items()
    }
    assert 0.75e12 < flops["nbbatch:sd15-random"] < 0.85e12
    assert 6.5e12 < flops["nbbatch:sdxl-random"] < 7.0e12
    assert 70e12 < flops["nbbatch:flux-dev-random"] < 78e12
    assert 65e12 < flops["nbbatch:qwen-image-random"] < 73e12


@pytest.mark.parametrize("name", ["nbbatch:flux-dev-random", "nbbatch:qwen-image-random"])
def test_the_transformer_stand_ins_are_their_families_pipelines_and_refuse_the_cpu_in_one_line(name):
    from nbbatch.models.families import family_of

    pipe = build_pipeline(name, device="meta")
    assert family_of(pipe).name == ("FLUX.1" if "flux" in name else "Qwen-Image")
    assert pipe.scheduler.config.use_dynamic_shifting, "as the real models' schedulers"
    with pytest.raises(ValueError, match=r"billion parameters: it runs on a GPU .* not on the CPU"):
        nbbatch.generate("a house", [3], model=name, steps=1, width=64, height=64)


def test_a_stand_in_runs_as_a_model_on_the_cpu():
    made = nbbatch.generate("a house", [3], model="nbbatch:sd15-random", steps=1, width=64, height=64)
    again = nbbatch.generate("a house", [3], model="nbbatch:sd15-random", steps=1, width=64, height=64)
    assert made[0].image.size == (64, 64) and made[0].call.pipeline == "StableDiffusionPipeline"
    assert max_difference(made[0].image, again[0].image) == 0
    nbbatch.clear_cache()  # 4 GB: let the next tests have the memory back


@pytest.mark.parametrize("speedup", ["channels_last", "fuse_qkv", "compile"])
def test_each_speedup_is_within_two_levels_of_eager_recorded_and_undone(model, speedup):
    eager = nbbatch.generate("a red cat", [1, 2], model=model, **FAST)
    fast = nbbatch.generate("a red cat", [1, 2], model=model, **{speedup: True}, **FAST)
    assert all(max_difference(a.image, b.image) <= 2 for a, b in zip(eager, fast))
    assert fast[0].call.speedups == [speedup] and getattr(fast[0].settings, speedup)
    assert eager[0].call.speedups == []
    if speedup == "compile":  # other batch sizes and image sizes reuse the compiled blocks (dynamic shapes)
        assert len(nbbatch.generate("a red cat", [1, 2, 3], model=model, compile=True, **FAST)) == 3
        assert len(nbbatch.generate("a cat", [4], model=model, compile=True, steps=2, width=48, height=40)) == 1
    off = nbbatch.generate("a red cat", [1, 2], model=model, **FAST)
    assert [i.image.tobytes() for i in off] == [i.image.tobytes() for i in eager], "turned off: eager again"


def test_fuse_qkv_with_a_lora_is_a_one_line_error(tmp_path):
    from conftest import make_lora

    lora = make_lora("nbbatch:tiny-sd", tmp_path)
    with pytest.raises(ValueError, match="fuse_qkv does not go with LoRAs"):
        nbbatch.generate("a red cat", [1], loras=[lora], fuse_qkv=True, **FAST)


def test_speedup_options_of_the_magic(shell):
    shell.run_cell_magic("batchgen", "--seeds 1 --steps 4 --width 32 --height 32 --channels-last --fuse-qkv", "a cat")
    made = shell.user_ns["_batch"]
    assert made[0].call.speedups == ["channels_last", "fuse_qkv"]
