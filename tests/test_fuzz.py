"""Property-based tests: any input ends in a result or a clear error, never a traceback from inside nbbatch."""

import pytest
from conftest import json_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from PIL import Image, PngImagePlugin

from nbbatch.core.attention import is_plain, parse_attention
from nbbatch.core.result import BatchResult
from nbbatch.core.seeds import MAX_IMAGES, SEED_MAX, parse_seeds
from nbbatch.core.spec import Settings, parse_prompt_lines

SEED_TEXT = st.lists(
    st.one_of(
        st.integers(-5, 2**65).map(str),
        st.tuples(st.integers(0, 300), st.integers(0, 300)).map(lambda r: f"{r[0]}-{r[1]}"),
        st.text(alphabet="0123456789-, x.\u0663", max_size=6),
    ),
    max_size=6,
).map(",".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(SEED_TEXT, st.text(max_size=20)))
def test_any_seed_text_parses_or_is_a_value_error(text):
    try:
        seeds = parse_seeds(text)
    except ValueError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert seeds and len(seeds) == len(set(seeds)) <= MAX_IMAGES
    assert all(0 <= seed <= SEED_MAX for seed in seeds)


@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=20, unique=True))
def test_seed_lists_written_out_parse_back(seeds):
    assert parse_seeds(",".join(map(str, seeds))) == tuple(seeds)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.dictionaries(st.from_regex(r"[a-z_]{1,5}", fullmatch=True), st.text(max_size=5)))
def test_any_cell_text_gives_prompts_or_a_value_error(text, namespace):
    try:
        prompts = parse_prompt_lines(text, namespace)
    except ValueError as error:
        assert str(error).startswith("prompt line ")
        return
    assert all(prompt and prompt == prompt.strip() and not prompt.startswith("#") for prompt in prompts)


OPTIONS = [
    "--model",
    "-m",
    "--seeds",
    "-s",
    "--num",
    "--steps",
    "--guidance",
    "--width",
    "--height",
    "--negative",
    "--image",
    "--strength",
    "--scheduler",
    "--batch-size",
    "--dtype",
    "--device",
    "--generator-device",
    "--offload",
    "--vae-tiling",
    "--refine",
    "--vary",
    "--from",
    "--prompt-index",
    "--out",
    "--no-display",
    "--save",
    "--autosave",
    "--allow-download",
]
VALUES = [
    "0",
    "1",
    "-1",
    "7-0",
    "0-3",
    "8",
    "30",
    "1e9",
    "nan",
    "auto",
    "fp16",
    "cuda",
    "cpu",
    "euler-a",
    "x",
    "'a b'",
    '"',
    "pic",
    "nbbatch:tiny-sd",
    "./nowhere",
    "_batch",
    "1,2",
    "",
]
LINE = st.lists(st.one_of(st.sampled_from(OPTIONS), st.sampled_from(VALUES), st.text(max_size=6)), max_size=8)


@pytest.fixture
def planned(shell, monkeypatch, tmp_path):
    """The magic with the pipeline run replaced by a record of what would run (runs are tested elsewhere)."""
    runs = []
    monkeypatch.chdir(tmp_path)  # --save and --autosave make folders

    def execute(settings, jobs, **kwargs):
        runs.append((settings, jobs))
        return BatchResult([], settings, total=len(jobs))

    monkeypatch.setattr("nbbatch.notebook.magic.run_batch", execute)
    shell.user_ns["pic"] = __import__("PIL.Image").Image.new("RGB", (16, 16))
    return runs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(LINE.map(" ".join), st.text(max_size=30))
def test_any_magic_line_and_cell_give_a_run_or_a_usage_error(shell, planned, line, cell):
    before = len(planned)
    try:
        with capture_output():
            shell.run_cell_magic("batchgen", line, cell)
    except UsageError as error:
        assert str(error).strip()
        assert len(planned) == before, "nothing runs after a usage error"
        return
    _, jobs = planned[-1]
    assert jobs
    assert all(job.prompt for job in jobs)


@given(st.text(alphabet="ab ()[]:.1-\\BREAK", max_size=30))
def test_any_prompt_gives_weighted_windows_or_a_one_line_error(text):
    try:
        windows = parse_attention(text)
    except ValueError as error:
        assert str(error).startswith(("unbalanced ", "weight ")) and "\n" not in str(error)
        return
    assert windows and all(piece and piece[0] for window in windows for piece in window)
    if is_plain(text):
        assert ["".join(t for t, _ in w) for w in windows] == [text] or not text.strip()


# Files from strangers and every Python input: a result, or a one-line ValueError, never another error.

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved image with a variation seed and a grid cell: the record the fuzz changes."""
    import json

    import nbbatch

    folder = tmp_path_factory.mktemp("saved")
    made = nbbatch.generate("a red cat", [3], x=("steps", [2, 3]), variation_seed=9, variation_strength=0.4, width=32,
                            height=32)  # fmt: skip
    path = made.save(folder, grid=False)[0]
    with Image.open(path) as png:
        return path, json.loads(png.text["nbbatch"]), png.text["parameters"]


EXPORT_NAMES = {"state", "init_image", "base64", "io", "Image", "vectors", "safetensors"}
"""Names the export writes in branches the fuzzed record may take but its benign export does not (a saved state)."""
ALLOWED_MODULES = {
    "torch",
    "diffusers",
    "base64",
    "io",
    "PIL",
    "typing",
    "diffusers.utils.torch_utils",
    "safetensors.torch",
}


def only_export_statements(code: str, allowed_names: set[str]) -> None:
    """The code parses and names only what an export names: no other module, function or variable."""
    import ast

    import diffusers

    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert set(modules) <= ALLOWED_MODULES, modules
        if isinstance(node, ast.Name):
            assert node.id in allowed_names or hasattr(diffusers, node.id), node.id


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=JSON)
def test_any_change_to_a_record_loads_and_exports_safely_or_is_one_line(saved, tmp_path, data, value):
    import ast
    import json

    import nbbatch

    path, record, _ = saved
    where = data.draw(st.sampled_from([where for where, _ in json_paths(record, leaves=False)]))
    changed = json.loads(json.dumps(record))
    target = changed
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    file = tmp_path / "fuzzed.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("nbbatch", json.dumps(changed))
    Image.new("RGB", (32, 32)).save(file, pnginfo=info)
    benign = nbbatch.load(path)[0].code()
    names = {node.id for node in ast.walk(ast.parse(benign)) if isinstance(node, ast.Name)} | EXPORT_NAMES
    try:
        code = nbbatch.load(file)[0].code()
    except ValueError as error:
        assert str(error) and "\n" not in str(error), where
        return
    only_export_statements(code, names)


PNG_CHUNKS = st.lists(
    st.tuples(st.sampled_from(["nbbatch", "parameters", "prompt", "workflow", "Comment", "invokeai_metadata"]),
              st.one_of(st.text(max_size=40), JSON.map(__import__("json").dumps))),
    max_size=3,
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=PNG_CHUNKS, cut=st.integers(0, 400), flips=st.lists(st.integers(0, 399), max_size=4))
def test_any_png_loads_or_is_a_one_line_error(tmp_path, chunks, cut, flips):
    import io

    import nbbatch

    info = PngImagePlugin.PngInfo()
    for key, text in chunks:
        info.add_text(key, text)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, format="PNG", pnginfo=info)
    data = bytearray(buffer.getvalue())
    for flip in flips:  # damaged bytes (CRCs, sizes, the zlib stream)
        if flip < len(data):
            data[flip] ^= 0x5A
    if cut:
        data = data[: max(8, len(data) - cut)]  # a file cut short
    file = tmp_path / "any.png"
    file.write_bytes(bytes(data))
    try:
        nbbatch.load(file)
    except ValueError as error:
        assert str(error) and "\n" not in str(error)


SETTING_VALUES = st.one_of(JSON, st.sampled_from([0, -1, 1.5, 10**30, "auto", "fp16", "cuda:0", "x\ny", "\udcff"]))


@settings(max_examples=300, deadline=None)
@given(
    prompts=st.one_of(st.text(max_size=30), st.lists(st.text(max_size=10), max_size=3), JSON),
    seeds=st.one_of(st.none(), st.text(max_size=8), st.integers(-5, 2**70), st.lists(st.integers(-2, 5), max_size=3)),
    options=st.dictionaries(
        st.sampled_from(
            [*Settings.model_fields, "negative_prompt", "x", "y", "num", "random", "random_seed", "unknown_name"]
        ),
        SETTING_VALUES,
        max_size=4,
    ),
)
def test_any_python_call_plans_or_is_a_one_line_value_error(prompts, seeds, options):
    from nbbatch.api import plan

    try:
        plan(prompts, seeds, **options)
    except ValueError as error:
        assert str(error) and "\n" not in str(error), options


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.dictionaries(st.sampled_from(["prompts", "seeds", "steps", "model", "images", "x", "guidance",
                                             "wildcards", "batch_size", "nonsense"]),
                            st.one_of(st.text(max_size=10), st.integers(-3, 2**40), st.lists(st.text(max_size=5),
                                      max_size=2)), max_size=4))  # fmt: skip
def test_any_sweep_spec_plans_or_is_a_one_line_value_error(tmp_path, spec):
    from nbbatch.api import plan
    from nbbatch.scale.sweep import read_spec

    file = tmp_path / "spec.toml"
    file.write_text("\n".join(f"{key} = {_toml(value)}" for key, value in spec.items()), encoding="utf-8")
    try:
        plan(**read_spec(file))
    except ValueError as error:
        assert str(error) and "\n" not in str(error), spec


def _toml(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=True) if not isinstance(value, int) else str(value)
