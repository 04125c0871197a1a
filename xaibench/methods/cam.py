"""Grad-CAM and Guided Grad-CAM on any architecture: the layer is found automatically.

The layer is the last module, in execution order, whose output is a spatial map (B, C, H, W)
with H x W > 1, found by one dry forward pass of a single item with hooks (remembered per model
instance and input shape). Pooling layers are skipped (a coarser copy of the map before them),
and so is an activation or dropout applied directly to the map just found (the layer before it
is kept: the last Conv2d of a plain CNN). ``layer`` names a module instead. Vision transformers (torchvision's
``VisionTransformer``) have no spatial map: their tokens are reshaped to the patch grid (class
token dropped) at the input of the last encoder block's attention (``ln_1``), because only the
class token of the last block's output reaches the head, so gradients at patch tokens there are 0.

Grad-CAM here is computed directly (weights = spatial mean of the gradient of the target logit
at the layer's output; map = ReLU of the weighted sum of channels), which is what captum's
``LayerGradCam`` does for a spatial layer; the tests check the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.errors import IncompatibleError
from xaibench.registry import register


def _pooling() -> tuple[type, ...]:
    from torch import nn

    return (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _elementwise() -> tuple[type, ...]:
    from torch import nn

    return (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.Dropout, nn.Dropout2d, nn.Identity)


# (model class, architecture, input shape, device) -> the automatically found layer's name. The
# choice depends on the architecture only, not on the weights: a reloaded or retrained copy of a
# model (another task, another run in this process) needs no new hooked pass.
_FOUND: dict[tuple, str] = {}


@dataclass(frozen=True)
class CamLayer:
    """A layer to explain at: its name, the module, and how to read its output as (B, C, H, W).

    ``tokens`` is 0 for a spatial map; for a token sequence (B, T, D) it is the number of
    leading non-patch tokens to drop (1: the class token) before reshaping to a square grid.
    """

    name: str
    module: nn.Module
    tokens: int = -1

    def as_map(self, output: Tensor) -> Tensor:
        if self.tokens < 0:
            return output
        patches = output[:, self.tokens :]
        side = math.isqrt(patches.shape[1])
        return patches.transpose(1, 2).reshape(output.shape[0], output.shape[2], side, side)


def is_script(model: nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


def _vision_transformer(model: nn.Module) -> tuple[str, nn.Module] | None:
    from torchvision.models import VisionTransformer

    for name, module in model.named_modules():
        if isinstance(module, VisionTransformer):
            return name, module
    return None


def _token_layer(model: nn.Module) -> CamLayer | None:
    found = _vision_transformer(model)
    if found is None:
        return None
    prefix, vit = found
    last = len(vit.encoder.layers) - 1
    name = f"{prefix + '.' if prefix else ''}encoder.layers.{list(vit.encoder.layers._modules)[last]}.ln_1"
    return CamLayer(name, vit.encoder.layers[last].ln_1, tokens=1)


def _named(model: nn.Module, name: str, method: str) -> CamLayer:
    modules = dict(model.named_modules())
    if name not in modules:
        shown = ", ".join(list(modules)[1:30])
        raise IncompatibleError(f"{method}: model {type(model).__name__} has no layer {name!r}; layers: {shown}, ...")
    vit = _token_layer(model)
    if vit is not None and name.startswith(vit.name.split("encoder.layers")[0] + "encoder.layers"):
        return CamLayer(name, modules[name], tokens=1)
    return CamLayer(name, modules[name])


def check_cam(model: nn.Module, name: str, method: str) -> None:
    """Refuse, before any work, a model whose layers cannot be hooked or that has no spatial layer."""
    from torch import nn

    where = f"{method} cannot explain {type(model).__name__}"
    if is_script(model):
        raise IncompatibleError(f"{where}: a TorchScript model's layers cannot be hooked; use a gradient method")
    if name:
        _named(model, name, method)
        return
    if _token_layer(model) is None and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise IncompatibleError(
            f"{where}: it has no layer with a spatial (B, C, H, W) output (no Conv2d, not a VisionTransformer); "
            "use a gradient method (saliency, integrated_gradients)"
        )


def find_layer(model: nn.Module, inputs: Tensor, name: str, method: str) -> CamLayer:
    """The layer to explain at (see the module doc), by one hooked forward pass of one item."""
    import torch
    from torch import Tensor

    check_cam(model, name, method)
    if name:
        return _named(model, name, method)
    pooling, elementwise = _pooling(), _elementwise()
    tokens = _token_layer(model)
    if tokens is not None:
        return tokens
    key = (type(model), repr(model), tuple(inputs.shape[1:]), str(inputs.device))
    cached = _FOUND
    if key not in cached:
        order: list[tuple[str, Tensor]] = []
        skipped: list[Tensor] = []
        names = {module: n for n, module in model.named_modules()}

        def record(module, args, output):
            if (
                not isinstance(output, Tensor)
                or output.dim() != 4
                or output.shape[2] * output.shape[3] <= 1
                or module is model
            ):
                return
            # A pooled map is a coarser copy of the one before it; an activation or dropout
            # applied to the map just found is that map less its sign: keep the layer before
            # (the last Conv2d of a plain CNN). A container returning such a map is skipped too.
            if (
                isinstance(module, pooling)
                or (isinstance(module, elementwise) and order and args and args[0] is order[-1][1])
                or any(output is t for t in skipped)
            ):
                skipped.append(output)
                return
            order.append((names[module], output))

        handles = [m.register_forward_hook(record) for m in set(names)]
        try:
            with torch.no_grad():
                model(inputs[:1])
        finally:
            for handle in handles:
                handle.remove()
        if not order:
            raise IncompatibleError(
                f"{method} cannot explain {type(model).__name__}: no layer has a spatial output larger than 1x1 "
                f"for inputs of shape {list(inputs.shape[1:])}; use a gradient method"
            )
        cached[key] = order[-1][0]
    return CamLayer(cached[key], model.get_submodule(cached[key]))


def grad_cam(model: nn.Module, layer: CamLayer, inputs: Tensor, target: Tensor) -> Tensor:
    """(B, 1, h, w) ReLU of the gradient-weighted channel sum of the layer's map."""
    import torch
    import torch.nn.functional as F

    captured: list[Tensor] = []

    def keep(module, args, output):
        captured.append(output)

    handle = layer.module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = inputs.detach().requires_grad_(True)  # a graph even when every parameter is frozen
            score = model(x).gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(score, captured[-1])
    finally:
        handle.remove()
    activation = layer.as_map(captured[-1].detach())
    grad = layer.as_map(grad)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activation).sum(1, keepdim=True))


def grad_cam_from(model: nn.Module, layer: CamLayer, activation: Tensor, target: Tensor) -> Tensor | None:
    """Grad-CAM from the layer's cached output, running only the network after the layer; None
    when the model has no callable rest (see ``activations.rest_of_network``)."""
    import torch
    import torch.nn.functional as F

    from xaibench.activations import rest_of_network

    rest = rest_of_network(model, layer.name) if layer.tokens < 0 else None
    if rest is None:
        return None
    with torch.enable_grad():
        start = activation.detach().clone().requires_grad_(True)
        score = rest(start).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(score, start)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * start.detach()).sum(1, keepdim=True))


def conv_layer(model: nn.Module, name: str, method: str) -> nn.Module:
    """The named module, or the last Conv2d when ``name`` is empty (kept for layer methods that
    need a module without running the model; ``find_layer`` is the spatial-output search)."""
    from torch import nn

    if name:
        return _named(model, name, method).module
    check_cam(model, name, method)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise IncompatibleError(
            f"{method} cannot explain {type(model).__name__}: it has no Conv2d layer; "
            "use a gradient method (saliency, integrated_gradients)"
        )
    return convs[-1]


@register("method", "grad_cam")
@dataclass(frozen=True)
class GradCam:
    """Grad-CAM (Selvaraju et al., ICCV 2017): ReLU of gradient-weighted feature maps of a layer,
    upsampled bilinearly to the input and repeated over channels.

    ``layer`` names a module; by default the last layer with a spatial output (the token grid of
    a vision transformer). Cost: one forward and one backward pass; with the layer's activations
    cached (``xaibench.activations``), only the part of the network after the layer, forward and
    backward, on models built of ``nn.Sequential`` containers.
    """

    version: ClassVar[str] = "2"
    reads_layer: ClassVar[bool] = True
    layer: str = ""

    def check(self, model: nn.Module) -> None:
        check_cam(model, self.layer, "grad_cam")

    def attribute(
        self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor, activations: Tensor | None = None
    ) -> Tensor:
        import torch.nn.functional as F

        layer = find_layer(model, inputs, self.layer, "grad_cam")
        cam = grad_cam_from(model, layer, activations, target) if activations is not None else None
        if cam is None:
            cam = grad_cam(model, layer, inputs, target)
        cam = F.interpolate(cam.detach(), size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False)
        return cam.expand_as(inputs).contiguous()


@register("method", "guided_grad_cam")
@dataclass(frozen=True)
class GuidedGradCamMethod:
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backprop times Grad-CAM upsampled by
    nearest neighbour (as captum's ``GuidedGradCam``).

    Adebayo et al. (2018) found it largely unchanged under model randomisation. On a model
    without ReLU modules (a vision transformer) guided backprop is the plain gradient.
    """

    version: ClassVar[str] = "2"
    layer: str = ""

    def check(self, model: nn.Module) -> None:
        check_cam(model, self.layer, "guided_grad_cam")

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        import torch.nn.functional as F
        from captum.attr import GuidedBackprop

        cam = grad_cam(model, find_layer(model, inputs, self.layer, "guided_grad_cam"), inputs, target)
        cam = F.interpolate(cam.detach(), size=tuple(inputs.shape[-2:]), mode="nearest")
        with torch.enable_grad():
            guided = GuidedBackprop(model).attribute(inputs, target=target).detach()
        return guided * cam
