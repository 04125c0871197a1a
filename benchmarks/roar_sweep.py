"""ROAR sweep benchmark: wall time of a remove-and-retrain sweep from a cold cache, in-process and
on a local Dask cluster, and the share of that time spent training (from the fit records'
``train_seconds``; with N workers the share is of N x wall time, the workers' capacity).

Each configuration runs from an empty cache and results folder, so every fit (the original
model, the retrains, the references, the leakage classifiers), every whole-split attribution
and every score is computed. ``--quick`` runs a small sweep (random and saliency, 2 fractions,
1 repeat, 2-epoch retrains) to check the script in a minute.

    .venv/bin/python benchmarks/roar_sweep.py [--manifest manifests/roar_digits.yaml] [--workers 0 2] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

QUICK = """
name: roar_quick
options: {split: test, limit: null, batch_size: 128, target: label, seeds: [0]}
models: [digits_cnn]
datasets: [digits]
methods: [random, saliency]
metrics: [roar: {fractions: [0.3, 0.7], repeats: 1, retrain_epochs: 2}]
"""


def run_once(manifest_path: Path, workers: int, work: Path) -> dict:
    from xaibench.cache import Cache
    from xaibench.executors import Dask, InProcess
    from xaibench.manifest import load
    from xaibench.runner import Runner

    tag = f"w{workers}"
    cache = Cache(work / f"cache-{tag}")
    executor = Dask(workers=workers) if workers else InProcess()
    started = time.perf_counter()
    report = Runner(
        load(manifest_path), work / f"results-{tag}", cache=cache, log=lambda m: None, executor=executor
    ).run()
    wall = time.perf_counter() - started
    if report.failures:
        raise SystemExit(f"sweep failed: {next(iter(report.failures.values()))}")
    records = [r for r in cache.models() if "train_seconds" in r]
    train = sum(r["train_seconds"] for r in records)
    by_role = Counter(r.get("role") for r in records)
    reference = [r["test_accuracy"] for r in records if r.get("role") == "retrained_reference"]
    return {
        "executor": f"dask, {workers} workers" if workers else "in-process",
        "wall_s": wall,
        "fits": len(records),
        "roles": dict(by_role),
        "train_s": train,
        "train_share": train / (wall * max(workers, 1)),
        "reference_accuracy": sum(reference) / len(reference) if reference else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("manifests/roar_digits.yaml"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="0 = in-process")
    parser.add_argument("--quick", action="store_true", help="a small sweep instead of --manifest")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xaibench-roar-"))
    try:
        manifest = options.manifest
        if options.quick:
            manifest = work / "quick.yaml"
            manifest.write_text(QUICK)
        print(f"{manifest}: cold runs, {', '.join(str(w) for w in options.workers)} workers (0 = in-process)")
        print(f"{'executor':<20} {'wall s':>8} {'fits':>5} {'train s':>8} {'train share':>12} {'ref. acc.':>10}")
        for workers in options.workers:
            row = run_once(manifest, workers, work)
            print(
                f"{row['executor']:<20} {row['wall_s']:>8.1f} {row['fits']:>5} {row['train_s']:>8.1f} "
                f"{row['train_share']:>12.1%} {row['reference_accuracy']:>10.4f}   {row['roles']}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
