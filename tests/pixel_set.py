"""A model with a known answer, shared by the metric tests: only the pixels in P matter.

logits = [k * sum(x[P]) - offset, 0], so the oracle attribution is the indicator of P.
"""

from __future__ import annotations

import torch
from torch import nn

SIDE = 8
P = [(1, 1), (1, 6), (2, 3), (3, 5), (4, 2), (5, 5), (6, 1), (6, 6)]


def p_indicator() -> torch.Tensor:
    mask = torch.zeros(1, 1, SIDE, SIDE)
    for r, c in P:
        mask[0, 0, r, c] = 1.0
    return mask


class PixelSetModel(nn.Module):
    """logits = [k * sum(x[P]) - offset, 0]: only the pixels in P matter, linearly in the logit."""

    def __init__(self, k: float = 1.0, offset: float = 0.0):
        super().__init__()
        self.register_buffer("mask", p_indicator())
        self.k, self.offset = k, offset

    def forward(self, x):
        evidence = self.k * (x * self.mask).flatten(1).sum(1) - self.offset
        return torch.stack([evidence, torch.zeros_like(evidence)], dim=1)
