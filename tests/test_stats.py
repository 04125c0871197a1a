"""Statistics (Holm, bootstrap, Wilcoxon, ranks) and the summary board's verdicts and ranks."""

from __future__ import annotations

import json
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from xaibench import stats
from xaibench.boards import render
from xaibench.boards import summary as board

# ---- stats ----------------------------------------------------------------------------------------


def test_holm_hand_computed_example():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> max(0.06, 0.04)
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)


def test_holm_caps_at_one_and_keeps_single_values():
    np.testing.assert_allclose(stats.holm([0.5, 0.6, 0.01]), [1.0, 1.0, 0.03])
    assert stats.holm([0.2]) == [0.2]
    assert stats.holm([]) == []


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    rng = np.random.default_rng(5)
    values = rng.normal(loc=2.0, scale=1.0, size=400)
    low, high = stats.bootstrap_ci(values)
    assert low < values.mean() < high
    assert stats.bootstrap_ci(values) == (low, high), "same seed, same interval"
    assert stats.bootstrap_ci(values, seed=1) != (low, high), "the seed is used"
    expected_half_width = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert (high - low) / 2 == pytest.approx(expected_half_width, rel=0.2)


def test_bootstrap_ci_edge_cases():
    assert all(np.isnan(stats.bootstrap_ci(np.array([1.0]))))
    assert stats.bootstrap_ci(np.array([0.3, 0.3, 0.3])) == (0.3, 0.3)


def scipy_bootstrap_ci(values: np.ndarray, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.SEED):
    with warnings.catch_warnings():  # its standard error of a single resample warns
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy.stats.bootstrap(
            (values,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=stats.LEVEL,
            method="percentile",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@pytest.mark.parametrize("n", [2, 3, 7, 50, 256, 1001, 1100])  # 1100 x 1000: past the index cache
@pytest.mark.parametrize("n_resamples", [1, 2, 39, 1000, 1001])
def test_bootstrap_ci_is_scipys_bootstrap_bit_for_bit(n, n_resamples):
    """The numpy bootstrap gives scipy.stats.bootstrap's floats exactly, for the same generator."""
    rng = np.random.default_rng(n * 7919 + n_resamples)
    samples = [
        rng.normal(size=n),
        rng.integers(0, 3, size=n).astype(float),  # heavy ties, as for 0/1 scores
        rng.exponential(size=n) * 1e6,
        np.r_[rng.normal(size=n - 1), 0.0] + 1e-9,
    ]
    for seed in (0, 3):
        for values in samples:
            if np.all(values == values[0]):
                continue  # degenerate: the constant interval, no resampling
            ours = stats.bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
            assert ours == scipy_bootstrap_ci(values, n_resamples, seed), (n, n_resamples, seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilcoxon_p_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    differences = rng.normal(loc=0.1 * seed, scale=1.0, size=30)
    assert stats.wilcoxon_p(differences) == pytest.approx(scipy.stats.wilcoxon(differences).pvalue, rel=1e-12)


def test_wilcoxon_p_degenerate_inputs():
    assert stats.wilcoxon_p(np.zeros(10)) == 1.0
    assert stats.wilcoxon_p(np.array([0.5])) == 1.0
    assert stats.wilcoxon_p(np.full(20, -0.1)) < 1e-4  # every difference negative


def test_ranks_respect_direction():
    means = np.array([0.1, 0.5, 0.3])
    assert stats.ranks(means, higher_is_better=True).tolist() == [3, 1, 2]
    assert stats.ranks(means, higher_is_better=False).tolist() == [1, 3, 2]
    assert stats.ranks(np.array([0.2, 0.1, 0.2]), higher_is_better=False).tolist() == [2, 1, 2]  # ties share


def test_bootstrap_mean_ranks():
    rng = np.random.default_rng(0)
    base = rng.uniform(size=(40, 1))
    # method 0 is clearly best (lowest) on a lower-is-better metric and (highest) on a higher-is-better one
    lower = np.hstack([base - 0.5, base, base + 0.5])
    higher = np.hstack([base + 0.5, base, base - 0.5])
    point, low, high = stats.bootstrap_mean_ranks([(lower, False), (higher, True)], n_resamples=200)
    assert point.tolist() == [1.0, 2.0, 3.0]
    assert (low <= point).all() and (point <= high).all()


def test_ranks_leave_out_non_finite_means():
    means = np.array([0.3, np.nan, 0.1, np.inf, 0.3])
    ranked = stats.ranks(means, higher_is_better=False)
    assert ranked[[0, 2, 4]].tolist() == [2, 1, 2]
    assert np.isnan(ranked[[1, 3]]).all(), "a NaN or infinite mean takes no place"
    assert np.isnan(stats.ranks(np.full(3, np.nan), higher_is_better=True)).all()


def test_empty_or_nan_input_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(np.isnan(stats.bootstrap_ci(np.array([]))))
        assert all(np.isnan(stats.bootstrap_ci(np.array([0.1, np.nan, 0.3]))))
        assert all(np.isnan(stats.bootstrap_ci(np.array([0.1, np.inf, 0.3]))))
        assert np.isnan(stats.wilcoxon_p(np.array([])))
        assert np.isnan(stats.wilcoxon_p(np.array([0.1, np.nan, 0.3])))
        # an untested (NaN) p-value stays NaN and does not count towards Holm's m
        adjusted = stats.holm([0.01, float("nan"), 0.04])
        np.testing.assert_allclose(adjusted, [0.02, np.nan, 0.04])
        assert np.isnan(stats.holm([float("nan")])).all()


def _mean_ranks_single_shot(tables, n_resamples, seed):
    """The unchunked computation: every resample of a metric drawn and ranked at once."""
    rng = np.random.default_rng(seed)
    replicates = np.zeros((n_resamples, tables[0][0].shape[1]))
    for x, hib in tables:
        index = rng.integers(0, len(x), size=(n_resamples, len(x)))
        replicates += stats.ranks(x[index].mean(1), hib)
    replicates /= len(tables)
    return np.percentile(replicates, 2.5, axis=0), np.percentile(replicates, 97.5, axis=0)


def test_bootstrap_mean_ranks_chunks_give_the_single_shot_result():
    rng = np.random.default_rng(1)
    spacing = 0.2 * np.arange(5)  # close enough that resamples reorder the methods
    tables = [(rng.normal(size=(37, 5)) + spacing, False), (rng.normal(size=(23, 5)) - spacing, True)]
    low, high = _mean_ranks_single_shot(tables, 300, seed=4)
    for chunk in (1, 7, 50, 300, 1000):
        point, chunk_low, chunk_high = stats.bootstrap_mean_ranks(tables, n_resamples=300, seed=4, chunk=chunk)
        np.testing.assert_array_equal(chunk_low, low)
        np.testing.assert_array_equal(chunk_high, high)
    assert (high > low).all(), "intervals with something to get wrong"


def test_bootstrap_mean_ranks_memory_is_bounded():
    """Not n_resamples x items x methods at once (here 1000 x 4000 x 4 float64 = 128 MB)."""
    rng = np.random.default_rng(0)
    tables = [(rng.normal(size=(4000, 4)), False)]
    tracemalloc.start()
    try:
        stats.bootstrap_mean_ranks(tables)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"


# ---- the summary board ----------------------------------------------------------------------------


def rows_frame(methods: dict[str, np.ndarray], higher_is_better: bool = False, metric: str = "deletion"):
    """Rows as results.read gives them (the columns the board needs)."""
    records = []
    for method, values in methods.items():
        for i, value in enumerate(values):
            records.append(
                {
                    "model": "digits_cnn",
                    "model_params": json.dumps({"seed": 0}),
                    "dataset": "digits",
                    "dataset_params": json.dumps({"size": 8}),
                    "split": "test",
                    "target_mode": "predicted",
                    "method": method,
                    "method_params": "{}",
                    "metric": metric,
                    "metric_params": json.dumps({"steps": 20}),
                    "score": "auc",
                    "item_id": f"digits-{i:04d}",
                    "value": float(value),
                    "higher_is_better": higher_is_better,
                }
            )
    return pd.DataFrame.from_records(records)


@pytest.fixture
def study():
    rng = np.random.default_rng(3)
    random = rng.uniform(0.3, 0.7, size=50)
    return {
        "random": random,
        "good": random - 0.2 + rng.normal(0, 0.01, size=50),
        "same": random + rng.normal(0, 1e-3, size=50),
        "bad": random + 0.2,
    }


def by_method(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("method")


def test_summary_verdicts_lower_is_better(study):
    table = by_method(board.summary(rows_frame(study, higher_is_better=False)))
    assert table.loc["good", "verdict"] == board.VERDICT_BEATS
    assert table.loc["same", "verdict"] == board.VERDICT_NO_BETTER
    assert table.loc["bad", "verdict"] == board.VERDICT_WORSE
    assert pd.isna(table.loc["random", "verdict"]), "the reference has no verdict against itself"
    assert table.loc["good", "rank"] == 1
    assert table.loc["bad", "rank"] == 4
    assert table.loc["good", "delta"] == pytest.approx(np.mean(study["good"] - study["random"]))
    assert table.loc["good", "delta_low"] < table.loc["good", "delta"] < table.loc["good", "delta_high"]
    assert table.loc["good", "delta_high"] < 0
    assert table.loc["good", "mean"] == pytest.approx(study["good"].mean())
    assert (table["n"] == 50).all()
    # p-values are Holm-corrected across the three methods of the cell
    raw = {m: stats.wilcoxon_p(study[m] - study["random"]) for m in ("good", "same", "bad")}
    adjusted = dict(zip(raw, stats.holm(list(raw.values())), strict=True))
    for method, p in adjusted.items():
        assert table.loc[method, "p_holm"] == pytest.approx(p)


def test_summary_higher_is_better_flips_verdicts_and_ranks(study):
    table = by_method(board.summary(rows_frame(study, higher_is_better=True, metric="insertion")))
    assert table.loc["bad", "verdict"] == board.VERDICT_BEATS
    assert table.loc["good", "verdict"] == board.VERDICT_WORSE
    assert table.loc["same", "verdict"] == board.VERDICT_NO_BETTER
    assert table.loc["bad", "rank"] == 1
    assert table.loc["good", "rank"] == 4


def test_summary_is_sorted_by_rank_and_pairs_items(study):
    rows = rows_frame(study)
    shuffled = rows.sample(frac=1.0, random_state=0).reset_index(drop=True)
    table = board.summary(shuffled)
    assert table["rank"].tolist() == sorted(table["rank"].tolist())
    assert table.iloc[0]["method"] == "good"
    # pairing is by item id, not row order: the same result for shuffled rows
    pd.testing.assert_frame_equal(
        by_method(table).sort_index(), by_method(board.summary(rows)).sort_index(), check_like=True
    )


def test_summary_without_random_has_no_verdicts(study):
    table = board.summary(rows_frame({k: v for k, v in study.items() if k != "random"}))
    assert table["verdict"].isna().all()
    assert sorted(table["rank"]) == [1, 2, 3]


def test_summary_separates_parameter_variants(study):
    """The same method with two parameter sets is two rows, labelled by what differs."""
    rows = rows_frame({"random": study["random"], "smoothgrad": study["good"]})
    rows.loc[rows["method"] == "smoothgrad", "method_params"] = json.dumps({"n_samples": 20, "stdev_spread": 0.15})
    variant = rows_frame({"smoothgrad": study["bad"]})
    variant["method_params"] = json.dumps({"n_samples": 50, "stdev_spread": 0.15})
    table = by_method(board.summary(pd.concat([rows, variant], ignore_index=True)))
    assert set(table.index) == {"random", "smoothgrad[n_samples=20]", "smoothgrad[n_samples=50]"}
    assert table.loc["smoothgrad[n_samples=20]", "verdict"] == board.VERDICT_BEATS
    assert table.loc["smoothgrad[n_samples=50]", "verdict"] == board.VERDICT_WORSE


def test_summary_averages_seeds_per_item(study):
    first = rows_frame(study)
    second = rows_frame({k: v + 0.02 for k, v in study.items()})
    table = by_method(board.summary(pd.concat([first, second], ignore_index=True)))
    assert table.loc["good", "mean"] == pytest.approx(study["good"].mean() + 0.01)
    assert table.loc["good", "n"] == 50


def test_overall_mean_rank(study):
    deletion = rows_frame(study, higher_is_better=False, metric="deletion")
    insertion = rows_frame({k: 1 - v for k, v in study.items()}, higher_is_better=True, metric="insertion")
    table = board.overall(pd.concat([deletion, insertion], ignore_index=True)).set_index("method")
    assert table.loc["good", "mean_rank"] == 1.0
    assert table.loc["bad", "mean_rank"] == 4.0
    assert (table["metrics"] == 2).all()


# ---- undefined values, stale versions, the verdict rule, rendering -------------------------------


def markdown_rows(table: pd.DataFrame) -> dict[str, list[str]]:
    """method -> its cells in the Markdown board (one cell per board)."""
    lines = [line for line in render.markdown(table).splitlines() if line.startswith("| ") and "---" not in line]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    return {row[1]: row for row in cells}


def test_summary_survives_a_method_with_only_nan_values(study):
    """A user metric or model returning NaN: that method has n = 0, no mean, rank or verdict."""
    rows = rows_frame({**study, "broken": np.full(50, np.nan)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = board.summary(rows)
        text = render.markdown(table, board.overall(rows))
    indexed = by_method(table)
    assert indexed.loc["broken", "n"] == 0
    assert np.isnan(indexed.loc["broken", "mean"])
    assert pd.isna(indexed.loc["broken", "rank"])
    assert pd.isna(indexed.loc["broken", "verdict"])
    assert pd.isna(indexed.loc["broken", "p_holm"])
    # the others are ranked among themselves, and Holm counts only their three tests
    assert sorted(table["rank"].dropna()) == [1, 2, 3, 4]
    assert table.iloc[-1]["method"] == "broken", "unranked rows come last"
    assert indexed.loc["good", "verdict"] == board.VERDICT_BEATS
    raw = {m: stats.wilcoxon_p(study[m] - study["random"]) for m in ("good", "same", "bad")}
    for method, p in zip(raw, stats.holm(list(raw.values())), strict=True):
        assert indexed.loc[method, "p_holm"] == pytest.approx(p)
    assert "broken" in text
    broken = markdown_rows(table)["broken"]
    assert broken[0] == "–" and broken[2] == "–" and broken[-1] == "–"
    assert broken[3] == "0"
    # rich renders it too
    from rich.console import Console

    console = Console(record=True, width=200)
    render.print_rich(table, None, console)
    assert "broken" in console.export_text()


def test_summary_all_methods_nan_has_no_ranks(study):
    rows = rows_frame({k: np.full(50, np.nan) for k in study})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = board.summary(rows)
    assert table["rank"].isna().all()
    assert table["verdict"].isna().all()


def stamped(frame: pd.DataFrame, time: str, **columns) -> pd.DataFrame:
    frame = frame.copy()
    frame["time"] = pd.Timestamp(time, tz="UTC")
    for kind in ("model", "dataset", "method", "metric"):
        frame[f"{kind}_version"] = "1"
    for kind in ("model", "dataset"):
        frame[f"{kind}_revision"] = "r1"
    for column, value in columns.items():
        frame[column] = value
    return frame


@pytest.mark.parametrize(
    "column",
    ["model_version", "model_revision", "dataset_version", "dataset_revision", "method_version", "metric_version"],
)
def test_summary_drops_rows_of_superseded_versions(study, column):
    """Rows of an older plugin version (or another revision) with the same params are not seeds."""
    current = stamped(rows_frame(study), "2024-02-01", **{column: "new"})
    stale = stamped(rows_frame({k: v + 5.0 for k, v in study.items()}), "2024-01-01", **{column: "old"})
    rows = pd.concat([current, stale], ignore_index=True)  # the stale rows come last: time decides
    table = by_method(board.summary(rows))
    for method, values in study.items():
        assert table.loc[method, "mean"] == pytest.approx(values.mean())
        assert table.loc[method, "n"] == 50
    assert set(table.index) == set(study), "no variant labels: the same params"
    overall = board.overall(rows).set_index("method")
    assert overall.loc["good", "mean_rank"] == 1.0


def test_summary_supersedes_per_plugin_and_params(study):
    """Only the plugin whose version changed loses its old rows; seeds of one version average."""
    base = stamped(rows_frame(study), "2024-01-01")
    seed_two = stamped(rows_frame({k: v + 0.02 for k, v in study.items()}), "2024-01-02")
    newer = stamped(rows_frame({"good": study["good"] - 0.1}), "2024-03-01", method_version="2")
    rows = pd.concat([newer, base, seed_two], ignore_index=True)
    table = by_method(board.summary(rows))
    assert table.loc["good", "mean"] == pytest.approx(study["good"].mean() - 0.1)
    assert table.loc["bad", "mean"] == pytest.approx(study["bad"].mean() + 0.01), "two seeds of version 1"
    # another params set of the same method is its own variant, with its own newest version
    variant = stamped(rows_frame({"good": study["bad"]}), "2024-01-01", method_params=json.dumps({"k": 2}))
    table = by_method(board.summary(pd.concat([rows, variant], ignore_index=True)))
    assert table.loc["good[k=None]", "mean"] == pytest.approx(study["good"].mean() - 0.1)
    assert table.loc["good[k=2]", "mean"] == pytest.approx(study["bad"].mean())


def test_a_newer_version_supersedes_only_where_it_was_run(study):
    """Method v2 re-run on model A replaces v1 there; model B, not re-run, keeps its v1 rows."""
    model_a = stamped(rows_frame(study), "2024-01-01").assign(model="model_a")
    model_b = stamped(rows_frame(study), "2024-01-01").assign(model="model_b")
    rerun_a = stamped(rows_frame({"good": study["good"] - 0.1}), "2024-03-01", method_version="2")
    table = board.summary(pd.concat([model_a, model_b, rerun_a.assign(model="model_a")], ignore_index=True))
    good = table[table["method"] == "good"].set_index("model")["mean"]
    assert good["model_a"] == pytest.approx(study["good"].mean() - 0.1)
    assert good["model_b"] == pytest.approx(study["good"].mean())


def test_summary_without_time_takes_the_last_row_as_newest(study):
    old = rows_frame({k: v + 5.0 for k, v in study.items()}).assign(method_version="1")
    new = rows_frame(study).assign(method_version="2")
    table = by_method(board.summary(pd.concat([old, new], ignore_index=True)))
    assert table.loc["good", "mean"] == pytest.approx(study["good"].mean())


def test_verdict_needs_the_test_and_the_interval_to_agree():
    beats, no, worse = board.VERDICT_BEATS, board.VERDICT_NO_BETTER, board.VERDICT_WORSE
    # lower is better: a significant difference whose CI lies below 0 beats random
    assert board.verdict(0.01, -0.3, -0.1, higher_is_better=False) == beats
    assert board.verdict(0.01, 0.1, 0.3, higher_is_better=False) == worse
    assert board.verdict(0.01, 0.1, 0.3, higher_is_better=True) == beats
    assert board.verdict(0.01, -0.3, -0.1, higher_is_better=True) == worse
    # significant, but the interval straddles 0 (or is undefined): no better
    assert board.verdict(0.01, -0.3, 0.1, higher_is_better=False) == no
    assert board.verdict(0.01, float("nan"), float("nan"), higher_is_better=False) == no
    # the interval excludes 0 but the corrected test is not significant
    assert board.verdict(0.05, -0.3, -0.1, higher_is_better=False) == no
    assert board.verdict(0.2, 0.1, 0.3, higher_is_better=True) == no
    assert board.verdict(float("nan"), -0.3, -0.1, higher_is_better=False) is None, "no test, no verdict"


def test_summary_verdict_when_wilcoxon_and_mean_disagree():
    """Most items slightly worse, a few much better: Wilcoxon is significant (the typical item is
    worse) while the mean difference is negative (better, lower is better) with a CI across 0."""
    rng = np.random.default_rng(7)
    random = rng.uniform(0.3, 0.7, size=50)
    diff = np.r_[np.full(45, 0.1), np.full(5, -2.0)]
    table = by_method(board.summary(rows_frame({"random": random, "skewed": random + diff})))
    row = table.loc["skewed"]
    assert row["p_holm"] < 0.01
    assert row["delta"] < 0
    assert row["delta_low"] < 0 < row["delta_high"]
    assert row["verdict"] == board.VERDICT_NO_BETTER


def test_render_labels_only_random_as_reference(study):
    with_random = markdown_rows(board.summary(rows_frame(study)))
    assert with_random["random"][-1] == "reference"
    assert with_random["good"][-1] == board.VERDICT_BEATS
    without = markdown_rows(board.summary(rows_frame({k: v for k, v in study.items() if k != "random"})))
    assert set(without) == {"good", "same", "bad"}
    assert all(row[-1] == "–" for row in without.values()), "no paired test, no verdict, not a reference"
    assert [without[m][0] for m in ("good", "same", "bad")] == ["1", "2", "3"]
