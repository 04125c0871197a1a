"""Provenance columns recorded with every result row: versions, git sha, device."""

from __future__ import annotations

import functools
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


def collect(device: str) -> dict[str, str]:
    return {
        "xaibench_version": xaibench.__version__,
        "torch_version": _version("torch"),
        "captum_version": _version("captum"),
        "git_sha": git_sha(),
        "device": device,
    }
