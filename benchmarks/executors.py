"""In-process against a 2-worker Dask LocalCluster on the synthetic manifest, in one run.

Both start from the same trained model (copied into two empty caches), so both compute every
attribution and score. Reports wall time, speed-up, the Dask overhead per task (worker time not
spent inside tasks, over the number of tasks), and peak memory of the driver and of each worker.
Rows are compared: they must be identical.

    .venv/bin/python benchmarks/executors.py [--limit 256] [--manifest manifests/synthetic.yaml]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from xaibench import results
from xaibench.cache import Cache
from xaibench.executors import Dask, InProcess
from xaibench.manifest import load, with_options
from xaibench.runner import Runner

VALUES = ["job_key", "item_id", "score", "x", "value"]


def timed(manifest, root: Path, models: Path, executor, threads):
    cache_root = root / "cache"
    shutil.copytree(models, cache_root / "models")
    seconds = []
    runner = Runner(
        manifest, root / "results", cache=Cache(cache_root), log=lambda m: None, executor=executor, threads=threads
    )
    runner.progress = lambda event, info: (
        seconds.append(info["summary"].get("seconds", 0.0)) if event == "task" else None
    )
    started = time.perf_counter()
    report = runner.run()
    wall = time.perf_counter() - started
    assert not report.failures, report.failures
    frame = results.read(report.results_dir)[VALUES].sort_values(VALUES[:4]).reset_index(drop=True)
    return wall, sum(seconds), len(seconds), frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="manifests/synthetic.yaml")
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    manifest = with_options(load(args.manifest), limit=args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Train once, outside the measurement: both executors start from the same weights.
        warm = Runner(
            with_options(manifest, limit=1), tmp / "warm-results", cache=Cache(tmp / "warm"), log=lambda m: None
        )
        warm.run()
        models = tmp / "warm" / "models"
        wall_a, task_a, n_a, rows_a = timed(manifest, tmp / "a", models, InProcess(), None)
        driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        dask = Dask(workers=args.workers)
        wall_b, task_b, n_b, rows_b = timed(manifest, tmp / "b", models, dask, 1)
    overhead = (wall_b * args.workers - task_b) / max(1, n_b)
    print(f"manifest {args.manifest}, limit {args.limit}: {n_a} tasks")
    print(f"{'executor':<24}{'wall s':>10}{'task s (sum)':>14}{'speed-up':>10}")
    print(f"{'in-process':<24}{wall_a:>10.1f}{task_a:>14.1f}{1.0:>10.2f}")
    print(f"{f'dask, {args.workers} workers':<24}{wall_b:>10.1f}{task_b:>14.1f}{wall_a / wall_b:>10.2f}")
    print(f"dask overhead per task: {overhead:.3f} s (worker time outside tasks / tasks, startup included)")
    print(
        f"peak RSS: driver {driver_peak:.0f} MB; workers "
        + ", ".join(f"{v:.0f} MB" for v in dask.worker_peak_rss_mb.values())
    )
    print(f"rows identical: {rows_a.equals(rows_b)} ({len(rows_a)} rows)")


if __name__ == "__main__":
    main()
