"""The notebooks run headless from top to bottom, with no error output, and leave their images behind; what
their text says a picture shows is checked on their own objects with the evaluation's judge."""

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


JUDGE = """
import json, statistics
import numpy as np
from PIL import Image
from nbbatch.models.shapes.data import iou, judge

def asked(item):  # "a red circle on a blue background": what the prompt asks
    words = item.prompt.split()
    return words[1], words[2], words[5]

def seen(item):
    found = judge(item.image)
    return found.colour, found.shape, found.background

def colours(item):  # the shape's and the background's colour, as seen and as asked
    return seen(item)[::2], asked(item)[::2]

def place(a, b):  # the overlap of two pictures' shapes, at the first one's size
    return iou(judge(a).mask, judge(b.resize(a.size, Image.Resampling.LANCZOS)).mask)

claims = {}
"""

CLAIMS = {  # what each notebook's text says its pictures show, judged on its own objects (nbbatch.models.shapes.data)
    "quickstart": """
first = [item for item in _batch if item.prompt_index == 0]
claims["each seed puts the shape somewhere else"] = statistics.median(
    place(a.image, b.image) for a in first for b in first if a.seed < b.seed) < 0.5
base = _batch.by_seed(5, prompt_index=0)
claims["refine changes the colour"] = all(got == wanted for got, wanted in map(colours, refined))
claims["and keeps the place"] = all(place(base.image, item.image) >= 0.8 for item in refined)
claims["the Python batch draws white on black"] = all(got == wanted for got, wanted in map(colours, squares))
""",
    "refine": """
base, refinements = _batch.by_seed(5), [*round1, *round2]
claims["the refinements take their colours"] = all(got == wanted for got, wanted in map(colours, refinements))
claims["the shape stays where the seed put it"] = all(place(base.image, item.image) >= 0.8 for item in refinements)
claims["variations keep the picture"] = all(colours(item)[0] == colours(round2[0])[0] for item in variations) and (
    statistics.median(place(round2[0].image, item.image) for item in variations) >= 0.6)
claims["the hires fix is twice as large, the shape in its place"] = (
    bigger[0].image.size == (128, 128) and place(bigger[0].image, base.image) >= 0.8)
claims["the inpaint repaints the region with the new prompt"] = colours(recoloured[0])[0] == colours(recoloured[0])[1]
""",
    "explore": """
claims["each template picture takes its colour choice"] = all(
    judge(item.image).colour == item.provenance.choices[0] for item in templates)
alone = [nbbatch.generate("a red square on a blue background", [seed], steps=20)[0].image for seed in (5, 12)]
ends = [sweep.cell(x=strength)[0].image for strength in (0.0, 1.0)]
claims["variation strength 0 is the seed's own image, 1 the variation seed's"] = all(
    np.abs(np.asarray(end, int) - np.asarray(own, int)).max() <= 1 for end, own in zip(ends, alone))
""",
}


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
                "seed 5 · r2 | a green square on a black background",
                "inpainted: outside the mask, largest pixel difference from the original: 0",
            ],
        ),
    ],
)
def test_notebook_executes_cleanly_and_saves_its_grids(tmp_path, monkeypatch, name, images, texts):
    monkeypatch.delenv("NBBATCH_MODEL")  # the notebooks run on the default model, nbbatch:shapes
    checks = JUDGE + CLAIMS[name] + 'print("CLAIMS", json.dumps(claims))'
    executed = nbformat.read(execute(ROOT / "notebooks" / f"{name}.ipynb", tmp_path, then=[checks]), as_version=4)
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
    claims = json.loads(printed.split("CLAIMS ", 1)[1])
    assert [claim for claim, holds in claims.items() if not holds] == [], "what the text says the pictures show"


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
