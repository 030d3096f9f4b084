"""The scheduling overhead of Ray workers per image, against one process, for 10,000 images.

Two kinds of work: a stand-in pipeline that only sleeps (the engine's own per-image work,
generators and pictures, around a sleep: what is left over is scheduling), and the tiny
SD pipeline for real. Used by ``benchmarks/run.py --only ray``.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass

from PIL import Image

from nbbatch.core.engine import Made, run_pass
from nbbatch.core.item import Item
from nbbatch.core.spec import Job, Settings
from nbbatch.scale.workers import RayRunner, Worker, pack
from nbbatch.session import default_session

IMAGES = 10_000
CHUNK = 16
SLEEP = 0.002
"""Seconds the stand-in pipeline sleeps per image."""


@dataclass
class SleepingPass:
    """A stand-in for a model (an engine `Pass`): sleeps `SLEEP` per image and makes black 8x8 pictures."""

    settings: Settings
    jobs: list[Job]
    steps: int = 1
    generator_device: str = "cpu"
    back_off: bool = False
    dtype: str = "float32"
    placement: str = "sleeping stand-in"

    @property
    def batch_size(self) -> int | None:
        return self.settings.batch_size

    def start(self) -> None:
        pass

    def call(self, jobs: list[Job], states: list[bytes], on_step) -> list[tuple[Image.Image, bool]]:
        time.sleep(SLEEP * len(jobs))
        on_step(1, None)
        return [(Image.new("RGB", (8, 8)), False) for _ in jobs]

    def item(self, made: Made) -> Item:
        job = made.job
        return Item(made.image, job.seed, job.prompt, "", job.prompt_index, self.settings, None, made.state)

    def worked(self, batch_size: int) -> None:
        pass


def sleeping_items(settings: Settings, jobs: list[Job]) -> list[Item]:
    """The engine's chunk loop (one generator per image, pictures, states) around the sleeping stand-in."""
    work = SleepingPass(settings, jobs)
    return run_pass(work).items


class SleepingWorker(Worker):
    """A Ray worker running the sleeping stand-in instead of a model."""

    def run(self, run_id: str, settings: Settings, jobs: bytes) -> bytes:
        return pack(("complete", sleeping_items(settings, pickle.loads(jobs)), None, "sleeping stand-in"))


def label(count: int) -> str:
    return f"Ray, {count} worker{'s' * (count != 1)}"


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(worker_counts=(1, 2, 4, 8), images: int = IMAGES) -> dict:
    """Seconds and overhead per image: in-process, then Ray with each number of workers."""
    import ray

    import nbbatch

    ray.cloudpickle.register_pickle_by_value(__import__(__name__))  # the workers cannot import this file
    ray.init(num_cpus=max(worker_counts), include_dashboard=False, log_to_driver=False)
    try:
        settings = Settings(batch_size=CHUNK)
        jobs = [Job("a sleeping stand-in", seed) for seed in range(images)]
        ideal = SLEEP * images
        sleeping = {"in-process": (timed(lambda: sleeping_items(settings, jobs)), 1)}
        for count in worker_counts:
            runner = RayRunner(count, pools=default_session().pools, worker=SleepingWorker)
            runner(settings, jobs[: CHUNK * count])  # start the pool first: its start-up is not scheduling
            sleeping[label(count)] = (timed(lambda runner=runner: runner(settings, jobs)), count)
        rows = {
            name: {
                "seconds": seconds,
                "ideal seconds": ideal / count,
                "overhead ms per image": 1e3 * (seconds - ideal / count) / images,
            }
            for name, (seconds, count) in sleeping.items()
        }
        default_session().pools.release(SleepingWorker)  # their CPUs go to the model's workers

        tiny = {"model": "nbbatch:tiny-sd", "steps": 1, "width": 16, "height": 16, "batch_size": CHUNK}
        seeds = f"0-{images - 1}"
        nbbatch.generate("a small house", f"0-{CHUNK - 1}", **tiny)
        real = {"in-process": timed(lambda: nbbatch.generate("a small house", seeds, **tiny))}
        for count in (1, 2):
            nbbatch.generate("a small house", f"0-{CHUNK * count - 1}", workers=count, **tiny)  # warm the pool
            real[label(count)] = timed(
                lambda count=count: nbbatch.generate("a small house", seeds, workers=count, **tiny)
            )
        tiny_rows = {name: {"seconds": s, "ms per image": 1e3 * s / images} for name, s in real.items()}
    finally:
        ray.shutdown()
    return {
        "images": images,
        "chunk": CHUNK,
        "sleep ms per image": SLEEP * 1e3,
        "sleeping stand-in": rows,
        "tiny SD": tiny_rows,
    }


def lines(section: dict) -> list[str]:
    """The section as Markdown for results.md."""
    out = [
        "",
        f"**Ray scheduling** ({section['images']:,} images in chunks of {section['chunk']}; a stand-in pipeline that "
        f"sleeps {section['sleep ms per image']:g} ms per image, then the tiny SD pipeline at 16x16, 1 step)",
        "",
        "| stand-in that sleeps | seconds | ideal seconds | overhead ms per image |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in section["sleeping stand-in"].items():
        out.append(
            f"| {name} | {row['seconds']:.2f} | {row['ideal seconds']:.2f} | {row['overhead ms per image']:.3f} |"
        )
    out += ["", "| tiny SD | seconds | ms per image |", "| --- | ---: | ---: |"]
    for name, row in section["tiny SD"].items():
        out.append(f"| {name} | {row['seconds']:.2f} | {row['ms per image']:.2f} |")
    return out
