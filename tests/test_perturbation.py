"""Deletion and insertion curves: how ``switch_curve`` runs the model, and agreement with Quantus.

``switch_curve`` runs a CPU model with channels-last weights, sends the copies in passes that may
split a batch, and sends a ``start`` or ``end`` image shared by every item (black) through once.
None of that may change a value or leave the caller's module changed; these tests hold it to a
plain reference: one pass per fraction, the model as it is.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from xaibench.imaging import importance_map, rank_pixels
from xaibench.metrics import perturbation
from xaibench.metrics.perturbation import Deletion, Insertion, switch_curve
from xaibench.seeding import item_seeds


def reference_curve(model, start, end, order, target, fractions):
    """One pass per fraction, the model's own layout, every copy computed: the plain definition."""
    batch, _, height, width = start.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(height * width).expand_as(order))
    rank = rank.view(batch, 1, height, width)
    points = []
    with torch.no_grad():
        for count in torch.round(fractions * height * width).long():
            probs = model(torch.where(rank < count, end, start)).softmax(-1)
            points.append(probs.gather(1, target.view(-1, 1)).squeeze(1))
    return torch.stack(points, 1)


@pytest.fixture
def case(tiny_cnn, digits_batch):
    """tiny_cnn, 8 digits, their predicted classes and a random (tie-free) ranking."""
    with torch.no_grad():
        target = tiny_cnn(digits_batch.inputs).argmax(1)
    maps = torch.randn(digits_batch.inputs.shape, generator=torch.Generator().manual_seed(3))
    order = rank_pixels(importance_map(maps), item_seeds(0, digits_batch.ids, "metric:deletion"))
    return tiny_cnn, digits_batch.inputs, target, maps, order


@pytest.mark.parametrize("end", ["black", "mean", "inputs"])
@pytest.mark.parametrize("budget", [1, 64 * 5, 1 << 16])
def test_switch_curve_matches_the_plain_definition(monkeypatch, case, end, budget):
    model, inputs, target, _, order = case
    start = torch.zeros_like(inputs) if end == "inputs" else inputs
    stop = {"black": torch.zeros_like(inputs), "mean": perturbation.fill_image(inputs, "mean", 0.0)}.get(end, inputs)
    fractions = torch.linspace(0, 1, 9)
    monkeypatch.setitem(perturbation.PASS_ELEMENTS, "cpu", budget)
    got = switch_curve(model, start, stop, order, target, fractions)
    expected = reference_curve(model, start, stop, order, target, fractions)
    assert got.shape == (len(inputs), 9)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_passes_split_a_batch_to_the_budget_and_a_shared_black_image_goes_once(monkeypatch, case):
    model, inputs, target, _, order = case
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    monkeypatch.setitem(perturbation.PASS_ELEMENTS, "cpu", 3 * 64)  # 3 images of 8x8 per pass
    switch_curve(model, inputs, torch.zeros_like(inputs), order, target, torch.linspace(0, 1, 5))
    assert sizes[0] == 1, "the all-black copies of the 8 items: one image, one pass"
    assert max(sizes[1:]) == 3 and sum(sizes[1:]) == 4 * len(inputs), "fractions 0, 1/4, 1/2, 3/4 of every item"


def test_an_item_scores_the_same_alone_and_in_a_batch(case, digits_batch):
    """The shared black image goes through alone in a batch, with the copies when scored alone."""
    model, _, target, maps, _ = case
    seeds = item_seeds(0, digits_batch.ids, "metric:deletion")
    metric = Deletion(steps=8)
    together = metric.score(model, digits_batch, target, maps, None, seeds)["auc"]
    alone = [
        metric.score(model, digits_batch.select([i]), target[i : i + 1], maps[i : i + 1], None, seeds[i : i + 1])["auc"]
        for i in range(len(digits_batch))
    ]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-6, rtol=0)


def test_the_callers_weights_are_given_back_unchanged(case):
    model, inputs, target, _, order = case
    before = {name: (p.data_ptr(), p.stride()) for name, p in model.named_parameters()}
    switch_curve(model, inputs, torch.zeros_like(inputs), order, target, torch.linspace(0, 1, 5))
    assert {name: (p.data_ptr(), p.stride()) for name, p in model.named_parameters()} == before


class Failing(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if len(x) > 1:
            raise ValueError("no")
        return self.inner(x)


def test_weights_are_given_back_when_the_model_raises(case):
    model, inputs, target, _, order = case
    failing = Failing(model)
    before = {name: p.stride() for name, p in failing.named_parameters()}
    with pytest.raises(ValueError, match="no"):
        switch_curve(failing, inputs, torch.zeros_like(inputs), order, target, torch.linspace(0, 1, 5))
    assert {name: p.stride() for name, p in failing.named_parameters()} == before


class ViewingCNN(nn.Module):
    """Flattens its feature map with ``view``, which channels-last activations cannot serve."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        features = torch.relu(self.conv(x))
        return self.head(features.view(len(x), -1))


def test_a_model_that_needs_its_own_layout_still_gets_scored(case):
    _, inputs, _, _, order = case
    torch.manual_seed(0)
    model = ViewingCNN().eval()
    with torch.no_grad():
        target = model(inputs).argmax(1)
    fractions = torch.linspace(0, 1, 5)
    got = switch_curve(model, inputs, torch.zeros_like(inputs), order, target, fractions)
    expected = reference_curve(model, inputs, torch.zeros_like(inputs), order, target, fractions)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert model.conv.weight.is_contiguous()


@pytest.mark.parametrize("cls", [Deletion, Insertion])
def test_lerf_is_morf_of_the_reversed_order_after_the_changes(case, digits_batch, cls):
    """A guard on the copy numbering: LeRF equals MoRF run on the reversed ranking."""
    model, inputs, target, maps, order = case
    fractions = torch.linspace(0, 1, 9)
    start, end = cls(steps=8).endpoints(inputs)
    seeds = item_seeds(0, digits_batch.ids, f"metric:{cls.plugin_name}")
    lerf = cls(steps=8, order="lerf").score(model, digits_batch, target, maps, None, seeds)["lerf_auc"]
    reversed_order = rank_pixels(importance_map(maps), seeds).flip(1)
    curve = reference_curve(model, start, end, reversed_order, target, fractions)
    torch.testing.assert_close(lerf, torch.trapezoid(curve, fractions, dim=1), atol=1e-6, rtol=0)


def test_deletion_equals_quantus_pixel_flipping(trained_digits_cnn, digits_batch):
    """Quantus 0.6 PixelFlipping under the matching settings (benchmarks/quantus_pixel_flipping.py)."""
    quantus = pytest.importorskip("quantus")
    model, inputs, side, steps = trained_digits_cnn, digits_batch.inputs, 8, 16
    maps = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(6))
    maps = maps / maps.abs().max()  # Quantus' normalise_by_max then divides by exactly 1
    with torch.no_grad():
        target = model(inputs).argmax(1)
    batch = digits_batch
    seeds = item_seeds(0, batch.ids, "metric:deletion")
    fractions = torch.linspace(0, 1, steps + 1)

    ours = switch_curve(
        model, inputs, torch.zeros_like(inputs), rank_pixels(importance_map(maps), seeds), target, fractions
    )
    metric = quantus.PixelFlipping(
        features_in_step=side * side // steps, abs=True, perturb_baseline=0.0, disable_warnings=True
    )
    with warnings.catch_warnings():  # Quantus warns when a step changes no pixel (already black)
        warnings.simplefilter("ignore")
        theirs = np.asarray(metric(model, inputs.numpy(), target.numpy(), maps.numpy(), channel_first=True))
    assert ours[:, 1:].max() - ours[:, 1:].min() > 0.3, "curves flat enough to hide a wrong order"
    np.testing.assert_allclose(ours[:, 1:].numpy(), theirs, atol=1e-5, rtol=0)
    auc = Deletion(steps=steps).score(model, batch, target, maps, None, seeds)["auc"]
    rebuilt = np.trapezoid(np.concatenate([ours[:, :1].numpy(), theirs], 1), fractions.numpy(), axis=1)
    np.testing.assert_allclose(auc.numpy(), rebuilt, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", [Deletion, Insertion])
def test_the_runs_logits_replace_the_pass_of_the_unchanged_inputs(case, digits_batch, cls):
    """A run hands the metric the logits that chose the target (``Batch.extras[LOGITS]``): the
    curve's point on the unchanged inputs (deletion's first, insertion's last) is read from them,
    no copy of the unchanged items goes through the model, and the scores stay the same."""
    from xaibench.api import LOGITS, Batch

    model, inputs, target, maps, _ = case
    seeds = item_seeds(0, digits_batch.ids, "metric:deletion")
    metric = cls(steps=8)
    with torch.no_grad():
        logits = model(inputs)
    given = Batch(digits_batch.ids, inputs, digits_batch.labels, None, {LOGITS: logits})
    passes = []
    hook = model.register_forward_pre_hook(lambda module, args: passes.append(args[0].clone()))
    try:
        plain = metric.score(model, digits_batch, target, maps, None, seeds)["auc"]
        sent_plain = torch.cat(passes)
        passes.clear()
        reused = metric.score(model, given, target, maps, None, seeds)["auc"]
        sent_reused = torch.cat(passes)
    finally:
        hook.remove()
    torch.testing.assert_close(reused, plain, atol=1e-6, rtol=0)

    def copies_of_the_inputs(sent):
        return sum(int((sent == x).flatten(1).all(1).sum()) for x in inputs)

    assert copies_of_the_inputs(sent_plain) == len(inputs)
    assert copies_of_the_inputs(sent_reused) == 0
