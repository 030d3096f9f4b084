"""Ray workers on a real local Ray (2 CPUs, one per module): the images of one process, kills, cancel, resume."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading

import pytest
from conftest import FAST, max_difference
from IPython.core.error import UsageError
from PIL import Image

import nbbatch
from nbbatch.core.observer import Observer
from nbbatch.core.result import run_batch
from nbbatch.core.spec import Job, Settings
from nbbatch.formats.png import record
from nbbatch.notebook.panel import Panel
from nbbatch.scale import workers
from nbbatch.scale.sweep import run_sweep
from nbbatch.scale.workers import RayRunner, Worker, pack
from nbbatch.session import default_session

ray = pytest.importorskip("ray")  # the test command installs nbbatch[ray]: this skips nothing there

PROMPTS = ["a red cube", "a blue ball"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class FailingWorker(Worker):
    """A worker whose engine fails at the end of every chunk that holds seed 7, as a GPU with a fault would."""

    def run(self, run_id, settings, jobs):
        made = super().run(run_id, settings, jobs)
        if any(job.seed == 7 for job in pickle.loads(jobs)):
            return pack(("failed", [], "RuntimeError: CUDA error: an illegal memory access was encountered", ""))
        return made


def without_versions(item) -> dict:
    entry = record(item).to_dict()
    entry.pop("versions")
    return entry


def assert_same_images(made, reference, records=True):
    assert [(i.prompt_index, i.seed) for i in made] == [(i.prompt_index, i.seed) for i in reference]
    assert max(max_difference(a.image, b.image) for a, b in zip(made, reference)) <= 1
    if records:
        assert [without_versions(a) for a in made] == [without_versions(b) for b in reference]


def test_two_workers_make_the_images_and_records_of_one_process_in_its_order(model):
    here = nbbatch.generate(PROMPTS, "0-4", model=model, batch_size=2, **FAST)
    spread = nbbatch.generate(PROMPTS, "0-4", model=model, batch_size=2, workers=2, **FAST)
    assert spread.complete and len(spread) == 10
    assert spread.placement.startswith("Ray: 2 workers · cpu")
    assert_same_images(spread, here)


def test_refine_verify_and_save_work_on_a_result_made_by_workers(tmp_path):
    spread = nbbatch.generate(PROMPTS, "0-3", batch_size=2, workers=2, **FAST)
    here = nbbatch.generate(PROMPTS, "0-3", batch_size=2, **FAST)
    refined = spread.refine(2, "a green cube", prompt_index=0)
    assert max_difference(refined[0].image, here.refine(2, "a green cube", prompt_index=0)[0].image) <= 1
    assert refined[0].parent is spread.by_seed(2, prompt_index=0)
    assert spread.verify(3, prompt_index=1) <= 1
    spread.save(tmp_path)
    loaded = nbbatch.load(tmp_path)
    assert [max_difference(a.image, b.image) for a, b in zip(loaded, spread)] == [0] * 8


def test_a_worker_killed_mid_run_has_its_chunk_run_again_and_nothing_twice():
    settings = Settings(**FAST, batch_size=1)
    jobs = [Job("a red cube", seed) for seed in range(8)]
    runner = default_session().runner(2)
    victim = runner.pids()[0]
    seen: list[int] = []

    def killing(items, start):
        if not seen:  # both workers hold a chunk now: the driver hands out the next before this
            os.kill(victim, signal.SIGKILL)
        seen.extend(range(start, start + len(items)))

    with pytest.warns(RuntimeWarning, match=r"a Ray worker died while making image \d; another worker runs them"):
        spread = run_batch(settings, jobs, observer=Observer(made=killing), runner=runner)
    assert spread.complete and sorted(seen) == list(range(8))
    assert victim not in runner.pids()  # a new worker took its place
    assert_same_images(spread, run_batch(settings, jobs, runner=default_session().runner()))


def test_cancel_stops_every_worker_and_keeps_the_finished_chunks_in_their_places():
    cancel = threading.Event()
    settings = Settings(steps=40, width=32, height=32, batch_size=1)
    jobs = [Job("a red cube", seed) for seed in range(10)]

    def cancelling(items, start):
        cancel.set()

    stopped = run_batch(
        settings, jobs, cancel=cancel, observer=Observer(made=cancelling), runner=default_session().runner(2)
    )
    assert stopped.status == "cancelled" and 1 <= len(stopped) <= 3  # the first, and at most the two in flight
    made = {job.seed for job in jobs} - {job.seed for _, job in stopped.not_made()}
    assert {item.seed for item in stopped} == made and len(made) == len(stopped)
    assert [item.seed for item in stopped] == sorted(made)  # in the order of the jobs, gaps or not
    for item in stopped:
        alone = nbbatch.generate("a red cube", [item.seed], **{**FAST, "steps": 40})[0]
        assert max_difference(item.image, alone.image) <= 1
    assert stopped.grid().size[0] > 0  # not-made cells are drawn grey in their places


def test_a_model_no_worker_can_load_is_the_one_line_error_of_one_process():
    with pytest.raises(ValueError, match="/nowhere/model") as here:
        nbbatch.generate("a cat", "0-1", model="/nowhere/model", **FAST)
    with pytest.raises(ValueError, match="/nowhere/model") as spread:
        nbbatch.generate("a cat", "0-1", model="/nowhere/model", workers=2, **FAST)
    assert str(spread.value) == str(here.value) and "\n" not in str(spread.value)


def test_the_magic_runs_on_workers_and_checks_its_options(shell):
    shell.run_cell_magic("batchgen", "--workers 2 --seeds 0-3 --steps 4 --width 32 --height 32", "a red cube")
    spread = shell.user_ns["_batch"]
    assert spread.complete and spread.placement.startswith("Ray: 2 workers")
    with pytest.raises(UsageError, match="workers must be a whole number of at least 1, not 0"):
        shell.run_cell_magic("batchgen", "--workers 0", "a red cube")
    with pytest.raises(UsageError, match="the Ray cluster has 2 CPUs: it fits at most 2 workers"):
        shell.run_cell_magic("batchgen", "--workers 3 --steps 4 --width 32 --height 32", "a red cube")
    with pytest.raises(UsageError, match="--ray-address goes with --workers"):
        shell.run_cell_magic("batchgen", "--ray-address 127.0.0.1:6379", "a red cube")
    assert shell.user_ns["_batch"] is spread  # nothing replaced it


def test_the_panel_runs_on_workers_and_fills_its_thumbnails():
    panel = Panel(prompts="a red cube\na blue ball", seeds="0-2", steps=4)
    panel.set(width=32, height=32)
    panel.workers.value = 2
    panel.generate_button.click()
    panel.wait(120)
    (result,) = panel.results
    assert result.complete and result.placement.startswith("Ray: 2 workers")
    assert [[box.children[1].description for box in row.children[1].children] for row in panel.grid.children] == [
        ["seed 0", "seed 1", "seed 2"]
    ] * 2
    assert panel.message.value == ""


def test_a_sweep_on_workers_resumes_with_exactly_the_deleted_images(tmp_path):
    spec = {"prompts": PROMPTS, "seeds": "0-3", "batch_size": 2, **FAST}
    first = run_sweep(spec, tmp_path, workers=2)
    assert (first.status, first.made, first.found) == ("complete", 8, 0)
    files = sorted(tmp_path.glob("*.png"))
    before = {path.name: Image.open(path).copy() for path in files}
    for path in files[1:4]:
        path.unlink()
    again = run_sweep(spec, tmp_path, workers=2)
    assert (again.status, again.made, again.found) == ("complete", 3, 5)
    after = {path.name: Image.open(path).copy() for path in sorted(tmp_path.glob("*.png"))}
    assert after.keys() == before.keys()
    assert all(max_difference(after[name], before[name]) <= 1 for name in before)
    assert len((tmp_path / "index.jsonl").read_text().splitlines()) == 8  # one line per image, none twice
    here = nbbatch.generate(PROMPTS, "0-3", batch_size=2, **FAST)
    loaded = sorted(nbbatch.load(tmp_path), key=lambda item: item.file)  # the index: in finishing order
    assert_same_images(loaded, here, records=False)  # loaded items also name their files


def test_items_cross_to_workers_and_back_with_their_records(model):
    item = nbbatch.generate("a cat", [3], model=model, **FAST)[0]
    back = pickle.loads(pack(item))
    assert without_versions(back) == without_versions(item) and back.call.scheduler_config is not None


def test_without_ray_the_workers_option_says_how_to_install_it(shell, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    with pytest.raises(UsageError, match=r"workers need Ray: pip install 'nbbatch\[ray\]'"):
        shell.run_cell_magic("batchgen", "--workers 2", "a red cube")


def test_release_workers_stops_the_pool_and_the_next_batch_starts_a_new_one():
    before = default_session().runner(2).pids()
    assert nbbatch.release_workers() == 2
    assert nbbatch.release_workers() == 0
    spread = nbbatch.generate("a red cube", "0-1", workers=2, **FAST)
    assert spread.complete and not set(default_session().runner(2).pids()) & set(before)


def test_a_chunk_that_fails_on_every_try_stops_the_batch_in_one_line_and_keeps_the_rest():
    settings = Settings(**FAST, batch_size=2)
    jobs = [Job("a red cube", seed) for seed in range(8)]
    nbbatch.release_workers()  # the CPUs of this Ray go to the failing workers
    try:
        result = run_batch(
            settings,
            jobs,
            runner=RayRunner(2, pools=default_session().pools, worker=FailingWorker),
            raise_on_failure=False,
        )
    finally:
        default_session().pools.release(FailingWorker)
    assert result.status == "failed"
    assert str(result.error) == (
        "images 7-8 failed on 3 tries: RuntimeError: CUDA error: an illegal memory access was encountered"
    )
    # the failing chunk is the last: it was first handed out when a worker had finished a chunk, which is kept
    assert 2 <= len(result) <= 6 and set(result.seeds) <= {0, 1, 2, 3, 4, 5}
    here = run_batch(settings, jobs, runner=default_session().runner())
    assert all(max_difference(item.image, here.by_seed(item.seed).image) <= 1 for item in result)


def test_workers_that_cannot_be_placed_are_refused_in_one_line_not_awaited_for_ever(monkeypatch):
    default_session().runner(2).pids()  # the two CPUs of this Ray are held by the pool
    monkeypatch.setattr(workers, "START_WAIT", 5.0)
    with pytest.raises(ValueError, match=r"2 of 2 new Ray workers did not start within 5 s: the cluster's free"):
        run_batch(
            Settings(**FAST),
            [Job("a red cube", 0)],
            runner=RayRunner(2, pools=default_session().pools, worker=FailingWorker),
        )
    assert len(default_session().runner(2).pids()) == 2  # the pool that holds them goes on
