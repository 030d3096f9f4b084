"""The notebooks run headless from top to bottom, with no error output, and leave their images behind."""

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))

from execute import execute  # noqa: E402


def within_one(text: str) -> re.Pattern:
    """A printed difference of 0 or 1: a batch's image against one made alone, as the README promises."""
    return re.compile(re.escape(text) + " [01]\\b")


def outputs(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


@pytest.mark.parametrize(
    ("name", "images", "texts"),
    [
        (
            "quickstart",
            [
                "quickstart-grid.png",
                "quickstart-refine-grid.png",
                "quickstart-img2img-grid.png",
                "quickstart-folder-grid.png",
            ],
            [
                "seed 5 | a red circle on a blue background",
                "['seed 7 · seed-0.png', 'seed 7 · seed-0.png', 'seed 7 · seed-1.png', 'seed 7 · seed-1.png']",
            ],
        ),
        (
            "explore",
            ["explore-templates.png", "explore-xy-grid.png", "explore-variation-grid.png", "explore-xy/grid.png"],
            [
                "a red circle on a white background | ['red', 'circle']",
                "seed 5 · steps: 4 · guidance: 1 | seed 5 · steps: 30 · guidance: 6",
                within_one("seed 5 · variation strength: 0.6 made again from its PNG, largest pixel difference:"),
            ],
        ),
        (
            "refine",
            ["refine-variations.png", "refine-story.png"],
            [
                within_one("largest pixel difference from the original image:"),
                "seed 5 · r2 | an orange square on a black background",
                "inpainted: outside the mask, largest pixel difference from the original: 0",
            ],
        ),
    ],
)
def test_notebook_executes_cleanly_and_saves_its_grids(tmp_path, monkeypatch, name, images, texts):
    monkeypatch.delenv("NBBATCH_MODEL")  # the notebooks run on the default model, nbbatch:shapes
    executed = nbformat.read(execute(ROOT / "notebooks" / f"{name}.ipynb", tmp_path), as_version=4)
    produced = outputs(executed)
    errors = [o for o in produced if o.output_type == "error"]
    assert not errors, errors[0].evalue if errors else ""
    assert not [o for o in produced if o.output_type == "stream" and o.name == "stderr"], "no warnings or bars"
    assert not [o for o in produced if "loading the pipeline" in json.dumps(o)], "no stale progress line is kept"
    assert not [o for o in produced if "nbbatch-live" in json.dumps(o)], "no frame of the live grid is kept"
    for image in images:
        with Image.open(tmp_path / image) as grid:
            assert grid.format == "PNG" and grid.width > 200
    grids = [o for o in produced if "text/html" in o.get("data", {}) and "nbbatch-result" in o.data["text/html"]]
    assert grids and all(len(json.dumps(o)) < 50_000 * 16 for o in grids)
    printed = "".join(o.get("text", "") for o in produced)
    missing = [t for t in texts if not (t.search(printed) if isinstance(t, re.Pattern) else t in printed)]
    assert not missing, missing


@pytest.mark.parametrize("name", ["quickstart", "refine", "explore"])
def test_the_repository_s_notebooks_show_their_outputs_and_pictures(name):
    """A reader on the web sees what each cell made (``make notebooks`` writes them), pictures small."""
    path = ROOT / "notebooks" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)  # a valid notebook: what Jupyter, GitHub and ruff read
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), "every cell was run"
    produced = outputs(notebook)
    assert not [o for o in produced if o.output_type == "error"]
    pictures = [
        o
        for o in produced
        if "image/png" in o.get("data", {})
        or "image/jpeg" in o.get("data", {})
        or "<img" in o.get("data", {}).get("text/html", "")
    ]
    assert len(pictures) >= 3, f"{name}: {len(pictures)} pictures shown"
    assert path.stat().st_size < 600_000, "small pictures: the notebook stays light"
