"""The vectorised board helpers (stale versions, variant labels, environment warnings) give what
their plain row-by-row definitions give, on random frames with NaNs, ties and repeated index
labels. The references below are the earlier row-wise implementations, kept as oracles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from xaibench.boards import summary as board


def reference_current_versions(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return rows
    position = pd.RangeIndex(len(rows))
    keep = np.ones(len(rows), dtype=bool)
    order = rows["time"].reset_index(drop=True) if "time" in rows else np.arange(len(rows))
    for kind in board.KINDS:
        columns = [f"{kind}_version"] + ([f"{kind}_revision"] if kind in board.REVISIONED else [])
        columns = [c for c in columns if c in rows]
        if not columns:
            continue
        version = pd.Series("", index=position)
        for column in columns:
            values = pd.Series(rows[column].to_numpy(dtype=object), index=position)
            version = version + "\x1f" + values.where(values.notna(), "\x00").astype(str)
        identity = [c for k in board.KINDS for c in (k, f"{k}_params") if c in rows] + [
            c for c in ("split", "target_mode") if c in rows
        ]
        frame = pd.DataFrame({c: rows[c].to_numpy() for c in identity}, index=position)
        frame = frame.assign(version=version, order=order)
        frame = frame.sort_values("order", kind="stable", na_position="first")
        newest = frame.groupby(identity, sort=False, dropna=False)["version"].transform("last")
        keep &= (newest.sort_index() == version).to_numpy()
    return rows[keep]


def reference_variant_labels(frame: pd.DataFrame, name: str, params: str) -> pd.Series:
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


def reference_environment_warnings(rows: pd.DataFrame) -> list[str]:
    columns = [c for c in ("torch_version", "cpu", "device") if c in rows]
    if not columns or rows.empty:
        return []
    warnings = []
    environments = rows[columns].fillna("?").astype(str).agg(" / ".join, axis=1)
    for cell, values in environments.groupby([rows[c] for c in ("model", "dataset", "metric")], sort=False):
        distinct = sorted(set(values))
        if len(distinct) > 1:
            warnings.append(
                f"{' x '.join(map(str, cell))}: rows from {len(distinct)} environments ({'; '.join(distinct)}); "
                "values may differ between them"
            )
    return warnings


PARAMS = [json.dumps({}), json.dumps({"window": 4}), json.dumps({"window": 8}), json.dumps({"window": 4, "x": 1})]


def random_rows(seed: int, n: int = 300, with_time: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def pick(values):
        return [values[i] for i in rng.integers(0, len(values), n)]

    frame = pd.DataFrame(
        {
            "model": pick(["m1", "m2"]),
            "model_params": pick(PARAMS[:2]),
            "model_version": pick(["1", "2", None]),
            "model_revision": pick(["a", "b"]),
            "dataset": pick(["d1", "d2", None]),
            "dataset_params": PARAMS[0],
            "dataset_version": pick(["1", "2"]),
            "method": pick(["occlusion", "saliency", "random"]),
            "method_params": pick(PARAMS),
            "method_version": pick(["1", "2", "3"]),
            "metric": pick(["deletion", "insertion"]),
            "metric_params": pick(PARAMS[:3]),
            "metric_version": pick(["1", None]),
            "split": pick(["test", "val"]),
            "target_mode": "predicted",
            "torch_version": pick(["2.4", "2.5", None]),
            "cpu": pick(["x86", "?"]),
            "device": pick(["cpu", "cuda"]),
            "value": rng.random(n),
        }
    )
    if with_time:  # few distinct times: many ties; some rows without a time
        times = pd.Series(pd.to_datetime("2024-01-01", utc=True) + pd.to_timedelta(rng.integers(0, 6, n), unit="D"))
        frame["time"] = times.where(rng.random(n) > 0.1)
    # a repeated, unordered index, as after concatenating result files
    frame.index = rng.integers(0, n // 3, n)
    return frame


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_time", [True, False])
def test_current_versions_matches_the_row_wise_definition(seed, with_time):
    rows = random_rows(seed, with_time=with_time)
    pd.testing.assert_frame_equal(board.current_versions(rows), reference_current_versions(rows))


def test_current_versions_compares_versions_as_text():
    """Version 1 (a number, as some older files stored it) and "1" are one version; NaN is its own."""
    rows = pd.DataFrame(
        {
            "method": "m",
            "method_params": "{}",
            "method_version": pd.Series([1, "1", np.nan, "1"], dtype=object),
            "time": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"], utc=True),
            "item_id": ["a", "b", "c", "d"],
        }
    )
    assert board.current_versions(rows)["item_id"].tolist() == ["a", "b", "d"]
    assert board.current_versions(rows.iloc[:3])["item_id"].tolist() == ["c"]
    pd.testing.assert_frame_equal(board.current_versions(rows), reference_current_versions(rows))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", board.KINDS)
def test_variant_labels_match_the_row_wise_definition(seed, kind):
    rows = random_rows(seed)
    pd.testing.assert_series_equal(
        board.variant_labels(rows, kind, f"{kind}_params"), reference_variant_labels(rows, kind, f"{kind}_params")
    )


def test_variant_labels_name_what_differs():
    rows = pd.DataFrame(
        {"method": ["occlusion", "occlusion", "saliency", None], "method_params": PARAMS[1:3] + ["{}"] * 2}
    )
    labels = board.variant_labels(rows, "method", "method_params")
    assert labels.iloc[:3].tolist() == ["occlusion[window=4]", "occlusion[window=8]", "saliency"]
    assert pd.isna(labels.iloc[3])


@pytest.mark.parametrize("seed", range(6))
def test_environment_warnings_match_the_row_wise_definition(seed):
    rows = random_rows(seed)
    expected = reference_environment_warnings(rows)
    assert expected, "the random frame mixes environments"
    assert board.environment_warnings(rows) == expected


def test_environment_warnings_name_the_cell_and_its_environments():
    rows = pd.DataFrame(
        {
            "model": ["m", "m", "m", "m"],
            "dataset": ["d", "d", "d", "d2"],
            "metric": ["deletion"] * 4,
            "torch_version": ["2.4", "2.5", None, "2.4"],
            "cpu": ["x86"] * 4,
        }
    )
    assert board.environment_warnings(rows) == [
        "m x d x deletion: rows from 3 environments (2.4 / x86; 2.5 / x86; ? / x86); values may differ between them"
    ]
    assert board.environment_warnings(rows.assign(torch_version="2.4")) == []
