"""mass_in_mask on a named mask (the suppressor square) and the ground-truth board."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from xaibench import registry
from xaibench.api import Batch
from xaibench.boards import ground_truth
from xaibench.errors import UserError
from xaibench.seeding import item_seeds


@pytest.fixture(scope="module")
def suppressor_batch() -> Batch:
    return next(registry.build("dataset", "suppressor", {"n_test": 16}).batches("test", batch_size=16))


def score(batch: Batch, maps: torch.Tensor, **params) -> torch.Tensor:
    metric = registry.build("metric", "mass_in_mask", params)
    seeds = item_seeds(0, batch.ids, "metric:mass_in_mask")
    [values] = metric.score(None, batch, batch.labels, maps, None, seeds).values()
    return values


def test_mass_in_mask_reads_the_named_mask(suppressor_batch):
    batch = suppressor_batch
    truth, suppressor = batch.masks.float(), batch.extras["mask:suppressor"].float()
    half = 3 * truth + suppressor  # 3/4 of the mass on the truth square, 1/4 on the suppressor
    torch.testing.assert_close(score(batch, half), torch.full((16,), 0.75))
    torch.testing.assert_close(score(batch, half, mask="object"), torch.full((16,), 0.75))
    torch.testing.assert_close(score(batch, half, mask="suppressor"), torch.full((16,), 0.25))
    # an independent computation on a random map
    maps = torch.rand(batch.inputs.shape, generator=torch.Generator().manual_seed(0))
    expected = (maps * suppressor).flatten(1).sum(1) / maps.flatten(1).sum(1)
    torch.testing.assert_close(score(batch, maps, mask="suppressor"), expected)


def test_the_role_names_the_score_and_its_direction(suppressor_batch):
    metric = registry.build("metric", "mass_in_mask", {"mask": "suppressor"})
    maps = suppressor_batch.inputs
    seeds = item_seeds(0, suppressor_batch.ids, "metric:mass_in_mask")
    assert set(metric.score(None, suppressor_batch, suppressor_batch.labels, maps, None, seeds)) == {"distractor_mass"}
    assert type(metric).higher_is_better == {"mass": True, "distractor_mass": False}
    for params, name in (
        ({}, "mass"),
        ({"mask": "suppressor", "role": "truth"}, "mass"),
        ({"role": "distractor"}, "distractor_mass"),
    ):
        built = registry.build("metric", "mass_in_mask", params)
        assert set(built.score(None, suppressor_batch, suppressor_batch.labels, maps, None, seeds)) == {name}


def test_mass_in_mask_requirements_follow_the_mask(suppressor_batch):
    default = registry.build("metric", "mass_in_mask")
    assert default.requirements() == type(default).requires == frozenset({"masks"})
    named = registry.build("metric", "mass_in_mask", {"mask": "suppressor"})
    assert named.requirements() == frozenset({"mask:suppressor"})
    plain = Batch(suppressor_batch.ids, suppressor_batch.inputs, suppressor_batch.labels, suppressor_batch.masks)
    with pytest.raises(ValueError, match=r"mask 'suppressor' needs batch.extras\['mask:suppressor'\].*none"):
        score(plain, plain.inputs, mask="suppressor")
    with pytest.raises(UserError, match="mask must be"):
        registry.build("metric", "mass_in_mask", {"mask": "a b"})


def rows_for(values: dict[tuple[str, str], np.ndarray], hits: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Result rows of mass_in_mask (one per mask) and pointing_game for known per-item values."""
    out = []
    for (method, mask), series in values.items():
        params = json.dumps({"mask": mask, "reduce": "abs_sum", "role": "auto"}, sort_keys=True)
        name = "mass" if mask == "object" else "distractor_mass"
        for i, value in enumerate(series):
            out.append(("mass_in_mask", params, name, method, f"item-{i}", float(value)))
    for method, series in (hits or {}).items():
        for i, value in enumerate(series):
            out.append(("pointing_game", '{"reduce": "abs_sum", "tolerance": 0}', "hit", method, f"item-{i}", value))
    frame = pd.DataFrame(out, columns=["metric", "metric_params", "score", "method", "item_id", "value"])
    return frame.assign(
        model="suppressor_cnn",
        model_params="{}",
        dataset="suppressor",
        dataset_params="{}",
        method_params="{}",
        x=np.nan,
        valid=True,
    )


def test_board_reports_masses_with_cis_and_the_paired_difference_to_random():
    rng = np.random.default_rng(0)
    random_truth, random_supp = rng.uniform(0.1, 0.2, 40), rng.uniform(0.1, 0.2, 40)
    values = {
        ("random", "object"): random_truth,
        ("random", "suppressor"): random_supp,
        ("saliency", "object"): random_truth + 0.5,
        ("saliency", "suppressor"): random_supp + 0.1,
    }
    rows = rows_for(values, hits={"saliency": np.ones(40), "random": np.r_[np.ones(10), np.zeros(30)]})
    # an invalid row never counts
    rows = pd.concat([rows, rows.iloc[:1].assign(item_id="bad", value=np.nan, valid=False)], ignore_index=True)
    long = ground_truth.masses(rows)
    saliency = long[(long.method == "saliency") & (long["mask"] == "suppressor")].iloc[0]
    assert saliency["n"] == 40
    assert saliency["mean"] == pytest.approx((random_supp + 0.1).mean())
    assert saliency["delta"] == pytest.approx(0.1) and saliency["delta_low"] == pytest.approx(0.1)
    assert saliency["ci_low"] < saliency["mean"] < saliency["ci_high"]
    table = ground_truth.board(rows)
    assert list(table["method"]) == ["saliency", "random"], "best truth mass first"
    assert table.loc[0, "truth mass [95% CI]"].startswith(f"{(random_truth + 0.5).mean():.3f} [")
    assert table.loc[0, "suppressor − random [95% CI]"] == "+0.100 [+0.100, +0.100]"
    assert table.loc[1, "suppressor − random [95% CI]"] == "–"
    assert list(table["pointing hit"]) == ["1.00", "0.25"]
    [(title, shown)] = ground_truth.tables(rows)
    assert "truth region" in title and shown.equals(table)


def test_board_is_empty_without_mass_rows_and_plots(tmp_path):
    assert ground_truth.tables(rows_for({}, hits={"saliency": np.ones(3)})) == []
    assert ground_truth.plot(rows_for({}), tmp_path / "none.png") is None
    rows = rows_for({("saliency", "object"): np.full(5, 0.6), ("saliency", "suppressor"): np.full(5, 0.2)})
    path = ground_truth.plot(rows, tmp_path / "board.png")
    assert path is not None and path.stat().st_size > 1000


def test_a_dataset_swept_over_a_setting_gets_a_sweep_table_and_panel(tmp_path):
    """low_snr at three noise levels, one model each (pairing: matching): one row per method,
    the settings as columns in numeric order (10.0 after 2.0), and the picture draws it."""
    parts = []
    for snr, shift in (("10.0", 0.5), ("2.0", 0.3), ("0.5", 0.0)):
        values = {("random", "object"): np.full(6, 0.1), ("saliency", "object"): np.full(6, 0.1 + shift)}
        params = json.dumps({"snr": float(snr)})
        parts.append(
            rows_for(values).assign(model="low_snr_cnn", model_params=params, dataset="low_snr", dataset_params=params)
        )
    supp = rows_for({("saliency", "object"): np.full(6, 0.3), ("saliency", "suppressor"): np.full(6, 0.2)})
    rows = pd.concat([*parts, supp], ignore_index=True)
    [(plugin, wide)] = ground_truth.sweeps(rows)
    assert plugin == "low_snr"
    assert list(wide.columns) == ["low_snr[snr=0.5]", "low_snr[snr=2.0]", "low_snr[snr=10.0]"]
    assert list(wide.loc["saliency"]) == pytest.approx([0.1, 0.4, 0.6])
    assert list(wide.loc["random"]) == pytest.approx([0.1, 0.1, 0.1])
    titles = [title for title, _ in ground_truth.tables(rows)]
    assert len(titles) == 2 and "across low_snr settings" in titles[1]
    shown = ground_truth.tables(rows)[1][1]
    assert list(shown.columns) == ["method", "snr=0.5", "snr=2.0", "snr=10.0"], (
        "no [..]: the terminal reads it as markup"
    )
    path = ground_truth.plot(rows, tmp_path / "sweep.png")
    assert path is not None and path.stat().st_size > 1000
    # the same setting under two models is no sweep: its cells would mix
    other = parts[0].assign(model="suppressor_cnn")
    assert ground_truth.sweeps(pd.concat([*parts, other], ignore_index=True)) == []
