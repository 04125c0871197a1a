"""Grad-CAM and Guided Grad-CAM over captum, on the model's last (or a named) Conv2d layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam
from torch import Tensor, nn

from xaibench.errors import IncompatibleError
from xaibench.registry import register


def conv_layer(model: nn.Module, name: str, method: str) -> nn.Module:
    """The named module, or the last Conv2d when ``name`` is empty."""
    if name:
        modules = dict(model.named_modules())
        if name not in modules:
            raise IncompatibleError(f"{method}: model has no layer {name!r}; layers: {', '.join(modules)}")
        return modules[name]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise IncompatibleError(
            f"{method} needs a model with a Conv2d layer, and this model has none; "
            "use a gradient method (saliency, integrated_gradients) instead"
        )
    return convs[-1]


@register("method", "grad_cam")
@dataclass(frozen=True)
class GradCam:
    """Grad-CAM (Selvaraju et al., ICCV 2017): ReLU of gradient-weighted feature maps of a conv
    layer, upsampled bilinearly to the input and repeated over channels. ``layer`` names a module
    (``xaibench ls`` shows none by default: the last Conv2d)."""

    version: ClassVar[str] = "1"
    layer: str = ""

    def check(self, model: nn.Module) -> None:
        conv_layer(model, self.layer, "grad_cam")

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        layer = conv_layer(model, self.layer, "grad_cam")
        with torch.enable_grad():
            cam = LayerGradCam(model, layer).attribute(inputs, target=target, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam.detach(), tuple(inputs.shape[-2:]), "bilinear")
        return cam.expand_as(inputs).contiguous()


@register("method", "guided_grad_cam")
@dataclass(frozen=True)
class GuidedGradCamMethod:
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backprop times upsampled Grad-CAM.

    Adebayo et al. (2018) found it largely unchanged under model randomisation."""

    version: ClassVar[str] = "1"
    layer: str = ""

    def check(self, model: nn.Module) -> None:
        conv_layer(model, self.layer, "guided_grad_cam")

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        layer = conv_layer(model, self.layer, "guided_grad_cam")
        with torch.enable_grad():
            return GuidedGradCam(model, layer).attribute(inputs, target=target).detach()
