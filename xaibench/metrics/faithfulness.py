"""Faithfulness correlation (Bhatt, Weller and Moura, "Evaluating and Aggregating Feature-based
Model Explanations", IJCAI 2020).

For each item, ``n_subsets`` random subsets S of pixels (all channels of a pixel at once) are set
to a baseline; the score is the Pearson correlation, across the subsets, between the summed
importance over S and the drop in the target's softmax probability, p(x) - p(x with S removed).
In [-1, 1]; higher is better: a faithful map puts large importance exactly where removal hurts.

Choices (PROTOCOLS.md leaves them open):
- importance is the project's pixel map (``reduce``, ``abs_sum`` by default, so it agrees with
  deletion and insertion); Bhatt et al. sum signed attributions: ``reduce: sum``.
- ``subset_size`` is a share of the pixels when below 1 (default 0.1), else a pixel count.
- the subsets of an item are drawn from a generator seeded by the item's seed (``draw_subsets``),
  so an item's value depends neither on its batch nor on the device.
- a correlation with a constant side is undefined and the score is NaN (the runner keeps the row,
  marked invalid): a constant map (every subset has the same summed importance), a model whose
  probability no subset moves, or subsets that cover the image.

Cost: ``n_subsets`` forward passes per item, batched into chunks of ``PASS_ELEMENTS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

from xaibench.api import Batch, Explain
from xaibench.imaging import importance_map
from xaibench.metrics.perturbation import PASS_ELEMENTS, Fill, Reduce, fill_image
from xaibench.registry import register
from xaibench.seeding import per_item

SUBSET_SALT = 2  # separates these draws from rank_pixels' tie-break (salt 1) of the same seed


def subset_count(subset_size: int | float, n_pixels: int) -> int:
    """Pixels per subset: a share of ``n_pixels`` when ``subset_size`` < 1, else a count."""
    count = round(subset_size * n_pixels) if subset_size < 1 else int(subset_size)
    if not 1 <= count < n_pixels:
        raise ValueError(
            f"subset_size {subset_size} gives {count} of {n_pixels} pixels; it must leave at least one pixel in "
            "and one out"
        )
    return count


def draw_subsets(seeds: Tensor, n_pixels: int, n_subsets: int, count: int) -> Tensor:
    """(B, n_subsets, n_pixels) bool: ``count`` pixels drawn without replacement per subset,
    from a generator seeded by each item's seed (the same item always gets the same subsets)."""

    import torch

    def draw(g: torch.Generator) -> Tensor:
        chosen = torch.rand(n_subsets, n_pixels, generator=g).argsort(dim=1)[:, :count]
        return torch.zeros(n_subsets, n_pixels, dtype=torch.bool).scatter_(1, chosen, True)

    return per_item(seeds, draw, salt=SUBSET_SALT)


def target_probability(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    return model(images).softmax(-1).gather(1, target.view(-1, 1)).squeeze(1)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of (B, S) tensors in float64; NaN where a row is constant."""
    import torch

    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    denominator = (a.square().sum(1) * b.square().sum(1)).sqrt()
    return torch.where(denominator > 0, (a * b).sum(1) / denominator, torch.full_like(denominator, float("nan")))


@register("metric", "faithfulness_correlation")
@dataclass(frozen=True)
class FaithfulnessCorrelation:
    """Faithfulness correlation (Bhatt et al., IJCAI 2020): Pearson correlation, over random pixel
    subsets set to ``baseline``, between their summed importance and the drop in target
    probability. Higher is better, in [-1, 1]; NaN for a constant map. Cost: n_subsets passes/item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "random"
    n_subsets: int = 100
    subset_size: int | float = 0.1
    baseline: Fill = "black"
    reduce: Reduce = "abs_sum"
    blur_sigma: float = 0.0

    def __post_init__(self):
        if not 2 <= self.n_subsets <= 100_000:
            raise ValueError(f"n_subsets must be between 2 and 100000, got {self.n_subsets}")
        if not (0 < self.subset_size < 1 or (self.subset_size >= 1 and float(self.subset_size).is_integer())):
            raise ValueError(f"subset_size must be a share in (0, 1) or a whole pixel count, got {self.subset_size}")
        if not 0.0 <= self.blur_sigma < float("inf"):
            raise ValueError(f"blur_sigma must be a finite number >= 0 (0 = automatic), got {self.blur_sigma}")

    def score(
        self,
        model: nn.Module,
        batch: Batch,
        target: Tensor,
        attributions: Tensor,
        explain: Explain,
        seeds: Tensor,
    ) -> dict[str, Tensor]:
        import torch

        inputs = batch.inputs
        items, channels, height, width = inputs.shape
        n_pixels = height * width
        subsets = draw_subsets(seeds, n_pixels, self.n_subsets, subset_count(self.subset_size, n_pixels))
        subsets = subsets.to(inputs.device)
        importance = importance_map(attributions, self.reduce).to(inputs.device)
        summed = (importance.unsqueeze(1) * subsets).sum(2)  # (B, S)
        fill = fill_image(inputs, self.baseline, self.blur_sigma)

        # copy k is subset k % S of item k // S; built chunk by chunk so memory stays bounded
        flat = subsets.view(items * self.n_subsets, 1, height, width)
        owner = torch.arange(items, device=inputs.device).repeat_interleave(self.n_subsets)
        per_pass = max(1, PASS_ELEMENTS.get(inputs.device.type, PASS_ELEMENTS["cpu"]) // inputs[0].numel())
        with torch.no_grad():
            original = target_probability(model, inputs, target)
            removed = []
            for rows in torch.arange(len(owner), device=inputs.device).split(per_pass):
                who = owner[rows]
                copies = torch.where(flat[rows], fill[who], inputs[who])
                removed.append(target_probability(model, copies, target[who]))
        drop = original.unsqueeze(1) - torch.cat(removed).view(items, self.n_subsets)
        return {"correlation": pearson(summed, drop).float()}
