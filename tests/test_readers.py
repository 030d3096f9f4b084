"""Other tools read nbbatch's PNGs: sd-parsers (in this environment) and sd-prompt-reader (in its own, .venv-reader).

Each must recover every field of the ``parameters`` chunk: prompt, negative prompt, seed,
steps, CFG scale, size, sampler, schedule type and model (whose full id, with its ``:``,
is written short: ``nbbatch-tiny-sd``), and nbbatch's own reader must read the same text.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import FAST

import nbbatch
from nbbatch.formats.foreign import read_foreign, scheduler_name
from nbbatch.formats.png import a1111_parameters

READER_PYTHON = Path(__file__).parents[1] / ".venv-reader" / "bin" / "python"
EXPECTED = {
    "prompt": "a quiet harbour, at dawn: misty",
    "negative": "blurry, dark",
    "seed": "5",
    "steps": "4",
    "cfg": "7.5",
    "size": "32x32",
    "sampler": "DPM++ 2M",
    "schedule": "Karras",
    "model": "nbbatch-tiny-sd",
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One nbbatch PNG made with DPM++ 2M Karras, a negative prompt, commas and a colon in the prompt."""
    folder = tmp_path_factory.mktemp("saved")
    result = nbbatch.generate(
        EXPECTED["prompt"], [5], negative_prompt="blurry, dark", scheduler="dpm++2m-karras", guidance=7.5, **FAST
    )
    return result.save(folder, grid=False)[0]


def test_sd_parsers_reads_every_field(saved):
    from sd_parsers import ParserManager

    info = ParserManager().parse(saved)
    (sampler,) = info.samplers
    seen = {
        "prompt": sampler.prompts[0].value,
        "negative": sampler.negative_prompts[0].value,
        "seed": sampler.parameters["seed"],
        "steps": sampler.parameters["steps"],
        "cfg": sampler.parameters["cfg_scale"],
        "size": info.metadata["Size"],
        "sampler": sampler.name,
        "schedule": sampler.parameters["scheduler"],
        "model": sampler.model.name,
    }
    assert seen == EXPECTED
    assert info.metadata["RNG"] == "CPU"


SD_PROMPT_READER = """
import json, sys
from sd_prompt_reader.image_data_reader import ImageDataReader
read = ImageDataReader(sys.argv[1])
print(json.dumps({"tool": read.tool, "positive": read.positive, "negative": read.negative,
                  "parameter": read.parameter, "setting": read.setting}))
"""


def test_sd_prompt_reader_reads_every_field(saved):
    assert READER_PYTHON.exists(), "make test builds .venv-reader with sd-prompt-reader (constraints-reader.txt)"
    done = subprocess.run([str(READER_PYTHON), "-c", SD_PROMPT_READER, str(saved)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    read = json.loads(done.stdout)
    parameter = read["parameter"]
    seen = {
        "prompt": read["positive"],
        "negative": read["negative"],
        "seed": parameter["seed"],
        "steps": parameter["steps"],
        "cfg": parameter["cfg"],
        "size": parameter["size"],
        "sampler": parameter["sampler"],
        "schedule": dict(part.split(": ", 1) for part in read["setting"].split(", "))["Schedule type"],
        "model": parameter["model"],
    }
    assert read["tool"] == "A1111 webUI" and seen == EXPECTED


def test_nbbatch_reads_its_own_parameters_text_as_it_reads_other_tools(saved):
    from PIL import Image

    with Image.open(saved) as png:
        found = read_foreign(png)  # the A1111 text alone, as for a file from another tool
    seen = {
        "prompt": found.prompt,
        "negative": found.negative_prompt,
        "seed": str(found.seed),
        "steps": str(found.steps),
        "cfg": str(found.guidance),
        "size": f"{found.width}x{found.height}",
        "sampler": found.sampler,
        "schedule": found.schedule,
        "model": found.model,
    }
    assert seen == EXPECTED and scheduler_name(found.sampler, found.schedule) == "dpm++2m-karras"


@pytest.mark.parametrize(
    ("scheduler", "sampler", "schedule"),
    [
        ("euler", "Euler", "Uniform"),
        ("euler-a", "Euler a", "Uniform"),
        ("dpm++2m", "DPM++ 2M", "Uniform"),
        ("dpm++2m-sde-karras", "DPM++ 2M SDE", "Karras"),
        ("dpm++2m-exponential", "DPM++ 2M", "Exponential"),
        ("unipc", "UniPC", "Uniform"),
        ("ddim", "DDIM", "Uniform"),
        ("heun", "Heun", "Uniform"),
        ("pndm", "PLMS", "Uniform"),
        ("KDPM2DiscreteScheduler", "DPM2", "Uniform"),
        ("KDPM2AncestralDiscreteScheduler", "DPM2 a", "Uniform"),
    ],
)
@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")  # diffusers' KDPM2
def test_every_scheduler_is_written_with_a1111s_sampler_name_and_schedule_type(scheduler, sampler, schedule):
    item = nbbatch.generate("a cat", [1], scheduler=scheduler, **FAST)[0]
    fields = dict(part.split(": ", 1) for part in a1111_parameters(item).splitlines()[-1].split(", "))
    assert (fields["Sampler"], fields["Schedule type"]) == (sampler, schedule)
