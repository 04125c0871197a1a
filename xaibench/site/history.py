"""Run history of a manifest folder: each run's summary board appended to ``history.jsonl``, and
regressions against the previous run.

``record_history(results_dir, run_id)`` is called at the end of ``xaibench run``: it appends
one line per summary-board row (cell, method, mean, 95% CI, n, verdict) tagged with the run id
and time. The file is rewritten atomically; recording a run id twice replaces its lines, so a
retried call never duplicates a run. JSON lines, not Parquet: the results reader takes every
``*.parquet`` under a folder for result rows.

Without a history file (runs from before this existed, or a folder copied without it), the
history is rebuilt from the stored rows: after run R the board held every row written by R or
an earlier run (run ids start with the UTC start time, so they sort in run order). Rows a later
run replaced are gone from the results, so a rebuilt history can differ from the recorded one
for runs whose rows were since rewritten.

A regression is a (cell, method) whose mean in the latest run lies outside the previous run's
95% CI on the worse side (below it when higher is better, above when lower is better); the
mirror case is an improvement. A method new in the latest run has nothing to compare with.

Pure functions of stored rows and the history file; cost: one summary board (bootstrap CIs)
per run recorded or rebuilt.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from xaibench import results
from xaibench.boards import summary as summary_board
from xaibench.boards.summary import CELL

HISTORY_NAME = "history.jsonl"
KEY = [*CELL, "method"]
FIELDS = [*KEY, "mean", "ci_low", "ci_high", "n", "invalid", "verdict", "higher_is_better", "reference"]
COLUMNS = ["run_id", "time", *FIELDS]


def run_time(run_id: str) -> pd.Timestamp | None:
    """The UTC start time in a run id (``20260101T120000-abc123``), or None for another shape."""
    try:
        return pd.Timestamp(datetime.strptime(run_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc))
    except ValueError:
        return None


def run_records(results_dir: Path) -> list[dict]:
    """The run records (``<run_id>-run.json``) of a folder, oldest first; unreadable ones skipped."""
    records = []
    for path in sorted(Path(results_dir).glob("*-run.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("run_id"):
            records.append(record)
    return records


def _summary_records(board: pd.DataFrame, run_id: str, time: pd.Timestamp) -> list[dict]:
    board = board.reindex(columns=FIELDS)
    out = []
    for record in board.to_dict("records"):
        clean = {"run_id": run_id, "time": time.isoformat()}
        for key, value in record.items():
            if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                value = None
            elif hasattr(value, "item"):  # numpy scalar -> Python
                value = value.item()
            clean[key] = value
        out.append(clean)
    return out


def record_history(
    results_dir: Path, run_id: str, rows: pd.DataFrame | None = None, board: pd.DataFrame | None = None
) -> Path:
    """Append run ``run_id``'s summary board to ``<results_dir>/history.jsonl``; returns its path.

    ``rows`` are the rows the run's board shows (the caller may limit them to the manifest's
    jobs and items); by default every row in the folder. A folder without rows records nothing.
    A warm rerun (nothing recomputed) is recorded too: a flat point on the trend says it ran.
    ``board``: the summary of those rows when the caller has it (not computed twice); with
    ``board`` and no ``rows``, the run wrote no rows of its own (a warm rerun, its board read
    back from the memo) and is stamped with its start time.
    """
    results_dir = Path(results_dir)
    path = results_dir / HISTORY_NAME
    if rows is None and board is None:
        rows = results.read(results_dir) if results_dir.exists() else pd.DataFrame()
    if rows is not None and rows.empty:
        return path
    if board is None:
        board = summary_board.summary(rows)
    # When the run wrote rows, the newest of them; a warm rerun (no rows of its own) its start.
    if rows is not None and {"run_id", "time"} <= set(rows):
        own = rows.loc[rows["run_id"] == run_id, "time"]
    else:
        own = pd.Series(dtype=object)
    stamp = pd.Timestamp(own.max()) if own.notna().any() else run_time(run_id) or pd.Timestamp.now(tz="UTC")
    lines = [line for line in _read_lines(path) if line.get("run_id") != run_id]
    lines += _summary_records(board, run_id, stamp)
    lines.sort(key=lambda line: (str(line.get("time")), str(line.get("run_id"))))
    results.write_text(path, "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    return path


def _read_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue  # a torn line from a copy in progress: the other runs still count
        if isinstance(line, dict):
            lines.append(line)
    return lines


def _frame(lines: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(lines).reindex(columns=COLUMNS)
    if frame.empty:
        return frame
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    for column in ("mean", "ci_low", "ci_high"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame.sort_values(["time", "run_id"], kind="stable").reset_index(drop=True)


def rebuild_history(results_dir: Path, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """The history as the stored rows imply it: one summary board per run, over that run's rows
    and every earlier run's."""
    if rows is None:
        rows = results.read(results_dir) if Path(results_dir).exists() else pd.DataFrame()
    if rows.empty or "run_id" not in rows:
        return _frame([])
    lines = []
    for run_id in sorted(rows["run_id"].dropna().unique()):
        upto = rows[rows["run_id"] <= run_id]
        written = upto.loc[upto["run_id"] == run_id, "time"]
        stamp = pd.Timestamp(written.max()) if len(written) else run_time(run_id)
        lines += _summary_records(summary_board.summary(upto), run_id, stamp)
    return _frame(lines)


def load_history(results_dir: Path, rows: pd.DataFrame | None = None) -> tuple[pd.DataFrame, bool]:
    """(history, recorded): the recorded history file, or the rebuilt one when there is none."""
    lines = _read_lines(Path(results_dir) / HISTORY_NAME)
    if lines:
        return _frame(lines), True
    return rebuild_history(results_dir, rows), False


def compare(history: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows next to the previous run's for the same (cell, method): the previous mean
    and CI, and a ``change`` of "regression", "improvement" or "" (inside the previous CI, or no
    previous run)."""
    if history.empty:
        return history.assign(prev_mean=[], prev_ci_low=[], prev_ci_high=[], prev_run=[], change=[])
    runs = list(dict.fromkeys(history.sort_values(["time", "run_id"], kind="stable")["run_id"]))
    previous = {run: runs[i - 1] if i else None for i, run in enumerate(runs)}
    frame = history.assign(prev_run=history["run_id"].map(previous))
    before = history[[*KEY, "run_id", "mean", "ci_low", "ci_high"]].rename(
        columns={"run_id": "prev_run", "mean": "prev_mean", "ci_low": "prev_ci_low", "ci_high": "prev_ci_high"}
    )
    frame = frame.merge(before, on=[*KEY, "prev_run"], how="left")
    higher = frame["higher_is_better"].fillna(True).astype(bool)
    above = frame["mean"] > frame["prev_ci_high"]  # False wherever a value is missing
    below = frame["mean"] < frame["prev_ci_low"]
    worse = (higher & below) | (~higher & above)
    better = (higher & above) | (~higher & below)
    frame["change"] = ""
    frame.loc[worse, "change"] = "regression"
    frame.loc[better, "change"] = "improvement"
    return frame


def latest_changes(history: pd.DataFrame) -> pd.DataFrame:
    """The latest run's regressions and improvements against the run before it."""
    compared = compare(history)
    if compared.empty:
        return compared
    latest = compared.sort_values(["time", "run_id"], kind="stable")["run_id"].iloc[-1]
    return compared[(compared["run_id"] == latest) & (compared["change"] != "")].reset_index(drop=True)
