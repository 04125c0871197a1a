"""Controls that every study carries (PROTOCOLS.md): random, sobel and blur_random.

They ignore the model (sobel looks only at the image), so a real method must beat them: ROAR
(Hooker et al., 2019) and XAI-TRIS (Clark et al., 2023) found many methods do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.imaging import blur
from xaibench.registry import register
from xaibench.seeding import per_item

MAX_SIGMA = 1000.0  # pixels; the blur kernel is cut to the image, so larger only wastes the setting


def random_map(inputs: Tensor, seeds: Tensor) -> Tensor:
    """i.i.d. uniform importance per pixel from each item's seed, shape (B, 1, H, W)."""
    import torch

    shape = (1, *inputs.shape[-2:])
    return per_item(seeds, lambda g: torch.rand(shape, generator=g), salt=4).to(inputs.device)


@register("method", "random")
@dataclass(frozen=True)
class RandomControl:
    """Random control: i.i.d. uniform importance per pixel (same for all channels of a pixel).

    The reference of every paired comparison: a method should beat it."""

    version: ClassVar[str] = "1"

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        return random_map(inputs, seeds).expand_as(inputs).contiguous()


@register("method", "blur_random")
@dataclass(frozen=True)
class BlurRandomControl:
    """Gaussian-smoothed random importance: smoothness alone can raise ROAR/ROAD scores
    ("On Pitfalls of RemOve-And-Retrain"). ``sigma`` in pixels; 0 = side/16 (at least 1)."""

    version: ClassVar[str] = "1"
    sigma: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.sigma <= MAX_SIGMA:
            raise ValueError(f"sigma must be between 0 (automatic) and {MAX_SIGMA:g} pixels, got {self.sigma}")

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        sigma = self.sigma or max(1.0, inputs.shape[-1] / 16)
        return blur(random_map(inputs, seeds), sigma).expand_as(inputs).contiguous()


@register("method", "sobel")
@dataclass(frozen=True)
class SobelControl:
    """Edge-detector control: Sobel gradient magnitude of the grey image, model-independent."""

    version: ClassVar[str] = "1"

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        import torch.nn.functional as F

        grey = inputs.mean(dim=1, keepdim=True)
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=inputs.device)
        kernels = torch.stack([kx, kx.T]).unsqueeze(1)
        edges = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
        return edges.pow(2).sum(1, keepdim=True).sqrt().expand_as(inputs).contiguous()
