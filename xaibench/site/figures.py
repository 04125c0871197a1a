"""The site's own pictures (matplotlib, headless Agg): every stored curve with its 95% CI band,
and the trend of each method's mean across runs.

Curves: rows with a numeric ``x`` (ROAD's per-fraction probability and accuracy, ROAR's
accuracy per fraction, randomisation similarity per layer...), one panel per (model, dataset,
metric, score), one line per method: the mean over items at each x, with a percentile bootstrap
95% CI band. Deletion and insertion store only their area, so they appear in the summary's
mean-and-CI picture instead.

Trends: one panel per summary cell, one line per method through its mean at each run, the
95% CI as error bars; a regression against the previous run is ringed in red.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xaibench import stats
from xaibench.boards.summary import labelled

MAX_PANELS = 24  # more panels make an unreadable picture; the tables hold the rest


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(plt, panels: int, width: float = 4.6, height: float = 3.4):
    columns = min(3, panels)
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for axis in list(axes.flat)[panels:]:
        axis.set_visible(False)
    return figure, list(axes.flat)


def curve_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI over items per (model, dataset, metric, score, method, x)."""
    if rows.empty or "x" not in rows:
        return pd.DataFrame()
    part = rows[rows["x"].notna()]
    if "valid" in part:
        part = part[part["valid"].fillna(True).astype(bool)]
    if part.empty:
        return pd.DataFrame()
    part = labelled(part)
    keys = ["model", "dataset", "metric", "score", "method", "x"]
    per_item = part.groupby([*keys, "item_id"], sort=False)["value"].mean().reset_index()
    out = []
    for key, group in per_item.groupby(keys, sort=False):
        values = group["value"].to_numpy()
        low, high = stats.bootstrap_ci(values)
        out.append(dict(zip(keys, key, strict=True), mean=float(np.mean(values)), ci_low=low, ci_high=high))
    return pd.DataFrame(out)


def curves(rows: pd.DataFrame, path: Path) -> Path | None:
    means = curve_means(rows)
    if means.empty:
        return None
    plt = _pyplot()
    panels = list(means.groupby(["model", "dataset", "metric", "score"], sort=False))[:MAX_PANELS]
    figure, axes = _grid(plt, len(panels))
    for axis, ((model, dataset, metric, score), group) in zip(axes, panels, strict=False):
        for method, line in group.groupby("method", sort=True):
            line = line.sort_values("x")
            drawn = axis.plot(line["x"], line["mean"], marker="o", markersize=3, label=method)
            axis.fill_between(line["x"], line["ci_low"], line["ci_high"], alpha=0.15, color=drawn[0].get_color())
        axis.set_title(f"{model} × {dataset}\n{metric}/{score}", fontsize=9, loc="left")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return _write(plt, figure, path)


def trends(compared: pd.DataFrame, path: Path) -> Path | None:
    """``compared`` is ``history.compare(history)``; needs at least one cell seen in two runs."""
    if compared.empty or compared["run_id"].nunique() < 2:
        return None
    plt = _pyplot()
    runs = list(dict.fromkeys(compared.sort_values(["time", "run_id"], kind="stable")["run_id"]))
    position = {run: i for i, run in enumerate(runs)}
    cells = ["model", "dataset", "split", "target_mode", "metric", "score"]
    panels = list(compared.groupby(cells, sort=False, dropna=False))[:MAX_PANELS]
    figure, axes = _grid(plt, len(panels), width=5.2)
    for axis, (cell, group) in zip(axes, panels, strict=False):
        for method, line in group.groupby("method", sort=True):
            x = line["run_id"].map(position)
            error = [(line["mean"] - line["ci_low"]).clip(lower=0), (line["ci_high"] - line["mean"]).clip(lower=0)]
            axis.errorbar(x, line["mean"], yerr=[e.fillna(0) for e in error], marker="o", markersize=3, label=method)
            bad = line[line["change"] == "regression"]
            axis.scatter(bad["run_id"].map(position), bad["mean"], s=90, facecolors="none", edgecolors="#cf222e")
        axis.set_title(f"{cell[0]} × {cell[1]}\n{cell[4]}/{cell[5]}", fontsize=9, loc="left")
        axis.set_xticks(range(len(runs)), [run[:15] for run in runs], rotation=30, fontsize=6, ha="right")
        axis.set_xlabel("run")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return _write(plt, figure, path)


def _write(plt, figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
