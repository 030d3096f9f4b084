"""Ray workers: one batch spread over a pool of actors, each with a warm pipeline, the same images as one process.

The notebook (or the command line) is the Ray driver. Each actor runs whole chunks with
the single-process engine (`nbbatch.core.engine.execute`), so every image has its own
generator exactly as in one process and comes back with the same record. Chunks stream
back as they finish; a worker that dies has its chunk run again by another (and is
replaced); Cancel reaches every worker at its next step. The pool stays up between
batches, so the pipelines are loaded once per worker. Ray is an optional dependency
(``pip install 'nbbatch[ray]'``), imported only here and only when workers are asked for.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from nbbatch.core.engine import CancelFlag, Progress, Run, Status
from nbbatch.core.errors import first_line
from nbbatch.core.notices import notice
from nbbatch.core.observer import QUIET, Observer
from nbbatch.models.backend import DiffusersBackend
from nbbatch.models.pipelines import PipelineCache
from nbbatch.scale.chunks import Chunk, Ledger, chunk_size, plan_chunks

if TYPE_CHECKING:
    from nbbatch.core.item import Item
    from nbbatch.core.spec import Job, Settings

INSTALL = "workers need Ray: pip install 'nbbatch[ray]'"
POLL = 0.1
"""Seconds between looks at the cancel flag while waiting for chunks."""
START_WAIT = 300.0
"""Seconds new workers may take to start (a cluster may be adding a machine) before the batch is refused."""


def pack(value: Any) -> bytes:
    """Pickle `value` for the trip between driver and worker (jobs one way, items and their records back)."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def check_workers(workers: object) -> None:
    """Refuse a number of workers that is not a whole number of at least 1."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a whole number of at least 1, not {workers!r}")


def actor_options(resources: Mapping[str, float], workers: int) -> dict[str, Any]:
    """Ray options for a worker: one GPU each where the cluster has GPUs, else one CPU; refuse what cannot fit.

    Asking for more workers than the cluster has GPUs (or CPUs) would leave some waiting
    for ever, so it is an error that says how many fit.
    """
    check_workers(workers)
    kind, option = ("GPU", "num_gpus") if resources.get("GPU", 0) >= 1 else ("CPU", "num_cpus")
    have = int(resources.get(kind, 0))
    if workers > have:
        raise ValueError(f"the Ray cluster has {have} {kind}s: it fits at most {have} workers (one {kind} each)")
    return {option: 1, "max_concurrency": 2}  # a second thread takes cancel() while run() works


class Worker:
    """A Ray actor: runs chunks in its own process with the pipeline it keeps loaded between them."""

    def __init__(self) -> None:
        self._stopped: set[str] = set()
        self._backend = DiffusersBackend(PipelineCache())  # the worker's process is its session

    def pid(self) -> int:
        """The worker's process id."""
        return os.getpid()

    def run(self, run_id: str, settings: Settings, jobs: bytes) -> bytes:
        """Make a chunk's images; returns ``(status, items, error, placement)`` packed.

        An error before any image (a model it cannot load, a bad setting) comes back as
        status ``"refused"``: no other worker would do better.
        """
        flag = _Stopped(self._stopped, run_id)
        try:
            run = self._backend.execute(settings, pickle.loads(jobs), cancel=flag)
        except ValueError as error:
            return pack(("refused", [], str(error), ""))
        except Exception as error:  # anything else may be this worker's trouble: another may try
            return pack(("failed", [], f"{type(error).__name__}: {first_line(error)}", ""))
        error = None if run.error is None else f"{type(run.error).__name__}: {first_line(run.error)}"
        return pack((run.status, run.items, error, run.placement))

    def cancel(self, run_id: str) -> None:
        """Stop the chunk of run `run_id` at its next step (and any later one of that run)."""
        self._stopped.add(run_id)


@dataclass
class _Stopped:
    """The cancel flag a worker's engine reads: set once the driver cancels this run."""

    stopped: set[str]
    run_id: str

    def is_set(self) -> bool:
        return self.run_id in self.stopped


class RayRunner:
    """Runs a batch on `workers` Ray actors (see `nbbatch.core.engine.Runner`): the same images, in the same order.

    It joins the Ray of this process if ``ray.init`` was called, else the cluster at
    `address` (or ``$RAY_ADDRESS``), else starts a local one. A chunk is tried `tries`
    times before the batch stops on it. Step previews are not sent across: the grid fills
    chunk by chunk. The workers come from `pools` (a session's, kept between batches);
    `worker` is the actor class: `Worker`, or a subclass (the benchmarks' stand-in that only sleeps).
    """

    def __init__(
        self, workers: int, address: str | None = None, *, pools: WorkerPools, tries: int = 3, worker: type = Worker
    ) -> None:
        check_workers(workers)
        _ray()  # not installed: say so before anything runs
        self.pools = pools
        self.workers = workers
        self.address = address
        self.tries = tries
        self.worker = worker

    def __call__(
        self,
        settings: Settings,
        jobs: Sequence[Job],
        *,
        observer: Observer = QUIET,
        cancel: CancelFlag | None = None,
    ) -> Run:
        """Run `jobs` on the pool; errors that stop every worker before the first image raise ValueError.

        `observer` sees the progress and each chunk as it comes back (workers make no step previews).
        """
        if not jobs:
            raise ValueError("nothing to make: no jobs")
        pool = self.pools.pool(self.workers, self.address, self.worker)
        size = chunk_size(settings.batch_size, len(jobs), self.workers)
        return _Dispatch(pool, settings, jobs, size, self.tries, observer, cancel).run()

    def pids(self) -> list[int]:
        """The process ids of the pool's workers (starting them if need be)."""
        ray = _ray()
        pool = self.pools.pool(self.workers, self.address, self.worker)
        return ray.get([actor.pid.remote() for actor in pool.actors])


class _Pool:
    """The actors of this Ray session, started on demand and kept for later batches."""

    def __init__(self, ray: Any, session: str, worker: type) -> None:
        self.ray = ray
        self.session = session
        self.actors: list[Any] = []
        self._remote = ray.remote(worker)

    def resize(self, workers: int) -> None:
        """Stop or start workers until there are `workers`; new ones must start within `START_WAIT` seconds.

        A worker Ray cannot place (the cluster's CPUs or GPUs held by others) would wait
        for ever: after `START_WAIT` it is stopped again and the batch refused in one line.
        """
        options = actor_options(self.ray.cluster_resources(), workers)
        while len(self.actors) > workers:
            self.ray.kill(self.actors.pop())
        new = [self._remote.options(**options).remote() for _ in range(workers - len(self.actors))]
        if not new:
            return
        wait = START_WAIT
        _, waiting = self.ray.wait([actor.pid.remote() for actor in new], num_returns=len(new), timeout=wait)
        if waiting:
            for actor in new:
                self.ray.kill(actor)
            free = {key: value for key, value in self.ray.available_resources().items() if key in ("CPU", "GPU")}
            raise ValueError(
                f"{len(waiting)} of {len(new)} new Ray workers did not start within {wait:g} s: the cluster's "
                f"free resources are {free}; stop what holds them (nbbatch.release_workers()) or ask for fewer"
            )
        self.actors.extend(new)

    def replace(self, actor: Any) -> None:
        """Start a worker in place of one that died."""
        self.ray.kill(actor)
        options = actor_options(self.ray.cluster_resources(), len(self.actors))
        self.actors[self.actors.index(actor)] = self._remote.options(**options).remote()


class WorkerPools:
    """A session's pools of Ray workers, one per actor class, joined or started on demand and kept for later batches."""

    def __init__(self) -> None:
        self.pools: dict[type, _Pool] = {}

    def pool(self, workers: int, address: str | None = None, worker: type = Worker) -> _Pool:
        """The pool of `worker` actors in this Ray session, `workers` of them: joined or started, then kept."""
        ray = _ray()
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            if address is not None:
                check_reachable(address)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # Ray's own notices about its start-up
                    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            except Exception as error:  # ConnectionError, RuntimeError, ...: all mean "no cluster"
                where = f"at {address}" if address else "(a local one)"
                raise ValueError(f"cannot start or reach the Ray cluster {where}: {first_line(error)}") from None
        session = ray.get_runtime_context().get_job_id()
        pool = self.pools.get(worker)
        if pool is None or pool.session != session:
            pool = self.pools[worker] = _Pool(ray, session, worker)
        pool.resize(workers)
        return pool

    def release(self, worker: type = Worker) -> int:
        """Stop the pool's workers (freeing their GPUs and memory); the next batch on workers starts new ones.

        Returns how many were stopped. The Ray session itself stays up.
        """
        pool = self.pools.pop(worker, None)
        if pool is None:
            return 0
        for actor in pool.actors:
            pool.ray.kill(actor)
        return len(pool.actors)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) address where nothing answers.

    ``ray.init`` would wait for minutes there; names such as ``auto`` are left to Ray.
    """
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", address.strip())
    if match is None:
        return
    try:
        socket.create_connection((match[1], int(match[2])), timeout=timeout).close()
    except OSError as error:
        raise ValueError(
            f"nothing answers at the Ray address {address} ({error.strerror or error}): "
            "start the cluster (ray start --head) or check the address"
        ) from None


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(INSTALL) from None
    return ray


class _Dispatch:
    """One batch on the pool: hands out chunks, gathers them as they finish, re-runs those of dead workers."""

    def __init__(
        self,
        pool: _Pool,
        settings: Settings,
        jobs: Sequence[Job],
        size: int,
        tries: int,
        observer: Observer,
        cancel: CancelFlag | None,
    ) -> None:
        self.pool, self.settings, self.jobs = pool, settings, jobs
        self.ray = pool.ray
        self.size = size
        self.ledger = Ledger(plan_chunks(settings, jobs, size), tries)
        self.observer, self.cancel = observer, cancel
        self.run_id = uuid.uuid4().hex
        self.made: dict[int, Item] = {}
        self.flight: dict[Any, tuple[Any, Chunk]] = {}
        self.placement = ""
        self.start = time.perf_counter()

    def run(self) -> Run:
        status: Status = "complete"
        error: BaseException | None = None
        try:
            self._report()
            while not self.ledger.finished:
                if self.cancel is not None and self.cancel.is_set():
                    status = "cancelled"
                    break
                self._hand_out()
                if not self.flight:
                    raise RuntimeError("every worker died")
                ready, _ = self.ray.wait(list(self.flight), num_returns=1, timeout=POLL)
                finished = [done for done in map(self._gather, ready) if done is not None]
                self._hand_out()  # the workers go on while the chunks are handed over (and saved)
                for chunk, items, placement in finished:
                    self._keep(chunk, items, placement)
        except KeyboardInterrupt:
            status = "interrupted"
        except _Refused as refused:
            if not self.made:
                self._stop()
                raise ValueError(str(refused)) from None
            status, error = "failed", refused
        except Exception as exc:  # a failed chunk, a dead pool, or the caller's observer: keep what is finished
            status, error = "failed", exc
        if status != "complete":
            self._stop()
        positions = sorted(self.made)
        placement = f"Ray: {len(self.pool.actors)} workers" + (f" · {self.placement}" if self.placement else "")
        elapsed = time.perf_counter() - self.start
        items = [self.made[p] for p in positions]
        return Run(items, status, error, elapsed, placement, self.size, positions)

    def _hand_out(self) -> None:
        busy = {actor for actor, _ in self.flight.values()}
        for actor in self.pool.actors:
            if actor in busy:
                continue
            chunk = self.ledger.take()
            if chunk is None:
                return
            jobs = pack([replace(job, parent=None) for job in chunk.jobs])  # parents stay here
            self.flight[actor.run.remote(self.run_id, self.settings, jobs)] = (actor, chunk)

    def _gather(self, ref: Any, keep_going: bool = True) -> tuple[Chunk, list[Item], str] | None:
        """A chunk back from a worker: its items if newly finished, else None (and the chunk waits again)."""
        actor, chunk = self.flight.pop(ref)
        try:
            status, items, why, placement = pickle.loads(self.ray.get(ref))
        except self.ray.exceptions.RayActorError as died:
            self._lost(actor, chunk, died, keep_going)
            return None
        except self.ray.exceptions.RayTaskError as error:  # the worker's own code failed outside the engine
            status, items, why, placement = "failed", [], first_line(error.cause), ""
        if status == "refused" and keep_going:
            raise _Refused(why)
        if status == "complete" and len(items) == len(chunk.jobs):
            return (chunk, items, placement) if self.ledger.complete(chunk) else None
        if status != "cancelled" and keep_going:
            stop = self.ledger.failed(chunk, why or status)
            if stop is not None:
                raise RuntimeError(stop)
        return None

    def _keep(self, chunk: Chunk, items: list[Item], placement: str) -> None:
        kept = [replace(item, parent=job.parent) for item, job in zip(items, chunk.jobs)]
        for offset, item in enumerate(kept):
            self.made[chunk.start + offset] = item
        self.placement = self.placement or placement
        self.observer.made(kept, chunk.start)
        self._report()

    def _lost(self, actor: Any, chunk: Chunk, died: Exception, keep_going: bool) -> None:
        """A worker died with `chunk`: a new worker takes its place and, unless the run is stopping, the chunk waits."""
        self.pool.replace(actor)
        if not keep_going:
            return
        stop = self.ledger.failed(chunk, f"its worker died ({type(died).__name__})")
        again = "; another worker runs them again" if stop is None else ""
        notice(f"a Ray worker died while making {chunk.describe()}{again}", RuntimeWarning, stacklevel=2)
        if stop is not None:
            raise RuntimeError(stop)

    def _stop(self) -> None:
        """Cancel every worker at its next step, and keep what comes back finished (a second Ctrl-C: stop waiting)."""
        for actor in self.pool.actors:
            actor.cancel.remote(self.run_id)
        try:
            while self.flight:
                ready, _ = self.ray.wait(list(self.flight), num_returns=1)
                for ref in ready:
                    finished = self._gather(ref, keep_going=False)
                    if finished is not None:
                        self._keep(*finished)
        except KeyboardInterrupt:
            pass

    def _report(self) -> None:
        elapsed = time.perf_counter() - self.start
        self.observer.progress(Progress(len(self.made), len(self.jobs), 0, 0, self.settings.steps, elapsed))


class _Refused(Exception):
    """A worker refused the batch before making anything (a model it cannot load, a bad setting)."""
