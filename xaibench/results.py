"""The Parquet result schema (one row per job x item x score), atomic writes, reading with dedupe.

Files live at ``<results>/<manifest>/<run_id>-<job>-<part>.parquet``; a run never rewrites a
file, so nothing already written can be lost, and a reader that finds the same
(job, item, score) twice keeps the newest row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from xaibench import atomic
from xaibench.atomic import atomic_path
from xaibench.errors import UserError

SCHEMA_VERSION = "1"
ROW_KEY = ["job_key", "item_id", "score"]

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("manifest", pa.string()),
        ("job_key", pa.string()),
        ("attribution_key", pa.string()),
        ("model", pa.string()),
        ("model_params", pa.string()),
        ("model_version", pa.string()),
        ("model_revision", pa.string()),
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
        ("target_mode", pa.string()),
        ("seed", pa.int64()),
        ("item_id", pa.string()),
        ("label", pa.int64()),
        ("prediction", pa.int64()),
        ("target", pa.int64()),
        ("score", pa.string()),
        ("value", pa.float64()),
        ("higher_is_better", pa.bool_()),
        ("xaibench_version", pa.string()),
        ("torch_version", pa.string()),
        ("captum_version", pa.string()),
        ("git_sha", pa.string()),
        ("device", pa.string()),
        ("attribution_s", pa.float64()),
        ("elapsed_s", pa.float64()),
    ]
)
COLUMNS = SCHEMA.names


def write_rows(path: Path, rows: dict[str, list[Any]]) -> None:
    """Write one Parquet file atomically (temp file + rename), schema_version in its metadata."""
    table = pa.Table.from_pydict(rows, schema=SCHEMA)
    table = table.replace_schema_metadata({b"schema_version": SCHEMA_VERSION.encode(), b"producer": b"xaibench"})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


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


def read(root: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows under ``root`` (a manifest folder or the whole results tree), deduplicated."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"results folder not found: {root}; run `xaibench run MANIFEST` first")
    files = result_files(root)
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (columns or COLUMNS)})
    wanted = None if columns is None else sorted(set(columns) | set(ROW_KEY) | {"time"})
    frames = []
    for f in files:
        try:
            version = (pq.read_schema(f).metadata or {}).get(b"schema_version", b"?").decode()
            if version == SCHEMA_VERSION:
                frames.append(pq.read_table(f, columns=wanted).to_pandas())
        except (pa.ArrowException, OSError) as error:
            raise UserError(f"{f}: not a readable result table ({error}); delete it and rerun its manifest") from None
        if version != SCHEMA_VERSION:
            raise UserError(f"{f}: results schema version {version} is not {SCHEMA_VERSION}; rerun its manifest")
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values("time", kind="stable").drop_duplicates(ROW_KEY, keep="last")
    return frame.reset_index(drop=True)[columns or frame.columns.tolist()]


def done_items(root: Path) -> dict[str, set[str]]:
    """job key -> item ids that already have rows (an item's scores are written together)."""
    if not root.exists():
        return {}
    frame = read(root, columns=["job_key", "item_id"])
    done: dict[str, set[str]] = {}
    for job_key, item_id in zip(frame["job_key"], frame["item_id"], strict=True):
        done.setdefault(job_key, set()).add(item_id)
    return done
