"""Reproducible numbers (issue 15): the same values whatever the thread count, batch size,
executor, or whether maps came from the cache. One method of each family on digits.

Tolerance: 1e-6 absolute on every stored value. Measured: identical bits across executors,
thread counts at equal batch sizes, and cold against warm caches; integrated gradients' internal
batching moves maps by up to 9.5e-7 between batch sizes (not in this matrix's methods)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from xaibench import results
from xaibench.cache import Cache
from xaibench.executors import Dask
from xaibench.manifest import parse
from xaibench.runner import Runner

TOLERANCE = 1e-6
MANIFEST = """
name: repro
options: {{split: test, limit: 40, batch_size: {batch}, chunk_size: 20, target: predicted, seeds: [0]}}
models: [digits_cnn]
datasets: [digits]
methods: [random, saliency, smoothgrad: {{n_samples: 4}}, grad_cam, occlusion]
metrics: [deletion: {{steps: 10}}, insertion: {{steps: 10}}]
"""
KEY = ["job_key", "item_id", "score", "x"]


def rows(folder):
    frame = results.read(folder)
    return frame.sort_values(KEY).reset_index(drop=True)


def fresh_cache(tmp_path, name, warm_cache):
    root = tmp_path / name
    shutil.copytree(warm_cache.root / "models", root / "models")
    return Cache(root)


def run(tmp_path, name, warm_cache, batch=8, **runner):
    report = Runner(
        parse(MANIFEST.format(batch=batch)),
        tmp_path / name,
        cache=fresh_cache(tmp_path, f"{name}-cache", warm_cache),
        log=lambda m: None,
        **runner,
    ).run()
    assert report.failures == {}
    return rows(report.results_dir)


def same(a, b):
    assert len(a) == len(b) and (a[KEY[:3]].to_numpy() == b[KEY[:3]].to_numpy()).all()
    difference = np.abs(a["value"].to_numpy() - b["value"].to_numpy())
    assert difference.max() <= TOLERANCE, difference.max()
    return difference.max()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, session_cache_root, trained_digits_cnn):
    """In-process, 1 thread, batches of 8, cold cache."""
    tmp = tmp_path_factory.mktemp("repro-ref")
    return run(tmp, "reference", Cache(session_cache_root), batch=8)


def test_batch_size_7_against_64(tmp_path, reference, warm_cache):
    same(run(tmp_path, "b7", warm_cache, batch=7), reference)
    same(run(tmp_path, "b64", warm_cache, batch=64), reference)


def test_two_threads_against_one(tmp_path, reference, warm_cache):
    same(run(tmp_path, "t2", warm_cache, batch=8, threads=2), reference)


def test_dask_workers_against_in_process(tmp_path, reference, warm_cache):
    same(run(tmp_path, "dask", warm_cache, batch=8, executor=Dask(workers=2)), reference)


def test_scores_from_cached_maps_equal_scores_from_fresh_maps(tmp_path, reference, warm_cache):
    cache = fresh_cache(tmp_path, "shared", warm_cache)
    m = parse(MANIFEST.format(batch=8))
    Runner(m, tmp_path / "cold", cache=cache, log=lambda m: None).run()
    warm = Runner(m, tmp_path / "warm", cache=Cache(cache.root), log=lambda m: None).run()
    assert warm.counts.attributed_items == 0 and warm.counts.scored_items == 40 * 10
    same(rows(warm.results_dir), reference)


def test_cli_threads_one_and_two_give_identical_rows(tmp_path, warm_cache):
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST.format(batch=64).replace("limit: 40", "limit: 64"))
    out = {}
    for threads in (1, 2):
        cache = fresh_cache(tmp_path, f"cli-{threads}", warm_cache)
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env["XAIBENCH_CACHE"] = str(cache.root)
        command = [sys.executable, "-m", "xaibench.cli", "run", str(path), "-r", str(tmp_path / f"r{threads}")]
        done = subprocess.run(
            [*command, "--threads", str(threads), "--no-board"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        out[threads] = rows(tmp_path / f"r{threads}" / "repro")
    assert same(out[1], out[2]) == 0.0, "batches of 64: bit-identical"
    assert set(out[2]["threads"]) == {2} and set(out[1]["threads"]) == {1}, "provenance records the thread count"


def test_fits_are_identical_whatever_the_thread_count(tmp_path):
    """digits_cnn trained under 1 and 2 available threads: the same weights (fits pin 1 thread)."""
    script = (
        "import sys, torch; torch.set_num_threads(int(sys.argv[1]));"
        "from xaibench.cache import Cache; from xaibench.fitting import FitSpec, FittedModels;"
        "from xaibench.manifest import PluginSpec;"
        "m = FittedModels(Cache(sys.argv[2]), torch.device('cpu'), log=lambda s: None).get("
        "FitSpec(PluginSpec('model', 'digits_cnn', '{\"epochs\": 3}', 't')));"
        "torch.save(m.state_dict(), sys.argv[2] + '/weights.pt')"
    )
    weights = []
    for threads in (1, 2):
        root = tmp_path / f"fit-{threads}"
        root.mkdir()
        subprocess.run([sys.executable, "-c", script, str(threads), str(root)], check=True)
        import torch

        weights.append(torch.load(root / "weights.pt"))
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
