"""The Parquet result schema v2 (one row per score task x item x score x point), parts, compaction.

A score task writes its rows as part files named from the task's score key and a digest of the
item ids it covers: ``<results>/<manifest>/<score key[:24]>-<ids digest>.parquet``, written
atomically (temp file + rename). Every score of an item is in the same file, so an item has all
its scores or none. The name is a function of the work, not of a process: a task re-run by
Dask after a worker died, or by a concurrent run, rewrites the same file instead of adding a
copy. Readers deduplicate on (job key, item, score, x, repeat), keeping the newest row.

``compact`` merges a folder's parts into one deduplicated file (atomically: the merged file is
written before the parts it replaces are removed). Schema v1 files (before ``x``, validity and
study columns) are still read: their new columns get defaults (x NaN, valid true,
model_role "original").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from xaibench import atomic
from xaibench.atomic import atomic_path
from xaibench.errors import UserError

SCHEMA_VERSION = "2"
READABLE_VERSIONS = ("1", "2")
# A row is one (score task, item, score, point, repeat): ROAR's repeats of one curve differ only
# in `repeat` (each from its own retrain), so it is part of the key.
ROW_KEY = ["job_key", "item_id", "score", "x", "repeat"]
COMPACTED_PREFIX = "compacted-"

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("manifest", pa.string()),
        ("job_key", pa.string()),
        ("attribution_key", pa.string()),
        ("fit_key", pa.string()),
        ("model", pa.string()),
        ("model_params", pa.string()),
        ("model_version", pa.string()),
        ("model_revision", pa.string()),
        ("model_role", pa.string()),
        ("repeat", pa.int64()),
        ("dataset", pa.string()),
        ("dataset_params", pa.string()),
        ("dataset_version", pa.string()),
        ("dataset_revision", pa.string()),
        ("split", pa.string()),
        ("method", pa.string()),
        ("method_params", pa.string()),
        ("method_version", pa.string()),
        ("metric", pa.string()),
        ("metric_params", pa.string()),
        ("metric_version", pa.string()),
        ("reference", pa.string()),
        ("target_mode", pa.string()),
        ("seed", pa.int64()),
        ("item_id", pa.string()),
        ("label", pa.int64()),
        ("prediction", pa.int64()),
        ("target", pa.int64()),
        ("score", pa.string()),
        ("x", pa.float64()),
        ("x_label", pa.string()),
        ("value", pa.float64()),
        ("valid", pa.bool_()),
        ("invalid_reason", pa.string()),
        ("higher_is_better", pa.bool_()),
        ("xaibench_version", pa.string()),
        ("torch_version", pa.string()),
        ("captum_version", pa.string()),
        ("git_sha", pa.string()),
        ("device", pa.string()),
        ("cpu", pa.string()),
        ("threads", pa.int64()),
        ("attribution_s", pa.float64()),
        ("elapsed_s", pa.float64()),
    ]
)
COLUMNS = SCHEMA.names
# What a schema v1 file lacks, and the value its rows mean.
V1_DEFAULTS: dict[str, Any] = {
    "fit_key": None,
    "model_role": "original",
    "repeat": None,
    "reference": "random",
    "x": float("nan"),
    "x_label": None,
    "valid": True,
    "invalid_reason": None,
    "cpu": None,
    "threads": None,
}


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\x1f".join(ids).encode()).hexdigest()[:12]


def part_path(results_dir: Path, job_key: str, ids: list[str]) -> Path:
    return results_dir / f"{job_key[:24]}-{ids_digest(ids)}.parquet"


def write_rows(path: Path, rows: dict[str, list[Any]]) -> None:
    """Write one Parquet file atomically (temp file + rename), schema_version in its metadata."""
    table = pa.Table.from_pydict(rows, schema=SCHEMA)
    _write_table(path, table)


def _write_table(path: Path, table: pa.Table) -> None:
    table = table.replace_schema_metadata({b"schema_version": SCHEMA_VERSION.encode(), b"producer": b"xaibench"})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_part(results_dir: Path, job_key: str, ids: list[str], rows: dict[str, list[Any]]) -> Path:
    path = part_path(results_dir, job_key, ids)
    write_rows(path, rows)
    return path


def write_json(path: Path, record: dict[str, Any]) -> None:
    write_text(path, json.dumps(record, indent=2, default=str))


def write_text(path: Path, text: str) -> None:
    """Atomic text write; a path that is a folder or not writable is a UserError."""
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name such as {path / 'board.md'}")
    try:
        atomic.write_text(path, text)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


def result_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def _read_file(path: Path, columns: list[str] | None) -> pd.DataFrame:
    try:
        schema = pq.read_schema(path)
        version = (schema.metadata or {}).get(b"schema_version", b"?").decode()
        if version not in READABLE_VERSIONS:
            raise UserError(
                f"{path}: results schema version {version} cannot be read by this xaibench "
                f"(reads {', '.join(READABLE_VERSIONS)}); move the file away and rerun its manifest"
            )
        present = [c for c in (columns or COLUMNS) if c in schema.names]
        frame = pq.read_table(path, columns=present).to_pandas()
    except (pa.ArrowException, OSError) as error:
        raise UserError(f"{path}: not a readable result table ({error}); delete it and rerun its manifest") from None
    for column in columns or COLUMNS:
        if column not in frame:
            frame[column] = V1_DEFAULTS.get(column)
    return frame


def read(root: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows under ``root`` (a manifest folder or the whole results tree), deduplicated."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"results folder not found: {root}; run `xaibench run MANIFEST` first")
    if root.is_file():
        raise UserError(f"{root} is a file; give a results folder such as results/quickstart")
    return read_files(result_files(root), columns)


def read_files(files: list[Path], columns: list[str] | None = None) -> pd.DataFrame:
    wanted = None if columns is None else sorted(set(columns) | set(ROW_KEY) | {"time"})
    frames = []
    for f in files:
        try:
            frames.append(_read_file(f, wanted))
        except UserError:
            if f.exists():
                raise
            # removed by a concurrent compaction after listing: its rows are in the merged file
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (columns or COLUMNS)})
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values("time", kind="stable").drop_duplicates(ROW_KEY, keep="last")
    return frame.reset_index(drop=True)[columns or frame.columns.tolist()]


def done_items(root: Path) -> dict[str, set[str]]:
    """job key -> item ids that already have rows (an item's scores are written together)."""
    if not root.exists():
        return {}
    frame = read(root, columns=["job_key", "item_id"])
    # Distinct pairs first, as plain Python strings: iterating arrow-backed columns row by row
    # costs ~2 us a value, and a folder holds hundreds of thousands of rows (curves, repeats).
    pairs = frame[["job_key", "item_id"]].drop_duplicates()
    done: dict[str, set[str]] = {}
    for job_key, item_id in zip(pairs["job_key"].tolist(), pairs["item_id"].tolist(), strict=True):
        done.setdefault(job_key, set()).add(item_id)
    return done


def done_in_parts(results_dir: Path, job_key: str) -> set[str]:
    """Item ids in the part files of one job key (a task checks this before it starts)."""
    files = sorted(results_dir.glob(f"{job_key[:24]}-*.parquet"))
    if not files:
        return set()
    frame = read_files(files, columns=["job_key", "item_id"])
    return set(frame.loc[frame["job_key"] == job_key, "item_id"])


def compact(results_dir: Path) -> tuple[int, int]:
    """Merge every result file of a folder into one, deduplicated; returns (files merged, rows).

    The merged file is written (atomically) before any part is removed, so a crash at any point
    loses nothing: at worst rows exist twice for a moment, and readers deduplicate. Two
    compactions never run at once on a folder (a lock file); the second does nothing.
    """
    if not results_dir.is_dir():
        return 0, 0
    lock_path = results_dir / ".compact.lock"
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0, 0
        files = [p for p in sorted(results_dir.glob("*.parquet")) if not p.name.startswith(".")]
        if len(files) < 2:
            return 0, 0
        frame = read_files(files)
        table = pa.Table.from_pandas(frame.reindex(columns=COLUMNS), schema=SCHEMA, preserve_index=False)
        merged = (
            results_dir
            / f"{COMPACTED_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{ids_digest([str(f) for f in files])}.parquet"
        )
        _write_table(merged, table)
        for f in files:
            if f != merged:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
        return len(files), len(frame)
