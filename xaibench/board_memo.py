"""Leaderboards of unchanged results are read back, not recomputed.

A board is a pure function of the result rows it shows, and computing one costs seconds (reading
every part file, bootstrap CIs, Wilcoxon tests: scipy.stats alone takes ~1 s to import). A warm
`run` of an unchanged manifest, or a second `board` of a folder, would repeat all of it. So the
computed tables (summary, overall ranks, study tables, environment warnings) are kept in the
cache under ``boards/<key>/``, one Parquet file per table plus an ``index.json``, keyed by:
- every result part file under the folder: relative path, size and modification time (any
  write, compaction or deletion changes the key);
- the scope of the board (a run shows only its manifest's jobs and items: their digests);
- the source of the board code (``xaibench/boards``, ``stats.py``, ``results.py``) and the
  versions of xaibench and pandas.
A memo is written in a temporary folder renamed into place, so a reader never sees half of one;
a missing or damaged memo is recomputed (and rewritten). Parquet rather than pickle: a shared
cache or results folder must never be a way to run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from xaibench import __version__
from xaibench.cache import default_root

if TYPE_CHECKING:
    import pandas as pd

PACKAGE = Path(__file__).parent
CODE = sorted((PACKAGE / "boards").glob("*.py")) + [PACKAGE / name for name in ("stats.py", "results.py")]
KEEP = 32  # memos kept per cache; older ones are removed when a new one is written


@dataclass
class Boards:
    """Everything a leaderboard prints, computed from rows."""

    table: pd.DataFrame
    overall: pd.DataFrame
    studies: list[tuple[str, str, pd.DataFrame]]  # (study, title, table)
    warnings: list[str]
    plots: dict[str, str] = field(default_factory=dict)  # study picture path -> its stamp


def compute(rows: pd.DataFrame) -> Boards:
    from xaibench.boards import studies, summary

    return Boards(
        table=summary.summary(rows),
        overall=summary.overall(rows),
        studies=studies.tables(rows),
        warnings=summary.environment_warnings(rows),
    )


def parts(folder: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of every result part under ``folder`` (as ``results.result_files``)."""
    out = []
    for path in folder.rglob("*.parquet"):
        if path.name.startswith("."):
            continue
        try:
            stat = path.stat()
        except OSError:  # removed while listing (a compaction): the key just differs
            continue
        out.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return sorted(out)


def key(folder: Path, scope: dict) -> str:
    digest = hashlib.sha256()
    for path in CODE:
        digest.update(path.read_bytes())
    components = {
        "folder": str(folder.resolve()),
        "parts": parts(folder),
        "scope": scope,
        "code": digest.hexdigest(),
        "xaibench": __version__,
        "pandas": metadata.version("pandas"),
    }
    return hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()


def scope_digest(values) -> str:
    """A short digest of a set of ids (a run's job keys, its items) for ``scope``."""
    return hashlib.sha256("\x1f".join(sorted(values)).encode()).hexdigest()


def load_or_compute(folder: Path, scope: dict, rows: Callable[[], pd.DataFrame]) -> tuple[Boards, bool]:
    """(the boards, whether they came from the memo); ``rows()`` is called only on a miss."""
    memo = default_root() / "boards" / key(folder, scope)[:40]
    found = read(memo)
    if found is not None:
        return found, True
    boards = compute(rows())
    write(memo, boards, replace=memo.exists())  # a damaged memo is replaced, not kept forever
    return boards, False


def remember_plots(folder: Path, scope: dict, boards: Boards) -> None:
    """Store the study pictures' stamps with the memo (written after the pictures are drawn)."""
    memo = default_root() / "boards" / key(folder, scope)[:40]
    if (memo / "index.json").is_file():
        write(memo, boards, replace=True)


def read(memo: Path) -> Boards | None:
    import pandas as pd

    try:
        index = json.loads((memo / "index.json").read_text())
        frames = {name: pd.read_parquet(memo / f"{name}.parquet") for name in index["frames"]}
        return Boards(
            table=frames["table"],
            overall=frames["overall"],
            studies=[(study, title, frames[name]) for study, title, name in index["studies"]],
            warnings=list(index["warnings"]),
            plots=dict(index.get("plots", {})),
        )
    except Exception:  # missing, damaged, or from an incompatible library: compute again
        return None


def write(memo: Path, boards: Boards, replace: bool = False) -> None:
    """Write the memo folder atomically; a failure (a read-only cache, a table Parquet cannot
    hold) only means the next board is computed again."""
    frames = {"table": boards.table, "overall": boards.overall}
    studies = []
    for n, (study, title, frame) in enumerate(boards.studies):
        frames[f"study{n}"] = frame
        studies.append((study, title, f"study{n}"))
    index = {"frames": list(frames), "studies": studies, "warnings": boards.warnings, "plots": boards.plots}
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=memo.parent, prefix=f".{memo.name}."))
        try:
            for name, frame in frames.items():
                frame.to_parquet(staging / f"{name}.parquet")
            (staging / "index.json").write_text(json.dumps(index))
            if replace and memo.exists():
                shutil.rmtree(memo, ignore_errors=True)
            os.rename(staging, memo)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _prune(memo.parent)
    except Exception:
        pass


def _prune(folder: Path) -> None:
    """Keep the newest ``KEEP`` memos; remove staging folders a killed writer left (over an hour old)."""
    now = time.time()
    memos = []
    for path in folder.iterdir():
        try:
            modified = path.stat().st_mtime
        except OSError:  # removed by a concurrent prune
            continue
        if path.name.startswith("."):
            if now - modified > 3600:
                shutil.rmtree(path, ignore_errors=True)
        else:
            memos.append((modified, path))
    for _, old in sorted(memos)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
