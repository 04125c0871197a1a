"""Provenance recorded with every result row and fitted model: versions, git sha, device, CPU
or GPU model, thread count. Values are not deterministic across these (GPU against CPU, torch
versions), so the board warns when the rows it compares come from different environments."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import xaibench


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit of the xaibench checkout (with '+dirty' for local edits), or 'unknown'."""
    root = Path(xaibench.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "xaibench"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware(device: str) -> str:
    """What computed the numbers: the GPU's name for a CUDA device, else the CPU model."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def environment(device: str) -> dict[str, str]:
    """What a fit's weights may depend on beyond its key."""
    return {"torch_version": _version("torch"), "device": device, "cpu": hardware(device)}


def collect(device: str, threads: int | None = None) -> dict[str, object]:
    return {
        "xaibench_version": xaibench.__version__,
        "torch_version": _version("torch"),
        "captum_version": _version("captum"),
        "git_sha": git_sha(),
        "device": device,
        "cpu": hardware(device),
        "threads": threads,
    }
