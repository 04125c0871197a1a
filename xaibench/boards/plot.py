"""A leaderboard as a picture: per cell, each method's mean with its 95% CI, coloured by verdict,
with the random baseline as a vertical line (matplotlib, headless Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from xaibench.boards.render import _cell_title
from xaibench.boards.summary import CELL, REFERENCE, VERDICT_BEATS, VERDICT_WORSE

COLOURS = {VERDICT_BEATS: "#1a9850", VERDICT_WORSE: "#d73027"}


def plot_board(board: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(board.groupby(CELL, sort=False))
    columns = min(2, len(cells))
    rows = math.ceil(len(cells) / columns)
    height = max(3.0, 0.32 * board.groupby(CELL).size().max() + 1.2)
    figure, axes = plt.subplots(rows, columns, figsize=(7.5 * columns, height * rows), squeeze=False)
    for axis, (_, group) in zip(axes.flat, cells, strict=False):
        group = group.sort_values("rank", ascending=False, na_position="first")  # unranked at the bottom
        y = range(len(group))
        colours = [
            "#2166ac" if method == REFERENCE else COLOURS.get(verdict, "#4d4d4d")
            for method, verdict in zip(group["method"], group["verdict"], strict=True)
        ]
        low = (group["mean"] - group["ci_low"]).clip(lower=0).fillna(0)
        high = (group["ci_high"] - group["mean"]).clip(lower=0).fillna(0)
        for position, mean, below, above, colour in zip(y, group["mean"], low, high, colours, strict=True):
            axis.errorbar(mean, position, xerr=[[below], [above]], fmt="o", color=colour, elinewidth=2, capsize=3)
        reference = group[group["method"] == REFERENCE]
        if not reference.empty:
            axis.axvline(reference["mean"].iloc[0], color="#2166ac", linestyle="--", linewidth=1, label="random")
        axis.set_yticks(list(y), group["method"])
        axis.set_title(_cell_title(group.iloc[0]).replace(" · split", "\nsplit"), fontsize=9, loc="left")
        axis.set_xlabel("mean [95% CI]   green: beats random · red: worse · grey: no better")
        axis.grid(axis="x", alpha=0.3)
    for axis in list(axes.flat)[len(cells) :]:
        axis.set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
