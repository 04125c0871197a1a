"""Faithfulness family beside ROAD: MoRF/LeRF curves, faithfulness correlation, captum's infidelity
and max-sensitivity, localisation. Known answers, independent references and direction checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.metrics import infidelity, sensitivity_max
from pixel_set import SIDE, PixelSetModel, p_indicator  # the shared known-answer model
from torch import nn

from xaibench import registry
from xaibench.api import Batch
from xaibench.imaging import rank_pixels
from xaibench.metrics import captum_metrics
from xaibench.metrics.captum_metrics import INFIDELITY_SALT, SENSITIVITY_SALT, Infidelity, SensitivityMax
from xaibench.metrics.faithfulness import FaithfulnessCorrelation, draw_subsets, subset_count
from xaibench.metrics.localisation import MassInMask, PointingGame
from xaibench.metrics.perturbation import Deletion, Insertion
from xaibench.seeding import generator, item_seeds


def make_batch(inputs: torch.Tensor, prefix: str = "item", masks: torch.Tensor | None = None) -> Batch:
    ids = [f"{prefix}-{i:03d}" for i in range(len(inputs))]
    return Batch(ids=ids, inputs=inputs, labels=torch.zeros(len(inputs), dtype=torch.long), masks=masks)


def seeds_of(batch: Batch, name: str) -> torch.Tensor:
    return item_seeds(0, batch.ids, f"metric:{name}")


def no_explain(model, inputs, target):
    raise AssertionError("explain was called")


def saliency_explain(model, inputs, target):
    return registry.build("method", "saliency").attribute(model, inputs, target, torch.zeros(len(inputs)))


def oracle_case(n: int = 12):
    """Ones image, the P-model, the oracle map (P), its reverse (1 - P) and a seeded random map."""
    batch = make_batch(torch.ones(n, 1, SIDE, SIDE), prefix="oracle", masks=p_indicator().bool().expand(n, -1, -1, -1))
    target = torch.zeros(n, dtype=torch.long)
    oracle = p_indicator().expand(n, -1, -1, -1).contiguous()
    random = torch.rand(n, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(3))
    return batch, target, {"oracle": oracle, "random": random, "reverse": 1.0 - oracle}


def scores_of(metric, model, batch, target, maps, name, explain=no_explain):
    seeds = seeds_of(batch, name)
    return {
        kind: next(iter(metric.score(model, batch, target, attributions, explain, seeds).values()))
        for kind, attributions in maps.items()
    }


# ---- (1) direction on a model with known relevant pixels ---------------------------------------------


@pytest.mark.parametrize(
    "metric, higher",
    [
        (Deletion(steps=32), False),
        (Deletion(steps=32, order="lerf"), True),
        (Insertion(steps=32, start="black"), True),
        (Insertion(steps=32, start="black", order="lerf"), False),
    ],
    ids=["deletion-morf", "deletion-lerf", "insertion-morf", "insertion-lerf"],
)
def test_curves_rank_oracle_random_reverse_by_their_direction(metric, higher):
    model = PixelSetModel(k=1.0, offset=0.0 if isinstance(metric, Deletion) else 4.0)
    batch, target, maps = oracle_case()
    result = {
        kind: metric.score(model, batch, target, a, no_explain, seeds_of(batch, "curve")) for kind, a in maps.items()
    }
    (name,) = set(result["oracle"])
    assert name == ("auc" if metric.order == "morf" else "lerf_auc")
    assert type(metric).higher_is_better[name] is higher
    sign = 1.0 if higher else -1.0
    assert (sign * (result["oracle"][name] - result["random"][name]) > 0).all()
    assert (sign * (result["random"][name] - result["reverse"][name]) > 0).all()


@pytest.mark.parametrize("cls", [Deletion, Insertion])
def test_lerf_and_morf_order_oracle_and_reverse_oppositely(cls):
    model = PixelSetModel(k=1.0, offset=0.0 if cls is Deletion else 4.0)
    batch, target, maps = oracle_case()
    extra = {} if cls is Deletion else {"start": "black"}
    morf = scores_of(cls(steps=16, **extra), model, batch, target, maps, "curve")
    lerf = scores_of(cls(steps=16, order="lerf", **extra), model, batch, target, maps, "curve")
    assert torch.equal(torch.sign(morf["oracle"] - morf["reverse"]), -torch.sign(lerf["oracle"] - lerf["reverse"]))
    assert (morf["oracle"] != morf["reverse"]).all()


def test_faithfulness_correlation_direction():
    model = PixelSetModel(k=0.5, offset=2.0)
    batch, target, maps = oracle_case()
    got = scores_of(FaithfulnessCorrelation(), model, batch, target, maps, "faithfulness_correlation")
    assert (got["oracle"] > 0.9).all()
    assert (got["oracle"] > got["random"]).all() and (got["random"] > got["reverse"]).all()
    assert (got["reverse"] < -0.9).all()


def test_infidelity_direction():
    """Logit linear in x: the oracle (k on P) explains every perturbation exactly; its negation is
    the worst linear map; a random map is in between (on average over items)."""
    model = PixelSetModel(k=1.0)
    batch, target, maps = oracle_case()
    maps["reverse"] = -maps["oracle"]  # for a non-ranking metric the reversed oracle is the negated one
    got = scores_of(Infidelity(normalize=False), model, batch, target, maps, "infidelity")
    assert (got["oracle"].abs() < 1e-6).all()
    assert (got["oracle"] < got["random"]).all() and (got["oracle"] < got["reverse"]).all()
    assert got["random"].mean() < got["reverse"].mean()
    normalized = scores_of(Infidelity(), model, batch, target, maps, "infidelity")
    assert (normalized["oracle"].abs() < 1e-6).all() and (normalized["reverse"].abs() < 1e-6).all(), "sign is fitted"
    assert (normalized["random"] > 1e-3).all()


def test_sensitivity_max_direction():
    """A linear model's saliency does not move with the input (0); input x gradient does, by about
    the radius; a fresh random map each call is the least stable."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 3)).eval()
    batch, target, maps = oracle_case(4)
    metric = SensitivityMax()
    seeds = seeds_of(batch, "sensitivity_max")

    def run(explain):
        return metric.score(model, batch, target, maps["random"], explain, seeds)["sensitivity_max"]

    def input_x_gradient(m, x, t):
        return registry.build("method", "input_x_gradient").attribute(m, x, t, torch.zeros(len(x)))

    def fresh_random(m, x, t):
        return torch.rand_like(x)

    stable, moving, noisy = run(saliency_explain), run(input_x_gradient), run(fresh_random)
    assert (stable == 0).all()
    assert (moving > 0).all() and (moving < 2 * metric.radius).all()  # |dx| <= radius on inputs of 1
    assert (noisy > 0.3).all()


def test_localisation_direction():
    batch, target, maps = oracle_case()
    mass = scores_of(MassInMask(), None, batch, target, maps, "mass_in_mask")
    assert (mass["oracle"] == 1).all() and (mass["reverse"] == 0).all()
    assert (mass["oracle"] > mass["random"]).all() and (mass["random"] > mass["reverse"]).all()
    hit = scores_of(PointingGame(), None, batch, target, maps, "pointing_game")
    assert (hit["oracle"] == 1).all() and (hit["reverse"] == 0).all()


# ---- (2) faithfulness correlation against a direct numpy computation --------------------------------


def linear_model(channels: int, side: int, classes: int, seed: int):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(classes, channels * side * side)).astype(np.float32)
    b = rng.normal(size=classes).astype(np.float32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, classes))
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(w))
        model[1].bias.copy_(torch.from_numpy(b))
    return model.eval(), w.astype(np.float64), b.astype(np.float64)


def test_faithfulness_correlation_matches_numpy_on_a_linear_model():
    channels, side, classes, items, n_subsets = 2, 5, 3, 4, 30
    model, w, b = linear_model(channels, side, classes, seed=7)
    rng = np.random.default_rng(8)
    inputs = rng.uniform(size=(items, channels, side, side)).astype(np.float32)
    attributions = rng.normal(size=inputs.shape).astype(np.float32)
    target = rng.integers(classes, size=items)
    batch = make_batch(torch.from_numpy(inputs))
    seeds = seeds_of(batch, "faithfulness_correlation")
    metric = FaithfulnessCorrelation(n_subsets=n_subsets, subset_size=6, reduce="sum")
    got = metric.score(model, batch, torch.from_numpy(target), torch.from_numpy(attributions), no_explain, seeds)

    def probability(image, t):
        logits = w @ image.reshape(-1) + b
        e = np.exp(logits - logits.max())
        return e[t] / e.sum()

    subsets = draw_subsets(seeds, side * side, n_subsets, 6).numpy()
    expected = []
    for i in range(items):
        importance = attributions[i].astype(np.float64).sum(0).reshape(-1)
        base = probability(inputs[i].astype(np.float64), target[i])
        sums, drops = [], []
        for s in subsets[i]:
            image = inputs[i].astype(np.float64).reshape(channels, -1).copy()
            image[:, s] = 0.0
            sums.append(importance[s].sum())
            drops.append(base - probability(image, target[i]))
        expected.append(np.corrcoef(sums, drops)[0, 1])
    np.testing.assert_allclose(got["correlation"].numpy(), expected, atol=1e-5)


def test_subsets_are_seeded_per_item_and_of_the_asked_size():
    seeds = item_seeds(0, ["a", "b", "c"], "metric:faithfulness_correlation")
    subsets = draw_subsets(seeds, 64, 50, 6)
    assert (subsets.sum(2) == 6).all()
    assert torch.equal(draw_subsets(seeds[[2, 0]], 64, 50, 6), subsets[[2, 0]]), "independent of the batch"
    assert not torch.equal(subsets[0], subsets[1])
    # every pixel gets drawn sometime: not a fixed block
    assert subsets[0].any(0).float().mean() > 0.9
    assert subset_count(0.1, 64) == 6 and subset_count(10, 64) == 10
    with pytest.raises(ValueError):
        subset_count(64, 64)


def test_faithfulness_correlation_of_a_constant_map_is_nan():
    model, _, _ = linear_model(1, SIDE, 3, seed=1)
    batch = make_batch(torch.rand(3, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0)))
    got = FaithfulnessCorrelation(n_subsets=10).score(
        model, batch, torch.zeros(3, dtype=torch.long), torch.ones(3, 1, SIDE, SIDE), no_explain, torch.arange(3)
    )["correlation"]
    assert torch.isnan(got).all()


def test_faithfulness_correlation_parameter_checks():
    from xaibench.errors import UserError

    for bad in ({"n_subsets": 1}, {"subset_size": 0.0}, {"subset_size": 2.5}, {"baseline": "white"}):
        with pytest.raises(UserError):
            registry.build("metric", "faithfulness_correlation", bad)
    assert registry.build("metric", "faithfulness_correlation", {"subset_size": 12}).subset_size == 12


# ---- (3) infidelity and max-sensitivity equal captum's own values ------------------------------------


def item_noise(seeds, n, shape, sample):
    """The per-item draws, written out: n samples per item from its own generator, item-major."""
    rows = []
    for s in seeds.tolist():
        g = generator(s, sample[0])
        rows.extend(sample[1](shape, g) for _ in range(n))
    return torch.stack(rows)


def captum_case():
    channels, side, classes, items = 1, 6, 4, 5
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(channels, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * side * side, classes)
    ).eval()
    inputs = torch.rand(items, channels, side, side, generator=torch.Generator().manual_seed(1))
    batch = make_batch(inputs)
    with torch.no_grad():
        target = model(inputs).argmax(1)
    return model, batch, target


@pytest.mark.parametrize("normalize", [True, False])
def test_infidelity_equals_captum_for_the_same_perturbations(normalize, monkeypatch):
    model, batch, target = captum_case()
    seeds = seeds_of(batch, "infidelity")
    attributions = saliency_explain(model, batch.inputs, target)
    metric = Infidelity(n_perturb_samples=6, noise_std=0.2, normalize=normalize)

    def sample(shape, g):
        return torch.randn(shape, generator=g) * 0.2

    noise = item_noise(seeds, 6, batch.inputs.shape[1:], (INFIDELITY_SALT, sample))
    expected = infidelity(
        model, lambda x: (noise, x - noise), batch.inputs, attributions, target=target, n_perturb_samples=6,
        normalize=normalize,
    )  # fmt: skip
    got = metric.score(model, batch, target, attributions, no_explain, seeds)["infidelity"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    # captum split into passes of one copy per item: same draws, same values
    monkeypatch.setattr(captum_metrics, "PASS_ELEMENTS", {"cpu": 1})
    chunked = metric.score(model, batch, target, attributions, no_explain, seeds)["infidelity"]
    torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-7)
    # one item alone gets the same value
    alone = metric.score(model, batch.select([3]), target[3:4], attributions[3:4], no_explain, seeds[3:4])
    torch.testing.assert_close(alone["infidelity"][0], expected[3], rtol=1e-5, atol=1e-7)


def test_sensitivity_max_equals_captum_for_the_same_perturbations(monkeypatch):
    model, batch, target = captum_case()
    seeds = seeds_of(batch, "sensitivity_max")
    metric = SensitivityMax(n_perturb_samples=5, radius=0.05)

    def explanation(x, target):
        x = x[0] if isinstance(x, tuple) else x
        with torch.enable_grad():
            return (saliency_explain(model, x, target),)  # captum needs a tuple here

    def sample(s, g):
        return (torch.rand(s, generator=g) * 2 - 1) * 0.05

    noise = item_noise(seeds, 5, batch.inputs.shape[1:], (SENSITIVITY_SALT, sample))
    expected = sensitivity_max(explanation, batch.inputs, lambda x: x + noise, n_perturb_samples=5, target=target)
    got = metric.score(model, batch, target, None, saliency_explain, seeds)["sensitivity_max"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    monkeypatch.setattr(captum_metrics, "PASS_ELEMENTS", {"cpu": 1})
    chunked = metric.score(model, batch, target, None, saliency_explain, seeds)["sensitivity_max"]
    torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-7)


def test_captum_metrics_leave_the_global_rng_alone():
    model, batch, target = captum_case()
    attributions = saliency_explain(model, batch.inputs, target)
    state = torch.random.get_rng_state()
    Infidelity().score(model, batch, target, attributions, no_explain, seeds_of(batch, "infidelity"))
    SensitivityMax().score(model, batch, target, attributions, saliency_explain, seeds_of(batch, "s"))
    assert torch.equal(state, torch.random.get_rng_state())


# ---- (4) localisation known answers ------------------------------------------------------------------


def test_mass_in_mask_known_answers():
    generator_ = torch.Generator().manual_seed(4)
    masks = torch.rand(6, 1, 10, 10, generator=generator_) < 0.3
    batch = make_batch(torch.rand(6, 3, 10, 10, generator=generator_), masks=masks)
    seeds = seeds_of(batch, "mass_in_mask")
    as_mask = masks.float().expand(-1, 3, -1, -1)
    assert torch.equal(MassInMask().score(None, batch, None, as_mask, no_explain, seeds)["mass"], torch.ones(6))
    constant = MassInMask().score(None, batch, None, torch.full((6, 3, 10, 10), 0.7), no_explain, seeds)["mass"]
    torch.testing.assert_close(constant, masks.float().mean((1, 2, 3)))
    # reduce=sum: negative importance is ignored, not subtracted
    signed = torch.zeros(6, 1, 10, 10)
    signed[masks] = 2.0
    signed[~masks] = -5.0
    signed[:, 0, 0, 0] = torch.where(masks[:, 0, 0, 0], 2.0, 1.0)
    got = MassInMask(reduce="sum").score(None, batch, None, signed, no_explain, seeds)["mass"]
    inside = masks.flatten(1).sum(1).double() * 2
    expected = inside / (inside + (~masks[:, 0, 0, 0]).double())
    torch.testing.assert_close(got, expected.float())


def test_localisation_of_an_empty_mask_or_an_empty_map_is_nan():
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    masks[1, 0, 1, 1] = True
    batch = make_batch(torch.rand(2, 1, 4, 4), masks=masks)
    maps = torch.rand(2, 1, 4, 4)
    maps[1] = 0.0
    assert torch.isnan(MassInMask().score(None, batch, None, maps, no_explain, torch.arange(2))["mass"]).all()
    hit = PointingGame().score(None, batch, None, maps, no_explain, torch.arange(2))["hit"]
    assert torch.isnan(hit[0])
    # item 1's map is flat: the seeded tie-break picks one pixel, a hit only if it is (1, 1)
    top = rank_pixels(torch.zeros(1, 16), torch.arange(2)[1:])[0, 0]
    assert hit[1] == float(top == 5)


def test_pointing_game_on_a_constructed_map():
    masks = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    masks[0, 0, 2:4, 2:4] = True  # block at rows/cols 2..3
    batch = make_batch(torch.rand(1, 1, 9, 9), masks=masks)
    attributions = torch.zeros(1, 1, 9, 9)
    attributions[0, 0, 3, 3] = 0.9  # inside, but not the maximum
    attributions[0, 0, 3, 6] = -1.0  # the maximum of |map|: 3 columns right of the mask
    seeds = torch.tensor([5])

    def hit(**params):
        return PointingGame(**params).score(None, batch, None, attributions, no_explain, seeds)["hit"].item()

    assert [hit(tolerance=t) for t in (0, 2, 3)] == [0.0, 0.0, 1.0]
    assert hit(reduce="sum") == 1.0  # signed: the maximum is the inside pixel
    # ties at the maximum: the item's seeded order picks one, here inside (3, 3) or outside (3, 6)
    attributions[0, 0, 3, 3] = 1.0
    importance = attributions.abs().flatten(1)
    hits = []
    for seed in range(20):
        seeds = torch.tensor([seed])
        hits.append(hit())
        assert hits[-1] == float(rank_pixels(importance, seeds)[0, 0] == 3 * 9 + 3)
    assert set(hits) == {0.0, 1.0}


# ---- (5) deletion and insertion defaults are unchanged by the order parameter ------------------------

# Computed with the code before `order` existed (commit 3229642), same model, inputs and seeds.
BEFORE = {
    ("deletion", ()): [0.317924172, 0.348867953, 0.354997754, 0.343819618],
    ("deletion", (("fill", "blur"), ("steps", 7))): [0.353403002, 0.314590156, 0.351340652, 0.363466203],
    ("insertion", ()): [0.330807298, 0.300888151, 0.350786269, 0.356367618],
    ("insertion", (("reduce", "sum"), ("start", "mean"))): [0.328608632, 0.298628360, 0.368447155, 0.379002869],
}


def test_default_order_reproduces_the_values_from_before_the_order_parameter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    g = torch.Generator().manual_seed(5)
    inputs = torch.rand(4, 2, 6, 6, generator=g)
    attributions = torch.randn(4, 2, 6, 6, generator=g)
    attributions[1] = 1.0  # a flat map: the seeded tie-break decides
    ids = [f"ref-{i}" for i in range(4)]
    batch = Batch(ids=ids, inputs=inputs, labels=torch.zeros(4, dtype=torch.long))
    seeds = item_seeds(0, ids, "metric:deletion")
    target = torch.tensor([0, 1, 2, 0])
    for (name, params), expected in BEFORE.items():
        got = registry.build("metric", name, dict(params)).score(model, batch, target, attributions, None, seeds)
        assert set(got) == {"auc"}
        np.testing.assert_allclose(got["auc"].numpy(), expected, atol=2e-9, rtol=0)


@pytest.mark.parametrize("fill", ["black", "mean"])
def test_lerf_deletion_is_morf_insertion_read_backwards(fill, tiny_cnn, digits_batch):
    """LeRF is the exact reverse order, so removing the least relevant share f (to F) shows the same
    image as restoring the most relevant 1 - f onto F: equal AUCs (64 pixels, 16 steps: whole counts)."""
    with torch.no_grad():
        target = tiny_cnn(digits_batch.inputs).argmax(1)
    attributions = torch.randn(digits_batch.inputs.shape, generator=torch.Generator().manual_seed(2))
    seeds = seeds_of(digits_batch, "curve")
    lerf = Deletion(steps=16, fill=fill, order="lerf").score(tiny_cnn, digits_batch, target, attributions, None, seeds)
    morf = Insertion(steps=16, start=fill).score(tiny_cnn, digits_batch, target, attributions, None, seeds)
    torch.testing.assert_close(lerf["lerf_auc"], morf["auc"], atol=1e-6, rtol=0)


# ---- what the conformance test cannot feed: masks, an explain callable, non-default orders -----------


@pytest.mark.parametrize(
    "name, params",
    [
        ("deletion", {"order": "lerf"}),
        ("insertion", {"order": "lerf"}),
        ("faithfulness_correlation", {}),
        ("infidelity", {}),
        ("sensitivity_max", {}),
        ("mass_in_mask", {}),
        ("pointing_game", {"tolerance": 1}),
    ],
)
def test_new_metrics_conform(name, params, tiny_cnn):
    from xaibench.datasets.synthetic import Synthetic

    batch = next(Synthetic(size=16).batches("test", batch_size=6))
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 4)).eval()
    with torch.no_grad():
        target = model(batch.inputs).argmax(1)
    attributions = saliency_explain(model, batch.inputs, target)
    metric = registry.build("metric", name, params)
    seeds = seeds_of(batch, name)
    before = (batch.inputs.clone(), {k: v.clone() for k, v in model.state_dict().items()})
    first = metric.score(model, batch, target, attributions, saliency_explain, seeds)
    second = metric.score(model, batch, target, attributions, saliency_explain, seeds)
    direction = type(metric).higher_is_better
    assert set(first) <= set(direction) if isinstance(direction, dict) else len(first) == 1
    alone = metric.score(model, batch.select([2]), target[2:3], attributions[2:3], saliency_explain, seeds[2:3])
    for score, values in first.items():
        assert values.shape == (len(batch),) and torch.isfinite(values).all(), score
        assert torch.equal(values, second[score]), score
        torch.testing.assert_close(alone[score][0], values[2], atol=1e-6, rtol=1e-5)
    assert torch.equal(batch.inputs, before[0])
    assert all(torch.equal(v, before[1][k]) for k, v in model.state_dict().items())
