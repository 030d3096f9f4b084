"""Files from strangers: a PNG's record is data. Nothing in it runs, nothing outside its folder is read or
written, nothing is fetched unless the user allows it, and every bad file is a one-line error."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import signal
import struct
import subprocess
import sys
import zlib

import pytest
from conftest import FAST, json_paths, make_lora, max_difference
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from PIL import Image, PngImagePlugin

import nbbatch
from nbbatch.__main__ import main
from nbbatch.core.record import Call
from nbbatch.formats.png import INDEX, folder_lock

PAYLOADS = [
    "StableDiffusionPipeline\nimport os; os.system('echo PWNED')\nx = StableDiffusionPipeline",
    "x')\nimport os\n#",
    'x")\nimport os\n#',
    "float32\nimport os",
    "1\nimport os",
    "4, __import__('os').system('echo PWNED')",
    "x') or __import__('os').system('echo PWNED') #",
    "a\u2028import os",
    "a\rimport os",
]
"""Text that, written into code unquoted (or after a newline in a comment), would run as Python."""


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    """A saved image whose record has every part the export writes: a LoRA, a Prompt S/R axis, variation noise."""
    folder = tmp_path_factory.mktemp("rich")
    lora = make_lora("nbbatch:tiny-sd", folder / "lora")
    made = nbbatch.generate(
        "a red cat",
        [3],
        model="nbbatch:tiny-sd",
        negative_prompt="blurry",
        x=("prompt", ["red", "green"]),
        loras=[(lora, 0.7)],
        variation_seed=9,
        variation_strength=0.4,
        **FAST,
    )
    (path, _) = made.save(folder / "out", grid=False)
    with Image.open(path) as png:
        record = json.loads(png.text["nbbatch"])
    return path, record, made[0]


def write_png(path, record, size=(32, 32), parameters=None):
    info = PngImagePlugin.PngInfo()
    if record is not None:
        info.add_text("nbbatch", record if isinstance(record, str) else json.dumps(record))
    if parameters is not None:
        info.add_text("parameters", parameters)
    Image.new("RGB", size, (90, 20, 40)).save(path, pnginfo=info)
    return path


def replaced(record, where, value):
    copy = json.loads(json.dumps(record))
    target = copy
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    return copy


def shape(code: str) -> list[str]:
    """The code's statements with every constant blanked: what the export writes apart from its values."""

    class Blank(ast.NodeTransformer):
        def visit_Constant(self, node):
            return ast.Constant(value=None)

    return [ast.dump(statement) for statement in Blank().visit(ast.parse(code)).body]


def test_hostile_values_in_any_field_never_become_code(rich, tmp_path):
    path, record, _ = rich
    benign = shape(nbbatch.load(path)[0].code())
    fields = [where for where, _ in json_paths(record)] + [("call", "pipeline"), ("call", "scheduler")]
    refused = exported = 0
    for number, where in enumerate(dict.fromkeys(fields)):
        for payload in PAYLOADS:
            file = write_png(tmp_path / f"f{number}.png", replaced(record, where, payload))
            try:
                item = nbbatch.load(file)[0]
                code = item.code()
            except ValueError as error:
                assert "\n" not in str(error), where
                refused += 1
                continue
            exported += 1
            assert shape(code) == benign, (where, payload)
            assert "\nimport os" not in code and "\nx = " not in code
    assert refused and exported  # both happen: names and numbers are refused, text is written as text
    with pytest.raises(ValueError, match=r"call\.pipeline: .StableDiffusionPipeline\\nimport os.* is not a class name"):
        nbbatch.load(write_png(tmp_path / "p.png", replaced(record, ("call", "pipeline"), PAYLOADS[0])))


def test_an_item_made_in_memory_with_a_hostile_call_is_refused_or_quoted(rich):
    _, _, item = rich
    benign = shape(item.code())
    for key, value in (("pipeline", PAYLOADS[0]), ("width", "64); import os"), ("guidance_scale", float("nan"))):
        with pytest.raises(ValueError, match=key):  # the typed record refuses it as it is made
            Call.of({**item.call.model_dump(), key: value})

    class Sneaky:
        def __repr__(self):
            return "__import__('os').system('echo PWNED')"

    for key in ("pipeline", "scheduler", "dtype", "num_inference_steps", "guidance_scale", "width", "height",
                "variation_seed", "variation_strength", "generator_device"):  # fmt: skip
        for value in [*PAYLOADS, Sneaky(), 1.5, float("nan")]:
            unchecked = item.call.model_copy(update={key: value})  # past the record's checks: the export's own
            hostile = dataclasses.replace(item, call=unchecked)
            try:
                code = hostile.code()
            except ValueError as error:
                assert "\n" not in str(error)
                continue
            assert shape(code) == benign, (key, value)


def test_the_user_s_own_prompt_s_r_values_stay_in_the_comment():
    made = nbbatch.generate("a red cat", [1], x=("prompt", ["red", "green\nimport this\n#"]), **FAST)
    code = made[1].code()
    assert shape(code) == shape(made[0].code())
    assert code.splitlines()[0].startswith("# seed 1 · green\\nimport this\\n#")


def test_the_export_of_an_unchanged_loaded_record_makes_the_picture_again(rich, tmp_path):
    path, _, item = rich
    code = nbbatch.load(path)[0].code()
    script = tmp_path / "again.py"
    script.write_text(code + "\nimage.save(__file__ + '.png')\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runner = "import runpy, sys; sys.modules['nbbatch'] = None; runpy.run_path(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", runner, str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert max_difference(Image.open(f"{script}.png"), item.image) <= 1


# Reading reads that PNG; remaking loads only what the user named or allowed.


def test_an_input_image_outside_the_folder_is_refused(rich, tmp_path):
    _, record, _ = rich
    outside = tmp_path / "secret.png"
    Image.new("RGB", (32, 32)).save(outside)
    (tmp_path / "pics").mkdir()
    for name in ("../secret.png", str(outside), "/etc/passwd"):
        file = write_png(tmp_path / "pics" / "a.png", {**record, "init_image": name})
        with pytest.raises(ValueError, match="init_image: .* is not a plain file name in the picture's folder"):
            nbbatch.load(file)
    os.symlink(outside, tmp_path / "pics" / "input-0123456789ab.png")
    file = write_png(tmp_path / "pics" / "a.png", {**record, "init_image": "input-0123456789ab.png"})
    with pytest.raises(ValueError, match="leads outside its folder"):
        nbbatch.load(file)
    (tmp_path / "pics" / "input-text.png").write_text("root:x:0:0")
    file = write_png(tmp_path / "pics" / "a.png", {**record, "init_image": "input-text.png"})
    with pytest.raises(ValueError, match="cannot read .*input-text.png' as an image") as error:
        nbbatch.load(file)
    assert "\n" not in str(error.value)


def test_index_entries_that_leave_the_folder_are_refused(rich, tmp_path):
    path, _, _ = rich
    (tmp_path / "outside.png").write_bytes(path.read_bytes())
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("../outside.png", str(tmp_path / "outside.png"), "sub/x.png", ".hidden.png"):
        (folder / INDEX).write_text(json.dumps({"file": name}) + "\n")
        with pytest.raises(ValueError, match=r"line 1 of .*index.jsonl' names .*, not a PNG in its folder"):
            nbbatch.load(folder)


def test_a_record_s_files_and_hub_ids_are_not_loaded_without_leave(rich, tmp_path, monkeypatch):
    _, record, _ = rich
    loaded = []
    monkeypatch.setattr("nbbatch.models.adapters._load_lora", lambda *a: loaded.append(a))
    monkeypatch.setattr("nbbatch.models.pipelines.hub_reachable", lambda *a: loaded.append("hub") or False)
    evil = replaced(record, ("settings", "loras"), [["/etc/passwd", 1.0], ["evil-org/evil-lora", 0.5]])
    evil = replaced(evil, ("settings", "embeddings"), [["/proc/self/environ", "x"]])
    evil = replaced(evil, ("settings", "model"), "evil-org/evil-model")
    file = write_png(tmp_path / "evil.png", evil)
    picture = nbbatch.load(file)
    message = (
        "evil.png names what nbbatch loads only when you allow it: hub model 'evil-org/evil-model', "
        "LoRA '/etc/passwd', LoRA 'evil-org/evil-lora', embedding '/proc/self/environ'; "
        "put its files beside it, pass your own (model=, loras=, embeddings=), "
        "or allow_download=True (--allow-download) to load them as named"
    )
    for attempt in (
        lambda: nbbatch.reproduce(file),
        lambda: picture.refine(3, "a blue cat"),
        lambda: picture.vary(3, seeds=[1]),
        lambda: picture.verify(3),
    ):
        with pytest.raises(ValueError, match="evil.png names what") as error:
            attempt()
        assert str(error.value) == message
    assert loaded == [], "nothing was opened or asked of the hub"
    for name in ("nbbatch:sdxl-random", "/home/someone/models/sdxl"):
        with pytest.raises(ValueError, match=r"stand-in 'nbbatch:sdxl-random' \(a full-size|model folder '/home"):
            nbbatch.reproduce(write_png(tmp_path / "s.png", replaced(record, ("settings", "model"), name)))
    monkeypatch.setattr(
        "nbbatch.models.pipelines.load_pipeline", lambda *a, **k: (_ for _ in ()).throw(ValueError("tried"))
    )
    with pytest.raises(ValueError, match="tried"):  # allowed: it goes to load what the record names
        nbbatch.reproduce(file, allow_download=True)
    chosen = picture.refine(3, "a blue cat", model="nbbatch:tiny-sd", loras=[], embeddings=[])  # the user's own
    assert chosen[0].settings.model == "nbbatch:tiny-sd" and chosen[0].image.size == (32, 32)


def test_a_foreign_picture_naming_a_hub_id_is_not_varied_from_the_hub(tmp_path, monkeypatch):
    monkeypatch.setattr("nbbatch.models.pipelines.load_pipeline", lambda *a, **k: pytest.fail("it tried to load"))
    text = "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 32x32, Model: evil-org/evil-model"
    picture = nbbatch.load(write_png(tmp_path / "a1111.png", None, parameters=text))
    with pytest.raises(ValueError, match="a1111.png names what nbbatch loads only when you allow it: hub model"):
        picture.vary(5, seeds=[1])


def test_the_magic_allows_downloads_only_when_told(rich, tmp_path, shell, monkeypatch):
    _, record, _ = rich
    file = write_png(tmp_path / "evil.png", replaced(record, ("settings", "model"), "evil-org/evil-model"))
    shell.user_ns["loaded"] = nbbatch.load(file)
    with pytest.raises(UsageError, match="evil.png names what nbbatch loads only when you allow it"):
        shell.run_cell_magic("batchgen", "--refine 3 --from loaded", "a blue cat")
    monkeypatch.setattr(
        "nbbatch.models.pipelines.load_pipeline", lambda *a, **k: (_ for _ in ()).throw(ValueError("tried"))
    )
    with capture_output(), pytest.raises(ValueError, match="^tried$"):  # the loader was reached: it was allowed
        shell.run_cell_magic("batchgen", "--refine 3 --from loaded --allow-download", "a blue cat")


@pytest.mark.timeout(20)  # a hang guard, not a speed claim: the refusal took 0.3 s on the 2-core CI machine
def test_a_50_mb_prompt_is_refused_at_once(rich, tmp_path, shell):
    huge = "a cat, " * 7_500_000
    refused = r"a prompt of 52,4\d\d,\d\d\d characters is longer than nbbatch takes \(20,000\)"
    with pytest.raises(ValueError, match=refused):
        nbbatch.generate(huge, [1], **FAST)
    with pytest.raises(ValueError, match="is longer than nbbatch takes"):
        nbbatch.load(rich[0]).refine(3, huge)
    with pytest.raises(UsageError, match="is longer than nbbatch takes"):
        shell.run_cell_magic("batchgen", "--seeds 1", huge[:100_000])
    index = tmp_path / "index"
    index.mkdir()
    record = replaced(rich[1], ("prompt",), "a cat " * 5_000)
    with pytest.raises(ValueError, match=r"prompt: String should have at most 20000 characters"):
        nbbatch.load(write_png(index / "a.png", record))


# Writes go where they say.


def test_a_linked_index_or_picture_name_is_never_written_through(tmp_path):
    made = nbbatch.generate("a red cat", [3], **FAST)
    target = tmp_path / "target.txt"
    target.write_text("mine")
    folder = tmp_path / "out"
    folder.mkdir()
    os.symlink(target, folder / INDEX)
    os.symlink(target, folder / "p00-s3.png")
    with pytest.raises(ValueError, match=r"index.jsonl is a symbolic link: nbbatch does not write through links"):
        made.save(folder, grid=False)
    assert target.read_text() == "mine"
    assert (folder / "p00-s3-1.png").is_file(), "the linked name counts as taken"
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    os.symlink(tmp_path / "nowhere.jsonl", dangling / INDEX)
    with pytest.raises(ValueError, match="is a symbolic link"):
        made.save(dangling, grid=False)
    assert not (tmp_path / "nowhere.jsonl").exists()


def test_files_take_the_umask_s_modes(tmp_path):
    old = os.umask(0o022)
    try:
        nbbatch.generate("a red cat", [3], **FAST).save(tmp_path)
    finally:
        os.umask(old)
    modes = {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()}
    assert modes == {"p00-s3.png": 0o644, "grid.png": 0o644, INDEX: 0o644}


KILLED = """
import os, signal, sys
import nbbatch
from nbbatch.formats import png
made = nbbatch.generate(["a red cat", "a blue dog"], [1, 2], model="nbbatch:tiny-sd", steps=2, width=32, height=32)
if sys.argv[2] == "link":
    os.link = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # dies with a part file written
else:
    png.Saver.append_index = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # dies before the index lines
made.save(sys.argv[1], grid=False)
"""


def test_a_kill_during_save_leaves_nothing_that_the_next_save_or_load_does_not_handle(tmp_path):
    def killed(how):
        done = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path), how], capture_output=True)
        assert done.returncode == -signal.SIGKILL

    killed("link")
    assert len(list(tmp_path.glob(".nbbatch-*.part"))) == 1, "a kill between the write and the link leaves a part"
    killed("index")  # its save removed the first one's part file, then died before the index lines
    assert not list(tmp_path.glob(".nbbatch-*.part"))
    loaded = nbbatch.load(tmp_path)  # four pictures, no index line: adopted
    assert sorted((item.prompt, item.seed) for item in loaded) == [
        ("a blue dog", 1), ("a blue dog", 2), ("a red cat", 1), ("a red cat", 2)
    ]  # fmt: skip
    assert not (tmp_path / INDEX).exists()


def test_a_folder_without_an_index_loads_its_readable_pictures(rich, tmp_path):
    (tmp_path / "mine.png").write_bytes(rich[0].read_bytes())
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.warns(UserWarning, match=r"1 PNG\(s\) in .* hold no parameters nbbatch can read: plain.png"):
        loaded = nbbatch.load(tmp_path)
    assert [item.file for item in loaded] == ["mine.png"]


SWEEP = """\
model = "nbbatch:tiny-sd"
prompts = ["a red cube"]
seeds = "0-3"
steps = 2
width = 32
height = 32
batch_size = 1
"""

LIMITED = """
import resource, signal, sys
from nbbatch.__main__ import main
from nbbatch.core.record import Call
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, a write fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
sys.exit(main(["run", sys.argv[1], "--out", sys.argv[2]]))
"""


def test_a_full_disk_during_the_index_write_is_one_line_and_the_next_run_finishes(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    reference = tmp_path / "reference"
    assert main(["run", str(spec), "--out", str(reference)]) == 0
    line = max(len(text) for text in (reference / INDEX).read_text().splitlines()) + 1
    largest = max(path.stat().st_size for path in reference.glob("*.png"))
    limit = max(line, largest) + line // 2  # every picture fits; the index stops within its second or third line
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", LIMITED, str(spec), str(out), str(limit)], capture_output=True)
    assert done.returncode == 1
    assert "stopped: cannot write" in done.stdout.decode() + done.stderr.decode()
    assert "File too large" in done.stdout.decode() + done.stderr.decode()
    assert not (out / INDEX).read_bytes().endswith(b"\n"), "the write was cut short"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    lines = (out / INDEX).read_text().splitlines()
    assert sorted(json.loads(text)["file"] for text in lines) == sorted(p.name for p in reference.glob("*.png"))
    for item, expected in zip(nbbatch.load(out), nbbatch.load(reference)):
        assert max_difference(item.image, expected.image) == 0


def test_two_sweeps_on_one_folder_the_second_is_refused_at_once(tmp_path, capsys):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out):
        assert main(["run", str(spec), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"nbbatch: error: {out} is being written by another nbbatch run (pid {os.getpid()}): "
        "wait for it, or give another --out"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from pathlib import Path; from nbbatch.formats.png import folder_lock\n"
         f"with folder_lock(Path({str(out)!r})):\n    print('locked', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    assert main(["run", str(spec), "--out", str(out)]) == 0, "a dead process's lock is taken over"
    assert len(list(out.glob("*.png"))) == 4


# Unclean inputs, one line each.


def _bomb(path, width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_bombs_and_damaged_records_are_one_line_errors_naming_the_file(rich, tmp_path):
    _, record, _ = rich
    zbomb = PngImagePlugin.PngInfo()
    zbomb.add_text("nbbatch", "x" * 20_000_000, zip=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "ztxt.png", pnginfo=zbomb)
    cases = {
        _bomb(tmp_path / "huge.png", 30000, 30000): "cannot read .*huge.png' as an image: Image size",
        tmp_path / "ztxt.png": "cannot read .*ztxt.png' as an image: .*(Too much|Decompressed)",
        write_png(tmp_path / "deep.png", "[" * 100_000): "deep.png' is damaged: .*recursion limit",
        write_png(tmp_path / "list.png", replaced(record, ("prompt",), ["a", "cat"])): r"prompt: Input should be",
        write_png(tmp_path / "size.png", record, size=(16, 16)): "it says 32x32, the picture is 16x16",
        write_png(tmp_path / "surrogate.png", json.dumps(replaced(record, ("prompt",), "a cat")).replace(
            "a cat", "a \\udcff cat")): "lone leading surrogate",
        write_png(tmp_path / "extra.png", replaced(record, ("call", "evil"), 1)): r"call\.evil: Extra inputs",
        write_png(tmp_path / "steps.png", replaced(record, ("call", "num_inference_steps"), 10**9)): r"call\.num_",
        write_png(tmp_path / "inf.png", json.dumps(record).replace('"guidance_scale": ', '"guidance_scale": 1e999,'
                                                                    '"x": ')): "guidance_scale|call",
    }  # fmt: skip
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message) as error:
            nbbatch.load(path)
        assert "\n" not in str(error.value), path


def test_other_bad_inputs_are_one_line_value_errors(shell):
    cases = [
        (lambda: nbbatch.generate("a \udcff cat", [1], **FAST), "not a character"),
        (lambda: nbbatch.generate("a cat", [1], foo=1, **FAST), "foo is not a setting: the settings are"),
        (lambda: nbbatch.generate("a cat", [1], x=("steps", None), **FAST), "the values of 'steps' must be a list"),
        (lambda: nbbatch.generate("a cat", range(10**9), **FAST), "more than 100,000 seeds given"),
        (lambda: nbbatch.generate("a cat", [1], ray_address="auto", **FAST), "give workers=N too"),
        (
            lambda: nbbatch.generate("a red circle", [1], model="nbbatch:shapes", clip_skip=12, steps=2),
            "clip_skip: 12 reaches past the text encoder, which has 3 layers",
        ),
    ]
    for attempt, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            attempt()
        assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match="not a character"):
        shell.run_cell_magic("batchgen", "--seeds 1", "a \udcff cat")


def test_a_line_separator_inside_a_cell_line_is_a_space():
    from nbbatch.core.spec import parse_prompt_lines

    assert parse_prompt_lines("a red\u2028cat\nblue\x85dog\r\nthird") == ["a red cat", "blue dog", "third"]


def test_a_pipeline_that_names_no_guidance_default_gets_none_passed():
    from nbbatch.core.spec import Settings
    from nbbatch.models.backend import call_arguments

    class Custom:
        def __call__(self, prompt, **kwargs):
            return kwargs

    arguments = call_arguments(Custom(), Settings(steps=4), image_to_image=False)
    assert "guidance_scale" not in arguments and arguments["num_inference_steps"] == 4
    assert "width" not in arguments and "height" not in arguments, "an unset size is the pipeline's own default"
    assert call_arguments(Custom(), Settings(width=64, height=48), image_to_image=False)["height"] == 48
    assert call_arguments(Custom(), Settings(guidance=5.0), image_to_image=False)["guidance_scale"] == 5.0


def test_a_saved_foreign_picture_is_refused_in_one_line(tmp_path):
    text = "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 32x32, Model: v15"
    picture = nbbatch.load(write_png(tmp_path / "a1111.png", None, parameters=text))
    with pytest.raises(ValueError, match="a1111.png was made by AUTOMATIC1111: nbbatch saves only what it made"):
        picture.save(tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.png"))


def test_a_scheduler_config_with_an_infinity_saves_loads_and_exports(tmp_path):
    """DPM++'s default lambda_min_clipped is -inf: such a record is the user's own, not a damaged one."""
    made = nbbatch.generate(
        "a red cat", [2], model="nbbatch:tiny-sd", scheduler="dpm++2m", steps=4, width=32, height=32
    )
    assert made[0].call.scheduler_config["lambda_min_clipped"] == float("-inf")
    (path,) = made.save(tmp_path, grid=False)
    again = nbbatch.reproduce(path)[0]
    assert again.call.scheduler_config["lambda_min_clipped"] == float("-inf")
    assert "float('-inf')" in made.code(2)


def test_a_cached_hidream_record_does_not_fetch_the_llama_its_repo_leaves_out(rich, tmp_path, monkeypatch):
    """A cached HiDream repo holds no Llama: loading it would download Meta's, so that is asked for first."""
    from huggingface_hub import constants

    def cache(repo: str, name: str, text: str) -> None:
        snapshot = tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_text(text)
        (snapshot.parents[1] / "refs").mkdir(exist_ok=True)
        (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    index = {"_class_name": "HiDreamImagePipeline", "text_encoder_4": [None, None], "tokenizer_4": [None, None]}
    cache("someone/hidream", "model_index.json", json.dumps(index))
    _, record, _ = rich
    record = replaced(replaced(record, ("settings", "loras"), []), ("settings", "embeddings"), [])
    file = write_png(tmp_path / "hidream.png", replaced(record, ("settings", "model"), "someone/hidream"))
    monkeypatch.setattr(
        "nbbatch.models.pipelines.load_pipeline", lambda *a, **k: (_ for _ in ()).throw(ValueError("tried"))
    )
    llama = "meta-llama/Meta-Llama-3.1-8B-Instruct"
    message = f"hidream.png names what nbbatch loads only when you allow it: hub model '{llama}' (its model card"
    with pytest.raises(ValueError, match=re.escape(message)):
        nbbatch.reproduce(file)
    cache(llama, "config.json", "{}")
    with pytest.raises(ValueError, match="^tried$"):  # both cached: it goes on to load them, fetching nothing
        nbbatch.reproduce(file)
