"""Shared fixtures: the built-in tiny pipelines (built offline into a temporary folder) and an IPython shell."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import numpy as np
import pytest

# make test runs the suite in one process per core (pytest-xdist, a file to a process): each process takes
# one thread, and so do the kernels, code exports and workers it starts, so that they share the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
# Build the offline pipelines afresh for every test session, as a fresh clone would, and remove them after.
os.environ["NBBATCH_HOME"] = tempfile.mkdtemp(prefix="nbbatch-home-")
atexit.register(shutil.rmtree, os.environ["NBBATCH_HOME"], ignore_errors=True)
# The mechanical tests run on the random tiny pipeline (fast, and with an SDXL twin); those of the trained
# default model (test_shapes.py), the notebooks and the browser test name it or drop this.
os.environ["NBBATCH_MODEL"] = "nbbatch:tiny-sd"

MODELS = ["nbbatch:tiny-sd", "nbbatch:tiny-sdxl"]
FAST = {"steps": 4, "width": 32, "height": 32}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell a failed test (for screenshots)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(params=MODELS, ids=["sd", "sdxl"])
def model(request) -> str:
    """Each test that takes `model` runs on the tiny SD and the tiny SDXL pipeline."""
    return request.param


@pytest.fixture(scope="session")
def ip():
    """A real IPython shell with nbbatch loaded; errors in cells raise, as in IPython's own tests."""
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.display_formatter.active_types = shell.display_formatter.format_types  # as a notebook front end has
    shell.run_line_magic("load_ext", "nbbatch")
    return shell


@pytest.fixture
def shell(ip):
    """The shell with a clean namespace and no remembered result."""
    ip.reset(new_session=False)
    ip.magics_manager.registry["BatchMagics"].last = None
    yield ip
    ip.reset(new_session=False)


def pixels(image) -> np.ndarray:
    """An image as a signed integer array, for pixel differences."""
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def json_paths(value, path=(), *, leaves: bool = True):
    """Every (path, value) in a JSON value: its scalars only, or with `leaves` False every place in it but the root."""
    branch = isinstance(value, dict | list)
    if path and (not leaves or not branch):
        yield path, value
    if branch:
        for key, inner in value.items() if isinstance(value, dict) else enumerate(value):
            yield from json_paths(inner, (*path, key), leaves=leaves)


def max_difference(a, b) -> int:
    """The largest difference of any channel of any pixel of two images of one size."""
    assert a.size == b.size, f"sizes differ: {a.size} and {b.size}"
    return int(np.abs(pixels(a) - pixels(b)).max())


@functools.lru_cache(maxsize=4)
def _raw_pipeline(model: str):
    """A built-in model as diffusers loads it, kept for the next raw call (callers never change it in place)."""
    return _load(model)


def _load(model: str):
    """A built-in model loaded by diffusers as a user would: the auto pipeline, or `DiffusionPipeline` for HiDream."""
    import torch
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    from nbbatch.models.tiny import builtin_path

    loader = DiffusionPipeline if model == "nbbatch:tiny-hidream" else AutoPipelineForText2Image  # not in its map
    return loader.from_pretrained(str(builtin_path(model)), dtype=torch.float32)


def direct_call(model: str, prompt: str, seed: int, *, image=None, prepare=None, **kwargs):
    """The image diffusers itself makes for `prompt` and `seed`, with no nbbatch code in the call.

    `prepare` is called with the fresh pipeline first (to load a LoRA or an embedding the diffusers way).
    """
    import torch
    from diffusers import AutoPipelineForImage2Image

    if prepare is None:
        pipe = _raw_pipeline(model)
    else:
        pipe = _load(model)
        prepare(pipe)
    if image is not None:
        pipe = AutoPipelineForImage2Image.from_pipe(pipe)
        kwargs["image"] = image
    if "scheduler" in kwargs:
        options = kwargs.pop("scheduler_options", {})
        scheduler = kwargs.pop("scheduler").from_config(pipe.scheduler.config, **options)
        pipe = type(pipe).from_pipe(pipe, scheduler=scheduler)  # the kept pipeline keeps its own
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt=prompt, generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0]


def fail_on_call(monkeypatch, number: int, error: str | BaseException) -> None:
    """Make pipeline call `number` (counting from 1) raise `error` (a message: a RuntimeError, as a GPU fault).

    The wrapper hides the pipeline's signature, so callers give the guidance scale themselves.
    """
    from nbbatch.models.pipelines import Loaded

    original = Loaded.view
    calls = []

    def view(self, image_to_image, scheduler, inpaint=False):
        pipe = original(self, image_to_image, scheduler, inpaint)

        def call(**kwargs):
            calls.append(1)
            if len(calls) == number:
                raise RuntimeError(error) if isinstance(error, str) else error
            return pipe(**kwargs)

        return type(
            "Failing", (), {"__call__": staticmethod(call), "__getattr__": lambda _, name: getattr(pipe, name)}
        )()

    monkeypatch.setattr(Loaded, "view", view)


def make_lora(model: str, folder, seed: int = 0) -> str:
    """A LoRA for `model`'s UNet made with peft (random, strong enough to show) and saved as diffusers saves one."""
    import torch
    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    from nbbatch.models.tiny import builtin_path

    pipe = AutoPipelineForText2Image.from_pretrained(str(builtin_path(model)), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    pipe.unet.add_adapter(config)
    torch.manual_seed(seed)
    for name, parameter in pipe.unet.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    type(pipe).save_lora_weights(str(folder), unet_lora_layers=layers, weight_name=f"style{seed}.safetensors")
    return str(folder / f"style{seed}.safetensors")


def make_embedding(folder, name: str, vectors: int = 1, dim: int = 32, xl: bool = False) -> str:
    """A textual-inversion file as A1111 and diffusers share them: one tensor (two, clip_l and clip_g, for SDXL)."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(7)
    names = ("clip_l", "clip_g") if xl else ("emb_params",)
    tensors = {name: torch.randn(vectors, dim, generator=generator) for name in names}
    path = folder / f"{name}.safetensors"
    save_file(tensors, str(path))
    return str(path)
