"""CI gates: rules over the summary board that make `xaibench run` and `xaibench gate` exit 1.

The rules are described in ``gate_schema`` (``passes``, ``beats_reference``/``beats_random``,
``min_mean``/``max_mean``, ``no_regression``). A gate never passes vacuously: one whose metric
has no rows, a listed method without rows, a method group that leaves no method, a method whose
values are all invalid (n = 0), or a regression gate without baseline values fails and says why.

Reports for CI: ``write_junit`` (JUnit XML: one test case per gate and per job) and
``write_summary`` (Markdown for a CI step summary); ``job_outcomes`` lists a manifest's jobs
with their failure, from a run's failures or from the stored rows.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from xaibench.gate_schema import CONTROLS, Gate

CELL_COLUMNS = ["model", "dataset", "split", "target_mode", "metric", "score", "method"]


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    passed: bool
    failures: tuple[str, ...]


@dataclass(frozen=True)
class JobOutcome:
    """One job of a manifest for the CI report: its label and why it failed (None: it has rows)."""

    label: str
    error: str | None = None


def _base(name: str) -> str:
    return name.split("[")[0]


def _methods(gate: Gate, cells: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(board method labels to judge, failures for listed methods without rows or an empty group)."""
    available = list(dict.fromkeys(cells["method"]))
    if gate.methods == "all":
        chosen = available
    elif gate.methods == "all_but_controls":
        chosen = [m for m in available if _base(m) not in CONTROLS]
    elif not gate.methods:
        return [], ["the gate names no method"]
    else:
        chosen = [m for m in available if _base(m) in gate.methods]
        missing = [m for m in gate.methods if m not in {_base(a) for a in available}]
        return chosen, [f"no rows for method {m} on metric {gate.metric}" for m in missing]
    return chosen, [] if chosen else [f"no methods to judge ({gate.methods} leaves none with rows)"]


def _fmt(value: Any) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _where(row: pd.Series) -> str:
    return f"{row['method']} on {row['model']} x {row['dataset']} {row['metric']}/{row['score']}"


def _judge(gate: Gate, row: pd.Series, baseline: pd.DataFrame | None) -> str | None:
    """Why this board row fails the gate, or None when it passes."""
    mean, where = row["mean"], _where(row)
    if not (isinstance(mean, float) and math.isfinite(mean)):
        return f"{where}: no valid values (n = {row.get('n', 0)})"
    higher = bool(row["higher_is_better"])
    interval = f"mean {mean:.3f} [{_fmt(row.get('ci_low'))}, {_fmt(row.get('ci_high'))}]"
    if gate.rule in ("beats_random", "beats_reference"):
        verdict = row.get("verdict")
        if isinstance(verdict, str) and verdict.startswith("beats"):
            return None
        if not isinstance(verdict, str):
            return f"{where}: no verdict against {gate.reference} (no items paired with it)"
        return f"{where}: {verdict} (delta {_fmt(row.get('delta'))}, p {_fmt(row.get('p_holm'))})"
    if gate.rule == "passes":
        ok = mean > gate.value if higher else mean < gate.value
        return None if ok else f"{where}: {interval} is not {'above' if higher else 'below'} {gate.value}"
    if gate.rule == "min_mean":
        return None if mean >= gate.value else f"{where}: mean {mean:.3f} < {gate.value}"
    if gate.rule == "max_mean":
        return None if mean <= gate.value else f"{where}: mean {mean:.3f} > {gate.value}"
    if gate.rule == "no_regression":
        if baseline is None:
            return f"{where}: no baseline results (set the gate's baseline or pass --baseline)"
        match = baseline
        for column in CELL_COLUMNS:
            match = match[match[column] == row[column]]
        previous = match["mean"].iloc[0] if len(match) else float("nan")
        if not math.isfinite(previous):
            return f"{where}: no baseline value to compare with"
        worse = (previous - mean) if higher else (mean - previous)
        if worse > gate.value:
            return f"{where}: mean {mean:.3f} vs baseline {previous:.3f}, worse by {worse:.3f} > tolerance {gate.value}"
        return None
    raise ValueError(f"unknown gate rule {gate.rule!r}")


def load_baseline(path: str | Path) -> pd.DataFrame:
    """The summary board of a baseline results folder (a manifest's folder)."""
    from xaibench import results
    from xaibench.boards import summary

    rows = results.read(Path(path))
    return summary.summary(rows) if not rows.empty else pd.DataFrame(columns=[*CELL_COLUMNS, "mean"])


def evaluate(
    gates: tuple[Gate, ...],
    board: pd.DataFrame,
    baseline: str | Path | None = None,
    load: Callable[[str | Path], pd.DataFrame] = load_baseline,
) -> list[GateResult]:
    """Each gate's verdict on the board; ``baseline`` (a results folder) overrides the gates' own."""
    boards: dict[str, pd.DataFrame] = {}
    out = []
    for gate in gates:
        failures: list[str] = []
        cells = board[board["metric"].map(_base) == gate.metric] if not board.empty else board
        if gate.score:
            cells = cells[cells["score"] == gate.score]
        previous = None
        if gate.rule == "no_regression":
            folder = baseline or gate.baseline
            if folder is not None:
                key = str(folder)
                if key not in boards:
                    boards[key] = load(folder)
                previous = boards[key]
        if cells.empty:
            score = f" score {gate.score}" if gate.score else ""
            failures.append(f"no results for metric {gate.metric}{score}")
        else:
            chosen, missing = _methods(gate, cells)
            failures.extend(missing)
            for method in chosen:
                for _, row in cells[cells["method"] == method].iterrows():
                    reason = _judge(gate, row, previous)
                    if reason:
                        failures.append(reason)
        out.append(GateResult(gate, not failures, tuple(failures)))
    return out


def job_outcomes(manifest: Any, rows: pd.DataFrame, failures: dict[str, str] | None = None) -> list[JobOutcome]:
    """Every job of ``manifest`` with its failure: the run's error for it, else "no result rows"
    when the stored rows hold none of it (matched by plugin names, params and seed)."""
    from xaibench.task_types import job_label

    failures = failures or {}
    present: set[tuple] = set()
    columns = [c for k in ("model", "dataset", "method", "metric") for c in (k, f"{k}_params")] + ["seed"]
    if not rows.empty and all(c in rows for c in columns):
        distinct = rows[columns].drop_duplicates().itertuples(index=False)
        present = {tuple(_norm(v) for v in values) for values in distinct}
    out = []
    for job in manifest.jobs():
        label = job_label(job)
        key = tuple(
            _norm(v) for spec in (job.model, job.dataset, job.method, job.metric) for v in (spec.name, spec.params_json)
        ) + (_norm(job.seed),)
        error = failures.get(label) or (None if key in present else "no result rows")
        out.append(JobOutcome(label, error))
    return out


def _norm(value: Any) -> str:
    """Params JSON compared as data (key order and spacing ignored); other values as text."""
    if isinstance(value, str) and value[:1] == "{":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    return str(int(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _outcomes(jobs_report: Any) -> list[JobOutcome]:
    """Accept a list of JobOutcome, or (label, error) pairs, or a {label: error} mapping."""
    if jobs_report is None:
        return []
    if isinstance(jobs_report, dict):
        return [JobOutcome(label, error) for label, error in jobs_report.items()]
    return [j if isinstance(j, JobOutcome) else JobOutcome(*j) for j in jobs_report]


def junit_xml(results: list[GateResult], jobs_report: Any = None, name: str = "xaibench") -> str:
    """JUnit XML: a ``gates`` suite (one case per gate) and a ``jobs`` suite (one case per job)."""
    jobs = _outcomes(jobs_report)
    root = ET.Element("testsuites", name=name)
    gate_suite = ET.SubElement(root, "testsuite", name=f"{name}.gates", tests=str(len(results)))
    gate_suite.set("failures", str(sum(not r.passed for r in results)))
    for result in results:
        case = ET.SubElement(gate_suite, "testcase", classname=f"{name}.gates", name=result.gate.describe())
        if not result.passed:
            failure = ET.SubElement(case, "failure", message=result.failures[0], type="gate")
            failure.text = "\n".join(result.failures)
    job_suite = ET.SubElement(root, "testsuite", name=f"{name}.jobs", tests=str(len(jobs)))
    job_suite.set("failures", str(sum(j.error is not None for j in jobs)))
    for job in jobs:
        case = ET.SubElement(job_suite, "testcase", classname=f"{name}.jobs", name=job.label)
        if job.error is not None:
            ET.SubElement(case, "failure", message=job.error, type="job").text = job.error
    root.set("tests", str(len(results) + len(jobs)))
    root.set("failures", str(sum(not r.passed for r in results) + sum(j.error is not None for j in jobs)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(results: list[GateResult], jobs_report: Any, path: Path, name: str = "xaibench") -> None:
    from xaibench.results import write_text

    write_text(Path(path), junit_xml(results, jobs_report, name))


def summary_markdown(results: list[GateResult], jobs_report: Any = None, title: str = "xaibench") -> str:
    """A Markdown summary for a CI step summary: gates with their reasons, then failed jobs."""
    jobs = _outcomes(jobs_report)
    failed = [r for r in results if not r.passed]
    status = "failed" if failed or any(j.error for j in jobs) else "passed"
    lines = [f"## {title}: {status}", ""]
    if results:
        lines += [f"{len(results) - len(failed)} of {len(results)} gates passed.", ""]
        lines += ["| gate | result | why |", "|---|---|---|"]
        for r in results:
            why = "<br>".join(f.replace("|", "\\|") for f in r.failures) or "–"
            lines.append(f"| {r.gate.describe()} | {'pass' if r.passed else '**FAIL**'} | {why} |")
        lines.append("")
    if jobs:
        bad = [j for j in jobs if j.error]
        lines.append(f"{len(jobs) - len(bad)} of {len(jobs)} jobs have results.")
        lines += [f"- {j.label}: {j.error}" for j in bad]
        lines.append("")
    return "\n".join(lines)


def write_summary(results: list[GateResult], jobs_report: Any, path: Path, title: str = "xaibench") -> None:
    from xaibench.results import write_text

    write_text(Path(path), summary_markdown(results, jobs_report, title))
