"""Similarity of two batches of attribution maps, (B, C, H, W) x (B, C, H, W) -> (B,).

The measures of the sanity checks (Adebayo et al., NeurIPS 2018; PROTOCOLS.md), each in
[-1, 1] (SSIM, Spearman, Pearson of HOG), 1 meaning the same map:

- ``spearman_abs``: Spearman rank correlation of the absolute importance per pixel (channels
  reduced by ``abs_sum``), with average ranks for ties (as ``scipy.stats.spearmanr``).
- ``spearman``: the same on the signed map (channels summed), so a sign flip counts.
- ``ssim``: structural similarity of the absolute maps, each min-max normalised to [0, 1]
  (data range 1), uniform window of 7 pixels (the largest odd size that fits, for smaller
  maps), sample covariance: the definition of ``skimage.metrics.structural_similarity`` with
  its defaults, computed batched in torch on the maps' device (tested against scikit-image).
- ``hog``: Pearson correlation of the histograms of oriented gradients of the normalised
  absolute maps (``skimage.feature.hog``: 9 orientations, cells of ``max(2, side // 8)``
  pixels, 2x2-cell blocks, L2-Hys). scikit-image earns its place here: HOG has many details
  (gradient binning, block normalisation) that a rewrite could get subtly wrong, and a loop of
  one small 2-D map per item costs far less than the explanations being compared.

Undefined values are NaN, never an exception: a rank correlation of a constant map (an
all-zero gradient after randomisation, dead ReLUs) has no variance, so it is NaN, and the
runner stores the row as invalid ("score is not finite"); so is any map with a NaN or infinite
value. ``CONSTANT_MAP_REASON`` is the precise reason, for a per-item reason channel.
SSIM of a constant map is defined (the map normalises to all zeros).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

Similarity = Literal["spearman_abs", "spearman", "ssim", "hog"]
CONSTANT_MAP_REASON = "a map is constant, so its rank correlation is undefined"
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03


def _pixel_map(maps: Tensor, signed: bool) -> Tensor:
    """(B, C, H, W) -> (B, H, W) float64: channels summed (signed) or absolute values summed."""
    maps = maps.detach().double()
    return maps.sum(1) if signed else maps.abs().sum(1)


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..N along the last axis of (B, N), ties sharing their average rank (batched, no loop)."""
    import torch

    b, n = values.shape
    ordered, order = values.sort(dim=1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = (starts.cumsum(1) - 1) + torch.arange(b, device=values.device).unsqueeze(1) * n  # global tie-group id
    flat = group.flatten()
    positions = torch.arange(1, n + 1, dtype=torch.float64, device=values.device).expand(b, n).flatten()
    sums = torch.zeros_like(positions).index_add_(0, flat, positions)
    counts = torch.zeros_like(positions).index_add_(0, flat, torch.ones_like(positions))
    average = (sums / counts.clamp(min=1))[group]
    return torch.empty_like(average).scatter_(1, order, average)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of (B, N) tensors; NaN where a row has no variance or a non-finite value."""
    import torch

    a, b = a.double(), b.double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denominator = (a.square().sum(1) * b.square().sum(1)).sqrt()
    r = (a * b).sum(1) / torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, r.clamp(-1.0, 1.0), torch.full_like(r, float("nan")))


def _finite_rows(*tensors: Tensor) -> Tensor:
    import torch

    ok = torch.ones(tensors[0].shape[0], dtype=torch.bool, device=tensors[0].device)
    for t in tensors:
        ok &= torch.isfinite(t.flatten(1)).all(1)
    return ok


def _nan_unless(ok: Tensor, values: Tensor) -> Tensor:
    import torch

    return torch.where(ok, values, torch.full_like(values, float("nan")))


def spearman(a: Tensor, b: Tensor, signed: bool = True) -> Tensor:
    """Spearman rank correlation per item of two (B, C, H, W) map batches (average ranks for ties)."""
    import torch

    x, y = _pixel_map(a, signed).flatten(1), _pixel_map(b, signed).flatten(1)
    ok = _finite_rows(x, y)
    x, y = torch.where(ok[:, None], x, 0.0), torch.where(ok[:, None], y, 0.0)
    return _nan_unless(ok, pearson(average_ranks(x), average_ranks(y)))


def spearman_abs(a: Tensor, b: Tensor) -> Tensor:
    return spearman(a, b, signed=False)


def normalised(maps: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H, W) absolute maps min-max scaled to [0, 1] per item (a constant map -> 0)."""
    import torch

    pixel = _pixel_map(maps, signed=False)
    low = pixel.flatten(1).min(1).values[:, None, None]
    span = pixel.flatten(1).max(1).values[:, None, None] - low
    return (pixel - low) / torch.where(span > 0, span, torch.ones_like(span))


def ssim_window(height: int, width: int) -> int:
    side = min(SSIM_WINDOW, height, width)
    return side if side % 2 == 1 else side - 1


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM per item of the normalised absolute maps (skimage's definition, uniform window)."""
    import torch
    import torch.nn.functional as F

    x, y = normalised(a).unsqueeze(1), normalised(b).unsqueeze(1)
    ok = _finite_rows(x, y)
    x, y = torch.nan_to_num(x), torch.nan_to_num(y)
    win = ssim_window(*x.shape[-2:])
    if win < 1:
        return torch.full((x.shape[0],), float("nan"), dtype=torch.float64, device=x.device)

    def mean(t: Tensor) -> Tensor:  # the valid (cropped) region of skimage's uniform filter
        return F.avg_pool2d(t, win, stride=1)

    cov_norm = win * win / (win * win - 1) if win > 1 else 1.0
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return _nan_unless(ok, s.flatten(1).mean(1))


def hog_cell(height: int, width: int) -> int:
    return max(2, min(height, width) // 8)


def hog_features(maps: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, F) HOG features of the normalised absolute maps (scikit-image, per item)."""
    import torch
    from skimage.feature import hog as skimage_hog

    pixel = torch.nan_to_num(normalised(maps)).cpu().numpy()
    cell = hog_cell(*pixel.shape[1:])
    cells = min(2, pixel.shape[1] // cell, pixel.shape[2] // cell)
    if cells < 1:
        raise ValueError(f"maps of {pixel.shape[1]}x{pixel.shape[2]} pixels are too small for HOG (need 2x2 or more)")
    features = [
        skimage_hog(item, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(cells, cells))
        for item in pixel
    ]
    return torch.from_numpy(np.stack(features)).to(maps.device)


def hog(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation per item of the HOG features of the two maps."""
    ok = _finite_rows(a, b)
    return _nan_unless(ok, pearson(hog_features(a), hog_features(b)))


SIMILARITIES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "spearman_abs": spearman_abs,
    "spearman": spearman,
    "ssim": ssim,
    "hog": hog,
}


def similarity(name: str, a: Tensor, b: Tensor) -> Tensor:
    """The named similarity per item, float32 (B,), on ``a``'s device; NaN where undefined."""
    if name not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {name!r}")
    if a.shape != b.shape:
        raise ValueError(f"maps to compare have shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return SIMILARITIES[name](a, b.to(a.device)).float().to(a.device)


def check_name(name: str) -> None:
    """For a plugin's ``__post_init__``: a ValueError naming the parameter and its choices."""
    if name not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {name!r}")
