"""Executors and durability, with real processes: a Dask LocalCluster, a scheduler and worker
started through Dask's own CLI, a worker that dies mid-task, SIGKILL at random moments and
SIGTERM. Rows must be identical whichever way they were computed, with no duplicates."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xaibench import results
from xaibench.cache import Cache
from xaibench.executors import Dask
from xaibench.manifest import load
from xaibench.runner import Runner

VALUES = ["job_key", "item_id", "score", "x", "value", "valid", "fit_key"]

FIT_MANIFEST = """
name: exec-test
options: {split: test, limit: 24, batch_size: 8, chunk_size: 8, target: predicted, seeds: [0]}
models: [digits_cnn: {epochs: 2}]
datasets: [digits]
methods: [random, saliency, smoothgrad: {n_samples: 4}]
metrics: [deletion, insertion]
"""

KILL_MANIFEST = """
name: kill-test
options: {split: test, limit: 96, batch_size: 16, chunk_size: 16, target: predicted, seeds: [0]}
models: [digits_cnn]
datasets: [digits]
methods: [random, saliency, integrated_gradients: {n_steps: 16}, smoothgrad: {n_samples: 8}]
metrics: [deletion, insertion]
"""


def values(folder: Path):
    frame = results.read(folder)
    assert not frame.duplicated(results.ROW_KEY).any()
    return frame[VALUES].sort_values(["job_key", "item_id", "score", "x"]).reset_index(drop=True)


def write(tmp_path: Path, text: str, plugins: str = "") -> Path:
    path = tmp_path / "manifest.yaml"
    path.write_text(text + (f"plugins: [{plugins}]\n" if plugins else ""))
    return path


def cli(args, env_cache: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "XAIBENCH_CACHE": str(env_cache)}
    return subprocess.run(
        [sys.executable, "-m", "xaibench.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


@pytest.fixture(scope="module")
def in_process_rows(tmp_path_factory):
    """The reference: FIT_MANIFEST run in-process from an empty cache (the fit included)."""
    root = tmp_path_factory.mktemp("inproc")
    m = load(write(root, FIT_MANIFEST))
    report = Runner(m, root / "results", cache=Cache(root / "cache"), log=lambda message: None).run()
    assert report.failures == {} and report.counts.models_trained == 1
    return values(report.results_dir)


def test_local_cluster_gives_identical_rows_fit_included(tmp_path, in_process_rows):
    m = load(write(tmp_path, FIT_MANIFEST))
    runner = Runner(
        m, tmp_path / "results", cache=Cache(tmp_path / "cache"), log=lambda message: None, executor=Dask(workers=2)
    )
    report = runner.run()
    assert report.failures == {}
    assert report.counts.models_trained == 1, "the fit ran once, on a worker"
    assert values(report.results_dir).equals(in_process_rows)


def test_scheduler_and_worker_started_by_dask_cli(tmp_path, in_process_rows):
    scheduler_file = tmp_path / "scheduler.json"
    dask = Path(sys.executable).parent / "dask"
    scheduler = subprocess.Popen(
        [str(dask), "scheduler", "--scheduler-file", str(scheduler_file), "--no-dashboard", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        for _ in range(100):
            if scheduler_file.exists() and scheduler_file.stat().st_size:
                break
            time.sleep(0.1)
        import json

        address = json.loads(scheduler_file.read_text())["address"]
        worker = subprocess.Popen(
            [str(dask), "worker", address, "--nthreads", "1", "--nworkers", "2", "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result = cli(
            ["run", str(write(tmp_path, FIT_MANIFEST)), "-r", str(tmp_path / "results"), "--scheduler", address],
            tmp_path / "cache",
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert f"dask ({address})" in result.stderr
        assert values(tmp_path / "results" / "exec-test").equals(in_process_rows)
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


def test_unreachable_scheduler_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XAIBENCH_CONNECT_TIMEOUT", "2")
    result = cli(
        ["run", str(write(tmp_path, FIT_MANIFEST)), "--scheduler", "tcp://127.0.0.1:9", "-r", str(tmp_path / "r")],
        tmp_path / "cache",
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot reach a Dask scheduler" in result.stderr and "Traceback" not in result.stderr


DYING_METHOD = '''
"""A method whose worker process dies the first time it runs (test only)."""
import dataclasses, os
from pathlib import Path
from typing import ClassVar
from xaibench.registry import register

MARKER = Path({marker!r})

@register("method", "test_dies_once")
@dataclasses.dataclass(frozen=True)
class DiesOnce:
    """Input-shaped map; kills its own process on the first call anywhere."""
    version: ClassVar[str] = "1"

    def attribute(self, model, inputs, target, seeds):
        if not MARKER.exists():
            MARKER.write_text("died")
            os._exit(1)
        return inputs.clone()
'''


def test_a_worker_that_dies_mid_task_is_replaced_and_no_row_is_lost_or_doubled(tmp_path):
    plugin = tmp_path / "dying.py"
    plugin.write_text(DYING_METHOD.format(marker=str(tmp_path / "died")))
    text = FIT_MANIFEST.replace("smoothgrad: {n_samples: 4}", "test_dies_once")
    m = load(write(tmp_path, text, plugins="dying.py"))
    report = Runner(
        m, tmp_path / "results", cache=Cache(tmp_path / "cache"), log=lambda message: None, executor=Dask(workers=2)
    ).run()
    assert (tmp_path / "died").exists(), "a worker died"
    assert report.failures == {}
    frame = values(report.results_dir)
    assert len(frame) == 24 * 3 * 2


def test_sigterm_keeps_every_finished_task_and_exits_143(tmp_path, warm_cache):
    path = write(tmp_path, KILL_MANIFEST)
    process = subprocess.Popen(
        [sys.executable, "-m", "xaibench.cli", "run", str(path), "-r", str(tmp_path / "results"), "--no-board"],
        env={**os.environ, "XAIBENCH_CACHE": str(warm_cache.root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    folder = tmp_path / "results" / "kill-test"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(folder.glob("*.parquet"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "terminated: rows of finished tasks are kept" in stderr and "Traceback" not in stderr
    kept = results.read(folder)
    assert len(kept) >= 3 * 16, "the finished tasks' rows are on disk"
    assert (kept.groupby("job_key")["item_id"].nunique() % 16 == 0).all(), "whole tasks only"


def test_sigkill_at_ten_random_moments_then_resume_gives_exactly_the_uninterrupted_rows(tmp_path, warm_cache):
    reference_cache = tmp_path / "reference-cache"
    shutil.copytree(warm_cache.root / "models", reference_cache / "models")
    path = write(tmp_path, KILL_MANIFEST)
    reference = cli(["run", str(path), "-r", str(tmp_path / "reference"), "--no-board"], reference_cache, timeout=600)
    assert reference.returncode == 0, reference.stderr
    expected = values(tmp_path / "reference" / "kill-test")

    env = {**os.environ, "XAIBENCH_CACHE": str(warm_cache.root)}
    command = [sys.executable, "-m", "xaibench.cli", "run", str(path), "-r", str(tmp_path / "killed"), "--no-board"]
    rng = random.Random(20261201)
    folder = tmp_path / "killed" / "kill-test"
    for _ in range(10):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 9.0))
        process.kill()
        process.wait()
        if folder.exists():
            frame = results.read(folder)
            assert not frame.duplicated(results.ROW_KEY).any()
    final = cli(["run", str(path), "-r", str(tmp_path / "killed"), "--no-board"], warm_cache.root, timeout=600)
    assert final.returncode == 0, final.stderr
    assert values(folder)[VALUES[:-1]].equals(expected[VALUES[:-1]])
    assert not list(folder.glob(".*.tmp")), "no temporary file survives a completed rerun"


def test_two_concurrent_runs_of_one_manifest_do_no_double_work_and_no_duplicate_rows(tmp_path, warm_cache):
    path = write(tmp_path, KILL_MANIFEST.replace("limit: 96", "limit: 64"))
    env = {**os.environ, "XAIBENCH_CACHE": str(warm_cache.root)}
    command = [sys.executable, "-m", "xaibench.cli", "run", str(path), "-r", str(tmp_path / "results"), "--no-board"]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[1] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    scored = sum(
        int(line.split(" scores")[0].split()[-1]) for out in outputs for line in out.splitlines() if " scores" in line
    )
    attributed = sum(
        int(line.split(" attributions")[0].split()[-1])
        for out in outputs
        for line in out.splitlines()
        if " attributions" in line
    )
    assert scored == 64 * 4 * 2, "every (item, method, metric) scored once across both runs"
    assert attributed == 64 * 4, "every map computed once across both runs"
    frame = results.read(tmp_path / "results" / "kill-test")
    assert len(frame) == 64 * 4 * 2 and not frame.duplicated(results.ROW_KEY).any()
