"""The summary board: per (model, dataset, metric, score) cell, each method's mean with a 95%
bootstrap CI, n, rank, and its paired difference to `random` over the same items (mean, CI,
Holm-corrected Wilcoxon p-value, verdict). Plus an overall mean rank across metrics.

Verdict: "beats random" needs both the Holm-corrected Wilcoxon p-value below 0.05 and the 95%
bootstrap CI of the paired difference lying entirely on the better side of 0 (above 0 when
higher is better, below when lower is better); "worse than random" is the mirror image; any
other tested method is "no better". So the test and the interval never disagree on a verdict.
A method with no item paired with `random` (or a cell without `random`) has no test and no
verdict.

Invalid rows (``valid`` false: a non-finite map or score, stored with its reason) are never
ranked, tested or gated: they are left out of every statistic and counted per cell and method
in ``invalid``. Only finite means are ranked: a method with no valid value has n = 0, a NaN
mean, no rank and no verdict, and shows as "–".

Each metric names its reference (the ``reference`` column): ``random`` for perturbation
metrics, so deltas and verdicts compare with the `random` method over the same items; a
reference that is not a method of the cell (``original`` for randomization checks, which
compare with the original model inside the metric) gives no paired test here.

Curve rows (a numeric ``x``, e.g. ROAD's accuracy per fraction) belong to the study boards;
this board summarises the scalar scores (``x`` NaN) only.

Stale plugin versions are superseded: for each of model, dataset, method and metric, among the
rows with the same name and params only those whose plugin version (and, for models and
datasets, revision) equals that of the newest row by `time` are kept. Rows of an older plugin
version or another data revision with the same params would otherwise be averaged per item as
if they were seeds. A frame without these columns counts as one version.

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
KINDS = ("model", "dataset", "method", "metric")
REVISIONED = ("model", "dataset")


def _groups(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each row's group among the distinct rows of ``frame`` (NaN a value of its own), and the
    position of each group's first row. Vectorised: hashing the columns, never a row of Python."""
    if frame.shape[1] == 0:
        return np.zeros(len(frame), dtype=np.int64), np.zeros(min(len(frame), 1), dtype=np.int64)
    codes = frame.groupby(list(frame.columns), sort=False, dropna=False).ngroup().to_numpy()
    return codes, np.unique(codes, return_index=True)[1]


def _text_codes(values: pd.Series) -> np.ndarray:
    """Codes equal where ``str(value)`` is equal (NaN as "\\x00"): so versions 1 and "1" are one
    version, as when they are compared as text. Only the distinct values are turned into text."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    distinct = pd.Series(np.asarray(uniques, dtype=object))
    text_codes, _ = pd.factorize(distinct.where(distinct.notna(), "\x00").astype(str))
    return text_codes[codes]


def current_versions(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose plugin version (and revision) is that of the newest row of their (name, params),
    within the same job identity otherwise (the other plugins, split, target mode).

    So a method re-run at version 2 on one model supersedes its version-1 rows there only; on a
    model not re-run, the version-1 rows still stand (never mixed with version 2 in one cell).
    Done for each kind independently; newest is by ``time`` (by row order without that column,
    the later row being the newer one; rows without a time are the oldest, and of rows with the
    same time the later one is the newer). Missing version or revision columns count as one
    version.
    """
    if rows.empty:
        return rows
    identity = [c for k in KINDS for c in (k, f"{k}_params") if c in rows] + [
        c for c in ("split", "target_mode") if c in rows
    ]
    group, _ = _groups(rows[identity])
    # Each row's place from oldest to newest; per identity the row with the highest place is the newest.
    order = rows["time"].reset_index(drop=True) if "time" in rows else pd.Series(np.arange(len(rows)))
    oldest_first = order.sort_values(kind="stable", na_position="first").index.to_numpy()
    place = np.empty(len(rows), dtype=np.int64)
    place[oldest_first] = np.arange(len(rows))
    highest = np.full(group.max() + 1, -1, dtype=np.int64)
    np.maximum.at(highest, group, place)
    newest_row = oldest_first[highest][group]  # positional: the caller's index may repeat labels
    keep = np.ones(len(rows), dtype=bool)
    for kind in KINDS:
        columns = [f"{kind}_version"] + ([f"{kind}_revision"] if kind in REVISIONED else [])
        columns = [c for c in columns if c in rows]
        if not columns:
            continue
        version, _ = _groups(pd.DataFrame({c: _text_codes(rows[c]) for c in columns}))
        keep &= version == version[newest_row]
    return rows[keep]


def variant_labels(frame: pd.DataFrame, name: str, params: str) -> pd.Series:
    """The plugin name, plus the parameters that differ when one name appears with several.

    Variants are told apart by params only: stale plugin versions are removed beforehand
    (``current_versions``). Labels are made once per distinct (name, params), then spread to the rows.
    """
    labels = frame[name].copy()
    pair, first = _groups(frame[[name, params]])
    pairs = frame[[name, params]].iloc[first].reset_index(drop=True)  # row i: the pair of code i
    relabel = pd.Series(None, index=pairs.index, dtype=object)
    for plugin, group in pairs.groupby(name):
        variants = group[params].unique()
        if len(variants) < 2:
            continue
        decoded = {v: json.loads(v) for v in variants}
        differing = sorted(
            {k for d in decoded.values() for k in d if len({json.dumps(x.get(k)) for x in decoded.values()}) > 1}
        )
        for code, variant in group[params].items():
            values = decoded[variant]
            suffix = ",".join(f"{k}={values.get(k)}" for k in differing)
            relabel[code] = f"{plugin}[{suffix}]"
    if relabel.notna().any():
        per_row = relabel.to_numpy()[pair]
        changed = pd.notna(per_row)
        labels[changed] = per_row[changed]
    return labels


def labelled(rows: pd.DataFrame) -> pd.DataFrame:
    """Current-version rows with variant labels (``occlusion[window=4]``) in the name columns."""
    rows = current_versions(rows).copy()
    for name in KINDS:
        rows[name] = variant_labels(rows, name, f"{name}_params")
    return rows


def scalar_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of per-item scalar scores (no ``x``), with defaults for columns older files lack."""
    if "x" in rows:
        rows = rows[rows["x"].isna()]
    rows = rows.copy()
    if "valid" not in rows:
        rows["valid"] = True
    rows["valid"] = rows["valid"].fillna(True).astype(bool)
    if "reference" not in rows:
        rows["reference"] = REFERENCE
    rows["reference"] = rows["reference"].fillna(REFERENCE)
    return rows


# What the statistics read: the identity and versions (for current_versions and labels), the cell,
# the item and its score. Other columns (environment, timings, keys) are dropped before the row
# filters, which then copy half as many columns.
STATISTIC_COLUMNS = frozenset(
    [c for kind in KINDS for c in (kind, f"{kind}_params", f"{kind}_version", f"{kind}_revision")]
    + [*CELL, "time", "method", "item_id", "value", "higher_is_better", "reference", "valid", "x", "invalid_reason"]
)


def statistic_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with only the columns in STATISTIC_COLUMNS (selecting columns copies no rows)."""
    return rows[[c for c in rows.columns if c in STATISTIC_COLUMNS]]


def _scored(rows: pd.DataFrame) -> pd.DataFrame:
    """``scalar_rows(labelled(rows))`` of the columns the statistics read."""
    return scalar_rows(labelled(statistic_columns(rows)))


def per_item(rows: pd.DataFrame) -> pd.DataFrame:
    """One value per (cell, method, item) from valid rows: stale versions dropped, labels for
    variants, values averaged over seeds."""
    return _per_item(_scored(rows))


def _per_item(scored: pd.DataFrame) -> pd.DataFrame:
    rows = scored[scored["valid"]]
    keys = [*CELL, "method", "item_id"]
    return rows.groupby(keys, as_index=False, sort=False).agg(
        value=("value", "mean"), higher_is_better=("higher_is_better", "first"), reference=("reference", "first")
    )


def invalid_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Invalid items per (cell, method), with their most common reason."""
    return _invalid_counts(_scored(rows))


def _invalid_counts(scored: pd.DataFrame) -> pd.DataFrame:
    bad = scored[~scored["valid"]]
    columns = [*CELL, "method", "invalid", "invalid_reason"]
    if bad.empty:
        return pd.DataFrame(columns=columns)
    grouped = bad.groupby([*CELL, "method"], sort=False)
    out = grouped["item_id"].nunique().rename("invalid").reset_index()
    reasons = grouped["invalid_reason"].agg(lambda r: r.mode().iloc[0] if r.notna().any() else "")
    return out.merge(reasons.rename("invalid_reason").reset_index(), on=[*CELL, "method"])[columns]


def environment_warnings(rows: pd.DataFrame) -> list[str]:
    """Cells whose compared rows were computed in different environments (torch version, CPU or
    GPU model): values are only reproducible within one (fits are pinned to one thread)."""
    columns = [c for c in ("torch_version", "cpu", "device") if c in rows]
    if not columns or rows.empty:
        return []
    warnings = []
    cells = ["model", "dataset", "metric"]
    # A few distinct (cell, environment) rows among many result rows: text is made for those only.
    seen = rows[cells + columns].drop_duplicates()
    environments = seen[columns].fillna("?").astype(str).agg(" / ".join, axis=1)
    for cell, values in environments.groupby([seen[c] for c in cells], sort=False):
        distinct = sorted(set(values))
        if len(distinct) > 1:
            warnings.append(
                f"{' x '.join(map(str, cell))}: rows from {len(distinct)} environments ({'; '.join(distinct)}); "
                "values may differ between them"
            )
    return warnings


def _mean(values: np.ndarray) -> float:
    """NaN for no values; no RuntimeWarning for an empty slice or inf - inf."""
    if not len(values):
        return float("nan")
    with np.errstate(invalid="ignore", over="ignore"):
        return float(values.mean())


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    from xaibench.boards.studies import owned_metrics  # study boards import this module

    if not rows.empty:
        rows = rows[~rows["metric"].isin(owned_metrics())]
    scored = _scored(rows)  # once for the per-item values and the invalid counts
    items = _per_item(scored)
    out = []
    for cell, group in items.groupby(CELL, sort=False):
        higher = bool(group["higher_is_better"].iloc[0])
        reference = str(group["reference"].iloc[0])
        wide = group.pivot(index="item_id", columns="method", values="value")
        # items x methods as one float array: column arithmetic without a pandas call per method
        table = wide.to_numpy(dtype=float)
        column = {method: i for i, method in enumerate(wide.columns)}
        base = table[:, column[reference]] if reference in column else None
        methods = list(dict.fromkeys(group["method"]))
        records = []
        for method in methods:
            scores = table[:, column[method]]
            values = scores[~np.isnan(scores)]
            low, high = stats.bootstrap_ci(values)
            record = dict(zip(CELL, cell, strict=True))
            record.update(
                method=method,
                mean=_mean(values),
                ci_low=low,
                ci_high=high,
                n=len(values),
                higher_is_better=higher,
                reference=reference,
            )
            if base is not None and method != reference:
                paired = ~np.isnan(scores) & ~np.isnan(base)
                diff = scores[paired] - base[paired]
                if len(diff):
                    record.update(delta=_mean(diff), n_paired=len(diff), p_raw=stats.wilcoxon_p(diff))
                    record["delta_low"], record["delta_high"] = stats.bootstrap_ci(diff)
            records.append(record)
        tested = [r for r in records if "p_raw" in r]
        for record, p in zip(tested, stats.holm([r["p_raw"] for r in tested]), strict=True):
            record["p_holm"] = p
            record["verdict"] = verdict(p, record["delta_low"], record["delta_high"], higher, reference)
        for record, rank in zip(records, stats.ranks(np.array([r["mean"] for r in records]), higher), strict=True):
            record["rank"] = int(rank) if np.isfinite(rank) else pd.NA
        out.extend(records)
    columns = [
        *CELL,
        "method",
        "rank",
        "mean",
        "ci_low",
        "ci_high",
        "n",
        "invalid",
        "delta",
        "delta_low",
        "delta_high",
        "p_holm",
        "verdict",
        "reference",
        "higher_is_better",
    ]
    board = pd.DataFrame(out).reindex(columns=[c for c in columns if c not in ("invalid",)])
    invalid = _invalid_counts(scored)
    if not invalid.empty:
        board = board.merge(invalid[[*CELL, "method", "invalid"]], on=[*CELL, "method"], how="outer")
    board["invalid"] = board["invalid"].fillna(0).astype(int) if "invalid" in board else 0
    board["n"] = board["n"].fillna(0).astype(int)
    board = board.reindex(columns=columns)
    board["rank"] = board["rank"].astype("Int64")  # unranked (non-finite mean) rows are <NA>, sorted last
    return board.sort_values([*CELL, "rank", "method"], kind="stable").reset_index(drop=True)


def verdict(
    p_holm: float, delta_low: float, delta_high: float, higher_is_better: bool, reference: str = REFERENCE
) -> str | None:
    """ "beats random" when p_holm < 0.05 and the difference's 95% CI excludes 0 on the better
    side; "worse than random" when p_holm < 0.05 and it excludes 0 on the worse side; else "no
    better". None (no verdict) without a test (NaN p-value). Another reference method is named
    in place of "random"."""
    if np.isnan(p_holm):
        return None
    if p_holm < stats.ALPHA:
        above, below = delta_low > 0, delta_high < 0  # False for a NaN interval
        if above or below:
            beats = above == higher_is_better
            if reference == REFERENCE:
                return VERDICT_BEATS if beats else VERDICT_WORSE
            return f"beats {reference}" if beats else f"worse than {reference}"
    return VERDICT_NO_BETTER


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
