"""Keep and find: the kernel's history of results, and favourite images gathered into one result."""

import re

import pytest
from conftest import FAST, fail_on_call, max_difference
from IPython.utils.capture import capture_output

import nbbatch


def test_every_result_made_in_the_kernel_is_in_the_history_in_order_with_its_prompt(shell):
    before = len(nbbatch.history())
    first = nbbatch.generate(["a red cat", "a blue dog"], [1, 2], model="nbbatch:tiny-sd", **FAST)
    refined = first.refine(2, "a green cat", prompt_index=0)
    with capture_output():
        shell.run_cell_magic("batchgen", "-m nbbatch:tiny-sd --seeds 3 --steps 4 --width 32 --height 32", "a ship")
    history = nbbatch.history()
    assert history.results[before:] == [first, refined, shell.user_ns["_batch"]]
    titles = [entry.title for entry in history[before:]]
    assert re.fullmatch(r"\d\d:\d\d:\d\d · 'a red cat' and 1 more · 4 images · nbbatch:tiny-sd", titles[0])
    assert titles[1].endswith("· 'a green cat' · 1 image · nbbatch:tiny-sd") and "'a ship'" in titles[2]
    assert history[before].finished <= history[before + 1].finished
    assert "a green cat" in history._repr_html_() and "data:image/jpeg;base64," in history._repr_html_()
    assert f"nbbatch history: {len(history)} results" in repr(history)


def test_a_batch_that_made_nothing_is_not_kept_and_clear_forgets_the_rest(monkeypatch):
    from nbbatch.core import history as kept

    monkeypatch.setattr(kept, "_entries", [])
    nbbatch.generate("a cat", [1], model="nbbatch:tiny-sd", **FAST)
    fail_on_call(monkeypatch, 1, "GPU fell over")
    with pytest.raises(nbbatch.BatchError, match="GPU fell over"):
        nbbatch.generate("a cat", [2], model="nbbatch:tiny-sd", **FAST)
    snapshot = nbbatch.history()
    assert len(snapshot) == 1
    snapshot.clear()
    assert len(snapshot) == 0 and len(nbbatch.history()) == 0


def test_favourites_gather_marked_images_of_any_result_and_refine_and_save_as_any_result(tmp_path, monkeypatch):
    from nbbatch.core import history as kept

    monkeypatch.setattr(kept, "_favourites", [])
    assert len(nbbatch.favourites()) == 0
    cats = nbbatch.generate("a red cat", [1, 2], model="nbbatch:tiny-sd", **FAST)
    ships = nbbatch.generate("a ship at sea", [3], model="nbbatch:tiny-sd", **FAST)
    ships[0].favourite()
    cats[1].favourite()
    cats[0].favourite()
    cats[0].favourite(False)
    assert cats[1].is_favourite and not cats[0].is_favourite
    chosen = nbbatch.favourites()
    assert list(chosen) == [ships[0], cats[1]], "in the order they were marked"
    assert [group.title for group in chosen.groups()] == ["prompt 0: a ship at sea", "prompt 0: a red cat"]
    again = chosen.refine(2, "a red cat")
    assert max_difference(again[0].image, cats[1].image) <= 1, "a favourite refines with its own runner"
    paths = chosen.save(tmp_path / "best", grid=False)
    assert sorted(path.name for path in paths) == ["p00-s2.png", "p00-s3.png"]
    assert [item.seed for item in nbbatch.load(tmp_path / "best")] == [3, 2]


def test_the_history_saves_every_image_of_every_result(tmp_path, monkeypatch):
    from nbbatch.core import history as kept

    monkeypatch.setattr(kept, "_entries", [])
    nbbatch.generate(["a cat", "a dog"], [1], model="nbbatch:tiny-sd", **FAST)
    nbbatch.generate("a ship", [2, 3], model="nbbatch:tiny-sd", **FAST)
    paths = nbbatch.history().save(tmp_path / "all")
    assert len(paths) == 4 and len(nbbatch.load(tmp_path / "all")) == 4
