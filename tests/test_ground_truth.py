"""Ground-truth datasets `suppressor` and `low_snr`, and their models: determinism, masks, an
oracle map scored against the mask, and the suppressor paper's point on a trained linear model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaibench import registry
from xaibench.api import Dataset, TrainingSet
from xaibench.datasets.low_snr import NOISE_STD, class_patterns
from xaibench.datasets.suppressor import regions
from xaibench.models.training import accuracy

DATASETS = ("suppressor", "low_snr")


def dataset(name: str, **params):
    return registry.build("dataset", name, params)


def whole(data, split: str, limit: int) -> TrainingSet:
    batches = list(data.batches(split, batch_size=256, limit=limit))
    return TrainingSet(
        torch.cat([b.inputs for b in batches]),
        torch.cat([b.labels for b in batches]),
        sum((b.ids for b in batches), []),
    )


def mass_in_mask(saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of positive importance inside the mask, per item (the localisation metric's definition)."""
    positive = saliency.flatten(1).clamp_min(0)
    return (positive * masks.flatten(1)).sum(1) / positive.sum(1)


@pytest.mark.parametrize("name", DATASETS)
def test_protocol_and_determinism(name):
    data = dataset(name, n_train=40, n_test=30)
    assert isinstance(data, Dataset)
    assert data.provides >= {"masks"}
    assert data.count("train") == 40 and data.count("test") == 30
    first = list(data.batches("test", batch_size=7, limit=20))
    again = list(dataset(name, n_train=5, n_test=30).batches("test", batch_size=20, limit=20))
    ids = sum((b.ids for b in first), [])
    assert ids == again[0].ids == data.item_ids("test", limit=20)
    assert len(set(ids)) == 20 and ids[3] == f"{name}-test-000003"
    inputs = torch.cat([b.inputs for b in first])
    assert torch.equal(inputs, again[0].inputs), "an item does not depend on batch size or split sizes"
    assert torch.equal(torch.cat([b.masks for b in first]), again[0].masks)
    assert inputs.dtype == torch.float32 and inputs.shape == (20, *data.shape)
    assert inputs.min() >= 0 and inputs.max() <= 1
    # start: a later slice is the same items
    tail = next(data.batches("test", batch_size=5, limit=20, start=15))
    assert tail.ids == ids[15:] and torch.equal(tail.inputs, inputs[15:])
    # another seed gives other images; train and test differ
    other = next(dataset(name, seed=1).batches("test", batch_size=20, limit=20))
    assert not torch.equal(other.inputs, inputs)
    train = next(data.batches("train", batch_size=20, limit=20))
    assert not torch.equal(train.inputs, inputs)
    assert data.revision != dataset(name, seed=1).revision


def test_suppressor_masks_and_generative_model():
    data = dataset("suppressor")
    batch = next(data.batches("test", batch_size=400, limit=400))
    signal, suppressor = (torch.from_numpy(r) for r in regions(16))
    assert batch.masks.shape == (400, 1, 16, 16) and batch.masks.dtype == torch.bool
    assert (batch.masks == signal).all() and (batch.extras["mask:suppressor"] == suppressor).all()
    assert not (signal & suppressor).any() and signal.sum() == suppressor.sum() == 36
    latent = (batch.inputs[:, 0] - 0.5) / 0.1
    s_mean, d_mean = latent[:, signal].mean(1), latent[:, suppressor].mean(1)
    z = 2 * batch.labels.float() - 1
    # the suppressor carries no class information but the signal square's distractor
    assert abs(float(np.corrcoef(d_mean, z)[0, 1])) < 0.12
    assert float(np.corrcoef(d_mean, s_mean - z)[0, 1]) > 0.95
    # subtracting it recovers the class exactly; the signal square alone does not
    assert ((s_mean > 0).long() == batch.labels).float().mean() < 0.92
    assert ((s_mean - d_mean > 0).long() == batch.labels).float().mean() > 0.98


def test_low_snr_masks_hold_the_class_pattern():
    data = dataset("low_snr", snr=2.0)
    batch = next(data.batches("test", batch_size=50, limit=50))
    patterns = torch.from_numpy(class_patterns(0, 4, 6)).float()
    for image, label, mask in zip(batch.inputs, batch.labels, batch.masks, strict=True):
        assert mask.sum() == 36
        rows, cols = mask[0].nonzero(as_tuple=True)
        patch = image[0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        scores = ((patch - 0.5) * patterns).sum((1, 2))
        assert int(scores.argmax()) == int(label)  # at snr 2 the true pattern matches best
    # outside the mask: grey plus noise of the documented size
    outside = batch.inputs[~batch.masks]
    assert abs(float(outside.mean()) - 0.5) < 0.01 and abs(float(outside.std()) - NOISE_STD) < 0.01


@pytest.mark.parametrize("name", DATASETS)
def test_oracle_map_scores_one_and_random_scores_the_area(name):
    batch = next(dataset(name).batches("test", batch_size=32, limit=32))
    oracle = batch.masks.float().expand_as(batch.inputs)
    assert torch.allclose(mass_in_mask(oracle, batch.masks), torch.ones(32))
    uniform = torch.ones_like(batch.inputs)
    area = batch.masks.flatten(1).float().mean(1)
    assert torch.allclose(mass_in_mask(uniform, batch.masks), area)
    if name == "suppressor":  # the oracle puts nothing on the suppressor
        assert mass_in_mask(oracle, batch.extras["mask:suppressor"]).max() == 0
    if "mass_in_mask" in registry.names("metric"):
        metric = registry.build("metric", "mass_in_mask", {})
        scores = metric.score(None, batch, batch.labels, oracle, None, torch.zeros(32, dtype=torch.long))
        assert torch.allclose(next(iter(scores.values())), torch.ones(32))


def test_linear_model_on_suppressor_weights_the_suppressor():
    """Wilming et al.'s point: the best linear model puts weight (of opposite sign) on the
    suppressor square, which has no statistical association with the label."""
    spec = registry.build("model", "suppressor_linear", {"epochs": 10})
    data = spec.train_data()
    train, test = whole(data, "train", 1000), whole(data, "test", 500)
    module = spec.fit(spec.build(), train, 0, "cpu")
    assert accuracy(module, test.inputs, test.labels) > 0.97
    contrast = (module[1].weight[1] - module[1].weight[0]).detach().view(16, 16)
    signal, suppressor = (torch.from_numpy(r) for r in regions(16))
    assert contrast[signal].mean() > 0.3
    assert contrast[suppressor].mean() < -0.3  # cancels the shared distractor
    assert contrast[~(signal | suppressor)].abs().mean() < 0.25 * contrast[signal].mean()
    # so a gradient map (here the weights themselves) puts non-zero mass on the suppressor
    share = contrast[suppressor].abs().sum() / contrast.abs().sum()
    assert share > 0.2


def test_models_match_their_data_and_fit_is_seeded():
    for name in ("suppressor_linear", "suppressor_cnn", "low_snr_cnn"):
        spec = registry.build("model", name, {})
        assert spec.input_shape == spec.train_data().shape
        out = spec.build()(torch.rand(2, *spec.input_shape))
        assert out.shape == (2, spec.train_data().num_classes)
    spec = registry.build("model", "suppressor_linear", {"epochs": 1})
    train = whole(spec.train_data(), "train", 64)
    a = spec.fit(spec.build(), train, 3, "cpu").state_dict()
    b = spec.fit(spec.build(), train, 3, "cpu").state_dict()
    c = spec.fit(spec.build(), train, 4, "cpu").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
