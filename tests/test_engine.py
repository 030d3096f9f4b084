"""The engine alone, on a fake backend (no model, no diffusers): chunks, generators, back-off, cancel, previews."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass, field

import pytest
import torch
from PIL import Image

from nbbatch.core import engine
from nbbatch.core.errors import OutOfMemory
from nbbatch.core.item import Item
from nbbatch.core.observer import Observer
from nbbatch.core.seeds import make_generator
from nbbatch.core.spec import Job, Settings


@dataclass
class FakePass:
    """Paints each image grey by its generator's first draw; too many images at once run out of memory."""

    jobs: list[Job]
    fits: int = 99
    back_off: bool = True
    batch_size: int | None = None
    steps: int = 3
    generator_device: str = "cpu"
    dtype: str = "float32"
    placement: str = "fake, in words"
    calls: list[int] = field(default_factory=list)
    remembered: list[int] = field(default_factory=list)
    on_call: object = None

    def start(self) -> None:
        pass

    def call(self, jobs, states, on_step):
        self.calls.append(len(jobs))
        if len(jobs) > self.fits:
            raise OutOfMemory("out of memory, as a GPU says it")
        generators = [make_generator("cpu", job.seed, state) for job, state in zip(jobs, states)]
        levels = [int(torch.rand(1, generator=g).item() * 255) for g in generators]
        for step in range(1, self.steps + 1):
            if on_step(step, lambda: tuple(Image.new("L", (2, 2), 9) for _ in jobs)):
                break
        return [(Image.new("RGB", (4, 4), (level,) * 3), False) for level in levels]

    def item(self, made):
        job = made.job
        return Item(made.image, job.seed, job.prompt, "", job.prompt_index, Settings(), None, made.state)

    def worked(self, batch_size: int) -> None:
        self.remembered.append(batch_size)


class FakeBackend:
    def __init__(self, **options) -> None:
        self.options = options
        self.passes: list[FakePass] = []
        self.lock = threading.Lock()

    def prepare(self, settings, jobs):
        self.passes.append(FakePass(jobs, **self.options))
        return [self.passes[-1]]


def jobs(count: int) -> list[Job]:
    return [Job("a red cube", seed) for seed in range(count)]


def test_every_image_is_its_seeds_own_in_any_chunk_size():
    alone = [engine.execute(Settings(), [job], FakeBackend()).items[0].image for job in jobs(5)]
    chunked = engine.execute(Settings(), jobs(5), FakeBackend(batch_size=2)).items
    assert [item.image.getpixel((0, 0)) for item in chunked] == [image.getpixel((0, 0)) for image in alone]


def test_out_of_memory_halves_the_chunk_keeps_every_image_and_remembers_the_size():
    backend = FakeBackend(fits=2)
    run = engine.execute(Settings(), jobs(5), backend)
    assert run.status == "complete" and [item.seed for item in run.items] == [0, 1, 2, 3, 4]
    assert backend.passes[0].calls == [5, 2, 2, 1] and run.batch_size == 2
    assert backend.passes[0].remembered == [2]


def test_out_of_memory_without_back_off_fails_with_the_devices_words():
    run = engine.execute(Settings(), jobs(3), FakeBackend(fits=2, back_off=False))
    assert run.status == "failed" and run.items == [] and "out of memory" in str(run.error)


def test_a_cancel_during_a_step_ends_the_run_keeping_the_finished_chunks():
    cancel = threading.Event()
    seen: list[engine.Progress] = []

    def progress(p: engine.Progress) -> None:
        seen.append(p)
        if p.done == 2 and p.step == 1:
            cancel.set()

    run = engine.execute(
        Settings(), jobs(6), FakeBackend(batch_size=2), observer=Observer(progress=progress), cancel=cancel
    )
    assert run.status == "cancelled" and [item.seed for item in run.items] == [0, 1]


def test_previews_name_the_images_in_flight_and_come_at_most_four_a_second(monkeypatch):
    shown: list[engine.Preview] = []
    engine.execute(Settings(), jobs(4), FakeBackend(batch_size=2), observer=Observer(preview=shown.append))
    assert shown and len(shown) <= 2, "the first preview, then none within a quarter second on this fast fake"
    monkeypatch.setattr(engine, "PREVIEW_EVERY", 0.0)
    shown.clear()
    engine.execute(Settings(), jobs(4), FakeBackend(batch_size=2), observer=Observer(preview=shown.append))
    assert [(p.positions, p.step) for p in shown] == [((0, 1), s) for s in (1, 2, 3)] + [((2, 3), s) for s in (1, 2, 3)]


def test_a_second_batch_on_a_backend_while_one_runs_is_refused_in_one_line_and_another_backend_runs():
    started, release = threading.Event(), threading.Event()

    class Slow(FakeBackend):
        def prepare(self, settings, jobs):
            started.set()
            release.wait(10)
            return super().prepare(settings, jobs)

    busy = Slow()
    thread = threading.Thread(target=engine.execute, args=(Settings(), jobs(1), busy))
    thread.start()
    started.wait(10)
    try:
        with pytest.raises(ValueError, match="^another batch is running"):
            engine.execute(Settings(), jobs(1), busy)
        assert engine.execute(Settings(), jobs(1), FakeBackend()).status == "complete", "its own lock"
    finally:
        release.set()
        thread.join()


def test_the_core_imports_no_diffusers_no_model_code_and_no_file_formats():
    code = """
import pkgutil, sys, importlib
import nbbatch.core
for module in pkgutil.iter_modules(nbbatch.core.__path__):
    importlib.import_module(f"nbbatch.core.{module.name}")
sys.path.insert(0, "tests")
from test_engine import FakeBackend, jobs
from nbbatch.core import engine, result
from nbbatch.core.spec import Settings
made = result.run_batch(Settings(), jobs(3), runner=lambda s, j, **k: engine.execute(s, j, FakeBackend(), **k))
made.grid()
prefixes = ("diffusers", "transformers", "nbbatch.models", "nbbatch.formats")
loaded = sorted(name for name in sys.modules if name.startswith(prefixes))
print(len(made), loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "3 []"


def test_the_time_left_counts_from_the_first_step_not_from_loading(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(engine.time, "perf_counter", lambda: clock[0])

    class SlowLoading(FakeBackend):
        def prepare(self, settings, jobs):
            clock[0] += 60.0  # a minute to load the pipeline
            return super().prepare(settings, jobs)

    def stepping(jobs, states, on_step):
        for step in range(1, 21):
            clock[0] += 1.0  # a second a step
            on_step(step, None)
        return [(Image.new("RGB", (4, 4)), False) for _ in jobs]

    seen = []
    backend = SlowLoading(steps=20)
    monkeypatch.setattr(FakePass, "call", lambda self, jobs, states, on_step: stepping(jobs, states, on_step))
    engine.execute(Settings(), jobs(1), backend, observer=Observer(progress=seen.append))
    first = next(progress for progress in seen if progress.step == 1)
    assert first.elapsed == 61.0 and first.eta == pytest.approx(19.0), "19 steps of a second left, not 19 minutes"
