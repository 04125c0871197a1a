"""Small image operations shared by methods and metrics: Gaussian blur, importance maps, ranking."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from xaibench.seeding import per_item


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with reflect padding; the kernel is cut to fit small images."""
    from torchvision.transforms.functional import gaussian_blur

    if sigma <= 0:
        return images
    side = min(images.shape[-2:])
    kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * side - 1)
    kernel = kernel if kernel % 2 == 1 else kernel - 1
    return gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def importance_map(attributions: torch.Tensor, reduce: str = "abs_sum") -> torch.Tensor:
    """(B, C, H, W) attributions -> (B, H*W) pixel importance (all channels of a pixel at once)."""
    if reduce == "abs_sum":
        pixel = attributions.abs().sum(dim=1)
    elif reduce == "sum":
        pixel = attributions.sum(dim=1)
    elif reduce == "max_abs":
        pixel = attributions.abs().amax(dim=1)
    else:
        raise ValueError(f"unknown reduce {reduce!r}")
    return pixel.flatten(1)


def rank_pixels(importance: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Pixel indices from most to least important, (B, N).

    Ties (a flat map, a saliency map with many zeros) are broken by a random order seeded per
    item, so the result depends neither on memory layout nor on the batch.
    """
    import torch

    n = importance.shape[1]
    shuffle = per_item(seeds, lambda g: torch.randperm(n, generator=g), salt=1).to(importance.device)
    shuffled = torch.gather(importance, 1, shuffle)
    order = torch.sort(shuffled, dim=1, descending=True, stable=True).indices
    return torch.gather(shuffle, 1, order)
