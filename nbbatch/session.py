"""What making images keeps between batches, in one object: the loaded pipeline, its lock and the Ray workers.

nbbatch's functions, the magic and the panel share one default `Session`, as httpx's
top-level functions share a default client: ``nbbatch.generate(...)`` runs on
`default_session()`. A session of your own keeps its own pipeline loaded (two models at
once, each in its session) and its own workers: ``nbbatch.generate(..., session=mine)``.
A result remembers the runner (and so the session) it was made with, and its refinements
run there too.
"""

from __future__ import annotations

from nbbatch.core.engine import Runner
from nbbatch.models.backend import DiffusersBackend
from nbbatch.models.pipelines import PipelineCache
from nbbatch.scale.workers import RayRunner, WorkerPools


class Session:
    """A pipeline cache (one pipeline kept loaded), the lock that lets one batch use it at a time, the worker pools."""

    def __init__(self) -> None:
        self.pipelines = PipelineCache()
        self.backend = DiffusersBackend(self.pipelines)
        self.pools = WorkerPools()

    def runner(self, workers: int | None = None, ray_address: str | None = None) -> Runner:
        """What runs a batch in this session: in this process, or on `workers` Ray workers (at `ray_address`)."""
        if ray_address is not None and workers is None:
            raise ValueError("ray_address names a Ray cluster for workers: give workers=N too")
        if workers is None:
            return self.backend.execute
        return RayRunner(workers, ray_address, pools=self.pools)

    def clear_cache(self) -> None:
        """Forget the loaded pipeline and free what it held on the GPU; the next batch loads its model again."""
        self.pipelines.clear()

    def release_workers(self) -> int:
        """Stop this session's Ray workers (freeing their GPUs and memory); returns how many were stopped."""
        return self.pools.release()

    def close(self) -> None:
        """Release the pipeline and the workers."""
        self.clear_cache()
        self.release_workers()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_DEFAULT = Session()


def default_session() -> Session:
    """The session that nbbatch's functions, the magic and the panel share."""
    return _DEFAULT


def clear_cache() -> None:
    """Forget the default session's pipeline and free what it held on the GPU (see `Session.clear_cache`)."""
    _DEFAULT.clear_cache()


def release_workers() -> int:
    """Stop the default session's Ray workers; the next batch on workers starts new ones (`Session.release_workers`).

    Returns how many were stopped. The Ray session itself stays up.
    """
    return _DEFAULT.release_workers()
