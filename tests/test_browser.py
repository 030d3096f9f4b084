"""End to end: the panel in a real JupyterLab, driven by headless Chromium through the real UI.

Starts JupyterLab on 127.0.0.1 with its own config folders, opens a notebook, runs the
panel cell from the Run menu, types two prompts, clicks Generate, watches the grid fill
chunk by chunk, picks a thumbnail,
refines it, and checks the refined thumbnail; draws a mask on the original with the mouse, inpaints it and hires-fixes
the original (each beside it); a mistyped model keeps the batch shown; the status follows the batch list; no
horizontal scroll bar or cut label at 1100 and 1600 px with every section open; then the dark theme and a narrow
window.
Screenshots are kept in out/test-output/ (and one of every failure).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
OUTPUT = Path(__file__).resolve().parents[1] / "out" / "test-output"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PANEL_CELL = """import nbbatch

panel = nbbatch.panel(seeds="0-3", steps=20)
panel"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 in its own process group, stopped (with its kernels) afterwards."""
    port, token = free_port(), secrets.token_hex(16)
    home = tmp_path / "jupyter"
    env = {
        **{name: value for name, value in os.environ.items() if name != "NBBATCH_MODEL"},  # the default model
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
        "HF_HUB_OFFLINE": "1",  # a mistyped hub id fails at once, as on a machine without network
    }
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    notebook = new_notebook(cells=[new_code_cell(PANEL_CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    root = tmp_path / "root"
    root.mkdir()
    nbformat.write(notebook, root / "panel.ipynb")
    log = open(tmp_path / "lab.log", "wb")  # noqa: SIM115 - closed in the teardown
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--allow-root",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.port_retries=0",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--expose-app-in-browser",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "lab.log").read_text()
            assert time.monotonic() < deadline, "JupyterLab did not start in 60 s"
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/lab/tree/panel.ipynb?token={token}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture
def page(lab, request, monkeypatch):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make test does)")
    # Playwright's throwaway profile goes here: a path short enough for Chromium's socket (108 bytes), which
    # pytest-xdist's deeper tmp_path is not
    profile = tempfile.mkdtemp(prefix="nbb-pw-")
    monkeypatch.setenv("TMPDIR", profile)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(lab)
        try:
            yield page
        finally:
            report = getattr(request.node, "rep_call", None)  # set by conftest's pytest_runtest_makereport
            if report is None or report.failed:
                page.screenshot(path=str(OUTPUT / "failure.png"), full_page=True)
            browser.close()
            shutil.rmtree(profile, ignore_errors=True)


def kernel_idle(page) -> None:
    """Wait for the kernel to be connected and idle: before that, Run All silently runs nothing."""
    page.wait_for_function(
        """() => {
            const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const kernel = widget && widget.sessionContext && widget.sessionContext.session
                && widget.sessionContext.session.kernel;
            return kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
        }""",
        timeout=90_000,
    )
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for()


def test_panel_generates_selects_and_refines_in_jupyterlab(page):
    kernel_idle(page)
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()

    prompts = page.locator(".nbbatch-prompts textarea")
    prompts.wait_for()
    prompts.fill("a red circle on a blue background\na yellow square on a black background")
    page.locator(".nbbatch-batch-size input").fill("2")  # four chunks: the grid fills while it runs
    page.locator("button.nbbatch-generate").click()

    page.wait_for_function(  # some images finished, others still grey or a step preview: the batch is running
        "document.querySelectorAll('.nbbatch-live.nbbatch-done').length > 0"
        " && document.querySelectorAll('.nbbatch-live:not(.nbbatch-done)').length > 0"
    )
    page.screenshot(path=str(OUTPUT / "panel-live.png"), full_page=True)
    assert page.locator("button.nbbatch-cancel").is_enabled(), "seen before the batch finished"
    assert page.locator(".nbbatch-live img").first.evaluate("img => img.naturalWidth") == 128
    thumbs = page.locator(".nbbatch-thumb:not(.nbbatch-live)")
    page.wait_for_function("document.querySelectorAll('.nbbatch-thumb:not(.nbbatch-live)').length === 8")
    assert page.locator(".nbbatch-live").count() == 0, "the finished grid replaced the live one"
    assert thumbs.locator(".nbbatch-thumb-label").all_inner_texts() == [f"seed {s}" for s in range(4)] * 2
    assert page.locator(".nbbatch-row-title").all_inner_texts() == [
        "prompt 0: a red circle on a blue background",
        "prompt 1: a yellow square on a black background",
    ]
    page.wait_for_function("!document.querySelector('button.nbbatch-generate').disabled")  # set just after the grid
    nulls = page.locator(".nbbatch-panel [title='null']").evaluate_all(
        "els => els.map(e => e.className + ' ' + e.innerText.slice(0, 30))"
    )
    assert nulls == [], "no tooltip reads null"

    model = page.locator(".nbbatch-model input")
    shipped = model.input_value()
    model.fill("someone/no-such-model")  # a typo: loading fails after Generate
    page.locator("button.nbbatch-generate").click()
    page.locator(".nbbatch-message .nbbatch-error").wait_for()
    assert "could not load model 'someone/no-such-model'" in page.locator(".nbbatch-message").inner_text()
    page.wait_for_function("!document.querySelector('button.nbbatch-generate').disabled")
    assert page.locator(".nbbatch-status").inner_text().startswith("8 images in "), "the batch shown, not loading…"
    assert thumbs.count() == 8 and page.locator(".nbbatch-live").count() == 0, "its thumbnails, not placeholders"
    page.screenshot(path=str(OUTPUT / "panel-failed-load.png"), full_page=True)
    model.fill(shipped)

    thumbs.nth(5).locator("img").click(force=True)  # on the picture of prompt 1, seed 1 (under its label's overlay)
    page.locator(".nbbatch-thumb.nbbatch-selected").wait_for()
    selected_label = page.locator(".nbbatch-thumb.nbbatch-selected .nbbatch-thumb-label")
    assert selected_label.inner_text() == "seed 1"
    assert selected_label.evaluate("e => getComputedStyle(e).fontWeight") == "700", "the selection shows"
    page.locator(".nbbatch-thumb.nbbatch-selected").scroll_into_view_if_needed()
    page.screenshot(path=str(OUTPUT / "panel-selected.png"))
    refine_text = page.locator(".nbbatch-refine-prompts textarea")
    assert refine_text.input_value() == "a yellow square on a black background"
    refine_text.fill("a green square on a black background")
    page.locator("button.nbbatch-refine").click()

    page.wait_for_function(
        "[...document.querySelectorAll('.nbbatch-thumb-label')].some(e => e.innerText === 'seed 1 · r1')"
    )
    assert page.locator(".nbbatch-grid .nbbatch-thumb").count() == 2, "the original and its refinement, side by side"
    page.wait_for_function(  # the batch it came from stays on screen, drawn just after the story row
        "document.querySelectorAll('.nbbatch-origin .nbbatch-thumb').length === 8"
    )
    assert page.locator(".nbbatch-status").inner_text().startswith("1 image in ")
    assert (
        page.locator(".nbbatch-grid .nbbatch-row-title").inner_text()
        == "the story of seed 1: a yellow square on a black background"
    )
    labels = page.locator(".nbbatch-grid .nbbatch-thumb-label").all_inner_texts()
    assert labels == ["seed 1", "seed 1 · r1"]
    assert page.locator(".nbbatch-grid .nbbatch-thumb img").last.evaluate("img => img.naturalWidth") == 128
    page.screenshot(path=str(OUTPUT / "panel-refined.png"), full_page=True)

    page.wait_for_function("!document.querySelector('button.nbbatch-generate').disabled")  # the run has ended
    page.locator(".nbbatch-thumb img").first.click(force=True)  # the original, in the story row
    page.wait_for_selector(".nbbatch-thumb.nbbatch-selected")  # it, and the same image in its batch's row below
    pad = page.locator(".nbbatch-maskpad canvas")
    pad.wait_for(state="visible")  # the refine box, hidden while the refinement ran, opens again
    pad.scroll_into_view_if_needed()
    page.wait_for_function(  # the picture is drawn on the pad: its middle pixel is not blank
        "(() => { const c = document.querySelector('.nbbatch-maskpad canvas');"
        " return c && c.offsetParent !== null && c.getContext('2d').getImageData(128, 128, 1, 1).data[3] > 0; })()"
    )
    box = pad.bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + box["height"] * 0.75)
    page.mouse.down()
    for step in range(1, 11):  # a stroke across the lower quarter of the picture
        page.mouse.move(box["x"] + 10 + step * (box["width"] - 20) / 10, box["y"] + box["height"] * 0.75)
    page.mouse.up()
    page.screenshot(path=str(OUTPUT / "panel-mask-drawn.png"), full_page=True)
    refine_text.fill("a yellow square on a white background")
    page.locator("button.nbbatch-inpaint").click()
    page.wait_for_function(
        "[...document.querySelectorAll('.nbbatch-thumb-label')].some(e => e.innerText === 'seed 1 · inpaint')"
    )
    assert page.locator(".nbbatch-grid .nbbatch-thumb-label").all_inner_texts() == ["seed 1", "seed 1 · inpaint"]
    page.screenshot(path=str(OUTPUT / "panel-inpainted.png"), full_page=True)
    page.wait_for_function("!document.querySelector('button.nbbatch-generate').disabled")  # the run has ended
    page.wait_for_function("document.querySelectorAll('.nbbatch-origin .nbbatch-thumb').length === 8")
    page.locator(".nbbatch-thumb img").first.click(force=True)
    page.wait_for_selector(".nbbatch-thumb.nbbatch-selected")  # picked: the refine box with Hires fix opens
    page.locator("button.nbbatch-hires").click()
    page.wait_for_function(
        "[...document.querySelectorAll('.nbbatch-thumb-label')].some(e => e.innerText === 'seed 1 · hires x2')"
    )
    assert page.locator(".nbbatch-grid .nbbatch-thumb-label").all_inner_texts() == ["seed 1", "seed 1 · hires x2"]
    page.screenshot(path=str(OUTPUT / "panel-hires.png"), full_page=True)

    page.locator(".nbbatch-batches select").select_option(index=0)
    page.wait_for_function("document.querySelectorAll('.nbbatch-thumb').length === 8")
    assert page.locator(".nbbatch-status").inner_text().startswith("8 images in "), "the status of the batch shown"
    assert page.locator(".nbbatch-message").inner_text() == ""

    thumbs.first.locator("img").click(force=True)  # the refine box open, and each section of "more" in turn
    page.locator(".nbbatch-refine-area").wait_for()
    headers = page.locator(".nbbatch-more .jupyter-widget-Collapse-header")
    assert headers.all_inner_texts() == [
        "guidance and text", "image-to-image", "variation", "LoRAs and embeddings", "SDXL refiner", "hardware",
        "X/Y/Z grid and templates", "saving and workers",
    ]  # fmt: skip
    for width in (1100, 1600):
        page.set_viewport_size({"width": width, "height": 900})
        for index in range(headers.count()):
            if "jupyter-mod-active" not in (headers.nth(index).get_attribute("class") or ""):
                headers.nth(index).click()
            page.locator(".nbbatch-more .jupyter-widget-Collapse-contents:visible").wait_for()
            page.wait_for_timeout(100)  # let Lab lay out again
            wide = page.evaluate(
                """() => [...document.querySelectorAll(
                    '.jp-WindowedPanel-outer, .jp-OutputArea-output, .nbbatch-panel'
                )].filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.className)"""
            )
            assert wide == [], f"a horizontal scroll bar at {width} px, section {index} open: {wide}"
            cut = page.evaluate(
                """() => [...document.querySelectorAll('.nbbatch-panel .widget-label')]
                    .filter(e => e.offsetWidth > 0 && e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)"""
            )
            assert cut == [], f"labels cut at {width} px, section {index} open: {cut}"
        page.screenshot(path=str(OUTPUT / f"panel-{width}px.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'")
    page.wait_for_selector("#jupyterlab-splash", state="detached")  # the theme change's splash screen
    colour = page.locator(".nbbatch-row-title").first.evaluate("e => getComputedStyle(e).color")
    assert colour != "rgb(0, 0, 0)", "titles follow the dark theme's text colour"
    page.screenshot(path=str(OUTPUT / "panel-dark.png"), full_page=True)

    page.set_viewport_size({"width": 520, "height": 900})
    page.wait_for_timeout(300)  # let Lab lay out again
    tops = thumbs.evaluate_all("els => els.slice(0, 4).map(e => Math.round(e.getBoundingClientRect().top))")
    assert len(set(tops)) > 1, f"the four thumbnails of a row wrap in a narrow window: {tops}"
    page.screenshot(path=str(OUTPUT / "panel-narrow.png"), full_page=True)
