"""ROAD: the batched noisy linear imputer against a scipy solve written from the definition, its
seeding, and the metric's directions on a model whose evidence sits on known pixels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch
from scipy.ndimage import distance_transform_cdt, gaussian_filter
from torch import nn

from xaibench import imputation, registry
from xaibench.api import Batch, Curve
from xaibench.errors import UserError
from xaibench.imputation import ImputationError, impute
from xaibench.metrics import road as road_module
from xaibench.metrics.road import Road, mean_level
from xaibench.seeding import item_seeds

# ---- the reference: PROTOCOLS.md's definition, pixel by pixel, in the divided (mean) form -------


def reference_impute(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Each removed pixel = weighted mean of its existing 8 neighbours (1/6 edge, 1/12 diagonal,
    renormalised), kept pixels fixed; one sparse system for all removed pixels, all channels."""
    channels, height, width = image.shape
    unknowns = list(zip(*np.nonzero(removed), strict=True))
    number = {pixel: i for i, pixel in enumerate(unknowns)}
    matrix = scipy.sparse.lil_matrix((len(unknowns), len(unknowns)))
    rhs = np.zeros((len(unknowns), channels))
    for i, (y, x) in enumerate(unknowns):
        neighbours = [
            ((y + dy, x + dx), 1 / 12 if dy and dx else 1 / 6)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if (dy or dx) and 0 <= y + dy < height and 0 <= x + dx < width
        ]
        total = sum(weight for _, weight in neighbours)
        matrix[i, i] = 1.0
        for pixel, weight in neighbours:
            if pixel in number:
                matrix[i, number[pixel]] -= weight / total
            else:
                rhs[i] += weight / total * image[:, pixel[0], pixel[1]]
    solution = scipy.sparse.linalg.spsolve(matrix.tocsc(), rhs).reshape(len(unknowns), channels)
    out = image.astype(np.float64).copy()
    for i, (y, x) in enumerate(unknowns):
        out[:, y, x] = solution[i]
    return out


def blob_mask(rng: np.random.Generator, height: int, width: int, fraction: float) -> np.ndarray:
    """Thresholded, heavily blurred noise: the shape real attribution maps give."""
    smooth = gaussian_filter(rng.normal(size=(height, width)), max(height, width) / 6, mode="wrap")
    return smooth > np.quantile(smooth, 1 - fraction)


def masks(rng, kind: str, count: int, height: int, width: int, fraction: float) -> np.ndarray:
    if kind == "random":
        return rng.uniform(size=(count, height, width)) < fraction
    return np.stack([blob_mask(rng, height, width, fraction) for _ in range(count)])


def check_against_reference(images: np.ndarray, removed: np.ndarray, solver: str, atol: float = 1e-4):
    got = impute(torch.from_numpy(images), torch.from_numpy(removed)[:, None], 0.0, solver=solver).double().numpy()
    for image, mask, result in zip(images, removed, got, strict=True):
        np.testing.assert_allclose(result, reference_impute(image, mask), atol=atol, rtol=0)
    return got


@pytest.mark.parametrize("solver", ["auto", "dense", "jacobi", "multigrid"])
@pytest.mark.parametrize("kind", ["random", "blob"])
@pytest.mark.parametrize("channels", [1, 3])
def test_imputer_matches_the_reference_at_8x8_and_32x32(solver, kind, channels):
    rng = np.random.default_rng([channels, len(kind), len(solver)])
    for side in (8, 32):
        for fraction in (0.1, 0.5, 0.9):
            images = rng.uniform(size=(3, channels, side, side)).astype(np.float32)
            removed = masks(rng, kind, 3, side, side, fraction)
            removed[0, 0, :] = True  # touches the border, corners included
            removed[0, :, -1] = True
            check_against_reference(images, removed, solver)


@pytest.mark.parametrize("solver", ["jacobi", "multigrid"])
def test_imputer_handles_sizes_that_do_not_halve_evenly(solver):
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(2, 2, 23, 41)).astype(np.float32)
    removed = np.stack([blob_mask(rng, 23, 41, 0.6), rng.uniform(size=(23, 41)) < 0.7])
    check_against_reference(images, removed, solver)


def test_imputer_batches_mixing_easy_and_hard_systems():
    """Enough images that converged ones leave the batch mid-solve (ROAD's fractions of one item)."""
    rng = np.random.default_rng(7)
    fractions = np.linspace(0.05, 0.95, 40)
    images = rng.uniform(size=(40, 2, 10, 12)).astype(np.float32)
    removed = np.stack([rng.uniform(size=(10, 12)) < f for f in fractions])
    removed[:, 0, 0] = False
    for solver in ("jacobi", "auto"):
        check_against_reference(images, removed, solver)


@pytest.mark.slow  # ~5 s, most of it the pixel-by-pixel reference
def test_imputer_matches_the_reference_on_deep_holes_at_224():
    """Holes over 50 px from any kept pixel: where Jacobi sweeps stall and fp32 loses digits."""
    rng = np.random.default_rng(224)
    removed = np.zeros((2, 224, 224), dtype=bool)
    removed[0] = blob_mask(rng, 224, 224, 0.9)
    removed[1, :120, :] = True  # a band along three borders
    removed[1, 150:, 100:] = rng.uniform(size=(74, 124)) < 0.8
    depth = [distance_transform_cdt(mask, metric="chessboard").max() for mask in removed]
    assert min(depth) > 50, depth
    images = np.stack([rng.uniform(size=(3, 224, 224)), rng.uniform(size=(3, 224, 224)) ** 2]).astype(np.float32)
    check_against_reference(images, removed, "auto")


def test_imputer_keeps_kept_pixels_and_checks_its_inputs():
    images = torch.rand(2, 3, 20, 20)
    removed = torch.rand(2, 1, 20, 20) < 0.5
    removed[1] = False  # nothing to impute in this one
    out = impute(images, removed, 0.0)
    assert torch.equal(out[~removed.expand_as(images)], images[~removed.expand_as(images)])
    assert torch.equal(out[1], images[1])
    with pytest.raises(ValueError, match="every pixel"):
        impute(images, torch.ones(2, 1, 20, 20, dtype=torch.bool), 0.0)
    with pytest.raises(ValueError, match="seed"):
        impute(images, removed, 0.01)


def test_a_system_that_cannot_converge_raises_instead_of_returning_values():
    images = torch.rand(1, 1, 40, 40)
    removed = torch.from_numpy(blob_mask(np.random.default_rng(0), 40, 40, 0.8))[None, None]
    with pytest.raises(ImputationError, match="did not converge"):
        impute(images, removed, 0.0, solver="multigrid", tol=1e-13)


def test_noise_is_seeded_per_item_and_only_on_removed_pixels():
    rng = np.random.default_rng(5)
    images = torch.from_numpy(rng.uniform(size=(4, 3, 24, 24)).astype(np.float32))
    removed = torch.from_numpy(masks(rng, "blob", 4, 24, 24, 0.5))[:, None]
    seeds = item_seeds(0, ["a", "b", "c", "d"], "metric:road")
    clean = impute(images, removed, 0.0)
    noisy = impute(images, removed, 0.05, seeds)
    alone = impute(images[2:3], removed[2:3], 0.05, seeds[2:3])
    shuffled = impute(images[[3, 2]], removed[[3, 2]], 0.05, seeds[[3, 2]])
    assert torch.allclose(alone[0], noisy[2], atol=1e-6)
    assert torch.allclose(shuffled[1], noisy[2], atol=1e-6)
    wide = removed.expand_as(images)
    assert torch.equal(noisy[~wide], images[~wide])
    difference = (noisy - clean)[wide]
    assert abs(float(difference.std()) - 0.05) < 0.005
    other = impute(images[2:3], removed[2:3], 0.05, seeds[3:4])
    assert not torch.allclose(other[0], noisy[2], atol=1e-3)


# ---- the metric ----------------------------------------------------------------------------------

SIDE = 20
P = [(2, 3), (3, 15), (7, 8), (10, 2), (12, 12), (15, 5), (16, 17), (18, 9)]


def evidence_model() -> nn.Module:
    """logits = [sum of x over P - |P| / 2, 0]: only the (isolated) pixels in P matter."""
    linear = nn.Linear(SIDE * SIDE, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor([-len(P) / 2, 0.0]))
        for r, c in P:
            linear.weight[0, r * SIDE + c] = 1.0
    return nn.Sequential(nn.Flatten(), linear).eval()


def evidence_case(n: int = 6):
    indicator = torch.zeros(1, 1, SIDE, SIDE)
    for r, c in P:
        indicator[0, 0, r, c] = 1.0
    inputs = indicator.expand(n, -1, -1, -1).contiguous()  # bright P on black
    batch = Batch(ids=[f"item-{i}" for i in range(n)], inputs=inputs, labels=torch.zeros(n, dtype=torch.long))
    return batch, torch.zeros(n, dtype=torch.long), indicator.expand(n, -1, -1, -1).contiguous()


def road_scores(attributions, **params):
    batch, target, _ = evidence_case(len(attributions))
    seeds = item_seeds(0, batch.ids, "metric:road")
    return Road(**params).score(evidence_model(), batch, target, attributions, None, seeds)


def test_morf_and_lerf_order_the_oracle_and_its_reverse_oppositely():
    _, _, oracle = evidence_case()
    random = torch.rand(oracle.shape, generator=torch.Generator().manual_seed(0))
    scores = {name: road_scores(a) for name, a in {"oracle": oracle, "random": random, "reverse": 1 - oracle}.items()}
    morf = {name: s["morf_auc"] for name, s in scores.items()}
    lerf = {name: s["lerf_auc"] for name, s in scores.items()}
    assert (morf["oracle"] < morf["random"]).all() and (morf["random"] < morf["reverse"]).all()
    assert (lerf["oracle"] > lerf["random"]).all() and (lerf["random"] > lerf["reverse"]).all()
    # MoRF: the oracle removes all of P by fraction 0.1 (8 of 400 pixels): the evidence is gone
    assert (scores["oracle"]["morf_correct"].values == 0).all()
    assert (scores["reverse"]["morf_correct"].values == 1).all()
    assert (scores["oracle"]["lerf_correct"].values == 1).all()


def test_curves_have_one_value_per_item_and_fraction():
    _, _, oracle = evidence_case(3)
    fractions = (0.2, 0.4, 0.8)
    scores = road_scores(oracle, fractions=fractions)
    assert set(scores) == set(Road.higher_is_better)
    for name in ("morf_prob", "morf_correct", "lerf_prob", "lerf_correct"):
        curve = scores[name]
        assert isinstance(curve, Curve) and curve.x_label == "fraction"
        assert torch.allclose(curve.x, torch.tensor(fractions))
        assert curve.values.shape == (3, 3)
        assert ((curve.values >= 0) & (curve.values <= 1)).all()
    for order in ("morf", "lerf"):
        prob = scores[f"{order}_prob"].values.double().numpy()
        expected = np.trapezoid(prob, fractions, axis=1) / (fractions[-1] - fractions[0])
        np.testing.assert_allclose(scores[f"{order}_auc"].numpy(), expected, atol=1e-6)
    only = road_scores(oracle, orders="lerf", area="correct")
    assert set(only) == {"lerf_prob", "lerf_correct", "lerf_auc"}
    assert torch.equal(only["lerf_auc"], mean_level(only["lerf_correct"].values, only["lerf_correct"].x))


def test_results_do_not_depend_on_chunking(monkeypatch):
    _, _, oracle = evidence_case(4)
    random = oracle + torch.rand(oracle.shape, generator=torch.Generator().manual_seed(1))
    whole = road_scores(random)
    monkeypatch.setattr(road_module, "PASS_ELEMENTS", {"cpu": 1})
    monkeypatch.setattr(road_module, "SOLVE_ELEMENTS", {"cpu": 1})
    monkeypatch.setattr(imputation, "CHUNK_ELEMENTS", {"cpu": 1})
    chunked = road_scores(random)
    for name, value in whole.items():
        value, other = (value.values, chunked[name].values) if isinstance(value, Curve) else (value, chunked[name])
        assert torch.allclose(value, other, atol=1e-5), name


def test_parameter_checks():
    for params, word in [
        ({"fractions": [0.0, 0.5]}, "fractions"),
        ({"fractions": [0.5, 0.3]}, "increasing"),
        ({"fractions": []}, "fractions"),
        ({"noise": -1.0}, "noise"),
        ({"orders": "up"}, "orders"),
        ({"area": "auc"}, "area"),
    ]:
        with pytest.raises(UserError, match=word):
            registry.build("metric", "road", params)
