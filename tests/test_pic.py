"""PIC (XRAI's performance information curves): a model that looks at one known region, the
compressed-size information scale, and the interpolation onto bins against numpy."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from xaibench import registry
from xaibench.api import Batch
from xaibench.errors import UserError
from xaibench.metrics.pic import compressed_size, curve_on_bins
from xaibench.seeding import item_seeds

SIZE = 32
REGION = torch.zeros(SIZE, SIZE, dtype=torch.bool)
REGION[4:12, 6:14] = True  # what the model looks at


class RegionModel(nn.Module):
    """logit 0 = 60 * (mean of the region's local contrast) - 3; logit 1 = 0.

    The local contrast |x - 4-neighbour mean| is high where the region is sharp and near 0 once
    it is blurred, so the class-0 probability returns exactly when the region is re-sharpened.
    """

    def forward(self, x):
        padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        neighbours = (
            padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]
        ) / 4
        contrast = (x - neighbours).abs()[:, 0]
        evidence = contrast[:, REGION].mean(1)
        return torch.stack([60 * evidence - 3, torch.zeros_like(evidence)], 1)


def textures(n: int) -> torch.Tensor:
    """Uniform noise everywhere: the region's texture is the evidence, the rest is not. (A binary
    texture would not do: WebP's palette mode stores it in fewer bytes than its blurred copy.)"""
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def score(maps: torch.Tensor, inputs: torch.Tensor, **params) -> dict:
    ids = [f"item-{i}" for i in range(len(inputs))]
    batch = Batch(ids=ids, inputs=inputs, labels=torch.zeros(len(inputs), dtype=torch.long))
    seeds = item_seeds(0, ids, "metric:pic")
    return registry.build("metric", "pic", params).score(RegionModel(), batch, batch.labels, maps, None, seeds)


def test_an_oracle_map_beats_the_reversed_oracle():
    inputs = textures(4)
    assert (RegionModel()(inputs).argmax(1) == 0).all(), "the sharp images are class 0"
    oracle = REGION.float().expand(4, 1, SIZE, SIZE)
    good, bad = score(oracle, inputs), score(1 - oracle, inputs)
    assert (good["sic_auc"] > bad["sic_auc"] + 0.3).all(), (good["sic_auc"], bad["sic_auc"])
    assert (good["aic_auc"] > bad["aic_auc"]).all()
    for result in (good, bad):
        for name in ("sic", "aic"):
            curve = result[name]
            assert curve.x_label == "information" and torch.allclose(curve.x, torch.linspace(0, 1, 21))
            values = curve.values
            assert ((values >= 0) & (values <= 1)).all() and torch.equal(values[:, -1], torch.ones(4))
            assert (values.diff(dim=1) >= 0).all(), "monotone by default"
            # the area is the trapezoid of the binned curve
            torch.testing.assert_close(result[f"{name}_auc"], torch.trapezoid(values, curve.x, dim=1))


def test_compressed_size_grows_with_the_sharpened_pixels():
    """Re-sharpening more of a noise image (random order) takes more bytes. PNG stores a block it
    cannot compress as is, so its size only saturates (never falls) once most pixels are noise."""
    inputs = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    metric = registry.build("metric", "pic", {"fractions": [0.1, 0.25, 0.5, 0.75]})
    order = torch.stack([torch.randperm(SIZE * SIZE, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    images = metric.copies(inputs, order)  # blurred, 4 fractions, original
    assert torch.equal(images[:, -1], inputs)
    sharp = (images == inputs.unsqueeze(1)).flatten(2).sum(2)
    assert (sharp.diff(dim=1) > 0).all(), "each copy sharpens more pixels"
    for codec in ("webp", "png"):
        sizes = compressed_size(images.flatten(0, 1), codec).view(3, 6)
        assert (sizes.diff(dim=1)[:, :3] > 0).all() and (sizes.diff(dim=1) >= 0).all(), (codec, sizes)
        if codec == "webp":
            assert (sizes.diff(dim=1) > 0).all(), sizes


def test_compressed_size_is_the_pillow_file_size():
    image = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(2))
    pixels = (image[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="webp", lossless=True, quality=100)
    assert compressed_size(image, "webp").item() == len(buffer.getvalue())


def test_curve_on_bins_sorts_keeps_monotone_and_interpolates():
    information = np.array([0.0, 0.6, 0.2, 1.0])
    values = np.array([0.1, 0.4, 0.8, 1.0])
    bins = np.linspace(0, 1, 6)
    np.testing.assert_allclose(curve_on_bins(information, values, bins, monotone=False), [0.1, 0.8, 0.6, 0.4, 0.7, 1.0])
    np.testing.assert_allclose(curve_on_bins(information, values, bins, monotone=True), [0.1, 0.8, 0.8, 0.8, 0.9, 1.0])


def test_an_item_without_an_information_scale_is_nan():
    """A constant image compresses the same blurred or not: no scale, NaN scores (marked invalid)."""
    inputs = torch.cat([torch.full((1, 1, SIZE, SIZE), 0.5), textures(1)])
    result = score(torch.rand(2, 1, SIZE, SIZE), inputs)
    assert torch.isnan(result["sic_auc"][0]) and torch.isfinite(result["sic_auc"][1])


@pytest.mark.parametrize("params", [{"fractions": []}, {"fractions": [0.5, 0.2]}, {"bins": 0}, {"codec": "jpeg"}])
def test_parameters_are_checked(params):
    with pytest.raises((UserError, ValueError)):
        registry.build("metric", "pic", params)
