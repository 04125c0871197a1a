"""RISE (Petsiuk, Das & Saenko, BMVC 2018): random masks weighted by the model's output."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

from xaibench.metrics.perturbation import PASS_ELEMENTS
from xaibench.registry import register
from xaibench.seeding import generator


def rise_masks(n_masks: int, grid: int, p: float, size: tuple[int, int], g: torch.Generator) -> Tensor:
    """RISE's masks, (N, 1, H, W) in [0, 1]: a ``grid`` x ``grid`` binary grid (each cell kept
    with probability ``p``), upsampled bilinearly to (grid + 1) cells of ceil(side / grid)
    pixels, and cropped to the input at a random shift of 0 to cell - 1 pixels per axis."""
    import torch
    import torch.nn.functional as F

    height, width = size
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    cells = (torch.rand(n_masks, 1, grid, grid, generator=g) < p).float()
    big = F.interpolate(cells, size=((grid + 1) * cell_h, (grid + 1) * cell_w), mode="bilinear", align_corners=False)
    dy = torch.randint(0, cell_h, (n_masks,), generator=g)
    dx = torch.randint(0, cell_w, (n_masks,), generator=g)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(width))[:, None, :]  # (N, 1, W)
    return big[torch.arange(n_masks)[:, None, None], 0, rows, cols].unsqueeze(1)


@register("method", "rise")
@dataclass(frozen=True)
class Rise:
    """RISE (Petsiuk et al., BMVC 2018): saliency = sum_i P(target | x * M_i) M_i / (N p) over
    ``n_masks`` random smooth masks M_i (see ``rise_masks``; ``grid`` cells per side, each kept
    with probability ``p``). The value is the expected target probability when the pixel is kept
    (higher = more important); masked pixels become black (0).

    Each item's masks come from its own seed, so its map does not depend on its batch.
    Cost: ``n_masks`` forward passes per item, in chunks of ``PASS_ELEMENTS`` input elements
    (the paper uses 4000-8000 masks on ImageNet; 1000 is enough for small images).
    """

    version: ClassVar[str] = "1"
    n_masks: int = 1000
    grid: int = 7
    p: float = 0.5

    def __post_init__(self):
        # Upper bounds keep a typo from running for hours (cost grows with n_masks) or building
        # a mask grid finer than any image.
        if not 1 <= self.n_masks <= 100_000:
            raise ValueError(f"n_masks must be between 1 and 100,000, got {self.n_masks}")
        if not 1 <= self.grid <= 1024:
            raise ValueError(f"grid must be between 1 and 1024, got {self.grid}")
        if not 0.0 < self.p < 1.0:
            raise ValueError(f"p must be in (0, 1), got {self.p}")

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch

        size = tuple(inputs.shape[-2:])
        per_pass = max(1, PASS_ELEMENTS.get(inputs.device.type, PASS_ELEMENTS["cpu"]) // inputs[0].numel())
        maps = []
        with torch.no_grad():
            for image, label, seed in zip(inputs, target.tolist(), seeds.tolist(), strict=True):
                masks = rise_masks(self.n_masks, self.grid, self.p, size, generator(seed, salt=11))
                masks = masks.to(inputs.device)
                saliency = torch.zeros(1, *size, device=inputs.device)
                for chunk in masks.split(per_pass):
                    probability = model(image * chunk).softmax(-1)[:, label]
                    saliency += (probability[:, None, None, None] * chunk).sum(0)
                maps.append(saliency / (self.n_masks * self.p))
        return torch.stack(maps).expand_as(inputs).contiguous()
