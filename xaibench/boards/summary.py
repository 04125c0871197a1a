"""The summary board: per (model, dataset, metric, score) cell, each method's mean with a 95%
bootstrap CI, n, rank, and its paired difference to `random` over the same items (mean, CI,
Holm-corrected Wilcoxon p-value, verdict). Plus an overall mean rank across metrics.

Pure functions of the result rows; nothing is computed while running.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from xaibench import stats

REFERENCE = "random"
CELL = ["model", "dataset", "split", "target_mode", "metric", "score"]
VERDICT_BEATS, VERDICT_NO_BETTER, VERDICT_WORSE = "beats random", "no better", "worse than random"


def variant_labels(frame: pd.DataFrame, name: str, params: str) -> pd.Series:
    """The plugin name, plus the parameters that differ when one name appears with several."""
    labels = frame[name].copy()
    for plugin, group in frame.groupby(name):
        variants = group[params].unique()
        if len(variants) < 2:
            continue
        decoded = {v: json.loads(v) for v in variants}
        differing = sorted(
            {k for d in decoded.values() for k in d if len({json.dumps(x.get(k)) for x in decoded.values()}) > 1}
        )
        for variant, values in decoded.items():
            suffix = ",".join(f"{k}={values.get(k)}" for k in differing)
            labels[(frame[name] == plugin) & (frame[params] == variant)] = f"{plugin}[{suffix}]"
    return labels


def per_item(rows: pd.DataFrame) -> pd.DataFrame:
    """One value per (cell, method, item): labels for variants, values averaged over seeds."""
    rows = rows.copy()
    for name in ("model", "dataset", "method", "metric"):
        rows[name] = variant_labels(rows, name, f"{name}_params")
    keys = [*CELL, "method", "item_id"]
    return rows.groupby(keys, as_index=False, sort=False).agg(
        value=("value", "mean"), higher_is_better=("higher_is_better", "first")
    )


def summary(rows: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    items = per_item(rows)
    out = []
    for cell, group in items.groupby(CELL, sort=False):
        higher = bool(group["higher_is_better"].iloc[0])
        wide = group.pivot(index="item_id", columns="method", values="value")
        methods = list(dict.fromkeys(group["method"]))
        records = []
        for method in methods:
            values = wide[method].dropna().to_numpy()
            low, high = stats.bootstrap_ci(values)
            record = dict(zip(CELL, cell, strict=True))
            record.update(
                method=method,
                mean=values.mean(),
                ci_low=low,
                ci_high=high,
                n=len(values),
                higher_is_better=higher,
            )
            if reference in wide and method != reference:
                paired = wide[[method, reference]].dropna()
                diff = (paired[method] - paired[reference]).to_numpy()
                record.update(delta=diff.mean(), n_paired=len(diff), p_raw=stats.wilcoxon_p(diff))
                record["delta_low"], record["delta_high"] = stats.bootstrap_ci(diff)
            records.append(record)
        tested = [r for r in records if "p_raw" in r]
        for record, p in zip(tested, stats.holm([r["p_raw"] for r in tested]), strict=True):
            record["p_holm"] = p
            record["verdict"] = verdict(record["delta"], p, higher)
        for record, rank in zip(records, stats.ranks(np.array([r["mean"] for r in records]), higher), strict=True):
            record["rank"] = int(rank)
        out.extend(records)
    columns = [
        *CELL,
        "method",
        "rank",
        "mean",
        "ci_low",
        "ci_high",
        "n",
        "delta",
        "delta_low",
        "delta_high",
        "p_holm",
        "verdict",
        "higher_is_better",
    ]
    board = pd.DataFrame(out).reindex(columns=columns)
    return board.sort_values([*CELL, "rank", "method"], kind="stable").reset_index(drop=True)


def verdict(delta: float, p_holm: float, higher_is_better: bool) -> str:
    if p_holm >= stats.ALPHA or delta == 0:
        return VERDICT_NO_BETTER
    better = delta > 0 if higher_is_better else delta < 0
    return VERDICT_BEATS if better else VERDICT_WORSE


def overall(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean rank of each method across the metrics of a (model, dataset), with bootstrap spread."""
    items = per_item(rows)
    out = []
    for (model, dataset), group in items.groupby(["model", "dataset"], sort=False):
        methods = sorted(group["method"].unique())
        tables = []
        for _, cell in group.groupby(["split", "target_mode", "metric", "score"], sort=False):
            wide = cell.pivot(index="item_id", columns="method", values="value").reindex(columns=methods).dropna()
            if len(wide):
                tables.append((wide.to_numpy(), bool(cell["higher_is_better"].iloc[0])))
        if not tables:
            continue
        point, low, high = stats.bootstrap_mean_ranks(tables)
        for method, p, lo, hi in zip(methods, point, low, high, strict=True):
            out.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "method": method,
                    "mean_rank": p,
                    "rank_low": lo,
                    "rank_high": hi,
                    "metrics": len(tables),
                }
            )
    board = pd.DataFrame(out, columns=["model", "dataset", "method", "mean_rank", "rank_low", "rank_high", "metrics"])
    return board.sort_values(["model", "dataset", "mean_rank"], kind="stable").reset_index(drop=True)
