"""Streaming benchmark: peak memory (RSS) and items per second of `xaibench run` on 500 and
5,000 items of `synthetic` (32x32), with the quickstart metrics (deletion, insertion).

Both sizes run side by side in this one script, each in its own process (peak RSS read with
os.wait4 for exactly that child), on a fresh attribution cache with the model already trained,
so the figures cover forward passes, attributions, metrics and result writing. Streaming holds
if the 5,000-item peak is close to the 500-item peak (ratio near 1, not near 10).

    .venv/bin/python benchmarks/streaming.py [--sizes 500 5000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = """
name: streaming_{n}
options: {{split: test, limit: {n}, batch_size: 64, seeds: [0]}}
models: [synthetic_cnn]
datasets: [synthetic]
methods: [random, saliency, integrated_gradients, grad_cam]
metrics: [deletion, insertion]
"""


def run_measured(args: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"run failed ({code}): {process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    options = parser.parse_args()
    xaibench = [sys.executable, "-m", "xaibench.cli"]
    work = Path(tempfile.mkdtemp(prefix="xaibench-bench-"))
    try:
        trained = work / "trained-cache"
        env = {**os.environ, "XAIBENCH_CACHE": str(trained)}
        (work / "warm.yaml").write_text(MANIFEST.format(n=1))
        print("training synthetic_cnn once (not measured)...", flush=True)
        run_measured([*xaibench, "run", str(work / "warm.yaml"), "--results", str(work / "r0"), "--no-board"], env)

        # Baseline: the same process start-up and imports with no work (`xaibench ls`).
        idle_seconds, idle_rss, _ = run_measured([*xaibench, "ls"], env)
        rows = []
        for n in options.sizes:
            cache = work / f"cache-{n}"
            shutil.copytree(trained / "models", cache / "models")
            manifest = work / f"streaming_{n}.yaml"
            manifest.write_text(MANIFEST.format(n=n))
            seconds, rss, _ = run_measured(
                [*xaibench, "run", str(manifest), "--results", str(work / f"r{n}"), "--no-board"],
                {**env, "XAIBENCH_CACHE": str(cache)},
            )
            rows.append((n, seconds, rss))

        print(
            f"\nsynthetic 32x32, 4 methods x 2 metrics (8 jobs); process start-up without work: "
            f"{idle_seconds:.1f} s, {idle_rss:.0f} MB"
        )
        header = ("items", "wall s", "work s", "items/s", "job-items/s", "peak RSS MB", "above start-up")
        print("{:>6} {:>8} {:>8} {:>9} {:>12} {:>12} {:>15}".format(*header))
        for n, seconds, rss in rows:
            work_seconds = max(1e-3, seconds - idle_seconds)
            print(
                f"{n:>6} {seconds:>8.1f} {work_seconds:>8.1f} {n / work_seconds:>9.1f} {8 * n / work_seconds:>12.1f} "
                f"{rss:>12.0f} {rss - idle_rss:>15.0f}"
            )
        if len(rows) >= 2:
            (n0, _, r0), (n1, _, r1) = rows[0], rows[-1]
            print(
                f"\nitems x{n1 / n0:.0f} -> peak RSS x{r1 / r0:.2f} "
                f"(above start-up x{(r1 - idle_rss) / max(1.0, r0 - idle_rss):.2f})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
