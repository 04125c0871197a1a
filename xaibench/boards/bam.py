"""BAM board (Yang and Kim, 2019): MCS, IDR and IIR per method, joined from the per-item rows of
the `mcs`, `idr` and `iir` metrics (xaibench/metrics/bam.py), each with a 95% bootstrap CI, its
paired difference to `random` over the same items (CI, Holm-corrected Wilcoxon p, verdict as on
the summary board) and `random`'s own IIR beside every method's.

- MCS: rows of one item under the object model (dataset ``labels: object``) and the scene model
  (``labels: scene``), same method, both classified correctly: object minus scene region
  attribution. Higher is better, in [-1, 1].
- IDR: scene-model rows whose image and scene-only image are both classified correctly: 1 when
  the region gets more attribution on the scene-only image. Higher is better; the rate in [0, 1].
- IIR: per model, rows whose image and patched image are both classified correctly and whose
  logits change by less than ``max_logit_change`` (the metric's parameter): 1 when the patch
  region's attribution changes by less than ``tolerance`` of itself. Higher is better.

Rows with another normalisation (``normalize`` in ``metric_params``) are separate table rows.
The model's label set is read from the dataset's ``labels`` parameter in ``dataset_params``.
Pure functions of stored rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench import stats
from xaibench.boards.summary import current_versions, variant_labels

METRICS = ("mcs", "idr", "iir")
OWNS = METRICS  # their rows are ingredients of MCS/IDR/IIR: the summary board leaves them out
REFERENCE = "random"
GROUP = ["data", "split", "normalize", "method"]
VERDICT_BEATS, VERDICT_NO_BETTER, VERDICT_WORSE = "beats random", "no better", "worse than random"


def _params(value) -> dict:
    return json.loads(value) if isinstance(value, str) and value else {}


def _prepare(rows: pd.DataFrame) -> pd.DataFrame:
    """Valid scalar rows of the BAM metrics with ``side`` (label set), ``data`` and ``normalize``."""
    if rows.empty or "metric" not in rows:
        return rows.iloc[0:0]
    rows = rows[rows["metric"].isin(METRICS)]
    if "x" in rows:
        rows = rows[rows["x"].isna()]
    if "valid" in rows:
        rows = rows[rows["valid"].fillna(True).astype(bool)]
    if rows.empty:
        return rows
    rows = current_versions(rows).copy()
    rows["method"] = variant_labels(rows, "method", "method_params")
    dataset_params = rows["dataset_params"].map(_params)
    rows["side"] = dataset_params.map(lambda p: p.get("labels", "object"))
    rows["data"] = rows["dataset"] + dataset_params.map(
        lambda p: json.dumps({k: v for k, v in p.items() if k != "labels"}, sort_keys=True)
    )
    metric_params = rows["metric_params"].map(_params)
    rows["normalize"] = metric_params.map(lambda p: p.get("normalize", "bam"))
    rows["correct"] = (rows["prediction"] == rows["label"]).astype(float)
    seed = rows.get("seed", 0)
    rows["unit"] = rows["item_id"].astype(str) + "#" + pd.Series(seed, index=rows.index).astype(str)
    return rows


def _wide(rows: pd.DataFrame, metric: str, extra: list[str]) -> pd.DataFrame:
    """One row per (model, data, normalize, method, unit) with the metric's scores as columns."""
    part = rows[rows["metric"] == metric]
    if part.empty:
        return pd.DataFrame()
    keys = ["model", "side", *GROUP, "unit", "correct", *extra]
    return part.pivot_table(index=keys, columns="score", values="value", aggfunc="mean").reset_index()


def mcs_items(rows: pd.DataFrame) -> pd.DataFrame:
    """Per item: object-model minus scene-model region attribution, over items both get right."""
    wide = _wide(rows, "mcs", [])
    if wide.empty or "region" not in wide:
        return pd.DataFrame(columns=[*GROUP, "unit", "value"])
    right = wide[wide["correct"] == 1]
    obj, scene = right[right["side"] == "object"], right[right["side"] == "scene"]
    both = obj.merge(scene, on=[*GROUP, "unit"], suffixes=("_obj", "_scene"))
    both["value"] = both["region_obj"] - both["region_scene"]
    return both[[*GROUP, "unit", "value"]]


def idr_items(rows: pd.DataFrame) -> pd.DataFrame:
    """Per scene-model item, both images right: 1 if the region gets more without the object."""
    wide = _wide(rows, "idr", [])
    if wide.empty or not {"region", "region_scene_only", "correct_scene_only"} <= set(wide):
        return pd.DataFrame(columns=[*GROUP, "unit", "value"])
    keep = (wide["side"] == "scene") & (wide["correct"] == 1) & (wide["correct_scene_only"] == 1)
    part = wide[keep].copy()
    part["value"] = (part["region_scene_only"] > part["region"]).astype(float)
    return part[[*GROUP, "unit", "value"]]


def iir_items(rows: pd.DataFrame) -> pd.DataFrame:
    """Per item and model, functionally insignificant patch (logits nearly unchanged), both right:
    1 if the patch region's attribution changes by less than ``tolerance`` of itself."""
    part = rows[rows["metric"] == "iir"].copy()
    if part.empty:
        return pd.DataFrame(columns=["side", *GROUP, "unit", "value"])
    params = part["metric_params"].map(_params)
    part["max_logit_change"] = params.map(lambda p: p.get("max_logit_change", 0.1))
    part["tolerance"] = params.map(lambda p: p.get("tolerance", 0.1))
    wide = _wide(part, "iir", ["max_logit_change", "tolerance"])
    needed = {"region", "region_patched", "logit_change", "correct_patched"}
    if not needed <= set(wide):
        return pd.DataFrame(columns=["side", *GROUP, "unit", "value"])
    keep = (wide["correct"] == 1) & (wide["correct_patched"] == 1) & (wide["logit_change"] < wide["max_logit_change"])
    wide = wide[keep].copy()
    change = (wide["region_patched"] - wide["region"]).abs()
    wide["value"] = (change < wide["tolerance"] * wide["region"]).astype(float)
    return wide[["side", *GROUP, "unit", "value"]]


def _verdict(diff: float, low: float, high: float, p: float) -> str:
    if not np.isfinite(p) or not np.isfinite(low):
        return ""
    if p < stats.ALPHA and low > 0:
        return VERDICT_BEATS
    if p < stats.ALPHA and high < 0:
        return VERDICT_WORSE
    return VERDICT_NO_BETTER


def summarise(items: pd.DataFrame, name: str, keys: list[str]) -> pd.DataFrame:
    """Mean, CI and n per method, and the paired difference to `random` (CI, Holm p, verdict)."""
    out = []
    for cell, group in items.groupby(keys, sort=True):
        cell = cell if isinstance(cell, tuple) else (cell,)
        reference = group[group["method"] == REFERENCE].set_index("unit")["value"]
        cell_rows = []
        for method, part in group.groupby("method", sort=True):
            values = part["value"].to_numpy(float)
            low, high = stats.bootstrap_ci(values)
            row = dict(zip(keys, cell, strict=True))
            row.update(method=method, mean=values.mean() if len(values) else np.nan, low=low, high=high)
            row.update(n=len(values), diff=np.nan, diff_low=np.nan, diff_high=np.nan, p=np.nan)
            if method != REFERENCE and len(reference):
                paired = part.set_index("unit")["value"].align(reference, join="inner")
                differences = (paired[0] - paired[1]).to_numpy(float)
                if len(differences):
                    row["diff"] = differences.mean()
                    row["diff_low"], row["diff_high"] = stats.bootstrap_ci(differences)
                    row["p"] = stats.wilcoxon_p(differences)
            cell_rows.append(row)
        tested = [r for r in cell_rows if np.isfinite(r["p"])]
        for r, adjusted in zip(tested, stats.holm([r["p"] for r in tested]), strict=True):
            r["p"] = adjusted
        for r in cell_rows:
            r["verdict"] = _verdict(r["diff"], r["diff_low"], r["diff_high"], r["p"])
        out.extend(cell_rows)
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    renamed = {c: f"{name} {c}" for c in ("mean", "low", "high", "n", "diff", "diff_low", "diff_high", "p", "verdict")}
    return frame.rename(columns=renamed)


def scores(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Numeric per-method summaries: MCS, IDR, IIR (per model side)."""
    rows = _prepare(rows)
    if rows.empty:
        return {}
    return {
        "MCS": summarise(mcs_items(rows), "MCS", GROUP[:-1]),
        "IDR": summarise(idr_items(rows), "IDR", GROUP[:-1]),
        "IIR": summarise(iir_items(rows), "IIR", ["side", *GROUP[:-1]]),
    }


def _fmt(mean: float, low: float, high: float, signed: bool = False) -> str:
    if not np.isfinite(mean):
        return "–"
    f = "{:+.3f}" if signed else "{:.3f}"
    interval = f" [{f.format(low)}, {f.format(high)}]" if np.isfinite(low) else ""
    return f.format(mean) + interval


def _column(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=[*GROUP])
    shown = frame[GROUP[:-1] + ["method"]].copy()
    shown[name] = [
        _fmt(m, lo, hi)
        for m, lo, hi in zip(frame[f"{name} mean"], frame[f"{name} low"], frame[f"{name} high"], strict=True)
    ]
    shown[f"{name} n"] = frame[f"{name} n"].astype(int)
    shown[f"{name} − random"] = [
        _fmt(d, lo, hi, signed=True)
        for d, lo, hi in zip(frame[f"{name} diff"], frame[f"{name} diff_low"], frame[f"{name} diff_high"], strict=True)
    ]
    shown[f"{name} verdict"] = frame[f"{name} verdict"]
    return shown


def _short(data: pd.Series) -> pd.Series:
    """The dataset's name, with its parameters only where one name has several settings."""
    names = data.str.split("{", n=1).str[0]
    clash = names.map(data.groupby(names).nunique()) > 1
    return names.where(~clash, data)


def tables(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    found = scores(rows)
    if not found:
        return []
    iir = found["IIR"]
    headline_iir = iir
    if not iir.empty:
        # BAM measures IIR on the scene model; the object model's IIR is in its own table.
        side = "scene" if (iir["side"] == "scene").any() else "object"
        headline_iir = iir[iir["side"] == side].drop(columns="side")
    table = None
    for name, frame in (("MCS", found["MCS"]), ("IDR", found["IDR"]), ("IIR", headline_iir)):
        shown = _column(frame, name)
        if shown.empty:
            continue
        table = shown if table is None else table.merge(shown, on=GROUP, how="outer")
    if table is None:
        return []
    if not headline_iir.empty:
        reference = headline_iir[headline_iir["method"] == REFERENCE]
        beside = reference[GROUP[:-1]].assign(
            **{
                "IIR random": [
                    _fmt(m, lo, hi)
                    for m, lo, hi in zip(
                        reference["IIR mean"], reference["IIR low"], reference["IIR high"], strict=True
                    )
                ]
            }
        )
        table = table.merge(beside, on=GROUP[:-1], how="left")
    table = table.sort_values(GROUP).reset_index(drop=True)
    table["data"] = _short(table["data"])
    table = table.rename(columns={"data": "dataset"})
    out = [("BAM: MCS, IDR and IIR (scene model) per method (higher is better; IIR beside random's)", table)]
    if not iir.empty and iir["side"].nunique() > 1:
        per_side = _column(iir.drop(columns="side"), "IIR").assign(**{"model label set": iir["side"].to_numpy()})
        per_side["data"] = _short(per_side["data"])
        per_side = per_side.rename(columns={"data": "dataset"})
        out.append(("BAM: IIR per model label set (higher is better)", per_side))
    return out


def plot(rows: pd.DataFrame, path: Path) -> Path | None:
    """Bars of MCS, IDR and IIR per method with their CIs."""
    found = scores(rows)
    if not found or all(f.empty for f in found.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, name in zip(axes, ("MCS", "IDR", "IIR"), strict=True):
        frame = found[name]
        if name == "IIR" and not frame.empty:
            frame = frame[frame["side"] == ("scene" if (frame["side"] == "scene").any() else "object")]
        if frame.empty:
            ax.set_visible(False)
            continue
        frame = frame.groupby("method", as_index=False).first()
        mean = frame[f"{name} mean"].to_numpy(float)
        err = np.vstack([mean - frame[f"{name} low"].to_numpy(float), frame[f"{name} high"].to_numpy(float) - mean])
        ax.bar(
            frame["method"],
            mean,
            yerr=np.nan_to_num(err),
            color=["grey" if m == REFERENCE else "C0" for m in frame["method"]],
        )
        ax.set_title(name)
        ax.tick_params(axis="x", rotation=70, labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
