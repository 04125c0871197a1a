"""Shared fixtures: an isolated cache root, tiny models, a digits batch, a trained digits_cnn.

Every test runs with ``XAIBENCH_CACHE`` pointing at a per-session temporary folder, so nothing
reads or writes ``~/.cache``. ``digits_cnn`` trains at most once per session (seconds), into that
folder; tests that need a cache of their own copy its ``models/`` folder instead of retraining.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# One intra-op thread: these models are tiny, and on a 2-core machine shared with other work
# a second OpenMP thread makes training up to 10x slower (spin-waiting), not faster.
# Subprocesses (CLI tests) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from xaibench import registry
from xaibench.cache import Cache
from xaibench.datasets.digits import Digits
from xaibench.fitting import FitSpec, FittedModels
from xaibench.manifest import PluginSpec
from xaibench.models.cnn import small_cnn
from xaibench.seeding import item_seeds

torch.set_num_threads(1)


def pytest_configure(config):
    # captum warns on every call that it set requires_grad or hooked ReLUs; xaibench silences
    # that at import, but pytest resets warning filters per test.
    config.addinivalue_line("filterwarnings", r"ignore::UserWarning:captum\..*")


@pytest.fixture(scope="session", autouse=True)
def session_cache_root(tmp_path_factory) -> Path:
    """``XAIBENCH_CACHE`` for the whole session (subprocesses inherit it)."""
    root = tmp_path_factory.mktemp("xaibench-cache")
    previous = os.environ.get("XAIBENCH_CACHE")
    os.environ["XAIBENCH_CACHE"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("XAIBENCH_CACHE", None)
    else:
        os.environ["XAIBENCH_CACHE"] = previous


@pytest.fixture
def tiny_cnn() -> torch.nn.Module:
    """An untrained, seeded ``small_cnn(1, 8, 10, 8)`` in eval mode (fresh per test)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = small_cnn(1, 8, 10, 8)
    return model.eval()


@pytest.fixture(scope="session")
def digits_batch():
    """The first 8 test items of ``digits`` (8x8, grey)."""
    return next(Digits().batches("test", batch_size=8))


@pytest.fixture(scope="session")
def digits_seeds(digits_batch) -> torch.Tensor:
    return item_seeds(0, digits_batch.ids, "method")


@pytest.fixture(scope="session")
def digits_model_spec():
    return registry.build("model", "digits_cnn")


@pytest.fixture(scope="session")
def trained_digits_cnn(session_cache_root, digits_model_spec) -> torch.nn.Module:
    """``digits_cnn`` with default parameters, trained once into the session cache."""
    store = FittedModels(Cache(session_cache_root), torch.device("cpu"), log=lambda message: None)
    return store.get(FitSpec(PluginSpec("model", "digits_cnn", "{}", "test")))


@pytest.fixture
def warm_cache(tmp_path, session_cache_root, trained_digits_cnn) -> Cache:
    """A fresh cache root holding only the trained models of the session cache (no tensors)."""
    root = tmp_path / "cache"
    shutil.copytree(session_cache_root / "models", root / "models")
    return Cache(root)


@pytest.fixture(autouse=True)
def restore_registry():
    """Plugins a test registers or loads (a user's method file or module) do not leak into others."""
    registry.load_builtins()
    saved = {kind: dict(plugins) for kind, plugins in registry._REGISTRY.items()}
    yield
    for kind, plugins in saved.items():
        registry._REGISTRY[kind].clear()
        registry._REGISTRY[kind].update(plugins)
