"""Statistics (Holm, bootstrap, Wilcoxon, ranks) and the summary board's verdicts and ranks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from xaibench import stats
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
