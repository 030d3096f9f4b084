"""Property-based tests: any input ends in a result or a clear error, never a traceback from inside nbbatch."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from nbbatch.core.attention import is_plain, parse_attention
from nbbatch.core.result import BatchResult
from nbbatch.core.seeds import MAX_IMAGES, SEED_MAX, parse_seeds
from nbbatch.core.spec import parse_prompt_lines

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
