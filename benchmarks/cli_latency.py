"""CLI latency: wall time of each instant command next to a bare `python -c "import torch"`.

The CLI must answer at once (issue #7: `--version`, `ls`, `check`, `board` and a fully warm
`run` of the quickstart at most 1.5 s each on the 2-core CI machine). Every command is a fresh
process, as a user types it; the rounds alternate commands and the torch import so drift in the
machine's speed hits all alike, and medians are reported. The quickstart is run once first so
that its cache and results are warm (that first run's time is printed, not judged).

    .venv/bin/python benchmarks/cli_latency.py [--rounds 5] [--manifest manifests/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 1.5


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--manifest", default="manifests/quickstart.yaml")
    options = parser.parse_args()

    xaibench = [str(Path(sys.executable).with_name("xaibench"))]
    name = Path(options.manifest).stem
    start = time.perf_counter()
    warm = [*xaibench, "run", options.manifest]
    subprocess.run(warm, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    print(f"warm-up: xaibench run {options.manifest} in {time.perf_counter() - start:.1f} s")

    commands = {
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "xaibench --version": [*xaibench, "--version"],
        "xaibench ls": [*xaibench, "ls"],
        f"xaibench check {options.manifest}": [*xaibench, "check", options.manifest],
        f"xaibench plan {options.manifest}": [*xaibench, "plan", options.manifest],
        f"xaibench board results/{name}": [*xaibench, "board", f"results/{name}"],
        f"xaibench run {options.manifest} (warm)": [*xaibench, "run", options.manifest],
    }
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(options.rounds):
        for label, command in commands.items():
            times[label].append(wall(command))

    torch_s = statistics.median(times['python -c "import torch"'])
    load = os.getloadavg()[0]
    print(f"{options.rounds} rounds, medians; load average {load:.2f}; {os.cpu_count()} CPUs")
    print(f"{'command':<48} {'median s':>9} {'max s':>7} {'/ torch':>8}  target <= {TARGET_S} s")
    for label, values in times.items():
        median = statistics.median(values)
        verdict = "" if label.startswith("python") else ("ok" if median <= TARGET_S else "SLOW")
        print(f"{label:<48} {median:>9.2f} {max(values):>7.2f} {median / torch_s:>8.2f}  {verdict}")


if __name__ == "__main__":
    main()
