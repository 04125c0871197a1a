"""Metrics: conformance over every registered metric, analytic oracles, an independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pixel_set import SIDE, PixelSetModel, p_indicator  # the shared known-answer model
from torch import nn

from xaibench import registry
from xaibench.api import Batch, Curve
from xaibench.imaging import importance_map, rank_pixels
from xaibench.metrics.perturbation import Deletion, Insertion
from xaibench.seeding import item_seeds

METRICS = registry.names("metric")
CURVES = {"deletion", "insertion"}


def metric_seeds(ids: list[str], name: str = "deletion") -> torch.Tensor:
    return item_seeds(0, ids, f"metric:{name}")


def make_batch(inputs: torch.Tensor, labels: torch.Tensor | None = None, prefix: str = "item") -> Batch:
    ids = [f"{prefix}-{i:03d}" for i in range(len(inputs))]
    labels = torch.zeros(len(inputs), dtype=torch.long) if labels is None else labels
    return Batch(ids=ids, inputs=inputs, labels=labels)


def no_explain(model, inputs, target):  # metrics under test here must not need it
    raise AssertionError("explain was called")


def random_method_map(batch: Batch) -> torch.Tensor:
    method = registry.build("method", "random")
    return method.attribute(None, batch.inputs, batch.labels, item_seeds(0, batch.ids, "method"))


# ---- conformance: every registered metric -------------------------------------------------------


def test_registry_lists_the_builtin_metrics():
    assert {"deletion", "insertion"} <= set(METRICS)


@pytest.mark.parametrize("name", METRICS)
def test_metric_conformance(name, tiny_cnn, digits_batch):
    metric = registry.build("metric", name)
    cls = type(metric)
    assert isinstance(cls.version, str) and cls.version
    assert isinstance(cls.requires, frozenset)
    assert isinstance(cls.higher_is_better, (bool, dict))
    if hasattr(metric, "needs"):  # study metrics get their retrained models from the runner (tests/test_roar.py ...)
        pytest.skip(f"{name} is a study metric: its score needs fitted models the runner provides")
    if metric.requires - {"masks"}:
        pytest.skip(f"{name} needs {sorted(metric.requires)} from the runner")
    if "masks" in metric.requires:  # a centre square stands in for an object mask
        masks = torch.zeros(len(digits_batch), 1, 8, 8, dtype=torch.bool)
        masks[:, :, 2:6, 2:6] = True
        digits_batch = Batch(digits_batch.ids, digits_batch.inputs, digits_batch.labels, masks=masks)

    with torch.no_grad():
        target = tiny_cnn(digits_batch.inputs).argmax(1)
    attributions = registry.build("method", "saliency").attribute(
        tiny_cnn, digits_batch.inputs, target, item_seeds(0, digits_batch.ids, "method")
    )
    seeds = metric_seeds(digits_batch.ids, name)
    state = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    inputs_before = digits_batch.inputs.clone()

    saliency = registry.build("method", "saliency")

    def explain(model, inputs, explain_target, seeds=None):
        return saliency.attribute(model, inputs, explain_target, None)

    first = metric.score(tiny_cnn, digits_batch, target, attributions, explain, seeds)
    second = metric.score(tiny_cnn, digits_batch, target, attributions, explain, seeds)

    assert isinstance(first, dict) and first
    if isinstance(cls.higher_is_better, dict):
        assert set(first) <= set(cls.higher_is_better), "every score needs a declared direction"
    for score, values in first.items():
        if isinstance(values, Curve):  # one value per (item, point)
            assert values.x.dim() == 1 and torch.isfinite(values.x).all(), score
            assert values.values.shape == (len(digits_batch), len(values.x)), score
            assert isinstance(values.x_label, str) and values.x_label, score
            assert torch.equal(values.x, second[score].x), score
            values, second_values = values.values, second[score].values
        else:
            assert values.shape == (len(digits_batch),), score
            second_values = second[score]
        assert torch.isfinite(values).all(), score
        assert torch.equal(values, second_values), f"{score} is not deterministic"
        if name in CURVES:
            assert ((values >= 0) & (values <= 1)).all(), score
    for key, value in tiny_cnn.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not tiny_cnn.training
    assert torch.equal(digits_batch.inputs, inputs_before), "a metric must not modify the batch in place"

    # one item's value does not depend on the batch it is scored in
    sub = digits_batch.select([3])
    alone = metric.score(tiny_cnn, sub, target[3:4], attributions[3:4], explain, seeds[3:4])
    for score, values in first.items():
        if isinstance(values, Curve):
            values, alone[score] = values.values, alone[score].values
        assert torch.allclose(alone[score][0], values[3], atol=1e-6), score


# ---- analytic: a model that looks only at a known pixel set P -----------------------------------


def oracle_batch(n: int = 16, image: torch.Tensor | None = None):
    image = torch.ones(1, 1, SIDE, SIDE) if image is None else image
    batch = make_batch(image.expand(n, -1, -1, -1).contiguous(), prefix="oracle")
    target = torch.zeros(n, dtype=torch.long)
    oracle = p_indicator().expand(n, -1, -1, -1).contiguous()
    return batch, target, oracle


def test_deletion_ranks_the_oracle_below_random_below_its_reverse():
    model = PixelSetModel(k=1.0)
    batch, target, oracle = oracle_batch()
    seeds = metric_seeds(batch.ids)
    metric = Deletion(steps=32)
    scores = {
        name: metric.score(model, batch, target, attributions, no_explain, seeds)["auc"]
        for name, attributions in {
            "oracle": oracle,
            "random": random_method_map(batch),
            "reverse": 1.0 - oracle,
        }.items()
    }
    assert (scores["oracle"] < scores["random"]).all()
    assert (scores["random"] < scores["reverse"]).all()
    # the oracle's score does not depend on how ties inside P are broken
    assert torch.allclose(scores["oracle"], scores["oracle"][0].expand_as(scores["oracle"]))
    # after P is gone the probability is 1/2 (logits [0, 0]); the oracle removes P in the first 1/8
    assert 0.5 < float(scores["oracle"][0]) < 0.5 + 1 / 8


def test_insertion_from_black_ranks_the_oracle_above_random():
    model = PixelSetModel(k=1.0, offset=4.0)  # black image: logits [-4, 0]
    batch, target, oracle = oracle_batch()
    seeds = metric_seeds(batch.ids, "insertion")
    metric = Insertion(steps=32, start="black")
    oracle_auc = metric.score(model, batch, target, oracle, no_explain, seeds)["auc"]
    random_auc = metric.score(model, batch, target, random_method_map(batch), no_explain, seeds)["auc"]
    reverse_auc = metric.score(model, batch, target, 1.0 - oracle, no_explain, seeds)["auc"]
    assert (oracle_auc > random_auc).all()
    assert (random_auc > reverse_auc).all()


def test_insertion_from_blur_ranks_the_oracle_above_random():
    """Default start (a blurred copy): P bright on black, so blurring P lowers the evidence."""
    model = PixelSetModel(k=2.0, offset=12.0)
    batch, target, oracle = oracle_batch(image=p_indicator())
    seeds = metric_seeds(batch.ids, "insertion")
    metric = Insertion(steps=32)
    with torch.no_grad():
        start = model(metric_start(batch.inputs, metric))
    assert (start[:, 0] < start[:, 1]).all(), "the blurred start must not already show the evidence"
    oracle_auc = metric.score(model, batch, target, oracle, no_explain, seeds)["auc"]
    random_auc = metric.score(model, batch, target, random_method_map(batch), no_explain, seeds)["auc"]
    assert (oracle_auc > random_auc).all()


def metric_start(inputs, metric):
    from xaibench.metrics.perturbation import fill_image

    return fill_image(inputs, metric.start, metric.blur_sigma)


def test_deletion_of_an_insensitive_model_is_constant():
    """A model that ignores its input gives the same curve for any map: AUC = its probability."""

    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([[2.0, 0.0, -1.0]]).expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)

    batch = make_batch(torch.rand(4, 1, SIDE, SIDE))
    target = torch.tensor([0, 1, 2, 0])
    expected = torch.tensor([2.0, 0.0, -1.0]).softmax(0)[target]
    auc = Deletion(steps=10).score(Constant(), batch, target, random_method_map(batch), no_explain, target)["auc"]
    assert torch.allclose(auc, expected, atol=1e-6)


# ---- an independent reference for deletion, in plain numpy ----------------------------------------


def numpy_deletion_auc(weights, inputs, importance, target, steps):
    """Reference: loop over fractions, zero the round(f*N) most important pixels (all channels)."""
    w1, b1, w2, b2 = weights
    _, height, width = inputs.shape
    n = height * width
    order = np.argsort(-importance.reshape(-1), kind="stable")  # strict ranking, no ties
    fractions = np.linspace(0.0, 1.0, steps + 1)
    probabilities = []
    for f in fractions:
        image = inputs.astype(np.float64).copy()
        removed = order[: int(round(f * n))]
        rows, cols = np.unravel_index(removed, (height, width))
        image[:, rows, cols] = 0.0
        hidden = np.tanh(w1 @ image.reshape(-1) + b1)
        logits = w2 @ hidden + b2
        exp = np.exp(logits - logits.max())
        probabilities.append(exp[target] / exp.sum())
    return np.trapezoid(np.array(probabilities), fractions)


@pytest.mark.parametrize("steps", [4, 5, 10])
def test_deletion_matches_a_numpy_reference(steps):
    rng = np.random.default_rng(11)
    channels, side, hidden, classes, items = 2, 4, 6, 3, 5
    w1 = rng.normal(size=(hidden, channels * side * side)).astype(np.float32)
    b1 = rng.normal(size=hidden).astype(np.float32)
    w2 = rng.normal(size=(classes, hidden)).astype(np.float32)
    b2 = rng.normal(size=classes).astype(np.float32)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.Tanh(), nn.Linear(hidden, classes)
    )
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(w1))
        model[1].bias.copy_(torch.from_numpy(b1))
        model[3].weight.copy_(torch.from_numpy(w2))
        model[3].bias.copy_(torch.from_numpy(b2))
    model.eval()

    inputs = rng.uniform(size=(items, channels, side, side)).astype(np.float32)
    # signed attributions whose abs-sum over channels is a strict ranking of the 16 pixels
    pixel_importance = np.stack([rng.permutation(side * side) + 1.0 for _ in range(items)]).reshape(items, side, side)
    share = rng.uniform(0.2, 0.8, size=(items, side, side))
    signs = rng.choice([-1.0, 1.0], size=(items, channels, side, side))
    attributions = signs * np.stack([share * pixel_importance, (1 - share) * pixel_importance], axis=1)
    target = rng.integers(classes, size=items)

    batch = make_batch(torch.from_numpy(inputs))
    got = Deletion(steps=steps).score(
        model,
        batch,
        torch.from_numpy(target),
        torch.from_numpy(attributions.astype(np.float32)),
        no_explain,
        metric_seeds(batch.ids),
    )["auc"]
    expected = [
        numpy_deletion_auc((w1, b1, w2, b2), inputs[i], pixel_importance[i], target[i], steps) for i in range(items)
    ]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)


def test_deletion_chunking_does_not_change_results(monkeypatch, tiny_cnn, digits_batch):
    """PASS_ELEMENTS bounds memory only: one pass per fraction gives the same scores."""
    from xaibench.metrics import perturbation

    with torch.no_grad():
        target = tiny_cnn(digits_batch.inputs).argmax(1)
    attributions = random_method_map(digits_batch)
    seeds = metric_seeds(digits_batch.ids)
    whole = Deletion(steps=8).score(tiny_cnn, digits_batch, target, attributions, no_explain, seeds)["auc"]
    monkeypatch.setattr(perturbation, "PASS_ELEMENTS", {"cpu": 1})
    chunked = Deletion(steps=8).score(tiny_cnn, digits_batch, target, attributions, no_explain, seeds)["auc"]
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_deletion_fill_and_reduce_parameters_matter(tiny_cnn, digits_batch):
    with torch.no_grad():
        target = tiny_cnn(digits_batch.inputs).argmax(1)
    attributions = torch.randn(digits_batch.inputs.shape, generator=torch.Generator().manual_seed(0))
    seeds = metric_seeds(digits_batch.ids)

    def auc(**params):
        return Deletion(steps=8, **params).score(tiny_cnn, digits_batch, target, attributions, no_explain, seeds)["auc"]

    assert not torch.allclose(auc(fill="black"), auc(fill="mean"))
    assert not torch.allclose(auc(reduce="abs_sum"), auc(reduce="sum"))


def test_curve_parameter_checks():
    from xaibench.errors import UserError

    with pytest.raises(UserError, match="steps"):
        registry.build("metric", "deletion", {"steps": 0})
    with pytest.raises(UserError, match="fill"):
        registry.build("metric", "deletion", {"fill": "white"})


# ---- ranking and its tie-break ---------------------------------------------------------------------


def test_rank_pixels_follows_a_strict_ranking_whatever_the_seed():
    importance = torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
    for seed in (0, 1, 99):
        order = rank_pixels(importance, torch.tensor([seed, seed + 1]))
        assert order.tolist() == [[1, 2, 3, 0], [0, 1, 2, 3]]


def test_rank_pixels_breaks_ties_by_a_seeded_per_item_order():
    n = 64
    flat = torch.ones(1, n)
    seeds = item_seeds(0, ["a", "b", "c", "d"], "metric:deletion")

    def ranked(rows: list[int]) -> torch.Tensor:
        return rank_pixels(flat.expand(len(rows), -1).contiguous(), seeds[rows])

    alone = ranked([0])[0]
    assert sorted(alone.tolist()) == list(range(n)), "a permutation of the pixels"
    assert alone.tolist() != list(range(n)), "ties are not broken by memory layout"
    assert torch.equal(alone, ranked([0])[0]), "same seed, same order"
    assert not torch.equal(alone, ranked([1])[0]), "another seed, another order"
    # independent of the batch: item 'a' in a batch of four, in another position
    assert torch.equal(ranked([3, 2, 1, 0])[3], alone)
    assert torch.equal(ranked([1, 0])[1], alone)


def test_rank_pixels_breaks_ties_within_groups_only():
    importance = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    for seed in range(5):
        order = rank_pixels(importance, torch.tensor([seed]))[0].tolist()
        assert set(order[:4]) == {1, 3, 5, 7}
        assert set(order[4:]) == {0, 2, 4, 6}


def test_importance_map_reduces_channels():
    attributions = torch.tensor([[[[1.0, -2.0]], [[-3.0, 1.0]]]])  # (1, 2, 1, 2)
    assert importance_map(attributions, "abs_sum").tolist() == [[4.0, 3.0]]
    assert importance_map(attributions, "sum").tolist() == [[-2.0, -1.0]]
    assert importance_map(attributions, "max_abs").tolist() == [[3.0, 2.0]]
    with pytest.raises(ValueError):
        importance_map(attributions, "median")
