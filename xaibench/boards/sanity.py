"""The sanity board: per method, similarity to the original map against the number of randomised
layers (a table and a PNG plot), and each check's final value with its 95% bootstrap CI and a
pass/fail against the documented threshold (``gate_schema.SANITY_PASS``: a similarity passes
below 0.5, eMPRT's complexity rise above 0), as the ``passes`` gate judges it.

Published finding to read it against (Adebayo et al., NeurIPS 2018): gradient and Grad-CAM maps
change strongly under cascading randomization; guided backprop and guided Grad-CAM largely do
not. Model-independent controls (``sobel``, seeded ``random``) stay at 1 and fail by design.

Pure functions of stored rows: stale plugin versions are dropped as on the summary board,
invalid rows (NaN similarity of a constant map) are left out of means and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xaibench import stats
from xaibench.boards.summary import current_versions, variant_labels
from xaibench.gate_schema import SANITY_PASS

GROUP = ["model", "dataset", "metric"]


def _prepare(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty or "metric" not in rows:
        return rows.iloc[0:0]
    rows = rows[rows["metric"].isin(SANITY_PASS)]
    if rows.empty:
        return rows
    rows = current_versions(rows).copy()
    rows["check"] = rows["metric"]
    for name in ("model", "dataset", "method", "metric"):
        if f"{name}_params" in rows:
            rows[name] = variant_labels(rows, name, f"{name}_params")
    valid = rows["valid"].fillna(True).astype(bool) if "valid" in rows else pd.Series(True, index=rows.index)
    rows["value"] = rows["value"].where(valid & np.isfinite(rows["value"].astype(float)))
    return rows


def curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean similarity per (model, dataset, metric variant, method) at each x (layers randomised)."""
    rows = _prepare(rows)
    rows = rows[(rows["score"] == "similarity") & rows["x"].notna()] if not rows.empty else rows
    if rows.empty:
        return pd.DataFrame()
    per_item = rows.groupby([*GROUP, "method", "x_label", "x", "item_id"], sort=False)["value"].mean()
    table = per_item.groupby(level=[*GROUP, "method", "x_label", "x"], sort=False).mean().unstack("x")
    table.columns = [f"{int(x)}" if float(x).is_integer() else f"{x:g}" for x in table.columns]
    return table.reset_index()


def finals(rows: pd.DataFrame) -> pd.DataFrame:
    """Each check's pass score per method: mean, 95% CI, n, invalid rows, threshold, pass/fail."""
    rows = _prepare(rows)
    if rows.empty:
        return pd.DataFrame()
    out = []
    for (model, dataset, metric, check), group in rows.groupby([*GROUP, "check"], sort=False):
        score, threshold = SANITY_PASS[check]
        group = group[(group["score"] == score) & group["x"].isna()]
        for method, cell in group.groupby("method", sort=False):
            values = cell.groupby("item_id")["value"].mean()
            finite = values.dropna().to_numpy()
            higher = bool(cell["higher_is_better"].iloc[0])
            mean = float(finite.mean()) if len(finite) else float("nan")
            low, high = stats.bootstrap_ci(finite)
            passed = bool(np.isfinite(mean) and (mean > threshold if higher else mean < threshold))
            out.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "metric": metric,
                    "score": score,
                    "method": method,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n": len(finite),
                    "invalid": int(values.isna().sum()),
                    "threshold": f"{'>' if higher else '<'} {threshold:g}",
                    "result": "pass" if passed else "FAIL",
                }
            )
    return pd.DataFrame(out)


def tables(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Titled tables: similarity by layers randomised, and pass/fail of each check."""
    out = []
    curve = curves(rows)
    if not curve.empty:
        out.append(("sanity: mean similarity to the original map by layers randomised (lower = more sensitive)", curve))
    final = finals(rows)
    if not final.empty:
        out.append(("sanity: final value per check, 95% CI, pass/fail", final))
    return out


def plot(rows: pd.DataFrame, path: Path) -> Path | None:
    """One panel per (model, dataset, metric variant): each method's mean similarity by step."""
    curve = curves(rows)
    if curve.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c for c in curve.columns if c not in (*GROUP, "method", "x_label")]
    panels = list(curve.groupby(GROUP, sort=False))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for axis, ((model, dataset, metric), group) in zip(axes.flat, panels, strict=True):
        for _, row in group.iterrows():
            xs = [float(s) for s in steps if pd.notna(row[s])]
            axis.plot(xs, [row[s] for s in steps if pd.notna(row[s])], marker="o", label=row["method"])
        axis.axhline(SANITY_PASS.get(metric.split("[")[0], ("", 0.5))[1], color="grey", linestyle="--", linewidth=1)
        axis.set_title(f"{metric}\n{model} x {dataset}", fontsize=9)
        axis.set_xlabel(group["x_label"].iloc[0])
        axis.set_ylabel("similarity to the original map")
        axis.set_ylim(-0.25, 1.05)
        axis.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
