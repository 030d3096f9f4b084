"""Splitting a batch into chunks for workers, and the ledger that re-runs a dead worker's chunk (no Ray needed)."""

from __future__ import annotations

import pytest

from nbbatch.core.spec import Job, Settings
from nbbatch.scale.chunks import Chunk, Ledger, chunk_size, plan_chunks
from nbbatch.scale.workers import actor_options


def jobs(count: int, settings: dict[int, Settings] | None = None) -> list[Job]:
    return [Job("a cat", seed, settings=(settings or {}).get(seed)) for seed in range(count)]


def test_chunks_cover_every_job_once_in_order_at_most_the_batch_size():
    chunks = plan_chunks(Settings(), jobs(10), 4)
    assert [(c.start, [j.seed for j in c.jobs]) for c in chunks] == [
        (0, [0, 1, 2, 3]),
        (4, [4, 5, 6, 7]),
        (8, [8, 9]),
    ]


def test_a_chunk_never_mixes_the_settings_of_two_grid_cells():
    twenty = Settings(steps=20)
    chunks = plan_chunks(Settings(), jobs(6, {2: twenty, 3: twenty}), 4)
    assert [[j.seed for j in c.jobs] for c in chunks] == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize(
    ("batch_size", "total", "workers", "size"),
    [(3, 100, 2, 3), (None, 8, 2, 2), (None, 1000, 2, 16), (None, 1, 4, 1), ("auto", 12, 3, 2)],
)
def test_the_chunk_is_the_batch_size_else_an_even_share_of_at_most_16(batch_size, total, workers, size):
    assert chunk_size(batch_size, total, workers) == size


def test_a_failed_chunk_is_handed_out_again_first_and_finished_once():
    chunks = plan_chunks(Settings(), jobs(6), 2)
    ledger = Ledger(chunks, tries=3)
    first, second = ledger.take(), ledger.take()
    assert ledger.failed(first, "its worker died") is None
    assert ledger.take() is first  # waits first in line
    assert ledger.complete(second)
    assert not ledger.complete(second)  # a second copy of it is not kept
    assert ledger.complete(first)
    assert not ledger.finished
    assert ledger.complete(ledger.take())
    assert ledger.finished
    assert ledger.take() is None


def test_a_chunk_that_fails_on_every_try_stops_the_run_with_the_reason():
    ledger = Ledger([Chunk(4, tuple(jobs(2)))], tries=2)
    chunk = ledger.take()
    assert ledger.failed(chunk, "RuntimeError: boom") is None
    assert ledger.failed(ledger.take(), "RuntimeError: boom") == "images 5-6 failed on 2 tries: RuntimeError: boom"
    assert ledger.take() is None


def test_workers_take_one_gpu_each_where_there_are_gpus_else_one_cpu():
    assert actor_options({"CPU": 16, "GPU": 4}, 4)["num_gpus"] == 1
    assert actor_options({"CPU": 2}, 2)["num_cpus"] == 1
    with pytest.raises(ValueError, match="the Ray cluster has 4 GPUs: it fits at most 4 workers"):
        actor_options({"CPU": 64, "GPU": 4}, 5)
    with pytest.raises(ValueError, match="workers must be a whole number of at least 1, not 0"):
        actor_options({"CPU": 2}, 0)
