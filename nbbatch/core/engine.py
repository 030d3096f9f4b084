"""Running jobs in chunks with one generator per image: progress, cancel, back-off; no model family, no diffusers.

Each chunk is one call with lists of prompts and generators, as the diffusers batch guide
shows. Every generator is made fresh from its image's seed or saved state and that initial
state is kept, so any image can be made again alone. Finished chunks are never lost: a
cancel, a kernel interrupt or an error ends the run with what is done.

What a call does is a backend's business (`Backend`, `Pass`): the diffusers one is
`nbbatch.models.backend`, whose `execute` (one per `nbbatch.session.Session`) is the runner
the front ends use. A fake backend tests this loop without a model.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from nbbatch.core.errors import OutOfMemory
from nbbatch.core.notices import notice
from nbbatch.core.observer import QUIET, Observer
from nbbatch.core.seeds import generator_state, make_generator

if TYPE_CHECKING:
    from PIL import Image

    from nbbatch.core.item import Item
    from nbbatch.core.spec import Job, Settings

Status = Literal["complete", "cancelled", "interrupted", "failed"]

"""Called with a finished chunk's items and the position of its first image among the batch's jobs."""

Pictures = Callable[[], tuple["Image.Image", ...]]
"""Makes pictures of a chunk's images in flight (a step preview) when called."""

StepHook = Callable[[int, "Pictures | None"], bool]
"""Called by a pass after each denoising step with the steps done and, where it can preview, a `Pictures`;
returns True when the call should stop (a cancel)."""


class CancelFlag(Protocol):
    """Anything with ``is_set()``, such as a `threading.Event`."""

    def is_set(self) -> bool:
        """True once the run should stop."""
        ...


@dataclass(frozen=True)
class Progress:
    """Where a run stands: images `done` of `total`, and the step of the chunk in flight.

    `elapsed` counts from the start, loading the pipeline included; `working` from when the
    pipelines were ready (None: the same), which is what the time left is reckoned from.
    """

    done: int
    total: int
    chunk: int
    step: int
    steps: int
    elapsed: float
    working: float | None = None

    @property
    def fraction(self) -> float:
        """The share of all denoising work finished, 0 to 1."""
        step = min(self.step, self.steps) / max(self.steps, 1)
        return min(1.0, (self.done + self.chunk * step) / max(self.total, 1))

    @property
    def eta(self) -> float | None:
        """Seconds left, extrapolated from the time spent denoising so far (not loading); None before the first step."""
        if self.fraction <= 0:
            return None
        spent = self.elapsed if self.working is None else self.working
        return max(0.0, spent * (1 - self.fraction) / self.fraction)

    def describe(self) -> str:
        """One line for a progress bar: images, step and time left."""
        if self.chunk and self.done < self.total:
            images = f"images {self.done + 1}-{self.done + self.chunk} of {self.total}"
            text = f"{images} · step {self.step}/{self.steps}"
        else:
            text = f"{self.done} of {self.total} images"
        eta = self.eta
        if eta is not None and self.done < self.total:
            text += f" · {eta:.1f} s left"
        return text


@dataclass(frozen=True)
class Preview:
    """Pictures of the images in flight: their positions in the batch (job order), and the step they show."""

    positions: tuple[int, ...]
    step: int
    steps: int
    images: tuple[Image.Image, ...]


@dataclass(frozen=True)
class Made:
    """One finished image with the initial state of its generator."""

    job: Job
    image: Image.Image
    state: bytes
    broken: bool


class Pass(Protocol):
    """Jobs that run with one settings, made ready by a backend before anything runs.

    `steps` is how many denoising steps each call runs (for the progress); `batch_size`
    the chunk to start with (None: all at once) and `back_off` whether an out-of-memory
    error halves it; `dtype` and `placement` say where it runs, in words.
    """

    jobs: Sequence[Job]
    steps: int
    generator_device: str
    batch_size: int | None
    back_off: bool
    dtype: str
    placement: str

    def start(self) -> None:
        """Set the model up for this pass (memory options, LoRAs) just before its first call."""
        ...

    def call(self, jobs: list[Job], states: list[bytes], on_step: StepHook) -> list[tuple[Image.Image, bool]]:
        """Make one chunk's images from these generator states; each with whether it is broken (NaN, black).

        Raises `OutOfMemory` (with the memory already freed) when the chunk does not fit.
        """
        ...

    def item(self, made: Made) -> Item:
        """The result item of a finished image, with everything that made it."""
        ...

    def worked(self, batch_size: int) -> None:
        """The chunk size that worked in this pass, for the next batch to start from."""
        ...


class Backend(Protocol):
    """Makes passes for jobs that share one settings; errors here come before any image.

    `lock` is held while a batch runs on it: what it calls serves one batch at a time.
    """

    lock: threading.Lock

    def prepare(self, settings: Settings, jobs: list[Job]) -> list[Pass]:
        """The passes that run `jobs` in order (more than one where only some may share a call)."""
        ...


@dataclass
class Run:
    """What a run made: the finished items, how it ended, where it ran and the chunk size that last worked.

    One pass's (`run_pass`) or a whole batch's (`execute`, a runner).

    `positions` are the items' places among the jobs, where a stopped run on several
    workers leaves gaps; None means the first ``len(items)`` jobs, in order.
    """

    items: list[Item]
    status: Status
    error: BaseException | None
    elapsed: float
    placement: str
    batch_size: int
    positions: list[int] | None = None


class Runner(Protocol):
    """What runs a batch's jobs and hands back a `Run`: in this process, or on a pool of Ray workers."""

    def __call__(
        self,
        settings: Settings,
        jobs: Sequence[Job],
        *,
        observer: Observer = QUIET,
        cancel: CancelFlag | None = None,
    ) -> Run:
        """Run `jobs` as `execute` does, told to `observer`: errors before the first image raise, later ones end it."""
        ...


PREVIEW_EVERY = 0.25
"""Seconds between step previews: four a second at most, so previews cost little of the run."""


def run_pass(
    work: Pass,
    *,
    observer: Observer = QUIET,
    cancel: CancelFlag | None = None,
    collect: Callable[[list[Item]], None] | None = None,
) -> Run:
    """Run a pass's jobs in chunks of at most its `batch_size` images (all at once when None).

    With `back_off`, an out-of-memory error halves the chunk and retries it; finished
    images are kept either way, each chunk's items handed to `collect`. `observer` sees the
    progress and, if it wants them, pictures of the chunk in flight (positions in the
    pass's jobs) where the pass can make them. Returns the pass's items and how it ended
    (its `batch_size`: the chunk size that last worked).
    """
    jobs = list(work.jobs)
    size = min(work.batch_size or len(jobs), len(jobs)) or 1
    states = [_initial_state(job, work.generator_device) for job in jobs]
    made: list[Item] = []
    start = time.perf_counter()
    status: Status = "complete"
    error: BaseException | None = None
    stop = {"cancelled": False}
    last_preview = [float("-inf")]

    def report(step: int, chunk: int) -> None:
        observer.progress(Progress(len(made), len(jobs), chunk, step, work.steps, time.perf_counter() - start))

    def due() -> bool:
        now = time.monotonic()
        if now - last_preview[0] < PREVIEW_EVERY:
            return False
        last_preview[0] = now
        return True

    try:  # a kernel interrupt (Ctrl-C) or any error ends the run with what is finished
        while len(made) < len(jobs):
            if cancel is not None and cancel.is_set():
                status = "cancelled"
                break
            chunk = list(range(len(made), min(len(made) + size, len(jobs))))

            def on_step(step: int, pictures: Pictures | None, chunk: int = len(chunk)) -> bool:
                if cancel is not None and cancel.is_set():
                    stop["cancelled"] = True
                report(step, chunk)
                if pictures is not None and observer.wants_previews and not stop["cancelled"] and due():
                    observer.preview(Preview(tuple(range(len(made), len(made) + chunk)), step, work.steps, pictures()))
                return stop["cancelled"]

            report(0, len(chunk))
            try:
                images = work.call([jobs[i] for i in chunk], [states[i] for i in chunk], on_step)
            except OutOfMemory as exc:
                if work.back_off and size > 1:
                    size //= 2
                    continue
                status, error = "failed", exc
                break
            except Exception as exc:  # any failure ends the run; what is finished stays
                status, error = "failed", exc
                break
            if stop["cancelled"]:  # the VAE decoded half-denoised latents: not results
                status = "cancelled"
                break
            new = [work.item(Made(jobs[i], image, states[i], broken)) for i, (image, broken) in zip(chunk, images)]
            made.extend(new)
            if collect is not None:
                collect(new)  # the observer's autosave may fail: the images are kept all the same
        report(0, 0)
    except KeyboardInterrupt:
        status = "interrupted"
    except Exception as exc:  # the caller's observer failed: stop, keep the images
        status, error = "failed", exc
    if work.back_off and made:
        work.worked(size)
    return Run(made, status, error, time.perf_counter() - start, work.placement, size)


def _initial_state(job: Job, device: str) -> bytes:
    return job.state if job.state is not None else generator_state(make_generator(device, job.seed))


def execute(
    settings: Settings,
    jobs: Sequence[Job],
    backend: Backend,
    *,
    observer: Observer = QUIET,
    cancel: CancelFlag | None = None,
) -> Run:
    """Prepare `jobs` with `backend` and run them; one batch at a time on a backend (its `lock`).

    `observer` sees the progress, each chunk's items (and its first position) as soon as
    they are finished (for autosave) and, if it wants them, step previews of the images in
    flight, at most four a second, where the backend can make them. An error while preparing is
    raised before anything runs; an error, a cancel or a kernel interrupt during the run
    ends it with every finished item in the returned `Run`.
    """
    if not jobs:
        raise ValueError("nothing to make: no jobs")
    if not backend.lock.acquire(blocking=False):
        raise ValueError("another batch is running (in the panel?): wait for it, or Cancel it")
    try:
        return _run_passes(settings, jobs, backend, observer, cancel)
    finally:
        backend.lock.release()


def _run_passes(
    settings: Settings,
    jobs: Sequence[Job],
    backend: Backend,
    observer: Observer,
    cancel: CancelFlag | None,
) -> Run:
    start = time.perf_counter()
    passes = [work for own, segment in _segments(settings, jobs) for work in backend.prepare(own, segment)]
    ready = time.perf_counter()  # the pipelines are loaded: the time left counts from here
    items: list[Item] = []
    ran = None
    for work in passes:  # each one pipeline view; a grid's cells with equal settings share one
        offset = len(items)

        def collect(new: list[Item]) -> None:
            first = len(items)
            items.extend(new)
            observer.made(new, first)

        work.start()
        watched = _InBatch(observer, offset, len(jobs), start, ready)
        ran = run_pass(work, observer=watched, cancel=cancel, collect=collect)
        if ran.status != "complete":
            break
    assert ran is not None  # there is at least one pass: jobs is not empty
    broken = [item.seed for item in items if item.broken]
    if broken:
        notice(broken_message(broken, passes[0].dtype), RuntimeWarning, stacklevel=4)
    elapsed = time.perf_counter() - start
    return Run(items, ran.status, ran.error, elapsed, passes[0].placement, ran.batch_size)


class _InBatch(Observer):
    """A pass's events as its batch's: positions and counts shifted by the pass's `offset`, times from the start."""

    def __init__(self, observer: Observer, offset: int, total: int, start: float, ready: float) -> None:
        super().__init__()
        self.observer, self.offset, self.total, self.start, self.ready = observer, offset, total, start, ready

    def progress(self, progress: Progress) -> None:
        now = time.perf_counter()
        done, elapsed, working = progress.done + self.offset, now - self.start, now - self.ready
        self.observer.progress(
            dataclasses.replace(progress, done=done, total=self.total, elapsed=elapsed, working=working)
        )

    def preview(self, preview: Preview) -> None:
        self.observer.preview(dataclasses.replace(preview, positions=tuple(p + self.offset for p in preview.positions)))

    @property
    def wants_previews(self) -> bool:
        return self.observer.wants_previews


def _segments(settings: Settings, jobs: Sequence[Job]) -> list[tuple[Settings, list[Job]]]:
    """Runs of consecutive jobs that share their settings (a job's own, else the batch's)."""
    segments: list[tuple[Settings, list[Job]]] = []
    for job in jobs:
        own = job.settings or settings
        if segments and segments[-1][0] == own:
            segments[-1][1].append(job)
        else:
            segments.append((own, [job]))
    return segments


def broken_message(seeds: Sequence[int], dtype: str) -> str:
    """The warning for NaN or all-black images: which seeds, and the usual fix for the dtype used."""
    shown = ", ".join(str(seed) for seed in seeds)
    text = f"{len(seeds)} image(s) came out NaN or all black (seeds {shown})."
    if dtype in ("float16", "bfloat16"):
        return text + (
            f" In {dtype} this is usually the VAE overflowing (known on SDXL): use --dtype fp32, a VAE that"
            " upcasts to float32 (force_upcast in its config), or an fp16-fixed VAE such as"
            " madebyollin/sdxl-vae-fp16-fix."
        )
    return text + " The run was already in float32: the model or its inputs produce these values."
