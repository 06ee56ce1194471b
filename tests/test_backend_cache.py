"""The loaded-backend cache: least recently used eviction, and one load lock per model."""
import threading
from collections import OrderedDict

import pytest
from omegaconf import OmegaConf

import utils.backends as backends
from utils.backends.base import Availability, Backend

WAIT = 10  # seconds; a bound that only a broken cache reaches


class FakeBackend(Backend):
    """A backend whose model is the config's ``model`` key; counts constructions per model."""

    name = "fake"
    built: list[str] = []

    def __init__(self, cfg):
        self.model = cfg.model
        FakeBackend.built.append(cfg.model)

    @classmethod
    def availability(cls, cfg):
        return Availability(True)

    @classmethod
    def model_key(cls, cfg):
        return cfg.model

    @property
    def device(self):
        return "cpu"

    def upscale(self, lr, settings, progress=None):
        return lr


class BlockingBackend(FakeBackend):
    """A load that signals ``started`` and then waits for ``release`` (a model that takes long to load)."""

    name = "blocking"
    started = threading.Event()
    release = threading.Event()

    def __init__(self, cfg):
        BlockingBackend.started.set()
        assert BlockingBackend.release.wait(WAIT), "the test never released the load"
        super().__init__(cfg)


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "fake", FakeBackend)
    monkeypatch.setitem(backends.BACKENDS, "blocking", BlockingBackend)
    monkeypatch.setattr(backends, "_loaded", OrderedDict())
    monkeypatch.setattr(backends, "_load_locks", {})
    monkeypatch.setattr(backends, "MAX_LOADED", 2)
    FakeBackend.built = []
    BlockingBackend.started = threading.Event()
    BlockingBackend.release = threading.Event()


def load(model, name="fake"):
    return backends.load_backend(name, OmegaConf.create({"model": model}))


def run_in_thread(fn):
    """Start ``fn`` in a daemon thread; returns (thread, list that receives its result or exception)."""
    result = []

    def target():
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised by the test through the result
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def test_the_least_recently_used_backend_is_evicted():
    a, b = load("a"), load("b")
    assert load("a") is a  # a is now more recent than b
    load("c")  # over MAX_LOADED = 2: b goes, not a (FIFO would drop a)
    assert load("a") is a
    assert FakeBackend.built == ["a", "b", "c"]
    assert load("b") is not b and FakeBackend.built == ["a", "b", "c", "b"]


def test_two_requests_for_a_model_not_loaded_yet_load_it_once():
    first, first_result = run_in_thread(lambda: load("x", "blocking"))
    assert BlockingBackend.started.wait(WAIT)
    second, second_result = run_in_thread(lambda: load("x", "blocking"))
    BlockingBackend.release.set()
    first.join(WAIT), second.join(WAIT)
    assert not first.is_alive() and not second.is_alive()
    assert first_result[0] is second_result[0]
    assert FakeBackend.built == ["x"]


def test_a_cached_model_is_returned_while_another_model_loads():
    cached = load("a")
    loader, loaded = run_in_thread(lambda: load("slow", "blocking"))
    assert BlockingBackend.started.wait(WAIT)
    lookup, found = run_in_thread(lambda: load("a"))
    lookup.join(WAIT)
    still_loading = loader.is_alive()
    BlockingBackend.release.set()
    loader.join(WAIT)
    assert found == [cached], "the cached lookup waited for the other model's load"
    assert still_loading and loaded[0].model == "slow"
