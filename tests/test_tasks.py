"""The task graph: plan counts, reruns that do only missing work, fits trained once, items whose
scores are written together or not at all, and the fitted-model store's keys and records."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch

from xaibench import results, rows
from xaibench.cache import Cache
from xaibench.manifest import parse, with_options
from xaibench.registry import register
from xaibench.runner import Runner
from xaibench.tasks import plan

MANIFEST = """
name: tasks-test
options: {{split: test, limit: {limit}, batch_size: 8, chunk_size: {chunk}, target: predicted, seeds: [0]}}
models: [{model}]
datasets: [digits]
methods: [random, saliency]
metrics: [{metrics}]
"""


def manifest(limit=16, chunk=8, model="digits_cnn", metrics="deletion"):
    return parse(MANIFEST.format(limit=limit, chunk=chunk, model=model, metrics=metrics))


def run(m, root, cache):
    return Runner(m, root, cache=cache, log=lambda message: None).run()


def test_plan_counts_tasks_and_a_rerun_runs_only_missing_ones(tmp_path, warm_cache):
    m = manifest(limit=16, chunk=8)
    graph = plan(m, warm_cache, tmp_path / "results" / m.name)
    assert graph.counts() == {
        "fit": {"total": 1, "todo": 0},  # trained in the warm cache
        "activations": {"total": 0, "todo": 0},  # no CAM method
        "attribute": {"total": 4, "todo": 4},  # 2 methods x 2 windows of 8 items
        "score": {"total": 4, "todo": 4},
    }
    assert graph.work() == {"fits": 0, "activations": 0, "attributions": 32, "scores": 32}
    first = run(m, tmp_path / "results", warm_cache)
    assert first.failures == {} and first.counts.rows_written == 32
    assert plan(m, Cache(warm_cache.root), first.results_dir).todo == [], "a rerun has nothing to do"

    bigger = with_options(m, limit=24)  # one new window per method; the old ones stay done
    graph = plan(bigger, Cache(warm_cache.root), first.results_dir)
    assert graph.counts()["score"] == {"total": 6, "todo": 2}
    assert [t.start for t in graph.todo if t.kind == "attribute"] == [16, 16]
    second = run(bigger, tmp_path / "results", Cache(warm_cache.root))
    assert second.counts.attributed_items == 16 and second.counts.scored_items == 16
    assert len(results.read(first.results_dir)) == 48


def test_a_fit_used_by_two_metrics_is_trained_once_and_recorded(tmp_path):
    m = manifest(limit=8, model="digits_cnn: {epochs: 2}", metrics="deletion, insertion")
    cache = Cache(tmp_path / "cache")
    report = run(m, tmp_path / "results", cache)
    assert report.failures == {}
    assert report.counts.models_trained == 1
    graph = plan(m, cache, report.results_dir)
    fit = next(t for t in graph.tasks if t.kind == "fit")
    record = cache.model_record(fit.key)
    assert record["fit_key"] == fit.key and record["role"] == "original"
    assert 0 < record["train_accuracy"] <= 1 and 0 < record["test_accuracy"] <= 1 and record["train_seconds"] > 0
    assert record["environment"]["threads"] == 1
    frame = results.read(report.results_dir)
    assert set(frame["fit_key"]) == {fit.key}
    assert set(frame["model_role"]) == {"original"}
    assert run(m, tmp_path / "results", Cache(cache.root)).counts.models_trained == 0


def test_a_failure_between_two_scores_of_an_item_leaves_no_partial_item(tmp_path, warm_cache, monkeypatch):
    @register("metric", "test_two_scores")
    @dataclasses.dataclass(frozen=True)
    class TwoScores:
        """Two scores per item: the attribution's mean and its max (test only)."""

        version: ClassVar[str] = "1"
        higher_is_better: ClassVar[bool] = True
        requires: ClassVar[frozenset[str]] = frozenset()

        def score(self, model, batch, target, attributions, explain, seeds):
            flat = attributions.flatten(1)
            return {"mean": flat.mean(1), "max": flat.amax(1)}

    m = manifest(limit=16, chunk=16, metrics="test_two_scores")
    appended = {"n": 0}
    original = rows.RowBuffer._append

    def failing_append(self, overrides, **row):
        appended["n"] += 1
        if appended["n"] == 16 + 16 + 5:  # inside the second task, between an item's two scores
            raise RuntimeError("injected failure between two scores")
        return original(self, overrides, **row)

    monkeypatch.setattr(rows.RowBuffer, "_append", failing_append)
    report = run(m, tmp_path / "results", warm_cache)
    assert any("injected failure" in message for message in report.failures.values())
    frame = results.read(report.results_dir)
    per_item = frame.groupby(["job_key", "item_id"])["score"].nunique()
    assert (per_item == 2).all(), "an item has all its scores or none"
    assert frame["method"].nunique() == 1, "the failed task wrote nothing"

    monkeypatch.setattr(rows.RowBuffer, "_append", original)
    again = run(m, tmp_path / "results", Cache(warm_cache.root))
    assert again.failures == {}
    assert again.counts.scored_items == 16, "only the failed task's items are scored again"
    frame = results.read(report.results_dir)
    assert len(frame) == 2 * 16 * 2 and not frame.duplicated(results.ROW_KEY).any()


def test_invalid_maps_are_stored_with_their_reason(tmp_path, warm_cache):
    @register("method", "test_nan_map")
    @dataclasses.dataclass(frozen=True)
    class NanMap:
        """Saliency-shaped map that is NaN for odd positions in the batch (test only)."""

        version: ClassVar[str] = "1"

        def attribute(self, model, inputs, target, seeds):
            maps = torch.rand(inputs.shape, generator=torch.Generator().manual_seed(0))
            maps[1::2] = float("nan")
            return maps

    m = parse(
        MANIFEST.format(limit=8, chunk=8, model="digits_cnn", metrics="deletion").replace("saliency", "test_nan_map")
    )
    report = run(m, tmp_path / "results", warm_cache)
    frame = results.read(report.results_dir)
    nan_rows = frame[frame["method"] == "test_nan_map"]
    assert (~nan_rows["valid"]).sum() == 4
    assert set(nan_rows.loc[~nan_rows["valid"], "invalid_reason"]) == {rows.INVALID_MAP}
    assert frame.loc[frame["method"] == "random", "valid"].all()


def test_schema_v1_files_are_still_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    v1 = {c: ["x"] for c in ("run_id", "manifest", "job_key", "item_id", "score", "method", "metric")}
    v1.update(value=[0.5], higher_is_better=[False], time=[pd_timestamp()])
    table = pa.table(v1).replace_schema_metadata({b"schema_version": b"1"})
    pq.write_table(table, tmp_path / "old.parquet")
    frame = results.read(tmp_path)
    assert frame["valid"].tolist() == [True] and frame["model_role"].tolist() == ["original"]
    assert frame["x"].isna().all()


def pd_timestamp():
    import pandas as pd

    return pd.Timestamp("2026-01-01", tz="UTC")


def test_compaction_merges_parts_without_losing_or_duplicating_rows(tmp_path, warm_cache):
    m = manifest(limit=16, chunk=4)
    report = Runner(m, tmp_path / "results", cache=warm_cache, log=lambda message: None)
    report.run()  # compacts at the end
    folder = tmp_path / "results" / m.name
    files = results.result_files(folder)
    assert len(files) == 1 and files[0].name.startswith(results.COMPACTED_PREFIX)
    assert len(results.read(folder)) == 32
    assert results.compact(folder) == (0, 0), "one file: nothing to merge"


@pytest.mark.parametrize("bad", ["epochs: 0", "epochs: 1000000000", "lr: -1", "batch_size: 0"])
def test_training_settings_out_of_range_are_refused_before_any_work(bad):
    from xaibench.errors import UserError

    with pytest.raises(UserError, match=bad.split(":")[0]):
        manifest(model=f"digits_cnn: {{{bad}}}")


def test_a_study_metric_gets_whole_split_maps_and_its_extra_fits_once(tmp_path):
    """The study hook: ``needs`` asks for the method's maps on the whole train split and a
    label-permuted retrain whose transform reads those maps; both are tasks, run once."""
    from xaibench.fitting import FitSpec
    from xaibench.task_types import Needs
    from xaibench.tasks import split_attribution_key
    from xaibench.transforms import PermutedLabels

    seen = {}

    @dataclasses.dataclass(frozen=True)
    class CheckedPermutation(PermutedLabels):
        """Permuted labels that also check the whole train split's maps are cached (test only)."""

        attribution_key: str = ""

        def apply(self, data, split, context=None):
            if split == "train":
                found = context.cache.get("attributions", self.attribution_key, data.ids)
                seen["maps"] = len(found)
            return super().apply(data, split, context)

    @register("metric", "test_agreement")
    @dataclasses.dataclass(frozen=True)
    class Agreement:
        """1 when the permuted-label retrain predicts what the original model predicts (test only)."""

        version: ClassVar[str] = "1"
        higher_is_better: ClassVar[bool] = False
        requires: ClassVar[frozenset[str]] = frozenset()

        def needs(self, job, fit, options):
            key = split_attribution_key(job, fit, "train", "label")
            spec = FitSpec(fit.model, CheckedPermutation(seed=3, attribution_key=key), role="permuted")
            return Needs(attributions=(("train", "label"),), fits=(("permuted", spec),))

        def score(self, model, batch, target, attributions, explain, seeds, fitted):
            with torch.no_grad():
                other = fitted["permuted"](batch.inputs).argmax(1)
            return {"agreement": (other == target).double()}

    m = manifest(limit=8, model="digits_cnn: {epochs: 2}", metrics="test_agreement")
    cache = Cache(tmp_path / "cache")
    graph = plan(m, cache, tmp_path / "results" / m.name)
    counts = graph.counts()
    assert counts["fit"] == {"total": 3, "todo": 3}, "original, and one permuted retrain per method"
    train_windows = -(-1437 // 8)  # the whole train split, in windows of chunk_size items
    assert counts["attribute"]["todo"] == 2 * (1 + train_windows), "per method: the test window and the train split"
    order = [t.kind for t in graph.todo]
    assert order.index("fit") == 0 and order[-1] == "score"
    report = run(m, tmp_path / "results", cache)
    assert report.failures == {}, report.failures
    assert report.counts.models_trained == 3
    assert seen["maps"] == 1437, "the transform saw every train item's map"
    frame = results.read(report.results_dir)
    assert len(frame) == 16 and frame["value"].between(0, 1).all()
    assert plan(m, Cache(cache.root), report.results_dir).todo == []


def test_plan_command_prints_the_counts_and_runs_nothing(tmp_path, warm_cache, monkeypatch):
    from cli_helpers import invoke

    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST.format(limit=16, chunk=8, model="digits_cnn", metrics="deletion"))
    monkeypatch.setenv("XAIBENCH_CACHE", str(warm_cache.root))
    result = invoke("plan", str(path), "-r", str(tmp_path / "results"))
    assert result.exit_code == 0, result.output
    assert "2 jobs -> 9 tasks" in result.stdout
    assert "attribute        4 tasks       0 done       4 to do" in result.stdout
    assert "still to do: 0 fits, 32 attributions, 32 items to score" in result.stdout
    assert not (tmp_path / "results").exists(), "plan writes nothing"
