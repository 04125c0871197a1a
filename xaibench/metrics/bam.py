"""BAM's per-item region attributions (Yang and Kim, "Benchmarking Attribution Methods with
Relative Feature Importance", 2019); the `bam` board joins them into MCS, IDR and IIR.

Region attribution: the map is normalised per image (``normalize: bam``, BAM's own: the
positive part summed over channels, minus its minimum, divided by its 99th percentile minus the
minimum, clipped to [0, 1]; ``normalize: max`` divides by the maximum instead), then averaged
over the region's pixels. It is in [0, 1]. The choice is a parameter, so it is in every row's
``metric_params``: the board never mixes two normalisations.

The three metrics store the ingredients per item; the verdicts are joins over stored rows:
- ``mcs``: ``region`` on the object mask. MCS = over items both models classify correctly,
  region under the object model minus under the scene model (higher is better).
- ``idr``: ``region`` and ``region_scene_only`` (the same mask on the scene without the object)
  and ``correct_scene_only``. IDR = on the scene model, over pairs both classified correctly, the
  share where the region gets more attribution on the scene-only image (higher is better).
- ``iir``: ``region`` and ``region_patched`` on the patch square, the logits' relative change
  ``logit_change`` = ||z' - z|| / ||z|| and ``correct_patched``. IIR = over pairs both correct
  whose logits change by less than ``max_logit_change``, the share where the region's attribution
  changes by less than ``tolerance`` of itself (higher is better). Read it beside `random`'s IIR:
  a noise map averaged over a region is stable.
The variant image is attributed with the metric's item seeds, not the method's: a stochastic
method (SmoothGrad, `random`) draws fresh noise for it, as BAM's did, so `random`'s IIR measures
how stable a noise map's regional mean is (not 1 by construction) and its IDR is a coin flip.

Cost: ``mcs`` none beyond the cached map; ``idr`` and ``iir`` one more attribution (the
variant's, with the method under evaluation) and one forward pass per item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

from xaibench.api import Batch, Explain
from xaibench.registry import register

Normalize = Literal["bam", "max"]
PERCENTILE = 0.99


def normalise(attributions: Tensor, normalize: Normalize = "bam") -> Tensor:
    """(B, C, H, W) maps -> (B, H*W) pixel importance in [0, 1], as BAM's ``visualize_pos_attr``.

    A map whose scale is zero (constant) gives zeros: it points at nothing.
    """
    import torch

    pixel = attributions.double().clamp(min=0).sum(1).flatten(1)
    low = pixel.amin(1, keepdim=True)
    if normalize == "bam":
        high = torch.quantile(pixel, PERCENTILE, dim=1, keepdim=True)
        # A map with more than 1% of its pixels at its peak and the rest at its floor: use the peak.
        high = torch.where(high > low, high, pixel.amax(1, keepdim=True))
    else:
        high = pixel.amax(1, keepdim=True)
    scale = high - low
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.where(scale > 0, ((pixel - low) / safe).clamp(0, 1), torch.zeros_like(pixel))


def region_attribution(attributions: Tensor, region: Tensor, normalize: Normalize = "bam") -> Tensor:
    """Mean normalised importance inside ``region`` ((B, 1, H, W) bool); NaN for an empty region."""
    import torch

    importance = normalise(attributions, normalize)
    mask = region.to(importance.device).flatten(1).to(importance.dtype)
    area = mask.sum(1)
    mean = (importance * mask).sum(1) / area.clamp(min=1)
    return torch.where(area > 0, mean, torch.full_like(mean, float("nan"))).float()


def _extra(batch: Batch, name: str, device: torch.device) -> Tensor:
    if name not in batch.extras:
        raise ValueError(f"this metric needs {name!r} in the batch's extras, and the dataset gave none")
    return batch.extras[name].to(device)


def _masks(batch: Batch) -> Tensor:
    if batch.masks is None:
        raise ValueError("this metric needs object masks (batch.masks), and the dataset gave none")
    return batch.masks


@dataclass(frozen=True)
class _BamMetric:
    normalize: Normalize = "bam"

    def __post_init__(self):
        if self.normalize not in ("bam", "max"):
            raise ValueError(f"normalize must be 'bam' or 'max', got {self.normalize!r}")


@register("metric", "mcs")
@dataclass(frozen=True)
class ModelContrast(_BamMetric):
    """BAM model contrast score, per item: ``region``, the normalised attribution inside the
    object mask (in [0, 1]). The `bam` board pairs the object and scene models' rows on the same
    items (both correct) and reports MCS = mean(obj - scene), higher is better. No extra cost."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[dict[str, bool]] = {"region": True}
    requires: ClassVar[frozenset[str]] = frozenset({"masks", "labels:object", "labels:scene"})
    reference: ClassVar[str] = "random"
    board: ClassVar[str] = "bam"  # its scores are ingredients; the bam board states the verdict

    def score(
        self, model: nn.Module, batch: Batch, target: Tensor, attributions: Tensor, explain: Explain, seeds: Tensor
    ) -> dict[str, Tensor]:
        return {"region": region_attribution(attributions, _masks(batch), self.normalize)}


@register("metric", "idr")
@dataclass(frozen=True)
class InputDependence(_BamMetric):
    """BAM input dependence rate, per item: ``region`` (object mask, image with the object),
    ``region_scene_only`` (the same pixels on the scene-only image, attributed afresh by the
    method) and ``correct_scene_only`` (1 if the model's prediction there is the label). The `bam`
    board reports IDR on the scene model: the share of pairs, both correct, where the region gets
    more attribution without the object. Higher is better. Cost: one attribution and one forward
    pass per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "region": False,
        "region_scene_only": True,
        "correct_scene_only": True,
    }
    requires: ClassVar[frozenset[str]] = frozenset({"masks", "variant:scene_only", "labels:scene"})
    reference: ClassVar[str] = "random"
    board: ClassVar[str] = "bam"

    def score(
        self, model: nn.Module, batch: Batch, target: Tensor, attributions: Tensor, explain: Explain, seeds: Tensor
    ) -> dict[str, Tensor]:
        import torch

        masks = _masks(batch)
        scene_only = _extra(batch, "variant:scene_only", attributions.device)
        with torch.no_grad():
            predicted = model(scene_only).argmax(1)
        # The same class as the original is explained: over correct pairs both are the label.
        variant_maps = explain(model, scene_only, target, seeds).detach()
        return {
            "region": region_attribution(attributions, masks, self.normalize),
            "region_scene_only": region_attribution(variant_maps, masks, self.normalize),
            "correct_scene_only": (predicted == batch.labels.to(predicted.device)).float(),
        }


@register("metric", "iir")
@dataclass(frozen=True)
class InputIndependence(_BamMetric):
    """BAM input independence rate, per item: ``region`` and ``region_patched``, the attribution
    of the patch square before and after a functionally insignificant patch is pasted there,
    ``logit_change`` (||z' - z|| / ||z||, the logits' relative change: the top probability alone
    saturates) and ``correct_patched``. The `bam` board keeps pairs both correct whose logits
    change by less than ``max_logit_change`` and reports IIR, the share whose region attribution
    changes by less than ``tolerance`` of itself. Higher is better; read it beside `random`'s.
    Cost: one attribution and one forward pass per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "region": True,
        "region_patched": True,
        "logit_change": False,
        "correct_patched": True,
    }
    requires: ClassVar[frozenset[str]] = frozenset({"variant:patch", "mask:patch"})
    reference: ClassVar[str] = "random"
    board: ClassVar[str] = "bam"
    max_logit_change: float = 0.1
    tolerance: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.max_logit_change <= 1.0:
            raise ValueError(f"max_logit_change must be in (0, 1], got {self.max_logit_change}")
        if not 0.0 < self.tolerance <= 1.0:
            raise ValueError(f"tolerance must be in (0, 1], got {self.tolerance}")

    def score(
        self, model: nn.Module, batch: Batch, target: Tensor, attributions: Tensor, explain: Explain, seeds: Tensor
    ) -> dict[str, Tensor]:
        import torch

        device = attributions.device
        patched = _extra(batch, "variant:patch", device)
        region = _extra(batch, "mask:patch", device)
        with torch.no_grad():
            before = model(batch.inputs.to(device)).double()
            after = model(patched).double()
        change = (after - before).norm(dim=1) / before.norm(dim=1).clamp(min=1e-12)
        variant_maps = explain(model, patched, target, seeds).detach()
        return {
            "region": region_attribution(attributions, region, self.normalize),
            "region_patched": region_attribution(variant_maps, region, self.normalize),
            "logit_change": change.float(),
            "correct_patched": (after.argmax(1) == batch.labels.to(device)).float(),
        }
