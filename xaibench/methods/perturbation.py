"""Perturbation attributions over captum: occlusion and feature ablation on square patches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.registry import register

MAX_SIDE = 4096  # pixels: no image side this benchmark handles is larger
MAX_PER_EVAL = 4096  # perturbed copies per forward pass; more only exhausts memory


def _check_per_eval(value: int) -> None:
    if not 1 <= value <= MAX_PER_EVAL:
        raise ValueError(f"perturbations_per_eval must be between 1 and {MAX_PER_EVAL}, got {value}")


@register("method", "occlusion")
@dataclass(frozen=True)
class OcclusionMethod:
    """Occlusion (Zeiler & Fergus, 2014): drop in the target logit when a sliding black square
    covers each pixel, averaged over the windows covering it. ``window`` 0 = side/8 (at least 2),
    ``stride`` 0 = half the window (at least 1)."""

    version: ClassVar[str] = "1"
    not_in_key: ClassVar[frozenset[str]] = frozenset({"perturbations_per_eval"})  # batching only
    window: int = 0
    stride: int = 0
    perturbations_per_eval: int = 16

    def __post_init__(self):
        for name, value in (("window", self.window), ("stride", self.stride)):
            if not 0 <= value <= MAX_SIDE:
                raise ValueError(f"{name} must be between 0 (automatic) and {MAX_SIDE} pixels, got {value}")
        _check_per_eval(self.perturbations_per_eval)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        from captum.attr import Occlusion

        channels, height, _ = inputs.shape[1:]
        window = self.window or max(2, height // 8)
        stride = self.stride or max(1, window // 2)
        with torch.no_grad():
            return Occlusion(model).attribute(
                inputs,
                sliding_window_shapes=(channels, window, window),
                strides=(channels, stride, stride),
                baselines=0.0,
                target=target,
                perturbations_per_eval=self.perturbations_per_eval,
            )


@register("method", "feature_ablation")
@dataclass(frozen=True)
class FeatureAblationMethod:
    """Feature ablation: drop in the target logit when each ``patch`` x ``patch`` superpixel
    (all channels) is set to black. ``patch`` 0 = side/16 (at least 1)."""

    version: ClassVar[str] = "1"
    not_in_key: ClassVar[frozenset[str]] = frozenset({"perturbations_per_eval"})  # batching only
    patch: int = 0
    perturbations_per_eval: int = 16

    def __post_init__(self):
        if not 0 <= self.patch <= MAX_SIDE:
            raise ValueError(f"patch must be between 0 (automatic) and {MAX_SIDE} pixels, got {self.patch}")
        _check_per_eval(self.perturbations_per_eval)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        from captum.attr import FeatureAblation

        _, height, width = inputs.shape[1:]
        patch = self.patch or max(1, height // 16)
        rows = torch.arange(height, device=inputs.device) // patch
        cols = torch.arange(width, device=inputs.device) // patch
        segments = rows[:, None] * ((width + patch - 1) // patch) + cols[None, :]
        feature_mask = segments.expand(1, inputs.shape[1], height, width)
        with torch.no_grad():
            return FeatureAblation(model).attribute(
                inputs,
                baselines=0.0,
                target=target,
                feature_mask=feature_mask,
                perturbations_per_eval=self.perturbations_per_eval,
            )
