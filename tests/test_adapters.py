"""LoRA files and textual-inversion embeddings: equal to diffusers' own loaders, recorded, and never leaking."""

import shutil
import warnings

import pytest
from conftest import FAST, direct_call, make_embedding, make_lora, max_difference
from PIL import Image

import nbbatch

KWARGS = {"num_inference_steps": FAST["steps"], "width": FAST["width"], "height": FAST["height"]}


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return {model: make_lora(model, folder / model.split(":")[1]) for model in ("nbbatch:tiny-sd", "nbbatch:tiny-sdxl")}


def with_lora(path: str, weight: float):
    def prepare(pipe):
        pipe.load_lora_weights(path, adapter_name="style")
        pipe.set_adapters(["style"], adapter_weights=[weight])

    return prepare


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_a_lora_equals_diffusers_load_lora_weights_and_set_adapters(model, loras, weight):
    made = nbbatch.generate("a red cat", [3], model=model, loras=[(loras[model], weight)], **FAST)
    raw = direct_call(model, "a red cat", 3, prepare=with_lora(loras[model], weight), **KWARGS)
    assert max_difference(made[0].image, raw) <= 1
    plain = direct_call(model, "a red cat", 3, **KWARGS)
    assert max_difference(made[0].image, plain) > 3, "the LoRA changed the picture"


def test_a_batch_after_a_lora_batch_equals_a_fresh_pipeline(model, loras):
    nbbatch.generate("a red cat", [3], model=model, loras=[f"{loras[model]}:1.0"], **FAST)
    after = nbbatch.generate("a red cat", [3], model=model, **FAST)
    assert max_difference(after[0].image, direct_call(model, "a red cat", 3, **KWARGS)) <= 1
    again = nbbatch.generate("a red cat", [3], model=model, loras=[f"{loras[model]}:0.5"], **FAST)
    raw = direct_call(model, "a red cat", 3, prepare=with_lora(loras[model], 0.5), **KWARGS)
    assert max_difference(again[0].image, raw) <= 1, "re-weighted, not loaded twice"


def test_two_loras_are_weighted_together_as_set_adapters_weighs_them(loras, tmp_path):
    model = "nbbatch:tiny-sd"
    second = make_lora(model, tmp_path, seed=1)
    made = nbbatch.generate("a red cat", [2], model=model, loras=[(loras[model], 0.7), (second, 0.4)], **FAST)

    def prepare(pipe):
        pipe.load_lora_weights(loras[model], adapter_name="a")
        with warnings.catch_warnings():  # peft notes that the model now holds two adapters
            warnings.simplefilter("ignore", UserWarning)
            pipe.load_lora_weights(second, adapter_name="b")
        pipe.set_adapters(["a", "b"], adapter_weights=[0.7, 0.4])

    assert max_difference(made[0].image, direct_call(model, "a red cat", 2, prepare=prepare, **KWARGS)) <= 1


def test_a_lora_is_recorded_as_a1111_writes_it_and_reproduced(loras, tmp_path):
    model = "nbbatch:tiny-sd"
    made = nbbatch.generate("a red cat", [5], model=model, loras=[(loras[model], 0.5)], **FAST)
    (record,) = made[0].call.loras
    assert (record.name, record.weight, len(record.hash)) == ("style0", 0.5, 12)
    (path,) = made.save(tmp_path / "out", grid=False)
    with Image.open(path) as png:
        text = png.text["parameters"]
    assert text.splitlines()[0] == "a red cat <lora:style0:0.5>"
    assert f'Lora hashes: "style0: {record.hash}"' in text
    assert nbbatch.load(path)[0].prompt == "a red cat", "the exact record keeps the prompt as written"
    nbbatch.generate("a red cat", [5], model=model, **FAST)  # the LoRA is off in the cached pipeline now
    with pytest.raises(ValueError, match="p00-s5.png names what nbbatch loads only when you allow it: LoRA '"):
        nbbatch.reproduce(path)  # the LoRA lies outside the picture's folder
    assert max_difference(nbbatch.reproduce(path, allow_download=True)[0].image, made[0].image) == 0
    shutil.copy(loras[model], path.parent)  # beside the picture: found there, whatever the record's path
    again = nbbatch.reproduce(path)
    assert max_difference(again[0].image, made[0].image) == 0
    assert again[0].call.loras[0].source == str((path.parent / "style0.safetensors").resolve())


def test_bad_loras_are_one_line_errors_and_leave_the_pipeline_as_it_was(loras, tmp_path):
    model = "nbbatch:tiny-sd"
    before = nbbatch.generate("a red cat", [3], model=model, **FAST)[0].image
    cases = [
        (tmp_path / "missing.safetensors", "LoRA file .*missing.safetensors' does not exist"),
        (loras["nbbatch:tiny-sdxl"], "could not load LoRA .*: its layers do not fit this model"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            nbbatch.generate("a red cat", [3], model=model, loras=[str(path)], **FAST)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="LoRA weight must be a number, not 'strong'"):
        nbbatch.generate("a red cat", [3], model=model, loras=[f"{loras[model]}:strong"], **FAST)
    after = nbbatch.generate("a red cat", [3], model=model, **FAST)[0].image
    assert max_difference(before, after) == 0


def test_the_magic_takes_lora_and_embedding_options(shell, loras):
    from IPython.core.error import UsageError

    path = loras["nbbatch:tiny-sd"]
    options = f"--seeds 3 --steps 4 --width 32 --height 32 --lora {path}:0.5 --out r"
    shell.run_cell_magic("batchgen", options, "a red cat")
    made = shell.user_ns["r"]
    assert made[0].settings.loras == ((path, 0.5),)
    raw = direct_call("nbbatch:tiny-sd", "a red cat", 3, prepare=with_lora(path, 0.5), **KWARGS)
    assert max_difference(made[0].image, raw) <= 1
    with pytest.raises(UsageError, match="LoRA weight must be a number, not 'x'"):
        shell.run_cell_magic("batchgen", f"--seeds 3 --lora {path}:x", "a red cat")


@pytest.mark.parametrize("vectors", [1, 3])
def test_an_embedding_equals_diffusers_load_textual_inversion(tmp_path, vectors):
    model = "nbbatch:tiny-sd"
    path = make_embedding(tmp_path, "cattoy", vectors)
    made = nbbatch.generate("a cattoy on a mat", [1], model=model, embeddings=[path], **FAST)
    raw = direct_call(
        model, "a cattoy on a mat", 1, prepare=lambda pipe: pipe.load_textual_inversion(path, token="cattoy"), **KWARGS
    )
    assert max_difference(made[0].image, raw) <= 1
    assert max_difference(made[0].image, direct_call(model, "a cattoy on a mat", 1, **KWARGS)) > 0
    weighted = nbbatch.generate("a (cattoy:1.4) on a mat", [1], model=model, embeddings=[path], **FAST)
    assert max_difference(weighted[0].image, made[0].image) > 0, "weights reach an embedding's vectors"
    assert made[0].call.embeddings[0].token == "cattoy"
    later = nbbatch.generate("a cattoy on a mat", [1], model=model, **FAST)
    assert max_difference(later[0].image, direct_call(model, "a cattoy on a mat", 1, **KWARGS)) <= 1, "unloaded"


def test_an_sdxl_embedding_goes_into_both_text_encoders(tmp_path):
    model = "nbbatch:tiny-sdxl"
    path = make_embedding(tmp_path, "cattoy", xl=True)

    def prepare(pipe):
        from safetensors.torch import load_file

        state = load_file(path)
        pipe.load_textual_inversion(state["clip_l"], "cattoy", pipe.tokenizer, pipe.text_encoder)
        pipe.load_textual_inversion(state["clip_g"], "cattoy", pipe.tokenizer_2, pipe.text_encoder_2)

    made = nbbatch.generate("a cattoy on a mat", [1], model=model, embeddings=[f"{path}:cattoy"], **FAST)
    assert max_difference(made[0].image, direct_call(model, "a cattoy on a mat", 1, prepare=prepare, **KWARGS)) <= 1


def test_an_embedding_is_recorded_for_a1111_readers(tmp_path):
    path = make_embedding(tmp_path, "cattoy")
    made = nbbatch.generate("a cattoy", [1], model="nbbatch:tiny-sd", embeddings=[path], **FAST)
    (saved,) = made.save(tmp_path / "out", grid=False)
    with Image.open(saved) as png:
        assert f'TI hashes: "cattoy: {made[0].call.embeddings[0].hash}"' in png.text["parameters"]
    with pytest.raises(ValueError, match="embedding file .*nothing.pt' does not exist"):
        nbbatch.generate("a cat", [1], model="nbbatch:tiny-sd", embeddings=[str(tmp_path / "nothing.pt")], **FAST)
