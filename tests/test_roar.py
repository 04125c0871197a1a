"""ROAR and KAR: exact removal, complementary masks, the mask-leakage classifier, a small sweep end
to end checked against the fitted models' own records, resume after a kill, and Dask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xaibench import results
from xaibench.api import TrainingSet
from xaibench.boards import roar as board
from xaibench.cache import Cache
from xaibench.executors import Dask
from xaibench.manifest import load, parse
from xaibench.models.mask_classifier import RoarMaskClassifier
from xaibench.runner import Runner
from xaibench.seeding import item_seeds
from xaibench.tasks import plan
from xaibench.transforms_roar import SEED_PURPOSE, RoarRemoval, fill, removal_masks

SWEEP = """
name: roar-test
options: {split: test, limit: null, batch_size: 128, target: label, seeds: [0]}
models: [digits_cnn: {epochs: 2}]
datasets: [digits]
methods: [random, saliency]
metrics: [roar: {fractions: [0.3, 0.7], repeats: 1, retrain_epochs: 2}]
"""
# 1 original + 1 reference retrain + 2 methods x 2 modes x 2 fractions x (1 retrain + 1 leakage fit)
FITS = 18
COLUMNS = ["job_key", "item_id", "score", "x", "repeat", "value"]


def rows_of(folder: Path) -> pd.DataFrame:
    frame = results.read(folder)
    assert not frame.duplicated(results.ROW_KEY).any()
    return frame[COLUMNS].sort_values(COLUMNS[:5]).reset_index(drop=True)


# ---- removal -------------------------------------------------------------------------------------


def distinct_maps() -> torch.Tensor:
    """Two 3-channel 4x4 maps whose pixel importances (|.| summed over channels) are all distinct."""
    generator = torch.Generator().manual_seed(0)
    return torch.stack([torch.randperm(48, generator=generator).float().view(3, 4, 4) - 20 for _ in range(2)])


def test_roar_removes_exactly_the_top_pixels_and_fills_the_training_mean():
    maps, images = distinct_maps(), torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    seeds = item_seeds(0, ["a", "b"], SEED_PURPOSE)
    importance = maps.abs().sum(1).flatten(1)
    for fraction, k in ((0.25, 4), (0.5, 8), (0.01, 1), (0.99, 15)):  # round(f * 16), kept in [1, 15]
        removed = removal_masks(maps, fraction, "roar", "abs_sum", seeds)
        assert removed.shape == (2, 1, 4, 4) and removed.flatten(1).sum(1).tolist() == [k, k]
        top = torch.zeros(2, 16, dtype=torch.bool)
        top.scatter_(1, importance.topk(k, dim=1).indices, True)
        assert torch.equal(removed.flatten(1), top)
        kar = removal_masks(maps, fraction, "kar", "abs_sum", seeds)
        assert torch.equal(kar, ~removed), "KAR removes exactly what ROAR keeps"
    mean = (0.1, 0.2, 0.3)
    filled = fill(images, removed, "mean", mean, seeds)
    for channel, value in enumerate(mean):
        assert torch.all(filled[:, channel][removed[:, 0]] == value)
    assert torch.equal(filled[~removed.expand_as(images)], images[~removed.expand_as(images)])


def test_ties_are_broken_per_item_whatever_the_batch():
    maps = torch.zeros(3, 1, 8, 8)
    maps[:, 0, 2, 2:8] = 1.0  # six tied top pixels, 58 tied zeros
    seeds = item_seeds(0, ["x", "y", "z"], SEED_PURPOSE)
    small = removal_masks(maps, 4 / 64, "roar", "abs_sum", seeds)
    assert small.flatten(1).sum(1).tolist() == [4, 4, 4]
    assert torch.all(small[:, 0, 2, 2:8].sum(1) == 4), "four of the six tied top pixels"
    large = removal_masks(maps, 10 / 64, "roar", "abs_sum", seeds)
    assert large[:, 0, 2, 2:8].all() and large.flatten(1).sum(1).tolist() == [10, 10, 10]
    alone = removal_masks(maps[1:2], 10 / 64, "roar", "abs_sum", seeds[1:2])
    assert torch.equal(alone, large[1:2]), "an item's mask does not depend on its batch"
    assert not torch.equal(large[0], large[1]), "ties are broken by each item's own seed"
    again = removal_masks(maps, 10 / 64, "roar", "abs_sum", seeds)
    assert torch.equal(again, large)


def test_nli_fill_keeps_kept_pixels_and_imputes_a_flat_image_flat():
    images = torch.full((2, 1, 8, 8), 0.5)
    images[1] = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(3))
    seeds = item_seeds(0, ["a", "b"], SEED_PURPOSE)
    removed = removal_masks(distinct_maps()[:, :1].repeat(1, 1, 2, 2), 0.5, "roar", "abs_sum", seeds)
    filled = fill(images, removed, "nli", (), seeds)
    assert torch.equal(filled[~removed.expand_as(images)], images[~removed.expand_as(images)])
    assert (filled[0][removed[0]] - 0.5).abs().max() < 0.05, "neighbours' mean of 0.5, plus noise sigma 0.01"
    assert torch.equal(fill(images, removed, "nli", (), seeds), filled), "noise seeded per item"


class _Context:
    def __init__(self, cache):
        self.cache = cache


def test_the_transform_reads_cached_maps_and_refuses_missing_ones(tmp_path):
    cache = Cache(tmp_path / "cache")
    ids = [f"digits-{i:04d}" for i in range(6)]
    maps = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    cache.put("attributions", "train-maps", ids[:4], maps[:4])
    cache.put("attributions", "test-maps", ids[4:], maps[4:])
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    data = TrainingSet(images[:4], torch.arange(4), ids[:4], "train")
    removal = RoarRemoval("train-maps", "test-maps", 0.25, "kar", "mean", (0.25,), seed=7)
    out = removal.apply(data, "train", _Context(cache))
    seeds = item_seeds(7, ids[:4], SEED_PURPOSE)
    expected = fill(images[:4], removal_masks(maps[:4], 0.25, "kar", "abs_sum", seeds), "mean", (0.25,), seeds)
    assert torch.equal(out.inputs, expected) and torch.equal(out.labels, data.labels) and out.ids == data.ids
    assert torch.equal(data.inputs, images[:4]), "the input training set is left unchanged"
    test = TrainingSet(images[4:], torch.arange(2), ids[4:], "test")
    masks = RoarRemoval("train-maps", "test-maps", 0.25, "kar", output="masks", seed=7).apply(
        test, "test", _Context(cache)
    )
    assert masks.inputs.shape == (2, 1, 8, 8) and masks.inputs.sum().item() == 2 * 48
    with pytest.raises(ValueError, match="no cached attribution"):
        removal.apply(TrainingSet(images, torch.arange(6), ids, "train"), "train", _Context(cache))


# ---- leakage classifier --------------------------------------------------------------------------


def leakage_accuracy(masks: torch.Tensor, labels: torch.Tensor, train: int) -> float:
    classifier = RoarMaskClassifier()
    module = classifier.fit(classifier.build(), TrainingSet(masks[:train], labels[:train], [""] * train), 0, "cpu")
    with torch.no_grad():
        return (module(masks[train:]).argmax(1) == labels[train:]).float().mean().item()


def test_leakage_classifier_is_near_chance_on_random_masks_and_near_one_on_label_masks():
    generator = torch.Generator().manual_seed(6)
    labels = torch.arange(1300) % 10
    random_masks = (torch.rand(1300, 1, 8, 8, generator=generator) < 0.3).float()
    assert leakage_accuracy(random_masks, labels, 1000) < 0.2, "chance is 0.1"
    encoded = (torch.rand(1300, 64, generator=generator) < 0.1).float()  # noise everywhere ...
    for c in range(10):
        encoded[labels == c, 6 * c : 6 * c + 6] = 1.0  # ... plus a block that names the class
    assert leakage_accuracy(encoded.view(1300, 1, 8, 8), labels, 1000) > 0.95


# ---- the sweep -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The small sweep in-process from an empty cache: (report, cache)."""
    root = tmp_path_factory.mktemp("roar")
    cache = Cache(root / "cache")
    report = Runner(parse(SWEEP), root / "results", cache=cache, log=lambda message: None).run()
    assert report.failures == {}, report.failures
    return report, cache


def test_a_small_sweep_scores_every_retrain_as_its_fit_record_measured_it(sweep):
    report, cache = sweep
    assert report.counts.models_trained == FITS
    frame = results.read(report.results_dir)
    per_item = frame.groupby(["method", "item_id"]).size()
    assert (per_item == 2 * 2 + 1 + 2 * 2).all(), "per item: ROAR/KAR x 2 fractions, reference, leakage x 4"
    assert set(frame["score"]) == {"roar", "kar", "reference", "leakage_roar", "leakage_kar"}
    # An independent path: the fit record's test accuracy comes from the transform applied to the
    # whole test split at fit time; the rows from the metric's removal of each window's items.
    for fit_key, group in frame.groupby("fit_key"):
        record = cache.model_record(fit_key)
        assert record is not None and record["role"] == group["model_role"].iloc[0]
        assert len(group) == 360 * group["method"].nunique()
        assert group["value"].mean() == pytest.approx(record["test_accuracy"], abs=1e-6), record["role"]
    roles = frame.drop_duplicates("fit_key").groupby("model_role").size().to_dict()
    assert roles == {"retrained": 8, "retrained_reference": 1, "leakage": 8}
    assert plan(parse(SWEEP), Cache(cache.root), report.results_dir).todo == [], "a rerun trains nothing"
    assert frame.loc[frame["score"] == "leakage_roar"].query("method == 'random'")["value"].mean() < 0.25

    tables = dict(board.tables(frame))
    summary = next(t for title, t in tables.items() if "summary" in title).set_index("method")
    assert summary.loc["saliency", "roar_verdict"] in {"beats random", "no better", "worse than random"}
    assert summary.loc["random", "leak_flagged"] == ""
    assert board.tables(frame[frame["metric"] != "roar"]) == []


def test_hierarchical_ci_resamples_repeats_then_items():
    values = np.array([[0.0] * 50, [1.0] * 50])  # repeats disagree completely: the CI spans them
    low, high = board.hierarchical_ci(values)
    assert low == 0.0 and high == 1.0
    same = np.tile(np.arange(50.0) / 50, (3, 1))
    assert board.hierarchical_ci(same)[1] - board.hierarchical_ci(same)[0] < 0.2


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_retraining_and_gives_the_same_rows(tmp_path, sweep):
    report, _ = sweep
    path = tmp_path / "manifest.yaml"
    path.write_text(SWEEP)
    cache = Cache(tmp_path / "cache")
    env = {**os.environ, "XAIBENCH_CACHE": str(cache.root), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "xaibench.cli", "run", str(path), "-r", str(tmp_path / "results"), "--no-board"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(cache.models()) < 6 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(cache.models())
    assert 6 <= done < FITS, f"killed mid-sweep ({done} of {FITS} fits stored)"
    resumed = Runner(load(path), tmp_path / "results", cache=Cache(cache.root), log=lambda message: None).run()
    assert resumed.failures == {}
    assert resumed.counts.models_trained == FITS - done, "no finished retrain is trained again"
    assert rows_of(resumed.results_dir).equals(rows_of(report.results_dir))


@pytest.mark.slow
def test_a_two_worker_dask_cluster_gives_the_in_process_rows(tmp_path, sweep):
    report, _ = sweep
    runner = Runner(
        parse(SWEEP),
        tmp_path / "results",
        cache=Cache(tmp_path / "cache"),
        log=lambda m: None,
        executor=Dask(workers=2),
    )
    dask_report = runner.run()
    assert dask_report.failures == {}
    assert dask_report.counts.models_trained == FITS
    assert rows_of(dask_report.results_dir).equals(rows_of(report.results_dir))


def test_rows_of_two_repeats_survive_reading_and_compaction(tmp_path):
    """The repeats of one ROAR score at one fraction differ only in ``repeat`` (and fit_key)."""
    columns = {column: [None, None] for column in results.COLUMNS}
    shared = {"job_key": "job", "item_id": "digits-0001", "score": "roar", "x": 0.5, "valid": True}
    shared["time"] = pd.Timestamp.now(tz="UTC")
    for column, value in shared.items():
        columns[column] = [value, value]
    columns.update(repeat=[0, 1], value=[0.0, 1.0], fit_key=["fit-0", "fit-1"])
    results.write_part(tmp_path, "job", ["digits-0001"], columns)
    assert len(results.read(tmp_path)) == 2
