"""Tiny random SD-Turbo-shaped weights for the InvSR tests, saved the way users' weights are.

The builder lives in the library (:mod:`utils.training.tiny_sd`, also used by smoke-training runs);
this module re-exports it and adds the session fixtures.
"""
from __future__ import annotations

from utils.training.tiny_sd import SD_TURBO_SCHEDULER, TINY_NP_PARAMS, build_tiny_weights  # noqa: F401 (re-exported)


# ---- pytest fixtures (import them into a test module to use them) ---------------------------------

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_overrides(tmp_path_factory) -> dict:
    return build_tiny_weights(tmp_path_factory.mktemp("invsr_weights"))


@pytest.fixture(scope="session")
def tiny_cfg(tiny_overrides):
    from utils.config import load_config, with_overrides

    # float32: the reference-equality tests recompute InvSR by hand in float32 (bf16 has its own test).
    return with_overrides(load_config(), {**tiny_overrides, "runtime": "torch", "precision": "float32"})
