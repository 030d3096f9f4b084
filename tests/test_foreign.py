"""Other tools' PNGs: `nbbatch.load` reads their parameters field by field, and their settings start new work.

The corpus (tests/corpus, see its SOURCES.md) holds real files from AUTOMATIC1111, ComfyUI,
Fooocus, InvokeAI and NovelAI; formats it lacks (SwarmUI's and flat JSON, settings-only text,
CRLF) are written here as those tools write them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST
from PIL import Image, PngImagePlugin

import nbbatch
from nbbatch.formats.foreign import scheduler_name

CORPUS = Path(__file__).with_name("corpus")
EXPECTED = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))


def seen(item) -> dict:
    """What a user gets from a loaded item, in the corpus' field names."""
    found = item.found
    return {
        "tool": found.tool,
        "prompt": item.prompt,
        "negative_prompt": item.negative_prompt,
        "seed": item.seed,
        "steps": found.steps,
        "guidance": found.guidance,
        "width": found.width,
        "height": found.height,
        "sampler": found.sampler,
        "schedule": found.schedule,
        "model": found.model,
        "strength": found.strength,
        "scheduler": item.settings.scheduler,
    }


def test_every_field_of_every_corpus_file_is_read_right():
    wrong = []
    for name, expected in EXPECTED.items():
        got = seen(nbbatch.load(CORPUS / name)[0])
        wrong += [
            f"{name}: {field} {got[field]!r}, not {value!r}" for field, value in expected.items() if got[field] != value
        ]
    assert sum(len(expected) for expected in EXPECTED.values()) == 11 * 13  # files x fields
    assert wrong == []


def test_a_folder_of_other_tools_pngs_loads_those_with_parameters_and_names_the_one_without(tmp_path):
    with pytest.raises(ValueError, match=r"empty_image.png' holds no generation parameters that nbbatch can read$"):
        nbbatch.load(CORPUS / "empty_image.png")
    for name in ("img2img_cropped.png", "novelai1_cropped.png"):
        (tmp_path / name).write_bytes((CORPUS / name).read_bytes())
    loaded = nbbatch.load(tmp_path)
    assert [item.found.tool for item in loaded] == ["ComfyUI", "NovelAI"]


def png(path: Path, **chunks: str) -> Path:
    """A 1x1 PNG with these text chunks (written as tEXt, or iTXt where they are not Latin-1)."""
    info = PngImagePlugin.PngInfo()
    for key, text in chunks.items():
        try:
            text.encode("latin-1")
            info.add_text(key, text)
        except UnicodeEncodeError:
            info.add_itxt(key, text)
    Image.new("RGB", (1, 1)).save(path, pnginfo=info)
    return path


COMFY_LITERALS = {  # comfy-image-saver's example workflow shape: literal nodes linked into the sampler
    "1": {"class_type": "Checkpoint Selector", "inputs": {"ckpt_name": "juggernaut.safetensors"}},
    "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["1", 0]}},
    "3": {"class_type": "Seed Generator", "inputs": {"seed": 777}},
    "4": {"class_type": "String Literal", "inputs": {"string": "a red fox in snow"}},
    "5": {"class_type": "String Literal", "inputs": {"string": "blurry"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": ["4", 0], "clip": ["2", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": ["5", 0], "clip": ["2", 1]}},
    "8": {"class_type": "Width/Height Literal", "inputs": {"int": 832}},
    "9": {"class_type": "Width/Height Literal", "inputs": {"int": 1216}},
    "10": {"class_type": "EmptyLatentImage", "inputs": {"width": ["8", 0], "height": ["9", 0], "batch_size": 1}},
    "11": {"class_type": "Cfg Literal", "inputs": {"float": 6.5}},
    "12": {"class_type": "Int Literal", "inputs": {"int": 25}},
    "13": {"class_type": "Sampler Selector", "inputs": {"sampler_name": "dpmpp_2m"}},
    "14": {"class_type": "Scheduler Selector", "inputs": {"scheduler": "karras"}},
    "15": {
        "class_type": "KSampler",
        "inputs": {
            "seed": ["3", 0],
            "steps": ["12", 0],
            "cfg": ["11", 0],
            "sampler_name": ["13", 0],
            "scheduler": ["14", 0],
            "denoise": 1.0,
            "model": ["2", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["10", 0],
        },
    },
}
COMFY_GROUP = {
    "12:0": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
    "12:1": {"class_type": "CR Prompt Text", "inputs": {"prompt": "a castle on a hill"}},
    "12:2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": ["12:1", 0], "text_l": ["12:1", 0]}},
    "12:3": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["12:0", 1]}},
    "12:4": {"class_type": "Seed (rgthree)", "inputs": {"seed": 42}},
    "12:5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
    "12:6": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["12:2", 0]}},
    "12:7": {
        "class_type": "KSampler",
        "inputs": {
            "seed": ["12:4", 0],
            "steps": 30,
            "cfg": 4.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1,
            "model": ["12:0", 0],
            "positive": ["12:2", 0],
            "negative": ["12:3", 0],
            "latent_image": ["12:5", 0],
        },
    },
}

WRITTEN = {
    "swarmui": (
        {
            "parameters": json.dumps(
                {
                    "sui_image_params": {
                        "prompt": "a photo of a cat",
                        "negativeprompt": "dog",
                        "model": "OfficialStableDiffusion/sd_xl_base_1.0",
                        "seed": 1,
                        "steps": 20,
                        "cfgscale": 7.0,
                        "width": 1024,
                        "height": 768,
                        "sampler": "dpmpp_2m",
                        "scheduler": "karras",
                        "swarm_version": "0.9.3.1",
                    },
                    "sui_models": [{"name": "sd_xl_base_1.0.safetensors", "param": "model"}],
                }
            )
        },
        ("a photo of a cat", "dog", 1, 20, 7.0, 1024, 768, "dpm++2m-karras", "OfficialStableDiffusion/sd_xl_base_1.0"),
    ),
    "flat-json": (
        {
            "parameters": json.dumps(
                {
                    "prompt": "a lighthouse at night",
                    "negative_prompt": "blurry",
                    "seed": 3,
                    "num_inference_steps": 25,
                    "guidance_scale": 5.0,
                    "width": 768,
                    "height": 512,
                    "model": "stabilityai/stable-diffusion-2-1",
                }
            )
        },
        ("a lighthouse at night", "blurry", 3, 25, 5.0, 768, 512, None, "stabilityai/stable-diffusion-2-1"),
    ),
    "ruinedfooocus": (  # the keys RuinedFooocus writes (its modules/pipeline code), as JSON parameters
        {
            "parameters": json.dumps(
                {
                    "Prompt": "a fox in snow",
                    "Negative": "blurry",
                    "steps": 30,
                    "cfg": 7.0,
                    "width": 1152,
                    "height": 896,
                    "seed": 12345,
                    "sampler_name": "dpmpp_2m_sde_gpu",
                    "scheduler": "karras",
                    "base_model_name": "sdxl_base.safetensors",
                    "loras": [],
                    "software": "RuinedFooocus",
                }
            )
        },
        ("a fox in snow", "blurry", 12345, 30, 7.0, 1152, 896, "dpm++2m-sde-karras", "sdxl_base.safetensors"),
    ),
    "settings-only": (
        {"parameters": "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x768, Model: sd15"},
        ("", "", 5, 20, 7.0, 512, 768, "euler-a", "sd15"),
    ),
    "crlf-utf8-cfg-capital": (
        {
            "parameters": "un café à l'aube, 35mm: brume\r\nNegative prompt: flou\r\nSteps: 30, Sampler: DPM++ 2M, "
            "Schedule type: Karras, CFG Scale: 6.5, Seed: 1234, Size: 1024x1024, Model: dreamshaper_8"
        },
        ("un café à l'aube, 35mm: brume", "flou", 1234, 30, 6.5, 1024, 1024, "dpm++2m-karras", "dreamshaper_8"),
    ),
    "flat-json-no-size": (  # a Hugging Face space's JSON without a size: the picture's own size (1x1 here)
        {"parameters": json.dumps({"prompt": "a boat", "seed": 4, "num_inference_steps": 8, "guidance_scale": 3})},
        ("a boat", "", 4, 8, 3.0, 1, 1, None, None),
    ),
    "comfy-image-saver": (  # its Save Image w/Metadata node: A1111 text from literal nodes, and their graph
        {
            "parameters": "a red fox in snow\nNegative prompt: blurry\nSteps: 25, Sampler: dpmpp_2m_karras, "
            "CFG Scale: 6.5, Seed: 777, Size: 832x1216, Model hash: 0123456789, Model: juggernaut, Version: ComfyUI",
            "prompt": json.dumps(COMFY_LITERALS),
            "workflow": "{}",
        },
        ("a red fox in snow", "blurry", 777, 25, 6.5, 832, 1216, "dpm++2m-karras", "juggernaut"),
    ),
    "comfy-values-through-nodes": (  # rgthree / Comfyroll / literal nodes feed the sampler: the graph alone
        {"prompt": json.dumps(COMFY_LITERALS), "workflow": "{}"},
        ("a red fox in snow", "blurry", 777, 25, 6.5, 832, 1216, "dpm++2m-karras", "juggernaut.safetensors"),
    ),
    "comfy-group-node": (  # a group node's inner nodes, as ComfyUI expands them into the prompt ("12:3")
        {"prompt": json.dumps(COMFY_GROUP), "workflow": "{}"},
        ("a castle on a hill", "text, watermark", 42, 30, 4.0, 1024, 1024, "euler", "sdxl.safetensors"),
    ),
    "tensor-art": (  # its generation_data chunk: UTF-8 written into a Latin-1 tEXt chunk, seed as text
        {
            "generation_data": json.dumps(
                {
                    "prompt": "un café",
                    "negativePrompt": "flou",
                    "width": 768,
                    "height": 1152,
                    "seed": "5512345678",
                    "steps": 28,
                    "cfgScale": 5,
                    "clipSkip": 2,
                    "baseModel": {"modelFileName": "flux1-dev.safetensors"},
                },
                ensure_ascii=False,
            )
            .encode("utf-8")
            .decode("latin-1"),
            "prompt": json.dumps(COMFY_GROUP),
        },
        ("un café", "flou", 5512345678, 28, 5.0, 768, 1152, "euler", "flux1-dev.safetensors"),
    ),
    "stability-matrix-hires": (  # its A1111 text says the upscaled size; its JSON the first pass's
        {
            "parameters": "a lake\nNegative prompt: fog\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 8, "
            "Size: 1536x1536, Model: dreamshaper, Hires upscale: 2, Denoising strength: 0.5",
            "parameters-json": json.dumps(
                {
                    "PositivePrompt": "a lake",
                    "NegativePrompt": "fog",
                    "Width": 768,
                    "Height": 768,
                    "Seed": 8,
                    "Steps": 20,
                    "CfgScale": 7.0,
                    "Sampler": "dpmpp_2m",
                    "Scheduler": "karras",
                    "ModelName": "dreamshaper",
                }
            ),
            "smproj": "{}",
        },
        ("a lake", "fog", 8, 20, 7.0, 768, 768, "dpm++2m-karras", "dreamshaper"),
    ),
    "old-karras-name": (
        {"parameters": "a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 9, Size: 512x512"},
        ("a cat", "", 9, 20, 7.0, 512, 512, "dpm++2m-karras", None),
    ),
}


@pytest.mark.parametrize("name", WRITTEN)
def test_formats_the_corpus_lacks_are_read_field_by_field(tmp_path, name):
    chunks, expected = WRITTEN[name]
    (item,) = nbbatch.load(png(tmp_path / "a.png", **chunks))
    found = item.found
    got = (
        item.prompt,
        item.negative_prompt,
        item.seed,
        found.steps,
        found.guidance,
        found.width,
        found.height,
        item.settings.scheduler,
        found.model,
    )
    assert got == expected


@pytest.mark.parametrize(
    "chunks",
    [
        {"parameters": "{not json"},
        {"parameters": json.dumps({"sui_image_params": "not a mapping"})},
        {"prompt": '{"3": {"class_type": "KSampler"}}'},
        {"prompt": "{broken", "workflow": "{}"},
        {"invokeai_metadata": "{"},
        {"Software": "NovelAI", "Comment": "garbage", "Description": "a cat"},
        {"sd-metadata": "[1, 2"},
    ],
    ids=["json", "swarm-shape", "comfy-no-inputs", "comfy-broken", "invokeai", "novelai", "sd-metadata"],
)
def test_a_damaged_chunk_is_the_one_line_error_never_a_traceback(tmp_path, chunks):
    with pytest.raises(ValueError, match=r"holds no generation parameters that nbbatch can read$"):
        nbbatch.load(png(tmp_path / "damaged.png", **chunks))


@pytest.mark.parametrize(
    ("sampler", "schedule", "expected"),
    [
        ("Euler a", None, "euler-a"),
        ("DPM++ 2M", "Karras", "dpm++2m-karras"),
        ("DPM++ 2M", "Automatic", "dpm++2m"),
        ("DPM++ 2M Karras", None, "dpm++2m-karras"),
        ("DPM++ 2M SDE", "Exponential", "dpm++2m-sde-exponential"),
        ("UniPC", None, "unipc"),
        ("DDIM", None, "ddim"),
        ("PLMS", None, "pndm"),
        ("DPM2 a", None, "KDPM2AncestralDiscreteScheduler"),
        ("euler_ancestral", "karras", "euler-a"),  # diffusers' Euler a has no Karras sigmas
        ("dpmpp_2m", "normal", "dpm++2m"),
        ("dpmpp_2m_sde_gpu", "karras", "dpm++2m-sde-karras"),
        ("sample_dpmpp_sde", "simple", "DPMSolverSDEScheduler"),
        ("uni_pc_bh2", "normal", "unipc"),
        ("k_euler_ancestral", None, "euler-a"),
        ("k_lms", None, "lms"),
        ("dpmpp_2m_k", None, "dpm++2m-karras"),
        ("lcm", "sgm_uniform", "LCMScheduler"),
        ("DPM fast", None, None),
        ("", None, None),
    ],
)
@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")  # diffusers' KDPM2
def test_samplers_of_other_tools_map_to_a_scheduler_nbbatch_makes(sampler, schedule, expected):
    assert scheduler_name(sampler, schedule) == expected
    if expected is not None:
        from nbbatch.core.spec import Settings
        from nbbatch.models.pipelines import make_scheduler
        from nbbatch.session import default_session

        current = default_session().pipelines.get(Settings(model="nbbatch:tiny-sd", device="cpu")).pipe.scheduler
        refused = {  # real names whose scheduler this machine or model cannot run: said in one line
            "DPMSolverSDEScheduler": "needs the torchsde package: pip install torchsde",
            "lms": "needs the scipy package: pip install scipy",
            "LCMScheduler": "does not fit this pipeline",  # an LCM model's
        }.get(expected)
        if refused:
            with pytest.raises(ValueError, match=refused):
                make_scheduler(expected, current)
        else:
            assert make_scheduler(expected, current) is not None


def test_a_foreign_picture_varies_with_a_model_given_and_is_never_refined_or_remade(tmp_path):
    with Image.open(CORPUS / "automatic1111_cropped.png") as real:
        text = real.text["parameters"]
    path = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (32, 32), (200, 180, 40)).save(path, pnginfo=info)  # the real text on a picture to vary
    loaded = nbbatch.load(path)
    assert loaded[0].foreign and loaded[0].origin == "foreign" and loaded[0].state is None, "no made-up state"
    with pytest.raises(
        ValueError, match="'realistic_realisticVisionV20_v20' is AUTOMATIC1111's name for its checkpoint"
    ):
        loaded.vary(235284042, seeds=[1])
    with pytest.raises(ValueError, match="its starting noise came from that tool's generator"):
        loaded.refine(235284042, "a duck in rain")
    with pytest.raises(ValueError, match="was not made by nbbatch: it has no generator state"):
        nbbatch.reproduce(path)
    varied = loaded.vary(235284042, seeds=[1, 2], model="nbbatch:tiny-sd", steps=10)
    assert [item.seed for item in varied] == [1, 2] and varied[0].prompt == "photo of a duck"
    assert varied[0].call.scheduler == "UniPCMultistepScheduler" and varied[0].call.guidance_scale == 5.0
    assert varied[0].negative_prompt == "monochrome" and varied[0].image.size == (32, 32)
    options = {"scheduler": loaded[0].settings.scheduler, "guidance": loaded[0].settings.guidance}
    batch = nbbatch.generate(loaded[0].prompt, [3], model="nbbatch:tiny-sd", **options, **FAST)
    assert (batch[0].call.scheduler, batch[0].call.guidance_scale) == ("UniPCMultistepScheduler", 5.0)
