"""Localisation against ground-truth object masks (datasets that provide ``masks``).

Both read the pixel importance map (``reduce`` over channels, ``abs_sum`` by default) and
``batch.masks``, (B, 1, H, W) bool; ``mass_in_mask`` can read another named mask instead
(``mask: NAME`` reads ``batch.extras["mask:NAME"]``, e.g. the suppressor square of
``suppressor``). They measure agreement with where the evidence is, not faithfulness to the
model: a model may rightly use context outside the mask. Cost: no forward
pass. An item with an empty mask has no defined value: NaN (the runner marks the row invalid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.api import Batch, Explain
from xaibench.imaging import importance_map, rank_pixels
from xaibench.metrics.perturbation import Reduce
from xaibench.registry import register


def flat_masks(batch: Batch, attributions: Tensor, mask: str = "object") -> Tensor:
    """(B, H*W) bool masks on the attributions' device: ``batch.masks`` for ``mask="object"``,
    else ``batch.extras["mask:NAME"]``; refuses a batch without that mask."""
    if mask == "object":
        if batch.masks is None:
            raise ValueError("this metric needs ground-truth masks (batch.masks), and the dataset gave none")
        found = batch.masks
    else:
        found = batch.extras.get(f"mask:{mask}")
        if found is None:
            named = sorted(k.removeprefix("mask:") for k in batch.extras if k.startswith("mask:"))
            raise ValueError(
                f"mask {mask!r} needs batch.extras['mask:{mask}'], which the dataset does not give "
                f"(its named masks: {', '.join(named) or 'none'}; 'object' reads batch.masks)"
            )
    return found.to(attributions.device).flatten(1).bool()


def nan_where(empty: Tensor, values: Tensor) -> Tensor:
    import torch

    return torch.where(empty, torch.full_like(values, float("nan")), values)


@register("metric", "mass_in_mask")
@dataclass(frozen=True)
class MassInMask:
    """Relevance mass accuracy (Arras, Osman and Samek, "CLEVR-XAI", Information Fusion 2022):
    the share of the map's positive importance that lies inside the ground-truth mask, in
    [0, 1] (higher is better for a truth mask; see ``role``); a constant map scores the mask's
    area fraction. With ``reduce: sum`` negative importance is ignored. NaN for an empty mask or
    a map with no positive importance.

    ``mask``: ``object`` (default) scores against ``batch.masks``; any other NAME against the
    dataset's ``mask:NAME`` extra. ``role`` says what the mask is, and so the score's name and
    direction: ``truth`` (where the evidence is) stores ``mass``, higher is better;
    ``distractor`` (pixels with no class information, such as the suppressor square of
    ``suppressor``) stores ``distractor_mass``, lower is better (against ``random``, which
    spreads mass by area: below it, the map avoids the region more than chance). ``auto``
    (default): truth for ``object``, distractor for a named mask.

    Requirements depend on ``mask``: the ClassVar ``requires`` is that of the default
    (``masks``); ``requirements()`` gives an instance's (``masks`` or ``mask:NAME``), which the
    runner's preflight should prefer when present. Until it does, ``score`` refuses a batch
    without the mask with a one-line error naming it."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[dict[str, bool]] = {"mass": True, "distractor_mass": False}
    requires: ClassVar[frozenset[str]] = frozenset({"masks"})
    reference: ClassVar[str] = "random"
    reduce: Reduce = "abs_sum"
    mask: str = "object"
    role: Literal["auto", "truth", "distractor"] = "auto"

    def __post_init__(self):
        if not self.mask or not self.mask.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"mask must be 'object' or a mask name (letters, digits, _ and -), got {self.mask!r}")
        if self.role not in ("auto", "truth", "distractor"):
            raise ValueError(f"role must be auto, truth or distractor, got {self.role!r}")

    @property
    def score_name(self) -> str:
        truth = self.role == "truth" or (self.role == "auto" and self.mask == "object")
        return "mass" if truth else "distractor_mass"

    def requirements(self) -> frozenset[str]:
        """What a dataset must provide for this instance: ``masks`` or ``mask:NAME``."""
        return frozenset({"masks"}) if self.mask == "object" else frozenset({f"mask:{self.mask}"})

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

        masks = flat_masks(batch, attributions, self.mask)
        positive = importance_map(attributions, self.reduce).double().clamp(min=0)
        total = positive.sum(1)
        inside = (positive * masks).sum(1)
        share = inside / torch.where(total > 0, total, torch.ones_like(total))
        return {self.score_name: nan_where(~masks.any(1) | (total <= 0), share).float()}


@register("metric", "pointing_game")
@dataclass(frozen=True)
class PointingGame:
    """Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016):
    1 when the map's maximum lies within ``tolerance`` pixels (Euclidean) of the ground-truth
    mask, else 0; the mean over items is the hit rate. Higher is better. Ties at the maximum are
    broken by the item's seeded random order (``rank_pixels``), so a constant map hits about as
    often as the dilated mask's area fraction, not always. NaN for an empty mask."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True
    requires: ClassVar[frozenset[str]] = frozenset({"masks"})
    reference: ClassVar[str] = "random"
    tolerance: int = 0
    reduce: Reduce = "abs_sum"

    def __post_init__(self):
        if not 0 <= self.tolerance <= 10_000:
            raise ValueError(f"tolerance must be between 0 and 10000 pixels, got {self.tolerance}")

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

        masks = flat_masks(batch, attributions)
        height, width = attributions.shape[-2:]
        top = rank_pixels(importance_map(attributions, self.reduce), seeds)[:, 0]
        rows = torch.arange(height, device=masks.device).repeat_interleave(width)
        cols = torch.arange(width, device=masks.device).repeat(height)
        distance2 = (rows - (top // width).unsqueeze(1)) ** 2 + (cols - (top % width).unsqueeze(1)) ** 2
        hit = ((distance2 <= self.tolerance**2) & masks).any(1).float()
        return {"hit": nan_where(~masks.any(1), hit)}
