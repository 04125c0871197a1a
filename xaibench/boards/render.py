"""Renderers for boards: rich tables for the terminal, Markdown for CI summaries, CSV."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from xaibench.boards.summary import CELL, REFERENCE, VERDICT_BEATS, VERDICT_WORSE

VERDICT_STYLE = {VERDICT_BEATS: "green", VERDICT_WORSE: "red"}


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _num(value: float, digits: int = 3) -> str:
    return "–" if _missing(value) else f"{value:.{digits}f}"


def _rank(value) -> str:
    return "–" if _missing(value) else str(int(value))


def _verdict(row) -> str:
    """The verdict; "reference" for the `random` row only; "–" for a row without a paired test."""
    if isinstance(row["verdict"], str):
        return row["verdict"]
    return "reference" if row["method"] == REFERENCE else "–"


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
    return (
        f"{cell['model']} × {cell['dataset']} · {cell['metric']}/{cell['score']} ({direction}) · "
        f"split {cell['split']}, target {cell['target_mode']}"
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
                    str(r["n"]),
                    _interval(r["delta"], r["delta_low"], r["delta_high"], signed=True),
                    _p(r["p_holm"]),
                    _verdict(r),
                )
                for _, r in group.iterrows()
            ],
        )


HEADERS = ("#", "method", "mean [95% CI]", "n", "Δ vs random [95% CI]", "p (Holm)", "verdict")


def print_rich(board: pd.DataFrame, overall: pd.DataFrame | None, console: Console) -> None:
    if board.empty:
        console.print("no results yet")
        return
    for title, rows in _rows(board):
        # Cells are Text, not markup: a variant label such as "ig[n_steps=8]" must show as written.
        table = Table(title=Text(title), title_justify="left", header_style="bold")
        for header in HEADERS:
            table.add_column(header, justify="right" if header in ("#", "n", "p (Holm)") else "left")
        for row in rows:
            table.add_row(*map(Text, row[:-1]), Text(row[-1], style=VERDICT_STYLE.get(row[-1], "")))
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
        return "_no results yet_\n"
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
