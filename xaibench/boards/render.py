"""Renderers for boards: rich tables for the terminal, Markdown for CI summaries, CSV."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from xaibench.boards.summary import CELL, REFERENCE, VERDICT_BEATS, VERDICT_WORSE

VERDICT_STYLE = {VERDICT_BEATS: "green", VERDICT_WORSE: "red"}


def verdict_style(verdict: str) -> str:
    if verdict.startswith("beats"):
        return "green"
    return "red" if verdict.startswith("worse") else VERDICT_STYLE.get(verdict, "")


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _num(value: float, digits: int = 3) -> str:
    return "–" if _missing(value) else f"{value:.{digits}f}"


def _rank(value) -> str:
    return "–" if _missing(value) else str(int(value))


def _verdict(row) -> str:
    """The verdict; "reference" for the reference method's row; "–" for a row without a paired test."""
    if isinstance(row["verdict"], str):
        return row["verdict"]
    reference = row["reference"] if "reference" in row and isinstance(row["reference"], str) else REFERENCE
    return "reference" if row["method"] == reference else "–"


def _n(row) -> str:
    """Valid items, and how many were invalid (non-finite maps or scores: never ranked or tested)."""
    invalid = row["invalid"] if "invalid" in row and not _missing(row["invalid"]) else 0
    return f"{row['n']} (+{int(invalid)} invalid)" if invalid else str(row["n"])


def _interval(mean: float, low: float, high: float, signed: bool = False) -> str:
    if _missing(mean):
        return "–"
    head = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    if isinstance(low, float) and math.isnan(low):
        return head
    return f"{head} [{low:+.3f}, {high:+.3f}]" if signed else f"{head} [{low:.3f}, {high:.3f}]"


def _p(value: float) -> str:
    if _missing(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _cell_title(cell: dict) -> str:
    direction = "higher is better" if cell["higher_is_better"] else "lower is better"
    reference = cell["reference"] if "reference" in cell and isinstance(cell["reference"], str) else REFERENCE
    return (
        f"{cell['model']} × {cell['dataset']} · {cell['metric']}/{cell['score']} ({direction}) · "
        f"split {cell['split']}, target {cell['target_mode']} · Δ vs {reference}"
    )


def _rows(board: pd.DataFrame):
    for _, group in board.groupby(CELL, sort=False):
        first = group.iloc[0]
        yield (
            _cell_title(first),
            [
                (
                    _rank(r["rank"]),
                    r["method"],
                    _interval(r["mean"], r["ci_low"], r["ci_high"]),
                    _n(r),
                    _interval(r["delta"], r["delta_low"], r["delta_high"], signed=True),
                    _p(r["p_holm"]),
                    _verdict(r),
                )
                for _, r in group.iterrows()
            ],
        )


HEADERS = ("#", "method", "mean [95% CI]", "n", "Δ vs reference [95% CI]", "p (Holm)", "verdict")


def print_rich(board: pd.DataFrame, overall: pd.DataFrame | None, console: Console) -> None:
    if board.empty:
        console.print("no per-item scalar scores here (study boards, if any, follow)")
        return
    for title, rows in _rows(board):
        # Cells are Text, not markup: a variant label such as "ig[n_steps=8]" must show as written.
        table = Table(title=Text(title), title_justify="left", header_style="bold")
        for header in HEADERS:
            table.add_column(header, justify="right" if header in ("#", "n", "p (Holm)") else "left")
        for row in rows:
            table.add_row(*map(Text, row[:-1]), Text(row[-1], style=verdict_style(row[-1])))
        console.print(table)
    if overall is not None and not overall.empty and overall["metrics"].max() > 1:
        for (model, dataset), group in overall.groupby(["model", "dataset"], sort=False):
            table = Table(
                title=Text(f"{model} × {dataset} · overall: mean rank across {group['metrics'].iloc[0]} metrics"),
                title_justify="left",
                header_style="bold",
            )
            for header in ("method", "mean rank [95% CI]"):
                table.add_column(header)
            for _, r in group.iterrows():
                table.add_row(
                    Text(r["method"]), Text(f"{r['mean_rank']:.2f} [{r['rank_low']:.1f}, {r['rank_high']:.1f}]")
                )
            console.print(table)


def markdown(board: pd.DataFrame, overall: pd.DataFrame | None = None) -> str:
    if board.empty:
        return "_no per-item scalar scores here (study boards, if any, follow)_\n"
    lines = []
    for title, rows in _rows(board):
        lines += [
            f"**{title}**",
            "",
            "| " + " | ".join(HEADERS) + " |",
            "|" + "---|" * len(HEADERS),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    if overall is not None and not overall.empty and overall["metrics"].max() > 1:
        for (model, dataset), group in overall.groupby(["model", "dataset"], sort=False):
            lines += [
                f"**{model} × {dataset} · overall mean rank across {group['metrics'].iloc[0]} metrics**",
                "",
                "| method | mean rank [95% CI] |",
                "|---|---|",
            ]
            lines += [
                f"| {r['method']} | {r['mean_rank']:.2f} [{r['rank_low']:.1f}, {r['rank_high']:.1f}] |"
                for _, r in group.iterrows()
            ]
            lines.append("")
    return "\n".join(lines)


def csv(board: pd.DataFrame) -> str:
    return board.to_csv(index=False)


def print_frame(title: str, frame: pd.DataFrame, console: Console) -> None:
    """A study board's table as it is (its columns already formatted or numeric)."""
    table = Table(title=Text(title), title_justify="left", header_style="bold")
    for column in frame.columns:
        table.add_column(str(column))
    for _, row in frame.iterrows():
        cells = []
        for value in row:
            text = _num(value) if isinstance(value, float) else ("–" if _missing(value) else str(value))
            cells.append(Text(text, style=verdict_style(text)))
        table.add_row(*cells)
    console.print(table)


def frame_markdown(title: str, frame: pd.DataFrame) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for _, row in frame.iterrows():
        cells = [_num(v) if isinstance(v, float) else ("–" if _missing(v) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
