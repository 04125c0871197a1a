"""The ROAR board (PROTOCOLS.md "ROAR"): per (model, dataset, roar configuration), ROAR and KAR
side by side. Pure functions of stored rows of the ``roar`` metric.

Tables:
- "accuracy by fraction": per method and fraction, the retrained models' test accuracy under
  ROAR and KAR with a 95% CI over repeats and items (hierarchical bootstrap: resample repeats,
  then items within each drawn repeat; PROTOCOLS.md "Statistics"), and the mask-leakage
  classifier's held-out accuracy with its flag.
- "summary": per method, the unmodified retrain's accuracy (x = 0, the same models for every
  method), the area under each curve (trapezoid over the fractions divided by their span: the
  curve's mean level, per repeat and item) with its CI, the paired difference of that area to
  `random` (same repeat, same item) with its CI, a Holm-corrected Wilcoxon p-value (per-item
  differences averaged over repeats; Holm across the methods of the cell and mode) and a verdict;
  ROAR: a lower area beats random (accuracy falls faster); KAR: a higher area beats random.
  The verdict needs the test and the interval to agree, as on the summary board.

Leakage flag: a (method, mode, fraction) is flagged when the 95% bootstrap CI (over items) of
the leakage classifier's accuracy lies above chance + ``LEAK_MARGIN`` (chance: the share of
the most common label among the scored items, 0.1 on digits). The margin of 0.1 is chosen so
that a classifier on random masks (near chance, CI half-width about 0.03 on 360 items) is never
flagged, while masks that reveal the class for even a tenth of the items beyond chance are.
A flagged method's ROAR/KAR difference to random may come from the masks' shape, not from
faithfulness: read it as confounded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench import stats
from xaibench.boards.summary import REFERENCE, VERDICT_BEATS, VERDICT_NO_BETTER, VERDICT_WORSE, current_versions

METRIC = "roar"
MODES = ("roar", "kar")
CELL = ["model", "dataset", "metric_params"]
LEAK_MARGIN = 0.1
FLAG = "LEAKS"


def hierarchical_ci(values: np.ndarray, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.SEED):
    """95% percentile CI of the mean of an (repeats, items) array: resample repeats, then items
    within each drawn repeat. (nan, nan) when there are fewer than two values or any is not finite."""
    values = np.asarray(values, dtype=float)
    if values.size < 2 or not np.isfinite(values).all():
        return (math.nan, math.nan)
    repeats, items = values.shape
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, repeats, size=(n_resamples, repeats))
    picks = rng.integers(0, items, size=(n_resamples, repeats, items))
    means = values[chosen[:, :, None], picks].mean(axis=(1, 2))
    tail = (1 - stats.LEVEL) / 2 * 100
    return (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def _rows(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty or "metric" not in rows:
        return rows.iloc[0:0]
    rows = rows[rows["metric"] == METRIC]
    if "valid" in rows:
        rows = rows[rows["valid"].fillna(False).astype(bool)]
    return current_versions(rows) if not rows.empty else rows


def _cube(cell: pd.DataFrame, score: str, method: str, items: list[str]) -> tuple[np.ndarray, list[float]]:
    """(repeats, fractions, items) values of one score of one method; fractions sorted."""
    part = cell[(cell["score"] == score) & (cell["method"] == method)]
    if part.empty:
        return np.empty((0, 0, len(items))), []
    repeat = part["repeat"].fillna(0).astype(int)
    table = part.assign(repeat=repeat).pivot_table(index=["repeat", "x"], columns="item_id", values="value")
    table = table.reindex(columns=items)
    repeats = sorted(table.index.get_level_values(0).unique())
    xs = sorted(table.index.get_level_values(1).unique())
    full = pd.MultiIndex.from_product([repeats, xs])
    cube = table.reindex(full).to_numpy().reshape(len(repeats), len(xs), len(items))
    return cube, [float(x) for x in xs]


def _area(cube: np.ndarray, xs: list[float]) -> np.ndarray:
    """Per (repeat, item): the curve's mean level over the fractions (trapezoid / span)."""
    if len(xs) == 1:
        return cube[:, 0, :]
    return np.trapezoid(cube, np.asarray(xs), axis=1) / (xs[-1] - xs[0])


def _items(cell: pd.DataFrame) -> list[str]:
    """Items every method has every score for (pairs with random stay paired)."""
    counts = cell.groupby("item_id").size()
    return sorted(counts.index[counts == counts.max()])


def _verdict(delta: float, low: float, high: float, p: float, lower_is_better: bool) -> str | None:
    if not np.isfinite(p) or not np.isfinite(low):
        return None
    better = high < 0 if lower_is_better else low > 0
    worse = low > 0 if lower_is_better else high < 0
    if p < stats.ALPHA and better:
        return VERDICT_BEATS
    if p < stats.ALPHA and worse:
        return VERDICT_WORSE
    return VERDICT_NO_BETTER


def _short_params(params_json: str) -> str:
    try:
        params = json.loads(params_json)
    except (TypeError, ValueError):
        return str(params_json)
    keep = ("fill", "target", "repeats", "retrain_epochs")
    return " · ".join(f"{k}={params[k]}" for k in keep if k in params)


def _title(cell: pd.DataFrame, what: str) -> str:
    first = cell.iloc[0]
    return f"roar · {what} · {first['model']} x {first['dataset']} · {first['metric_params']}"


def tables(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The ROAR and KAR tables of every cell; empty when no ``roar`` rows are given."""
    rows = _rows(rows)
    out: list[tuple[str, pd.DataFrame]] = []
    for _, cell in rows.groupby(CELL, sort=False):
        curves, summary = _cell_tables(cell)
        out.append((_title(cell, "accuracy by fraction"), curves))
        out.append((_title(cell, "summary (area under the accuracy curve; ROAR lower, KAR higher is better)"), summary))
    return out


def _chance(cell: pd.DataFrame, items: list[str]) -> float:
    labels = cell.drop_duplicates("item_id").set_index("item_id")["label"].reindex(items)
    return float(labels.value_counts(normalize=True).max()) if len(labels) else math.nan


def _cell_tables(cell: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    items = _items(cell)
    methods = list(dict.fromkeys(cell["method"]))
    chance = _chance(cell, items)
    curve_rows: dict[tuple[str, float], dict] = {}
    summary = {m: {"method": m} for m in methods}
    areas: dict[tuple[str, str], np.ndarray] = {}
    for method in methods:
        reference, _ = _cube(cell, "reference", method, items)
        if reference.size:
            low, high = hierarchical_ci(reference[:, 0, :])
            summary[method].update(reference_acc=np.nanmean(reference), reference_low=low, reference_high=high)
        flagged: list[tuple[str, bool]] = []
        for mode in MODES:
            cube, xs = _cube(cell, mode, method, items)
            leak, leak_xs = _cube(cell, f"leakage_{mode}", method, items)
            for k, x in enumerate(xs):
                row = curve_rows.setdefault((method, x), {"method": method, "fraction": x})
                low, high = hierarchical_ci(cube[:, k, :])
                row.update({f"{mode}_acc": np.nanmean(cube[:, k, :]), f"{mode}_low": low, f"{mode}_high": high})
            for k, x in enumerate(leak_xs):
                row = curve_rows.setdefault((method, x), {"method": method, "fraction": x})
                accuracy = leak[0, k, :]
                low, _ = stats.bootstrap_ci(accuracy)
                leaks = bool(np.isfinite(low) and low > chance + LEAK_MARGIN)
                row[f"leak_{mode}"] = float(np.mean(accuracy))
                row[f"leak_{mode}_flag"] = FLAG if leaks else ""
                flagged.append((mode, leaks))
            if cube.size:
                area = _area(cube, xs)
                areas[method, mode] = area
                low, high = hierarchical_ci(area)
                summary[method].update(
                    {f"{mode}_auc": float(area.mean()), f"{mode}_auc_low": low, f"{mode}_auc_high": high}
                )
        leak_values = [
            r[f"leak_{mode}"]
            for (m, _), r in curve_rows.items()
            if m == method
            for mode in MODES
            if f"leak_{mode}" in r
        ]
        summary[method]["leak_max"] = max(leak_values) if leak_values else math.nan
        # e.g. "roar 5/5 · kar 4/5": fractions whose leakage CI lies above chance + margin
        summary[method]["leak_flagged"] = " · ".join(
            f"{mode} {sum(hit for m, hit in flagged if m == mode)}/{sum(m == mode for m, _ in flagged)}"
            for mode in MODES
            if any(hit for m, hit in flagged if m == mode)
        )
    for mode in MODES:
        _compare(summary, areas, methods, mode)
    curves = pd.DataFrame(list(curve_rows.values()))
    summary_frame = pd.DataFrame(list(summary.values()))
    summary_frame.insert(1, "chance", chance)
    order = ["method", "chance", "reference_acc", "reference_low", "reference_high"]
    for mode in MODES:
        order += [f"{mode}_{s}" for s in ("auc", "auc_low", "auc_high", "delta", "delta_low", "delta_high")]
        order += [f"{mode}_p_holm", f"{mode}_verdict"]
    order += ["leak_max", "leak_flagged"]
    return curves, summary_frame.reindex(columns=[c for c in order if c in summary_frame])


def _compare(summary: dict, areas: dict, methods: list[str], mode: str) -> None:
    """Paired area differences to random, Holm across the methods of this mode, verdicts."""
    if (REFERENCE, mode) not in areas:
        return
    base = areas[REFERENCE, mode]
    tested, p_values = [], []
    for method in methods:
        if method == REFERENCE or (method, mode) not in areas or areas[method, mode].shape != base.shape:
            continue
        diff = areas[method, mode] - base
        low, high = hierarchical_ci(diff)
        summary[method].update(
            {f"{mode}_delta": float(diff.mean()), f"{mode}_delta_low": low, f"{mode}_delta_high": high}
        )
        tested.append(method)
        p_values.append(stats.wilcoxon_p(diff.mean(axis=0)))
    for method, p in zip(tested, stats.holm(p_values), strict=True):
        entry = summary[method]
        entry[f"{mode}_p_holm"] = p
        lower_is_better = mode == "roar"
        entry[f"{mode}_verdict"] = _verdict(
            entry[f"{mode}_delta"], entry[f"{mode}_delta_low"], entry[f"{mode}_delta_high"], p, lower_is_better
        )


def plot(rows: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy against fraction per method, ROAR and KAR panels per cell, the unmodified retrain at x = 0."""
    rows = _rows(rows)
    if rows.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(rows.groupby(CELL, sort=False))
    figure, axes = plt.subplots(len(cells), 2, figsize=(12, 4.2 * len(cells)), squeeze=False)
    for (_, cell), panel in zip(cells, axes, strict=True):
        curves, summary = _cell_tables(cell)
        reference = summary.set_index("method").get("reference_acc")
        for axis, mode in zip(panel, MODES, strict=True):
            if f"{mode}_acc" not in curves:
                axis.set_visible(False)
                continue
            for method, group in curves.groupby("method", sort=False):
                group = group.sort_values("fraction")
                start = [] if reference is None else [reference.get(method, math.nan)]
                xs = [0.0] * len(start) + group["fraction"].tolist()
                ys = start + group[f"{mode}_acc"].tolist()
                style = {"color": "black", "linestyle": "--", "linewidth": 2} if method == REFERENCE else {}
                line = axis.plot(xs, ys, marker="o", label=method, **style)[0]
                axis.fill_between(
                    group["fraction"], group[f"{mode}_low"], group[f"{mode}_high"], color=line.get_color(), alpha=0.12
                )
            direction = "lower is better" if mode == "roar" else "higher is better"
            first = cell.iloc[0]
            axis.set_title(
                f"{mode.upper()} ({direction}) · {first['model']} x {first['dataset']}", fontsize=9, loc="left"
            )
            axis.set_xlabel("fraction of pixels removed" if mode == "roar" else "fraction of pixels kept")
            axis.set_ylabel("test accuracy of the retrained model")
            axis.set_ylim(0, 1.02)
            axis.grid(alpha=0.3)
        panel[1].legend(fontsize=7, loc="lower right")
        panel[0].annotate(
            _short_params(cell.iloc[0]["metric_params"]), (0.01, 0.01), xycoords="axes fraction", fontsize=7
        )
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
