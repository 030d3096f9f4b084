"""A session owns the loaded pipeline, its lock and the workers; nbbatch's functions share a default one."""

import threading

import pytest
from conftest import FAST, max_difference

import nbbatch


def test_two_sessions_keep_two_models_loaded_and_make_the_default_session_s_pixels():
    sd, sdxl = nbbatch.Session(), nbbatch.Session()
    with sd, sdxl:
        first = nbbatch.generate("a red cat", [1, 2], model="nbbatch:tiny-sd", session=sd, **FAST)
        loaded = next(iter(sd.pipelines.loaded.values()))
        nbbatch.generate("a red cat", [1], model="nbbatch:tiny-sdxl", session=sdxl, **FAST)
        again = nbbatch.generate("a red cat", [1, 2], model="nbbatch:tiny-sd", session=sd, **FAST)
        assert list(sd.pipelines.loaded.values()) == [loaded], "the SDXL model of the other session evicts nothing"
        assert [max_difference(a.image, b.image) for a, b in zip(first, again)] == [0, 0]
        default = nbbatch.generate("a red cat", [1, 2], model="nbbatch:tiny-sd", **FAST)
        assert [max_difference(a.image, b.image) for a, b in zip(first, default)] == [0, 0]
    assert not sd.pipelines.loaded and not sdxl.pipelines.loaded, "closing a session releases its pipeline"


def test_a_result_refines_in_the_session_it_was_made_in():
    with nbbatch.Session() as mine:
        batch = nbbatch.generate("a red cat", [3], model="nbbatch:tiny-sd", session=mine, **FAST)
        nbbatch.clear_cache()
        refined = batch.refine(3, "a blue cat")
        assert refined[0].parent is batch[0]
        assert not nbbatch.default_session().pipelines.loaded, "it ran on the session's pipeline, not the default's"
        assert refined.runner == mine.runner()


def test_one_batch_at_a_time_per_session_while_another_session_runs_its_own():
    started, release = threading.Event(), threading.Event()

    def hold(progress):
        started.set()
        release.wait(30)

    busy = nbbatch.Session()
    worker = threading.Thread(
        target=nbbatch.generate,
        args=("a", [0]),
        kwargs={"observer": nbbatch.Observer(progress=hold), "session": busy, **FAST},
    )
    worker.start()
    try:
        assert started.wait(30)
        with pytest.raises(ValueError, match="^another batch is running"):
            nbbatch.generate("b", [1], session=busy, **FAST)
        assert len(nbbatch.generate("b", [1], **FAST)) == 1, "the default session is not held"
    finally:
        release.set()
        worker.join(30)
        busy.close()


def test_a_ray_address_needs_workers():
    with pytest.raises(ValueError, match="^ray_address names a Ray cluster for workers: give workers=N too$"):
        nbbatch.Session().runner(ray_address="127.0.0.1:1")
