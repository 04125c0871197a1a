"""Ground-truth board: where each method's map lies, against masks known by construction.

For datasets with a truth mask and named masks of pixels that carry no class information (the
``suppressor`` dataset of Wilming et al., ICML 2023: ``masks`` is the signal square,
``mask:suppressor`` a square of noise correlated with it), ``mass_in_mask`` run with
``mask: object`` gives the share of each map on the truth region (score ``mass``, higher is
better) and with ``mask: suppressor`` its share on the suppressor region (score
``distractor_mass``, lower is better: an explanation of where the class information is puts
none there; one faithful to the model may, since the model uses the region to cancel noise).

Per (model, dataset, setting, method): the mean share on each mask over items with a 95%
bootstrap CI (seeds averaged per item first), n, and for the suppressor the paired difference
to the ``random`` method over the same items with its CI (random spreads mass by area, so
above 0 means the method concentrates on the suppressor more than chance). ``pointing_game``
hit rates, when present, are shown beside. ``setting`` is the metric's other parameters
(``reduce``), so different reductions never mix.

Pure functions of stored rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench import stats
from xaibench.boards.summary import REFERENCE, current_versions, variant_labels

KEYS = ["model", "dataset", "setting", "method"]
COLUMNS = [*KEYS, "mask", "mean", "ci_low", "ci_high", "n", "delta", "delta_low", "delta_high"]


def _scalar_valid(rows: pd.DataFrame, metric: str, scores: set[str]) -> pd.DataFrame:
    part = rows[(rows["metric"] == metric) & rows["score"].isin(scores)]
    if "x" in part:
        part = part[part["x"].isna()]
    if "valid" in part:
        part = part[part["valid"].fillna(True).astype(bool)]
    return part


def _split_params(params: str) -> tuple[str, str]:
    """(mask name, the other parameters as sorted JSON; the role follows from the score name)."""
    values = json.loads(params) if isinstance(params, str) and params else {}
    mask = values.pop("mask", "object")
    values.pop("role", None)
    return mask, json.dumps(values, sort_keys=True)


def _per_item(part: pd.DataFrame) -> pd.DataFrame:
    """One value per (model, dataset, setting, method, mask, item): current versions, labelled
    variants, seeds averaged."""
    part = current_versions(part).copy()
    for name in ("model", "dataset", "method"):
        part[name] = variant_labels(part, name, f"{name}_params")
    split = part["metric_params"].map(_split_params)
    part["mask"] = [m for m, _ in split]
    part["setting"] = [s for _, s in split]
    return part.groupby([*KEYS, "mask", "item_id"], as_index=False, sort=False)["value"].mean()


def masses(rows: pd.DataFrame) -> pd.DataFrame:
    """Long table: per (model, dataset, setting, method, mask) the mean mass with CI and the
    paired difference to ``random`` (NaN when random has no paired item)."""
    part = _scalar_valid(rows, "mass_in_mask", {"mass", "distractor_mass"})
    if part.empty:
        return pd.DataFrame(columns=COLUMNS)
    items = _per_item(part)
    out = []
    for (model, dataset, setting, mask), cell in items.groupby(["model", "dataset", "setting", "mask"], sort=False):
        wide = cell.pivot_table(index="item_id", columns="method", values="value", aggfunc="mean")
        for method in wide.columns:
            values = wide[method].dropna().to_numpy()
            low, high = stats.bootstrap_ci(values)
            delta = delta_low = delta_high = float("nan")
            if REFERENCE in wide and method != REFERENCE:
                paired = (wide[method] - wide[REFERENCE]).dropna().to_numpy()
                if len(paired):
                    delta = float(paired.mean())
                    delta_low, delta_high = stats.bootstrap_ci(paired)
            out.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "setting": setting,
                    "method": method,
                    "mask": mask,
                    "mean": float(values.mean()) if len(values) else float("nan"),
                    "ci_low": low,
                    "ci_high": high,
                    "n": len(values),
                    "delta": delta,
                    "delta_low": delta_low,
                    "delta_high": delta_high,
                }
            )
    return pd.DataFrame(out, columns=COLUMNS)


def hit_rates(rows: pd.DataFrame) -> pd.DataFrame:
    """Pointing-game hit rate per (model, dataset, method), over valid items (seeds averaged)."""
    part = _scalar_valid(rows, "pointing_game", {"hit"})
    if part.empty:
        return pd.DataFrame(columns=["model", "dataset", "method", "hit"])
    part = current_versions(part).copy()
    for name in ("model", "dataset", "method"):
        part[name] = variant_labels(part, name, f"{name}_params")
    items = part.groupby(["model", "dataset", "method", "item_id"], as_index=False)["value"].mean()
    return (
        items.groupby(["model", "dataset", "method"], as_index=False)["value"].mean().rename(columns={"value": "hit"})
    )


def _interval(mean: float, low: float, high: float, signed: bool = False) -> str:
    if not np.isfinite(mean):
        return "–"
    form = "+.3f" if signed else ".3f"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:{form}}"
    return f"{mean:{form}} [{low:{form}}, {high:{form}}]"


def board(rows: pd.DataFrame, long: pd.DataFrame | None = None) -> pd.DataFrame:
    """Wide table: per method, truth mass [CI], each other mask's mass [CI] and its difference
    to random [CI], n, pointing-game hit rate; sorted by truth mass, best first."""
    long = masses(rows) if long is None else long  # (bootstrap CIs: computed once per board)
    if long.empty:
        return pd.DataFrame()
    out = []
    for key, group in long.groupby(KEYS, sort=False):
        by_mask = {row["mask"]: row for _, row in group.iterrows()}
        entry = dict(zip(KEYS, key, strict=True))
        truth = by_mask.get("object")
        entry["truth mass [95% CI]"] = (
            _interval(truth["mean"], truth["ci_low"], truth["ci_high"]) if truth is not None else "–"
        )
        entry["_truth"] = truth["mean"] if truth is not None else float("nan")
        entry["n"] = int(truth["n"]) if truth is not None else int(group["n"].max())
        for mask in sorted(m for m in by_mask if m != "object"):
            row = by_mask[mask]
            entry[f"{mask} mass [95% CI]"] = _interval(row["mean"], row["ci_low"], row["ci_high"])
            entry[f"{mask} − random [95% CI]"] = _interval(row["delta"], row["delta_low"], row["delta_high"], True)
        out.append(entry)
    frame = pd.DataFrame(out)
    hits = hit_rates(rows)
    if not hits.empty:
        frame = frame.merge(hits, on=["model", "dataset", "method"], how="left")
        frame["pointing hit"] = frame.pop("hit").map(lambda h: f"{h:.2f}" if np.isfinite(h) else "–")
    frame = frame.sort_values(["model", "dataset", "setting", "_truth"], ascending=[True, True, True, False])
    frame = frame.drop(columns="_truth").fillna("–")
    if frame["setting"].nunique() == 1:
        frame = frame.drop(columns="setting")
    return frame.reset_index(drop=True)


def _natural(label: str) -> list:
    """Sort key that orders ``low_snr[snr=0.25]`` before ``low_snr[snr=10.0]``."""
    return [float(part) if re.fullmatch(r"\d+(\.\d+)?", part) else part for part in re.split(r"(\d+(?:\.\d+)?)", label)]


def _setting(label: str) -> str:
    """``snr=0.5`` from ``low_snr[snr=0.5]``: the part that varies (and no square brackets, which
    the terminal renderer would read as markup)."""
    return label.split("[", 1)[1].rstrip("]") if "[" in label else label


def sweeps(rows: pd.DataFrame, long: pd.DataFrame | None = None) -> list[tuple[str, pd.DataFrame]]:
    """For each dataset run at several settings, one model per setting (a noise sweep as in
    ChaosMining): (dataset plugin, table of truth mass per method and setting, settings in
    natural order). A setting evaluated by several models is no sweep (its cells would mix)."""
    long = masses(rows) if long is None else long
    truth = long[long["mask"] == "object"]
    if truth.empty:
        return []
    out = []
    for plugin, part in truth.groupby(truth["dataset"].str.split("[").str[0], sort=True):
        settings = part.groupby("dataset")["model"].nunique()
        if len(settings) < 2 or (settings > 1).any() or part["setting"].nunique() > 1:
            continue
        wide = part.pivot_table(index="method", columns="dataset", values="mean", aggfunc="first")
        wide = wide[sorted(wide.columns, key=_natural)]
        out.append((plugin, wide.sort_values(wide.columns[-1], ascending=False)))
    return out


def tables(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    long = masses(rows)
    frame = board(rows, long)
    if frame.empty:
        return []
    title = (
        "Ground truth: share of each map on the truth region (higher is better) and on "
        "distractor masks such as the suppressor (lower is better; random = chance)"
    )
    out = [(title, frame)]
    for plugin, wide in sweeps(rows, long):
        shown = wide.map(lambda v: f"{v:.3f}" if np.isfinite(v) else "–")
        shown.columns = [_setting(c) for c in shown.columns]
        shown = shown.reset_index()
        out.append((f"Ground truth sweep: truth mass per method across {plugin} settings, one model each", shown))
    return out


def plot(rows: pd.DataFrame, path: Path) -> Path | None:
    long = masses(rows)
    if long.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = sweeps(rows, long)
    in_sweep = {column for _, wide in swept for column in wide.columns}
    cells = [c for c in long.groupby(["model", "dataset", "setting"], sort=False) if c[0][1] not in in_sweep]
    panels = len(cells) + len(swept)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 0.35 * long["method"].nunique() + 1.6))
    axes = np.atleast_1d(axes)
    for ax, (plugin, wide) in zip(axes[len(cells) :], swept, strict=True):
        _sweep_panel(ax, plugin, wide)
    for ax, ((model, dataset, _), cell) in zip(axes[: len(cells)], cells, strict=True):
        truth = cell[cell["mask"] == "object"].sort_values("mean")
        methods = list(truth["method"]) + [m for m in cell["method"].unique() if m not in set(truth["method"])]
        position = {m: i for i, m in enumerate(methods)}
        masks = ["object", *sorted(m for m in cell["mask"].unique() if m != "object")]
        height = 0.8 / len(masks)
        for j, mask in enumerate(masks):
            part = cell[cell["mask"] == mask]
            y = np.array([position[m] for m in part["method"]]) + (j - (len(masks) - 1) / 2) * height
            error = np.vstack([part["mean"] - part["ci_low"], part["ci_high"] - part["mean"]]).clip(min=0)
            label = "truth" if mask == "object" else mask
            ax.barh(y, part["mean"], height=height, xerr=np.nan_to_num(error), label=label, capsize=2)
        ax.set_yticks(range(len(methods)), methods, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the map's mass")
        ax.set_title(f"{model} × {dataset}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    if cells:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sweep_panel(ax, plugin: str, wide: pd.DataFrame) -> None:
    """Truth mass against the dataset setting, a line per method (random dashed, black)."""
    from matplotlib import colormaps

    positions = range(len(wide.columns))
    colours = colormaps["tab20"].colors  # 20 distinct colours: ten repeat within 15 methods
    for i, (method, values) in enumerate(wide.iterrows()):
        style = {"color": "black", "linestyle": "--"} if method == REFERENCE else {"color": colours[i % 20]}
        ax.plot(positions, values.to_numpy(), marker="o", markersize=3, label=method, **style)
    ax.set_xticks(list(positions), [_setting(c) for c in wide.columns], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("truth mass (share of the map on the relevant pixels)")
    ax.set_title(f"{plugin}: sweep, one model per setting", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
