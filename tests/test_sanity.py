"""Sanity checks and CI gates: similarity measures against scipy and scikit-image, model
randomization on the trained digits_cnn (gradients change, sobel does not), BatchNorm
re-initialisation without NaN, gates that fail with their reason, regression gates, JUnit XML."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import invoke, one_error_line
from scipy.stats import pearsonr, spearmanr
from skimage.feature import hog as skimage_hog
from skimage.metrics import structural_similarity
from torch import nn

from xaibench import gates, registry, similarity
from xaibench.boards import sanity
from xaibench.gate_schema import Gate
from xaibench.metrics.randomization import (
    EMPRT,
    SMPRT,
    ModelRandomization,
    RandomLogit,
    parameter_layers,
    reinitialise,
)


def _maps(seed: int, shape=(6, 3, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*shape, generator=g)
    b = a + 0.8 * torch.randn(*shape, generator=g)
    a[0], b[1] = a[0].round(), b[1].round()  # ties
    return a, b


@pytest.mark.parametrize("signed", [True, False])
def test_spearman_matches_scipy_with_ties(signed):
    a, b = _maps(0)
    got = similarity.spearman(a, b, signed=signed).numpy()
    reduce = (lambda t: t.sum(0)) if signed else (lambda t: t.abs().sum(0))
    expected = [spearmanr(reduce(x).flatten(), reduce(y).flatten()).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_rank_correlation_of_a_constant_map_is_nan():
    a, b = _maps(1)
    a[2] = 0.0
    got = similarity.similarity("spearman_abs", a, b)
    assert math.isnan(got[2]) and torch.isfinite(got[[0, 1, 3, 4, 5]]).all()
    assert similarity.similarity("spearman", a, a)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(8, 8), (12, 9), (32, 32), (5, 6)])
def test_ssim_matches_scikit_image(shape):
    a, b = _maps(2, (4, 1, *shape))
    got = similarity.ssim(a, b).numpy()
    x, y = similarity.normalised(a).numpy(), similarity.normalised(b).numpy()
    window = similarity.ssim_window(*shape)
    expected = [structural_similarity(p, q, data_range=1.0, win_size=window) for p, q in zip(x, y, strict=True)]
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_hog_is_pearson_of_scikit_image_features():
    a, b = _maps(3, (3, 1, 16, 16))
    got = similarity.hog(a, b).numpy()
    x, y = similarity.normalised(a).numpy(), similarity.normalised(b).numpy()
    expected = []
    for p, q in zip(x, y, strict=True):
        fp, fq = (skimage_hog(m, orientations=9, pixels_per_cell=(2, 2), cells_per_block=(2, 2)) for m in (p, q))
        expected.append(pearsonr(fp, fq).statistic)
    np.testing.assert_allclose(got, expected, atol=1e-10)
    assert similarity.hog(a, a).numpy() == pytest.approx(1.0)


def _explainer(name: str, seeds: torch.Tensor):
    method = registry.build("method", name)

    def explain(model, inputs, target, item_seeds=None):
        copies = len(inputs) // len(seeds)
        return method.attribute(model, inputs, target, seeds.repeat_interleave(copies))

    return explain


def test_gradient_map_decorrelates_after_cascading_randomization_and_sobel_does_not(
    trained_digits_cnn, digits_batch, digits_seeds
):
    model = trained_digits_cnn
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = model(digits_batch.inputs).argmax(1)
    metric = ModelRandomization(mode="cascading")
    finals = {}
    for name in ("saliency", "sobel"):
        explain = _explainer(name, digits_seeds)
        scores = metric.score(
            model, digits_batch, target, explain(model, digits_batch.inputs, target), explain, digits_seeds
        )
        curve = scores["similarity"]
        assert curve.x.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0] and curve.x_label == "layers randomised"
        torch.testing.assert_close(curve.values[:, -1], scores["final"])
        finals[name] = scores["final"]
    assert finals["saliency"].abs().nanmean() < 0.5
    torch.testing.assert_close(finals["sobel"], torch.ones(len(digits_batch)))
    for key, value in model.state_dict().items():  # the model passed in is never changed
        torch.testing.assert_close(value, before[key])


def test_independent_mode_restores_each_layer_and_random_logit_differs(trained_digits_cnn, digits_batch, digits_seeds):
    model, explain = trained_digits_cnn, _explainer("saliency", digits_seeds)
    target = model(digits_batch.inputs).argmax(1)
    maps = explain(model, digits_batch.inputs, target)
    independent = ModelRandomization(mode="independent").score(model, digits_batch, target, maps, explain, digits_seeds)
    assert "final" not in independent and independent["similarity"].values.shape == (len(digits_batch), 5)
    # randomising only the logits layer leaves more of the map than randomising everything
    cascading = ModelRandomization().score(model, digits_batch, target, maps, explain, digits_seeds)
    assert independent["similarity"].values[:, 0].nanmean() > cascading["final"].nanmean()
    logit = RandomLogit().score(model, digits_batch, target, maps, explain, digits_seeds)["similarity"]
    assert logit.nanmean() < 0.9


def test_batchnorm_reinitialisation_keeps_running_stats_and_gives_no_nan():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.train()
    for _ in range(3):
        model(torch.randn(16, 1, 8, 8) * 50 + 20)  # running stats far from (0, 1)
    model.eval()
    norm = model[1]
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    names = [name for name, _ in parameter_layers(model, torch.zeros(1, 1, 8, 8))]
    assert names == ["0", "1", "4"]
    for position, index in enumerate((4, 1, 0)):
        reinitialise(model[index], seed=position)
    torch.testing.assert_close(norm.running_mean, mean)
    torch.testing.assert_close(norm.running_var, var)
    assert torch.isfinite(model(torch.rand(5, 1, 8, 8) * 50)).all()


def test_randomised_weights_depend_on_the_job_seed_only():
    layer_a, layer_b = nn.Linear(4, 3), nn.Linear(4, 3)
    torch.manual_seed(1)
    reinitialise(layer_a, 7)
    torch.manual_seed(2)
    reinitialise(layer_b, 7)
    torch.testing.assert_close(layer_a.weight, layer_b.weight)


# --- gates -------------------------------------------------------------------------------------


def _board(means: dict[tuple[str, str, str], float], higher: bool = False) -> pd.DataFrame:
    records = []
    for (metric, score, method), mean in means.items():
        records.append(
            dict(
                model="digits_cnn",
                dataset="digits",
                split="test",
                target_mode="predicted",
                metric=metric,
                score=score,
                method=method,
                mean=mean,
                ci_low=mean - 0.05,
                ci_high=mean + 0.05,
                n=16,
                verdict="beats random" if method != "random" else None,
                delta=-0.1,
                p_holm=0.01,
                higher_is_better=higher,
            )
        )
    return pd.DataFrame(records)


def _gate(rule, metric, score=None, methods="all_but_controls", value=None, baseline=None) -> Gate:
    return Gate(rule, metric, score, methods, value, "test", baseline)


def test_passes_gate_and_vacuous_gates_fail_with_reasons():
    board = _board(
        {("model_randomization", "final", "saliency"): 0.2, ("model_randomization", "final", "guided_backprop"): 0.7}
    )
    passing = _gate("passes", "model_randomization", "final", ("saliency",), 0.5)
    failing = _gate("passes", "model_randomization", "final", "all_but_controls", 0.5)
    missing = _gate("passes", "model_randomization", "final", ("saliency", "grad_cam"), 0.5)
    no_metric = _gate("passes", "random_logit", "similarity", "all_but_controls", 0.5)
    only_controls = _gate("max_mean", "model_randomization", "final", "all_but_controls", 1.0)
    results = gates.evaluate((passing, failing, missing, no_metric), board)
    assert [r.passed for r in results] == [True, False, False, False]
    assert "guided_backprop" in results[1].failures[0] and "not below 0.5" in results[1].failures[0]
    assert results[2].failures == ("no rows for method grad_cam on metric model_randomization",)
    assert results[3].failures == ("no results for metric random_logit score similarity",)
    assert gates.evaluate((_gate("passes", "model_randomization", "final", (), 0.5),), board)[0].failures == (
        "the gate names no method",
    )
    controls = _board({("model_randomization", "final", "sobel"): 1.0})
    assert gates.evaluate((only_controls,), controls)[0].failures[0].startswith("no methods to judge")


def test_regression_gate_catches_an_injected_drop(tmp_path):
    baseline = _board({("deletion", "auc", "saliency"): 0.20, ("deletion", "auc", "integrated_gradients"): 0.15})
    now = baseline.copy()
    gate = _gate("no_regression", "deletion", None, "all_but_controls", 0.02, "baseline")
    assert gates.evaluate((gate,), now, load=lambda path: baseline)[0].passed
    now.loc[now["method"] == "saliency", "mean"] = 0.30  # deletion AUC: lower is better, so 0.10 worse
    result = gates.evaluate((gate,), now, load=lambda path: baseline)[0]
    assert not result.passed
    assert result.failures == (
        "saliency on digits_cnn x digits deletion/auc: mean 0.300 vs baseline 0.200, worse by 0.100 > tolerance 0.02",
    )
    no_baseline = gates.evaluate((_gate("no_regression", "deletion", value=0.0),), now)[0]
    assert not no_baseline.passed and "no baseline results" in no_baseline.failures[0]


def test_junit_xml_parses_and_counts_cases(tmp_path):
    board = _board({("model_randomization", "final", "saliency"): 0.2, ("model_randomization", "final", "gbp"): 0.9})
    results = gates.evaluate(
        (
            _gate("passes", "model_randomization", "final", ("saliency",), 0.5),
            _gate("passes", "model_randomization", "final", "all", 0.5),
        ),
        board,
    )
    jobs = [gates.JobOutcome("job a"), gates.JobOutcome("job b", "RuntimeError: boom"), gates.JobOutcome("job c")]
    path = tmp_path / "junit.xml"
    gates.write_junit(results, jobs, path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "5" and root.get("failures") == "2"
    suites = root.findall("testsuite")
    assert [(s.get("tests"), s.get("failures")) for s in suites] == [("2", "1"), ("3", "1")]
    assert len(root.findall(".//testcase")) == 5
    failure = suites[1].find("testcase[@name='job b']/failure")
    assert failure is not None and failure.get("message") == "RuntimeError: boom"
    summary = tmp_path / "summary.md"
    gates.write_summary(results, jobs, summary)
    text = summary.read_text()
    assert "1 of 2 gates passed" in text and "**FAIL**" in text and "job b: RuntimeError: boom" in text


# --- the gate command on stored results --------------------------------------------------------


def _rows(tmp_path, manifest_path):
    """Run a tiny gating manifest for real (digits_cnn is trained once per session)."""
    result = invoke("run", str(manifest_path), "-r", str(tmp_path / "results"), "--no-board", "--no-gates")
    assert result.exit_code == 0, result.output
    return tmp_path / "results"


def test_gate_command_fails_with_its_reason_and_writes_reports(tmp_path, trained_digits_cnn):
    manifest = tmp_path / "gated.yaml"
    manifest.write_text(
        "name: gated\nversion: 1\n"
        "options: {split: test, limit: 16, batch_size: 16, target: predicted, seeds: [0]}\n"
        "models: [digits_cnn]\ndatasets: [digits]\nmethods: [random, sobel, saliency]\n"
        "metrics: [model_randomization]\n"
        "gates:\n"
        "  - {rule: passes, metric: model_randomization, methods: [saliency]}\n"
        "  - {rule: passes, metric: model_randomization, methods: [sobel]}\n"
    )
    results = _rows(tmp_path, manifest)
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    outcome = invoke("gate", str(manifest), "--results", str(results), "--junit", str(junit), "--summary", str(summary))
    assert outcome.exit_code == 1, outcome.output
    assert "FAIL" in outcome.stderr and "sobel on digits_cnn x digits model_randomization/final" in outcome.stderr
    assert "is not below 0.5" in outcome.stderr
    root = ET.parse(junit).getroot()
    assert root.get("tests") == str(2 + 3) and root.get("failures") == "1"  # 2 gates, 3 jobs (all have rows)
    assert "1 of 2 gates passed" in summary.read_text()
    # the same manifest with only the passing gate exits 0
    manifest.write_text(
        manifest.read_text().rsplit("  - {rule: passes, metric: model_randomization, methods: [sobel]}", 1)[0]
    )
    assert invoke("gate", str(manifest), "--results", str(results)).exit_code == 0
    rows = pd.read_parquet(next((results / "gated").glob("*.parquet")))
    final = rows[(rows["score"] == "final") & (rows["method"] == "saliency")]["value"].abs()
    assert final.mean() < 0.5
    tables = dict(sanity.tables(rows))
    assert len(tables) == 2
    board = next(t for title, t in tables.items() if "pass/fail" in title)
    assert set(board.loc[board["method"] == "sobel", "result"]) == {"FAIL"}
    assert json.loads(rows["metric_params"].iloc[0])["mode"] == "cascading"


def test_emprt_and_smprt_on_digits(trained_digits_cnn, digits_batch, digits_seeds):
    model = trained_digits_cnn
    target = model(digits_batch.inputs).argmax(1)
    for name, changes in (("saliency", True), ("sobel", False)):
        explain = _explainer(name, digits_seeds)
        maps = explain(model, digits_batch.inputs, target)
        rise = EMPRT().score(model, digits_batch, target, maps, explain, digits_seeds)["rise"]
        final = SMPRT(samples=4).score(model, digits_batch, target, maps, explain, digits_seeds)["final"]
        if changes:
            assert final.nanmean() < 0.5
        else:  # a model-independent map: the same entropy, the same smoothed map
            torch.testing.assert_close(rise, torch.zeros(len(digits_batch)))
            torch.testing.assert_close(final, torch.ones(len(digits_batch)))


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ("{rule: beats_reference, metric: model_randomization}", "compares with the original model's map"),
        ("{rule: passes, metric: deletion}", "rule passes is for sanity checks"),
        ("{rule: no_regression, metric: deletion, value: -1}", "a tolerance is 0 or more"),
    ],
)
def test_gate_schema_refuses_rules_that_cannot_judge(tmp_path, gate, message):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "name: bad\nversion: 1\nmodels: [digits_cnn]\ndatasets: [digits]\nmethods: [random, saliency]\n"
        f"metrics: [deletion, model_randomization]\ngates:\n  - {gate}\n"
    )
    assert message in one_error_line(invoke("check", str(manifest)))
