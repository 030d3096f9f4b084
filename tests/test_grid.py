import base64
import io
import re

import numpy as np
from PIL import Image

from nbbatch.core.grid import Group, encode_preview, make_grid, preview_cell, thumbnail
from nbbatch.testing import picture_result, synthetic_picture


def test_each_image_sits_in_its_cell_with_its_label_underneath():
    images = [Image.new("RGB", (32, 32), colour) for colour in ("red", "green", "blue")]
    grid = make_grid(images, ["seed 1", "seed 2", "seed 3"], cell=64, columns=3)
    other = make_grid(images, ["seed 1", "seed 9", "seed 3"], cell=64, columns=3)
    difference = np.argwhere(np.any(np.asarray(grid) != np.asarray(other), axis=-1))
    assert len(difference), "the label is drawn"
    rows, columns = difference[:, 0], difference[:, 1]
    assert rows.min() >= 4 + 64 and columns.min() >= 4 + 68 and columns.max() < 4 + 2 * 68, "only under image 2"
    assert np.asarray(grid)[4 + 32, 4 + 68 + 32].tolist() == [0, 128, 0], "image 2 fills its cell"


def test_groups_start_new_rows_under_their_title_and_wrap():
    images = [Image.new("RGB", (16, 16), "gray")] * 5
    one_row = make_grid(images[:2], ["a", "b"], [Group("prompt 0", (0, 1))], cell=32, columns=2)
    two_rows = make_grid(images[:3], ["a", "b", "c"], [Group("prompt 0", (0, 1, 2))], cell=32, columns=2)
    wrapped = make_grid(
        images, list("abcde"), [Group("prompt 0", (0, 1, 2)), Group("prompt 1", (3, 4))], cell=32, columns=2
    )
    row = two_rows.height - one_row.height
    title = one_row.height - 4 - row
    assert row >= 32 and title > 0
    assert wrapped.height == 4 + 2 * title + 3 * row, "prompt 0 wraps to two rows, prompt 1 takes one"
    assert wrapped.width == one_row.width


def test_short_groups_share_a_row_each_under_its_own_title():
    images = [Image.new("RGB", (16, 16), "gray")] * 18
    labels = [f"seed {i % 2}" for i in range(18)]
    one = make_grid(images[:2], labels[:2], [Group("prompt 0", (0, 1))], cell=32, columns=8)
    packed = make_grid(images, labels, [Group(f"prompt {i}", (2 * i, 2 * i + 1)) for i in range(9)], cell=32, columns=8)
    assert packed.height == 4 + 3 * (one.height - 4), "nine prompts of two seeds: three rows of four, then one"
    assert packed.width == 4 + 8 * (32 + 4), "eight cells across"
    full = make_grid(images[:10], labels[:10], [Group("a", tuple(range(8))), Group("b", (8, 9))], cell=32, columns=8)
    assert full.height == 4 + 2 * (one.height - 4), "a full group keeps its row to itself"


def test_the_preview_cell_is_one_size_whatever_the_count():
    lone = picture_result([synthetic_picture(0)]).preview()
    assert Image.open(io.BytesIO(lone)).height < 200, "a lone image is not blown up to 256 px"


def test_a_long_title_widens_a_narrow_grid_and_is_cut_to_fit():
    image = Image.new("RGB", (16, 16), "gray")
    short = make_grid([image], ["seed 1"], [Group("a", (0,))], cell=32)
    long = make_grid([image], ["seed 1"], [Group("refine of seed 4 · refine 1: " + "very " * 40, (0,))], cell=32)
    assert long.width > short.width and long.height == short.height


def test_thumbnails_keep_the_aspect_ratio():
    assert thumbnail(Image.new("RGB", (200, 100)), 64).size == (64, 32)
    assert thumbnail(Image.new("L", (16, 32)), 64).size == (32, 64)


def test_inline_preview_of_8_images_of_1024_pixels_stays_under_50_kb_each():
    html = picture_result([synthetic_picture(i) for i in range(8)])._repr_html_()
    assert len(html.encode()) < 400_000 and len(html.encode()) / 8 < 50_000
    data = base64.b64decode(re.search(r"base64,([^']+)'", html).group(1))
    preview = Image.open(io.BytesIO(data))
    assert preview.format == "JPEG" and preview.width <= 1100


def test_preview_of_64_images_is_small_and_at_display_size():
    images = [synthetic_picture(i, 256) for i in range(64)]
    grid = make_grid(images, [f"seed {i}" for i in range(64)], cell=preview_cell())
    data = encode_preview(grid)
    assert len(data) < 64 * 50_000
    assert grid.width <= 1100


def test_a_long_label_takes_a_second_line_under_its_cell_instead_of_being_cut():
    picture = Image.new("RGB", (32, 32), "red")
    short = make_grid([picture], ["seed 4005471049"], cell=128)
    long = make_grid([picture], ["seed 4005471050 · vary of 4005471049"], cell=128)
    assert long.height > short.height and long.width == short.width
    below = np.asarray(long)[short.height - 4 :, :, :]  # the band of the second line
    assert (below.min(axis=2) < 200).sum() > 30, "the second line is written"
