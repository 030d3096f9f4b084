import re

import pytest
from conftest import fail_on_call, max_difference
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from PIL import Image

import nbbatch

FAST = "--steps 4 --width 32 --height 32"


def run(shell, line, cell):
    with capture_output() as captured:
        shell.run_cell_magic("batchgen", line, cell)
    return captured


def test_prompts_times_seeds_land_in_batch_and_show_a_seed_grid(shell, model):
    captured = run(shell, f"-m {model} --seeds 0-3 {FAST}", "\n# a comment\na red cube\n\na blue ball\n")
    result = shell.user_ns["_batch"]
    assert isinstance(result, nbbatch.BatchResult) and result.complete
    assert [(item.prompt, item.seed) for item in result] == [
        (prompt, seed) for prompt in ("a red cube", "a blue ball") for seed in range(4)
    ]
    assert {item.image.size for item in result} == {(32, 32)}
    (shown,) = [output.data for output in captured.outputs]
    assert "data:image/jpeg;base64," in shown["text/html"] and "8 images" in shown["text/html"]


def test_magic_images_equal_the_python_api_images(shell):
    shell.user_ns["thing"] = "lighthouse"
    run(shell, f"--seeds 5,9 {FAST} --negative 'dull, flat' --guidance 5 --out mine", "a {thing} at noon")
    result = shell.user_ns["mine"]
    assert [item.prompt for item in result] == ["a lighthouse at noon"] * 2
    assert result[0].negative_prompt == "dull, flat" and result[0].call.guidance_scale == 5.0
    direct = nbbatch.generate(
        "a lighthouse at noon", [9], negative_prompt="dull, flat", guidance=5.0, steps=4, width=32, height=32
    )
    assert max_difference(direct[0].image, result.by_seed(9).image) <= 1


def test_random_seeds_are_drawn_shown_and_kept(shell):
    captured = run(shell, f"--num 3 {FAST}", "a lamp")
    seeds = shell.user_ns["_batch"].seeds
    assert len(seeds) == 3
    assert f"seeds {', '.join(map(str, seeds))}" in captured.outputs[0].data["text/plain"]


def test_image_to_image_from_a_variable_and_from_a_file(shell, tmp_path):
    shell.user_ns["pictures"] = [Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")]
    run(shell, "--image pictures --strength 0.5 --steps 4 --seeds 0-1", "warm\ncold")
    from_variable = shell.user_ns["_batch"]
    assert len(from_variable) == 8 and from_variable[0].call.strength == 0.5, "pictures x prompts x seeds"
    blue_cold = from_variable[7]
    assert (blue_cold.init_image, blue_cold.prompt, blue_cold.seed) == (shell.user_ns["pictures"][1], "cold", 1)
    path = tmp_path / "blue.png"
    Image.new("RGB", (32, 32), "blue").save(path)
    run(shell, f"--image {path} --strength 0.5 --steps 4 --seeds 1", "cold")
    assert shell.user_ns["_batch"][0].label == "seed 1 · blue.png"
    assert max_difference(shell.user_ns["_batch"][0].image, blue_cold.image) <= 1


def test_refine_in_a_cell_makes_one_refinement_per_line_from_the_last_result(shell):
    run(shell, f"--seeds 0-7 {FAST}", "a cottage")
    batch = shell.user_ns["_batch"]
    run(shell, "--refine 5 --out refined", "a cottage\na cottage in snow, detailed")
    refined = shell.user_ns["refined"]
    assert [item.label for item in refined] == ["seed 5 · r1a", "seed 5 · r1b"]
    assert max_difference(refined[0].image, batch.by_seed(5).image) <= 1
    run(shell, "--refine 5 --from refined --prompt-index 1 --steps 5", "a cottage in snow at night")
    again = shell.user_ns["_batch"]
    assert again[0].label == "seed 5 · r2" and again[0].call.num_inference_steps == 5
    assert [step.prompt for step in again[0].lineage()] == [
        "a cottage",
        "a cottage in snow, detailed",
        "a cottage in snow at night",
    ]


def test_vary_in_a_cell(shell):
    run(shell, f"--seeds 0-1 {FAST}", "a cottage")
    run(shell, "--vary 1 --seeds 20-22 --steps 4", "# keep the prompt")
    varied = shell.user_ns["_batch"]
    assert [item.label for item in varied] == ["seed 20 · vary of 1", "seed 21 · vary of 1", "seed 22 · vary of 1"]
    assert varied[0].call.strength == 0.3


def test_the_line_form_refines_and_varies_with_the_image_prompt(shell):
    run(shell, f"--seeds 0-1 {FAST}", "a cottage")
    batch = shell.user_ns["_batch"]
    with capture_output():
        shell.run_line_magic("batchgen", "--refine 1 --out again")
        shell.run_line_magic("batchgen", "--vary 1 --seeds 7 --steps 4 --out varied")
    assert max_difference(shell.user_ns["again"][0].image, batch.by_seed(1).image) <= 1
    assert shell.user_ns["varied"][0].prompt == "a cottage"
    with pytest.raises(UsageError, match="no prompt given"):
        shell.run_line_magic("batchgen", "--seeds 0")


def test_help_comes_from_magic_arguments(shell):
    doc = shell.find_cell_magic("batchgen").__doc__
    assert "--seeds SEEDS" in doc and "--refine SEED" in doc and "its own generator" in doc


BAD = [
    ("--bogus 1", "a", "unrecognized arguments: --bogus 1"),
    ("--negative 'unclosed", "a", "cannot read the options: No closing quotation"),
    ("--seeds 7-0", "a", "seed range '7-0' goes down"),
    ("--seeds abc", "a", "bad seed 'abc'"),
    ("--seeds=-3", "a", "bad seed '-3'"),
    ("--seeds 1 --num 2", "a", "give seeds or a number of random seeds, not both"),
    ("", "\n# only a comment\n", "no prompt given"),
    ("--steps 0", "a", "steps must be a whole number from 1 to 1000, not 0"),
    ("--steps x", "a", "argument --steps: invalid int value: 'x'"),
    ("--width 30", "a", "width must be a multiple of 8"),
    ("--model ./no/such/folder", "a", "model folder './no/such/folder' does not exist"),
    ("--model nbbatch:huge", "a", "unknown built-in model 'nbbatch:huge'"),
    (
        "--image nothing_here",
        "a",
        "--image 'nothing_here' is neither a variable nor a picture file, a folder or a glob",
    ),
    ("--strength 0.5", "a", "--strength is for image-to-image: give --image too"),
    ("--image one --steps 2 --strength 0.3", "a", "steps 2 x strength 0.3 leaves no denoising step"),
    ("", "a {unknown_name}", "prompt line 1: unknown variable {unknown_name}"),
    ("--out 'not a name'", "a", "--out needs a variable name"),
    ("--batch-size lots", "a", "--batch-size must be a whole number from 1 to 100000 or auto, not 'lots'"),
    ("--dtype fp8", "a", "argument --dtype: invalid choice: 'fp8'"),
    ("--device cuda", "a", "--device: 'cuda' asked for, but CUDA is not available here"),
    ("--generator-device cuda", "a", "--generator-device: cuda needs CUDA"),
    ("--offload", "a", "--offload moves models between the CPU and a GPU: it needs a CUDA device"),
    ("--scheduler fancy", "a", "unknown scheduler 'fancy'"),
    ("--refine 3", "a", "nothing to refine yet: run a batch first, or pass --from NAME"),
    ("--refine 3 --from nope", "a", "--from nope: no batch result in a variable of that name"),
    (
        "--prompt-index 1",
        "a",
        "--from, --prompt-index and --allow-download go with --refine, --vary, --hires, --inpaint or --edit",
    ),
    (
        "--allow-download",
        "a",
        "--from, --prompt-index and --allow-download go with --refine, --vary, --hires, --inpaint or --edit",
    ),
]


@pytest.mark.parametrize(("line", "cell", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_input_is_a_one_line_usage_error_and_changes_nothing(shell, line, cell, message):
    shell.user_ns["two"] = [Image.new("RGB", (16, 16))] * 2
    shell.user_ns["one"] = Image.new("RGB", (16, 16))
    shell.user_ns["_batch"] = sentinel = object()
    before = set(shell.user_ns)
    with pytest.raises(UsageError, match=re.escape(message)) as caught:
        shell.run_cell_magic("batchgen", f"{line} --steps 4" if "--steps" not in line else line, cell)
    assert "\n" not in str(caught.value)
    assert shell.user_ns["_batch"] is sentinel and set(shell.user_ns) == before


def test_refining_an_unknown_seed_lists_the_seeds_there_are(shell):
    run(shell, f"--seeds 0-2 {FAST}", "a")
    with pytest.raises(UsageError, match=re.escape("seed 9 is not in this result; its seeds are 0, 1, 2")):
        shell.run_cell_magic("batchgen", "--refine 9", "a b")


def test_a_failure_mid_batch_stores_and_shows_the_finished_images_and_keeps_the_library_s_traceback(shell, monkeypatch):
    fail_on_call(monkeypatch, 2, "the GPU fell off the bus")  # raised outside nbbatch, as by torch or diffusers
    with capture_output() as captured, pytest.raises(RuntimeError, match="^the GPU fell off the bus$") as caught:
        shell.run_cell_magic("batchgen", f"--seeds 0-5 --batch-size 2 --guidance 7 {FAST}", "a")
    assert "the batch stopped: the GPU fell off the bus; its 2 finished images are in _batch" in captured.stderr
    assert caught.traceback[-1].path.name == "conftest.py", "the traceback reaches where it was raised"
    assert [item.seed for item in shell.user_ns["_batch"]] == [0, 1]
    assert "2 of 6 images" in captured.outputs[0].data["text/html"]


def test_a_library_s_value_error_keeps_its_traceback_while_nbbatch_s_own_is_one_line(shell, monkeypatch):
    fail_on_call(monkeypatch, 1, ValueError("height must be divisible by 16"))  # as diffusers' check_inputs
    with capture_output() as captured, pytest.raises(ValueError, match="^height must be divisible by 16$"):
        shell.run_cell_magic("batchgen", f"--seeds 0 --guidance 7 {FAST}", "a")
    assert "the batch stopped before any image was made: height must be divisible by 16" in captured.stderr
    with pytest.raises(UsageError, match=r"^--strength is for image-to-image: give --image too$"):
        shell.run_cell_magic("batchgen", "--strength 0.5", "a")


def test_a_kernel_interrupt_keeps_stores_and_shows_the_images_then_stops_the_cell(shell, monkeypatch):
    fail_on_call(monkeypatch, 3, KeyboardInterrupt())
    with capture_output() as captured:
        outcome = shell.run_cell(f"%%batchgen --seeds 0-7 --batch-size 2 --guidance 7 {FAST}\na")
    assert isinstance(outcome.error_in_exec, KeyboardInterrupt), "Run All stops at this cell"
    result = shell.user_ns["_batch"]
    assert [item.seed for item in result] == [0, 1, 2, 3]
    assert result.status == "interrupted" and not result.complete
    assert "interrupted after 4 of 8 images; they are in _batch" in captured.stdout
    assert "4 of 8 images" in captured.outputs[0].data["text/html"]


def test_an_interrupt_before_the_first_image_leaves_the_earlier_result(shell, monkeypatch):
    run(shell, f"--seeds 3 {FAST}", "earlier")
    earlier = shell.user_ns["_batch"]
    fail_on_call(monkeypatch, 1, KeyboardInterrupt())
    with capture_output() as captured:
        outcome = shell.run_cell(f"%%batchgen --seeds 0-7 --guidance 7 {FAST}\nlater")
    assert isinstance(outcome.error_in_exec, KeyboardInterrupt)
    assert shell.user_ns["_batch"] is earlier
    assert "interrupted before any image was made; _batch is unchanged" in captured.stdout
    monkeypatch.undo()
    run(shell, f"--refine 3 {FAST}", "refined")
    assert shell.user_ns["_batch"][0].parent.prompt == "earlier", "the default refine source is the earlier result"


def test_a_failure_before_the_first_image_says_so_and_keeps_the_result_and_refine_source(shell, monkeypatch):
    run(shell, f"--seeds 3 {FAST}", "earlier")
    earlier = shell.user_ns["_batch"]
    fail_on_call(monkeypatch, 1, "CUDA error: device-side assert")
    with capture_output() as captured, pytest.raises(RuntimeError, match="^CUDA error: device-side assert$"):
        shell.run_cell_magic("batchgen", f"--seeds 0-7 --guidance 7 {FAST}", "later")
    assert "stopped before any image was made: CUDA error: device-side assert; _batch is unchanged" in (captured.stderr)
    assert shell.user_ns["_batch"] is earlier
    monkeypatch.undo()
    run(shell, f"--refine 3 {FAST}", "refined")
    assert shell.user_ns["_batch"][0].parent.prompt == "earlier", "the default refine source is the earlier result"


def test_unload_removes_the_magics(shell):
    shell.run_line_magic("unload_ext", "nbbatch")
    try:
        assert shell.find_cell_magic("batchgen") is None
        assert shell.find_line_magic("batchgen") is None
    finally:
        shell.run_line_magic("load_ext", "nbbatch")
    assert shell.find_cell_magic("batchgen") is not None


def test_one_progress_bar_covers_the_whole_batch(shell, monkeypatch):
    monkeypatch.setattr("nbbatch.notebook.live.ProgressDisplay.refresh_every", 0)  # draw every step
    captured = run(shell, f"--seeds 0-3 --batch-size 2 {FAST}", "a")
    assert "images 1-2 of 4 · step 1/4" in captured.stderr
    assert "images 3-4 of 4 · step 4/4" in captured.stderr
    assert "it/s" not in captured.stderr, "no per-call diffusers bars"
    assert " 50%|" in captured.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [("--out class", "--out needs a variable name, not 'class'"), ("--out 2x", "--out needs a variable name")],
)
def test_out_must_be_a_usable_variable_name(shell, line, message):
    with pytest.raises(UsageError, match=message):
        run(shell, f"{line} {FAST}", "a")


def test_out_that_hides_a_builtin_says_so(shell):
    captured = run(shell, f"--out list --seeds 1 {FAST}", "a")
    assert "--out list hides Python's built-in list()" in captured.stdout
    assert isinstance(shell.user_ns["list"], nbbatch.BatchResult)


def test_errors_name_the_magics_options_not_python_keywords(shell):
    run(shell, f"--seeds 1 {FAST}", "a\nb")
    with pytest.raises(UsageError, match="^--prompt-index is needed: seed 1 was used with prompts 0, 1$"):
        run(shell, f"--refine 1 {FAST}", "c")
    with pytest.raises(UsageError, match=r"^--scale must be a number above 1 and at most 4, not 9.0$"):
        shell.run_line_magic("batchgen", f"--hires 1 --prompt-index 0 --scale 9 {FAST}")
    with pytest.raises(UsageError, match=r"^--true-cfg must be a number from 1 to 100 \(1 is off\), not 0.5$"):
        run(shell, f"--true-cfg 0.5 {FAST}", "c")
    with pytest.raises(UsageError, match=r"^--clip-skip: 9 reaches past the text encoder, which has \d+ layers$"):
        run(shell, f"--clip-skip 9 {FAST}", "c")


def test_an_escaped_hash_starts_a_prompt(shell):
    run(shell, f"--seeds 1 {FAST}", "# a comment\n\\#hashtag cat")
    assert [item.prompt for item in shell.user_ns["_batch"]] == ["#hashtag cat"]


QUIET_SCRIPT = """
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "nbbatch")
for _ in range(3):
    for scheduler, seed in (("ddim", 0), ("euler-a", 1)):
        shell.run_cell_magic("batchgen", f"--seeds {seed} --steps 2 --width 32 --height 32 --scheduler {scheduler} "
                             "--no-display", "a cat")
    shell.run_line_magic("batchgen", "--vary 1 --seeds 5 --steps 4 --no-display")
"""


def test_cells_print_no_library_notices_however_many_views_and_schedulers_they_use(tmp_path):
    """A fresh process (no warning already shown once elsewhere), three rounds of scheduler and image-to-image views."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # NBBATCH_MODEL (tiny SD) and NBBATCH_HOME come from conftest
    done = subprocess.run([sys.executable, "-c", QUIET_SCRIPT], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [line for line in re.split(r"[\r\n]", done.stderr + done.stdout) if line.strip() and "%|" not in line]
    assert printed == [], printed[:3]  # only the progress bar, which a terminal shows on stderr
