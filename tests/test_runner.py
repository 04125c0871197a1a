"""The runner, in process: shared work, warm reruns, incremental limits, batch-size invariance,
and a job that fails at run time while the others go on."""

from __future__ import annotations

import dataclasses
import json
import shutil
from typing import ClassVar

import pytest
import torch

from xaibench import registry, results
from xaibench.cache import Cache
from xaibench.manifest import parse, with_options
from xaibench.registry import register
from xaibench.runner import Runner

MANIFEST = """
name: runner-test
options: {{split: test, limit: {limit}, batch_size: {batch_size}, seeds: [0]}}
models: [digits_cnn]
datasets: [digits]
methods: [{methods}]
metrics: [deletion]
"""


def manifest(limit: int = 32, batch_size: int = 16, methods: str = "random, saliency"):
    return parse(MANIFEST.format(limit=limit, batch_size=batch_size, methods=methods), source="runner-test.yaml")


def run(m, results_root, cache: Cache):
    return Runner(m, results_root, cache=cache, log=lambda message: None).run()


def test_warm_rerun_and_incremental_limit(tmp_path, warm_cache):
    results_root = tmp_path / "results"
    first = run(manifest(limit=32), results_root, warm_cache)
    assert first.failures == {}
    assert first.jobs == 2
    assert first.counts.models_trained == 0, "the model comes from the cache"
    assert first.counts.forward_items == 32, "one forward pass per item, shared by both jobs"
    assert first.counts.attributed_items == 32 * 2
    assert first.counts.scored_items == 32 * 2
    assert first.counts.rows_written == 32 * 2
    assert first.results_dir == results_root / "runner-test"
    assert list(first.results_dir.glob(f"{first.run_id}-run.json"))

    second = run(manifest(limit=32), results_root, Cache(warm_cache.root))
    counts = second.counts
    assert (counts.forward_items, counts.attributed_items, counts.scored_items, counts.rows_written) == (0, 0, 0, 0)
    assert counts.skipped_items == 32
    assert not list(second.results_dir.glob(f"{second.run_id}-*")), "a fully cached rerun writes nothing"

    third = run(with_options(manifest(limit=32), limit=48), results_root, Cache(warm_cache.root))
    assert third.counts.forward_items == 16
    assert third.counts.attributed_items == 16 * 2
    assert third.counts.scored_items == 16 * 2
    assert third.counts.rows_written == 16 * 2

    frame = results.read(first.results_dir)
    assert len(frame) == 48 * 2
    assert not frame.duplicated(["job_key", "item_id", "score"]).any()
    assert frame.groupby("method")["item_id"].nunique().to_dict() == {"random": 48, "saliency": 48}
    assert set(frame["score"]) == {"auc"}
    assert frame["value"].between(0, 1).all()
    assert (frame["higher_is_better"] == False).all()  # noqa: E712
    assert frame["run_id"].nunique() == 2
    assert frame["job_key"].nunique() == 2
    assert (frame["target"] == frame["prediction"]).all(), "target: predicted"
    assert json.loads(frame["method_params"].iloc[0]) == {}
    assert json.loads(frame.loc[frame["metric"] == "deletion", "metric_params"].iloc[0])["steps"] == 20


def test_rerun_after_losing_the_cache_recomputes_nothing_already_written(tmp_path, warm_cache):
    """Rows, not the tensor cache, decide what is done: a cleared cache costs no rows."""
    results_root = tmp_path / "results"
    run(manifest(limit=16), results_root, warm_cache)
    warm_cache.clear("attributions")
    warm_cache.clear("logits")
    again = run(manifest(limit=16), results_root, Cache(warm_cache.root))
    assert again.counts.forward_items == 0
    assert again.counts.rows_written == 0


def test_cached_attributions_are_reused_by_a_new_metric(tmp_path, warm_cache):
    results_root = tmp_path / "results"
    run(manifest(limit=16), results_root, warm_cache)
    text = MANIFEST.format(limit=16, batch_size=16, methods="random, saliency").replace(
        "metrics: [deletion]", "metrics: [deletion, insertion]"
    )
    report = run(parse(text), results_root, Cache(warm_cache.root))
    assert report.counts.forward_items == 0
    assert report.counts.attributed_items == 0, "attributions come from the cache"
    assert report.counts.scored_items == 16 * 2, "only the new metric's jobs are scored"
    assert report.counts.rows_written == 16 * 2


def test_values_do_not_depend_on_batch_size(tmp_path, warm_cache):
    """Per-item seeds (method noise, ranking tie-breaks) come from item ids, not positions.

    sobel leaves whole regions at zero importance, so its scores lean on the seeded tie-break.
    """
    methods = "random, saliency, sobel"

    def study(batch_size: int):
        text = MANIFEST.format(limit=24, batch_size=batch_size, methods=methods)
        return parse(text.replace("metrics: [deletion]", "metrics: [deletion, insertion]"))

    small = run(study(8), tmp_path / "a", warm_cache)
    fresh = tmp_path / "fresh-cache"
    shutil.copytree(warm_cache.root / "models", fresh / "models")
    large = run(study(32), tmp_path / "b", Cache(fresh))
    assert large.counts.attributed_items == 24 * 3, "a fresh cache: everything recomputed"
    frame_a = results.read(small.results_dir)
    frame_b = results.read(large.results_dir)
    a = {(r.method, r.metric, r.item_id): r.value for r in frame_a.itertuples()}
    b = {(r.method, r.metric, r.item_id): r.value for r in frame_b.itertuples()}
    assert a.keys() == b.keys() and len(a) == 24 * 3 * 2
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-5), key
    assert sorted(frame_a["job_key"].unique()) == sorted(frame_b["job_key"].unique()), (
        "batch size is not part of any key"
    )


def test_target_label_mode(tmp_path, warm_cache):
    text = MANIFEST.format(limit=16, batch_size=16, methods="random").replace(
        "seeds: [0]}", "seeds: [0], target: label}"
    )
    report = run(parse(text), tmp_path / "results", warm_cache)
    frame = results.read(report.results_dir)
    assert (frame["target"] == frame["label"]).all()
    assert set(frame["target_mode"]) == {"label"}


BROKEN_CALLS: list[int] = []


@pytest.fixture
def broken_method():
    BROKEN_CALLS.clear()

    @register("method", "test_broken")
    @dataclasses.dataclass(frozen=True)
    class Broken:
        """A method that fails at run time (test only)."""

        version: ClassVar[str] = "1"

        def attribute(self, model, inputs, target, seeds):
            BROKEN_CALLS.append(len(inputs))
            raise RuntimeError("deliberately broken")

    yield Broken
    registry._REGISTRY["method"].pop("test_broken", None)


def test_failing_method_is_recorded_and_other_jobs_go_on(tmp_path, warm_cache, broken_method):
    m = manifest(limit=16, batch_size=8, methods="random, test_broken, saliency")
    report = run(m, tmp_path / "results", warm_cache)
    assert list(report.failures) == ["digits_cnn x digits x test_broken x deletion (seed 0)"]
    assert (
        "RuntimeError: deliberately broken" in report.failures["digits_cnn x digits x test_broken x deletion (seed 0)"]
    )
    assert report.counts.rows_written == 16 * 2
    frame = results.read(report.results_dir)
    assert sorted(frame["method"].unique()) == ["random", "saliency"]
    assert len(frame) == 16 * 2
    record = json.loads((report.results_dir / f"{report.run_id}-run.json").read_text())
    assert "deliberately broken" in next(iter(record["failures"].values()))
    assert "deliberately broken" in next(iter(record["tracebacks"].values()))
    assert report.counts.attributed_items == 16 * 2
    assert BROKEN_CALLS == [8], "a failed job is tried once, not again for every batch"


def test_incompatible_method_fails_before_any_work(tmp_path, warm_cache):
    from xaibench.errors import UserError

    @register("model", "test_linear")
    @dataclasses.dataclass(frozen=True)
    class Linear:
        version: ClassVar[str] = "1"
        revision: ClassVar[str] = "none"
        input_shape: ClassVar[tuple[int, int, int]] = (1, 8, 8)

        def build(self):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    try:
        text = MANIFEST.format(limit=8, batch_size=8, methods="random, grad_cam").replace(
            "models: [digits_cnn]", "models: [test_linear]"
        )
        with pytest.raises(UserError, match="Conv2d"):
            run(parse(text), tmp_path / "results", warm_cache)
        assert not (tmp_path / "results" / "runner-test").exists() or not results.result_files(
            tmp_path / "results" / "runner-test"
        )
    finally:
        registry._REGISTRY["model"].pop("test_linear", None)


def test_explain_recomputes_the_same_maps_for_the_items_scored(tmp_path, warm_cache):
    """A metric's `explain` (randomization tests) must reproduce the stored attributions of the
    very items it scores, seeded random methods included, also when a batch is only partly new."""
    seen = []

    @register("metric", "test_explain_agreement")
    @dataclasses.dataclass(frozen=True)
    class ExplainAgreement:
        """Max |explain(model, x, t) - stored attributions| per item (test only)."""

        version: ClassVar[str] = "1"
        higher_is_better: ClassVar[bool] = False
        requires: ClassVar[frozenset[str]] = frozenset()

        def score(self, model, batch, target, attributions, explain, seeds):
            again = explain(model, batch.inputs, target)
            seen.append(len(batch))
            return {"max_abs_diff": (again - attributions).abs().flatten(1).amax(1)}

    try:
        text = MANIFEST.format(limit=24, batch_size=16, methods="random, smoothgrad").replace(
            "metrics: [deletion]", "metrics: [deletion, test_explain_agreement]"
        )
        # The agreement metric first on 8 items, then both metrics on 24: in the first batch the
        # attribution is needed for items 0-15 (deletion) but scored by this metric for 8-15 only.
        only_agreement = text.replace("metrics: [deletion, ", "metrics: [")
        run(with_options(parse(only_agreement), limit=8), tmp_path / "r", warm_cache)
        report = run(parse(text), tmp_path / "r", Cache(warm_cache.root))
        assert report.failures == {}
        frame = results.read(report.results_dir)
        agreement = frame[frame["metric"] == "test_explain_agreement"]
        assert len(agreement) == 24 * 2
        assert agreement["value"].max() < 1e-5
        assert sum(seen) == 24 * 2
    finally:
        registry._REGISTRY["metric"].pop("test_explain_agreement", None)


def test_interrupted_run_keeps_finished_batches_and_a_rerun_completes(tmp_path, warm_cache):
    """Ctrl-C mid-run: rows of finished batches are on disk, whole; the rerun does only the rest."""
    calls = []
    trap = {"armed": True}

    @register("method", "test_interrupting")
    @dataclasses.dataclass(frozen=True)
    class Interrupting:
        """Saliency-like map that raises KeyboardInterrupt on its third batch (test only)."""

        version: ClassVar[str] = "1"

        def attribute(self, model, inputs, target, seeds):
            calls.append(len(inputs))
            if trap["armed"] and len(calls) == 3:
                raise KeyboardInterrupt
            return inputs.clone()

    # Tasks of 8 items: random's four windows finish, then test_interrupting's first two.
    m = with_options(manifest(limit=32, batch_size=8, methods="random, test_interrupting"), chunk_size=8)
    with pytest.raises(KeyboardInterrupt):
        run(m, tmp_path / "results", warm_cache)
    folder = tmp_path / "results" / "runner-test"
    partial = results.read(folder)
    assert partial.groupby("method")["item_id"].nunique().to_dict() == {"random": 32, "test_interrupting": 16}
    assert not list(folder.glob(".*.tmp")), "no half-written files"

    trap["armed"] = False
    report = run(m, tmp_path / "results", Cache(warm_cache.root))
    assert report.counts.skipped_items == 16
    assert report.counts.scored_items == 16
    frame = results.read(folder)
    assert frame.groupby("method")["item_id"].nunique().to_dict() == {"random": 32, "test_interrupting": 32}
    assert not frame.duplicated(["job_key", "item_id", "score"]).any()


def test_several_seeds_are_separate_jobs_and_only_seeded_methods_differ(tmp_path, warm_cache):
    text = MANIFEST.format(limit=16, batch_size=16, methods="random, saliency").replace("seeds: [0]", "seeds: [0, 1]")
    report = run(parse(text), tmp_path / "results", warm_cache)
    assert report.jobs == 4
    frame = results.read(report.results_dir)
    wide = frame.pivot_table(index=["method", "item_id"], columns="seed", values="value")
    # The random control draws a new map per seed; saliency is deterministic, and ties are rare.
    assert (wide.loc["random", 0] != wide.loc["random", 1]).mean() > 0.9
    assert (wide.loc["saliency", 0] - wide.loc["saliency", 1]).abs().max() < 0.05
    from xaibench.boards.summary import summary

    board = summary(frame)
    assert set(board["n"]) == {16}, "seeds are averaged per item before the CI, not counted as items"


@pytest.fixture
def flaky_method():
    @register("method", "test_flaky")
    @dataclasses.dataclass(frozen=True)
    class Flaky:
        """Gradient-free map; the variant with fail=true raises at run time (test only)."""

        version: ClassVar[str] = "1"
        fail: bool = False

        def attribute(self, model, inputs, target, seeds):
            if self.fail:
                raise RuntimeError("this variant is broken")
            return inputs.clone()

    yield Flaky


def test_a_failing_variant_does_not_cut_short_its_healthy_twin(tmp_path, warm_cache, flaky_method):
    text = MANIFEST.format(limit=16, batch_size=8, methods="random, test_flaky, test_flaky: {fail: true}")
    report = run(parse(text), tmp_path / "results", warm_cache)
    assert list(report.failures) == ["digits_cnn x digits x test_flaky[fail=True] x deletion (seed 0)"]
    frame = results.read(report.results_dir)
    assert frame.groupby("method")["item_id"].nunique().to_dict() == {"random": 16, "test_flaky": 16}


def test_a_broken_model_fails_its_jobs_and_other_models_still_run(tmp_path, warm_cache):
    @register("model", "test_broken_forward")
    @dataclasses.dataclass(frozen=True)
    class BrokenForward:
        """A model whose forward pass raises (test only)."""

        version: ClassVar[str] = "1"
        revision: ClassVar[str] = "none"
        input_shape: ClassVar[tuple[int, int, int]] = (1, 8, 8)

        def build(self):
            class Explodes(torch.nn.Module):
                def forward(self, x):
                    raise RuntimeError("forward exploded")

            return Explodes()

    text = MANIFEST.format(limit=16, batch_size=8, methods="random, saliency").replace(
        "models: [digits_cnn]", "models: [test_broken_forward, digits_cnn]"
    )
    report = run(parse(text), tmp_path / "results", warm_cache)
    assert sorted(report.failures) == [
        "test_broken_forward x digits x random x deletion (seed 0)",
        "test_broken_forward x digits x saliency x deletion (seed 0)",
    ]
    assert all("forward exploded" in message for message in report.failures.values())
    frame = results.read(report.results_dir)
    assert set(frame["model"]) == {"digits_cnn"} and len(frame) == 16 * 2


def test_a_lost_shard_costs_only_its_own_items(tmp_path, warm_cache):
    m = manifest(limit=16, batch_size=4, methods="saliency")
    run(m, tmp_path / "first", warm_cache)
    shards = sorted((warm_cache.root / "attributions").rglob("*.pt"), key=lambda p: p.stat().st_mtime)
    assert len(shards) == 4
    data = bytearray(shards[0].read_bytes())
    data[-1] ^= 0xFF
    shards[0].write_bytes(bytes(data))
    report = run(m, tmp_path / "second", Cache(warm_cache.root))
    assert report.counts.attributed_items == 4, "only the corrupt shard's items are recomputed"
