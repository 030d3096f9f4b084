"""The command line's headless sweeps: ``python -m nbbatch run SPEC.toml --out FOLDER``, run for real in a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import max_difference
from PIL import Image

import nbbatch
from nbbatch.__main__ import main
from nbbatch.scale.sweep import read_spec, run_sweep

SPEC = """\
model = "nbbatch:tiny-sd"
prompts = ["a red cube", "a {blue|green} ball"]
seeds = "0-2"
steps = 4
width = 32
height = 32
batch_size = 2
"""


def nbbatch_run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """The command line in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "nbbatch", "run", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli(capsys):
    """The command line's `main` in this process (the same code, without starting Python again)."""

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(["run", *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nbbatch", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SPEC)
    return path


def images(folder) -> dict[str, Image.Image]:
    return {path.name: Image.open(path).copy() for path in sorted(folder.glob("*.png"))}


def index_files(folder) -> list[str]:
    return [json.loads(line)["file"] for line in (folder / "index.jsonl").read_text().splitlines()]


def reference():
    settings = {"model": "nbbatch:tiny-sd", "steps": 4, "width": 32, "height": 32, "batch_size": 2}
    return nbbatch.generate(["a red cube", "a {blue|green} ball"], "0-2", **settings)


def test_a_sweep_writes_every_image_with_a_fixed_name_and_the_pixels_of_generate(spec, tmp_path):
    out = tmp_path / "out"
    done = nbbatch_run(str(spec), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"9 of 9 images in {out} (9 made now, 0 found)")
    names = [f"{n:05d}-p{p:02d}-s{s}.png" for n, (p, s) in enumerate((p, s) for p in range(3) for s in range(3))]
    assert sorted(images(out)) == names and index_files(out) == names
    loaded = nbbatch.load(out)
    made = reference()
    assert [item.prompt for item in loaded] == [item.prompt for item in made]
    assert [max_difference(a.image, b.image) for a, b in zip(loaded, made)] == [0] * 9


def test_running_it_again_makes_exactly_the_deleted_images_under_their_names(spec, tmp_path, cli):
    out = tmp_path / "out"
    assert cli(str(spec), "--out", str(out)).returncode == 0
    before = images(out)
    (out / "00001-p00-s1.png").unlink()
    (out / "00007-p02-s1.png").unlink()
    again = cli(str(spec), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "7 of 9 images are in" in again.stdout and "(2 made now, 7 found)" in again.stdout
    after = images(out)
    assert after.keys() == before.keys()
    assert [max_difference(after[name], before[name]) for name in before] == [0] * 9
    assert sorted(index_files(out)) == sorted(before)  # no second line for an image made again
    nothing = cli(str(spec), "--out", str(out))
    assert "(0 made now, 9 found)" in nothing.stdout


def test_an_image_whose_index_line_was_lost_is_adopted_not_made_twice(spec, tmp_path, cli):
    out = tmp_path / "out"
    assert cli(str(spec), "--out", str(out)).returncode == 0
    lines = (out / "index.jsonl").read_text().splitlines()
    (out / "index.jsonl").write_text("\n".join(lines[:4]) + "\n")  # as a kill between image and index leaves it
    again = run_sweep(read_spec(spec), out)
    assert (again.made, again.found) == (0, 9)
    assert sorted(index_files(out)) == sorted(json.loads(line)["file"] for line in lines)


def test_ctrl_c_keeps_what_is_saved_and_the_next_run_finishes_it(spec, tmp_path, cli):
    spec.write_text(SPEC.replace('seeds = "0-2"', 'seeds = "0-7"').replace("steps = 4", "steps = 20"))
    out = tmp_path / "out"
    running = start(str(spec), "--out", str(out))
    wait_for_images(out, running)
    running.send_signal(signal.SIGINT)
    stdout, stderr = running.communicate(timeout=60)
    assert running.returncode == 130, stderr
    assert "interrupted: run the same command again to go on" in stdout
    kept = images(out)
    assert 2 <= len(kept) < 24 and sorted(index_files(out)) == sorted(kept)
    again = cli(str(spec), "--out", str(out))
    assert again.returncode == 0 and f"({24 - len(kept)} made now, {len(kept)} found)" in again.stdout


def test_kill_9_loses_at_most_the_chunk_in_flight(spec, tmp_path, cli):
    spec.write_text(SPEC.replace('seeds = "0-2"', 'seeds = "0-7"').replace("steps = 4", "steps = 20"))
    out = tmp_path / "out"
    running = start(str(spec), "--out", str(out))
    wait_for_images(out, running)
    running.kill()
    running.communicate(timeout=60)
    kept = images(out)
    again = cli(str(spec), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert f"({24 - len(kept)} made now, {len(kept)} found)" in again.stdout
    assert len(images(out)) == 24 and len(index_files(out)) == 24


def wait_for_images(folder, process, timeout=120.0):
    end = time.monotonic() + timeout
    while len(list(folder.glob("*.png"))) < 2:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_a_folder_of_another_sweep_is_refused_and_left_as_it_was(spec, tmp_path, cli):
    out = tmp_path / "out"
    assert cli(str(spec), "--out", str(out)).returncode == 0
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    spec.write_text(SPEC.replace("steps = 4", "steps = 5"))
    refused = cli(str(spec), "--out", str(out))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"nbbatch: error: {out} holds another sweep: 00000-p00-s0.png was made with other settings; "
        "give another --out, or the spec that made it"
    )
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir() if path.name != ".nbbatch.lock"} == {
        name: time for name, time in before.items() if name != ".nbbatch.lock"
    }  # the lock (the refused run's pid) aside
    for path in out.glob("*.png"):  # the index still tells what the folder was made of
        path.unlink()
    refused = cli(str(spec), "--out", str(out))
    assert refused.returncode == 2 and "00000-p00-s0.png was made with other settings" in refused.stderr
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('prompts = ["a cat"]\nsteps = 4\ncolour = "red"\n', "sets 'colour', which a sweep does not take"),
        ("steps = 4\n", "has no prompts"),
        ('prompts = ["a cat"\n', "is not valid TOML"),
        ('prompts = ["a cat"]\nsteps = 0\n', "steps must be"),
        ('prompts = ["a cat"]\nimages = "missing.png"\n', "missing.png' is no picture file, folder or glob"),
    ],
)
def test_a_bad_sweep_file_is_one_line_and_nothing_is_made(tmp_path, text, message, cli):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    refused = cli(str(path), "--out", str(tmp_path / "out"))
    assert refused.returncode == 2
    assert message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_console_script_and_its_help(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "nbbatch")
    shown = subprocess.run([script, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "example sweep.toml" in shown.stdout and "--workers N" in shown.stdout
