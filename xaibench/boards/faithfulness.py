"""Faithfulness study board: the LeRF-minus-MoRF gap of deletion/insertion, and ROAD curves.

Gap (after Rong et al., ROAD, ICML 2022): a deletion run with ``order: morf`` stores score
``auc`` and one with ``order: lerf`` stores ``lerf_auc`` for the same items. Per item the gap is
LeRF area minus MoRF area for deletion (a faithful map keeps the prediction when the least
important pixels go, and loses it when the most important go: a large positive gap), and MoRF
minus LeRF for insertion. Because both orders remove pixels with the same fill, the fill's own
effect largely cancels: the gap is robust to the baseline choice. Reported per method with a
bootstrap CI over items; higher is better.

ROAD curves: the mean target probability (``*_prob``) and accuracy (``*_correct``) at each
removal fraction, per method and order, from ROAD's curve rows (``x`` = fraction).

Pure functions of stored rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench import stats
from xaibench.boards.summary import labelled, statistic_columns

GAP_METRICS = {"deletion": ("lerf_auc", "auc"), "insertion": ("auc", "lerf_auc")}  # (minuend, subtrahend)


def _valid(rows: pd.DataFrame) -> pd.DataFrame:
    if "valid" in rows:
        rows = rows[rows["valid"].fillna(True).astype(bool)]
    return rows


def _without_order(params: str) -> str:
    values = json.loads(params)
    values.pop("order", None)
    return json.dumps(values, sort_keys=True)


def gap(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, metric, method): mean LeRF-MoRF gap over paired items with its CI."""
    out = []
    rows = _valid(statistic_columns(rows))  # fewer columns to copy in each row filter
    for metric, (first, second) in GAP_METRICS.items():
        part = rows[(rows["metric"] == metric) & rows["score"].isin([first, second])]
        if "x" in part:
            part = part[part["x"].isna()]
        if part.empty or part["score"].nunique() < 2:
            continue
        # json per distinct params, not per row
        settings = {params: _without_order(params) for params in part["metric_params"].unique()}
        part = part.assign(setting=part["metric_params"].map(settings))
        keys = ["model", "dataset", "setting", "method", "method_params"]
        for key, group in part.groupby(keys, sort=False):
            wide = group.pivot_table(index="item_id", columns="score", values="value", aggfunc="mean")
            if first not in wide or second not in wide:
                continue
            diff = (wide[first] - wide[second]).dropna().to_numpy()
            low, high = stats.bootstrap_ci(diff)
            out.append(
                {
                    "model": key[0],
                    "dataset": key[1],
                    "metric": metric,
                    "method": key[3],
                    "gap": float(np.mean(diff)) if len(diff) else float("nan"),
                    "ci_low": low,
                    "ci_high": high,
                    "n": len(diff),
                }
            )
    frame = pd.DataFrame(out, columns=["model", "dataset", "metric", "method", "gap", "ci_low", "ci_high", "n"])
    return frame.sort_values(["model", "dataset", "metric", "gap"], ascending=[True, True, True, False])


def road_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean ROAD curve value per (model, dataset, method, score, fraction)."""
    part = _valid(statistic_columns(rows)[rows["metric"] == "road"])  # fewer columns to copy
    if part.empty or "x" not in part:
        return pd.DataFrame()
    part = labelled(part)
    part = part[part["x"].notna()]
    if part.empty:
        return pd.DataFrame()
    means = part.groupby(["model", "dataset", "method", "score", "x"], sort=False)["value"].mean().reset_index()
    wide = means.pivot_table(index=["model", "dataset", "score", "method"], columns="x", values="value")
    wide.columns = [f"{x:g}" for x in wide.columns]
    return wide.reset_index()


def tables(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    out = []
    frame = gap(rows)
    if not frame.empty:
        shown = frame.assign(
            **{
                "gap [95% CI]": [
                    f"{g:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                    for g, lo, hi in zip(frame.gap, frame.ci_low, frame.ci_high, strict=True)
                ]
            }
        )[["model", "dataset", "metric", "method", "gap [95% CI]", "n"]]
        out.append(("LeRF − MoRF gap (higher is better; robust to the fill)", shown))
    curves = road_curves(rows)
    if not curves.empty:
        out.append(("ROAD: mean value per removal fraction (MoRF lower is better, LeRF higher)", curves))
    return out


def plot(rows: pd.DataFrame, path: Path) -> Path | None:
    curves = road_curves(rows)
    if curves.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [s for s in ("morf_prob", "lerf_prob", "morf_correct", "lerf_correct") if s in set(curves["score"])]
    fig, axes = plt.subplots(1, len(scores), figsize=(4 * len(scores), 3.4), squeeze=False)
    fractions = [c for c in curves.columns if c not in ("model", "dataset", "score", "method")]
    for ax, score in zip(axes[0], scores, strict=True):
        for _, row in curves[curves["score"] == score].iterrows():
            ax.plot([float(f) for f in fractions], [row[f] for f in fractions], marker="o", label=row["method"])
        ax.set_title(score.replace("_", " "))
        ax.set_xlabel("fraction removed")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
