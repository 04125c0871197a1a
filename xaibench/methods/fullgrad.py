"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): input-gradients and bias-gradients, aggregated.

For a network with biases b_l, the full-gradient decomposition of a target output f is

    f(x) = sum(grad_x f * x) + sum_l sum(grad_{b_l} f * b_l)

exactly when f is piecewise linear in x (ReLU, max-pool, average-pool, conv, linear, BatchNorm
in eval mode). ``decompose`` returns these raw parts; ``fullgrad`` post-processes and sums them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.errors import IncompatibleError
from xaibench.methods.cam import is_script
from xaibench.registry import register


# Modules that are affine in their input, y = A(x) + b, whose offset b is a "bias" of the
# decomposition. BatchNorm (eval) has the effective bias beta - gamma * mean / sqrt(var + eps);
# xaibench's Normalize has -mean / std. Any other module is treated as bias-free.
def affine_types() -> tuple[type, ...]:
    from torch import nn

    from xaibench.models.layers import Normalize

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.modules.batchnorm._BatchNorm, Normalize)


def _has_offset(module: nn.Module) -> bool:
    from torch import nn

    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        return module.bias is not None
    return isinstance(module, affine_types())


def check_fullgrad(model: nn.Module) -> None:
    """Refuse, before any work, a model whose biases the hooks cannot all see exactly once.

    TorchScript hides its layers (the map would silently be input x gradient). Attention
    (``nn.MultiheadAttention``, so every torchvision ViT and Swin) applies its projections as
    functions: their biases escape the hooks and ``out_proj`` never runs as a module.
    """
    from torch import nn

    where = f"fullgrad cannot explain {type(model).__name__}"
    if is_script(model):
        raise IncompatibleError(f"{where}: a TorchScript model's bias layers cannot be hooked")
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        raise IncompatibleError(
            f"{where}: attention layers apply their biases as functions, outside the per-layer hooks the "
            "full-gradient decomposition needs"
        )


def decompose(model: nn.Module, inputs: Tensor, target: Tensor) -> tuple[Tensor, list[tuple[str, Tensor]]]:
    """The raw full-gradient parts of the target output, without post-processing.

    Returns ``grad_x * x`` (B, C, H, W) and, for every affine layer with an offset, its name and
    ``grad_out * b`` of the layer output's shape (the per-position bias-gradient; summed over
    positions it is grad_b * b). For a piecewise-linear model in eval mode, the sum of all parts
    of an item equals its target output (the logit).
    """
    import torch

    modules = [(name, m) for name, m in model.named_modules() if _has_offset(m)]
    outputs: list[Tensor] = []
    offsets: list[Tensor] = []

    def keep(module, args, output):
        # The offset b = module(0): a conv's zero-padded border still gives exactly its bias.
        # ``forward``, not ``module(...)``: calling the module would run this hook again.
        with torch.no_grad():
            offsets.append(module.forward(torch.zeros_like(args[0][:1])).detach())
        outputs.append(output)

    handles = [m.register_forward_hook(keep) for _, m in modules]
    try:
        x = inputs.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            score = logits.gather(1, target[:, None]).sum()
            grads = torch.autograd.grad(score, [x, *outputs], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    if len(outputs) != len(modules):
        # A layer shared or skipped in the forward pass (not detectable by structure alone).
        raise IncompatibleError(
            f"fullgrad cannot explain {type(model).__name__}: a bias layer ran more or less than once per forward "
            "pass, so its bias-gradient is not defined"
        )
    input_part = (grads[0] * inputs).detach()
    bias_parts = []
    for (name, _), grad, offset, output in zip(modules, grads[1:], offsets, outputs, strict=True):
        grad = torch.zeros_like(output) if grad is None else grad
        bias_parts.append((name, (grad * offset).detach()))
    return input_part, bias_parts


def _post_process(part: Tensor, size: tuple[int, int]) -> Tensor:
    """The paper's code: abs, per-item min-max to [0, 1], bilinear upsampling, sum over channels."""
    import torch.nn.functional as F

    part = part.abs()
    flat = part.flatten(1)
    low = flat.amin(1).view(-1, 1, 1, 1)
    part = part - low
    high = part.flatten(1).amax(1).view(-1, 1, 1, 1)
    part = part / (high + 1e-6)
    part = F.interpolate(part, size=size, mode="bilinear", align_corners=True)
    return part.sum(1, keepdim=True)


@register("method", "fullgrad")
@dataclass(frozen=True)
class FullGrad:
    """FullGrad (Srinivas & Fleuret, NeurIPS 2019): the saliency map of the full-gradient
    decomposition. S(x) = psi(grad_x f * x) + sum over conv-like layers of psi(grad_b f * b),
    where psi takes the absolute value, rescales each part to [0, 1] per item (min-max, as the
    authors' code does), upsamples it bilinearly to the input and sums over its channels.
    Higher = more important; the map is non-negative and repeated over input channels.

    Biases: conv and linear biases, BatchNorm's effective bias (beta - gamma * mean / std) and
    the offset of xaibench's in-model ``Normalize``. Only parts with a spatial layout enter the
    map (like the authors' code); a linear layer's bias-gradient has none and only enters the
    exact decomposition (``decompose``), where all parts sum to the target logit.

    Refused: TorchScript and attention models (see ``check_fullgrad``). Cost: one forward and
    one backward pass (plus one forward of each affine layer on zeros).
    """

    version: ClassVar[str] = "1"

    def check(self, model: nn.Module) -> None:
        check_fullgrad(model)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        input_part, bias_parts = decompose(model, inputs, target)
        size = tuple(inputs.shape[-2:])
        saliency = _post_process(input_part, size)
        for _, part in bias_parts:
            if part.dim() == inputs.dim():
                saliency = saliency + _post_process(part, size)
        return saliency.expand_as(inputs).contiguous()
