"""Attention rollout (Abnar & Zuidema, ACL 2020) for torchvision vision transformers.

Each encoder block's attention A_l (heads fused by their mean, or max/min) is mixed with the
residual path as 0.5 A_l + 0.5 I and rows are renormalised; the rollout is the product
R = A_L ... A_1, and the class token's row of R over the patch tokens is the importance of each
patch, reshaped to the patch grid and upsampled bilinearly to the input. ``discard_ratio`` drops
that share of the lowest fused attention weights per layer before mixing (Gildenblat's variant;
0 keeps the paper's rollout). The map does not depend on the target class (rollout explains the
class token, not a logit), so it is the same for every target; it is non-negative.

torchvision's ``EncoderBlock`` calls its ``nn.MultiheadAttention`` with ``need_weights=False``,
so the weights are not available from its output. A forward hook on each block's ``ln_1`` keeps
the block's normalised input, and the attention weights are recomputed from it with the
attention module's own ``in_proj`` weights: softmax(q k^T / sqrt(d_head)) per head, which is what
the module computes (the tests compare with ``need_weights=True``). Cost: one forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.errors import IncompatibleError
from xaibench.methods.cam import _vision_transformer, is_script
from xaibench.registry import register


def attention_weights(attention: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """(B, heads, T, T) self-attention weights of ``attention`` on tokens ``x`` (B, T, D), batch-first."""
    import torch
    import torch.nn.functional as F

    heads = attention.num_heads
    batch, tokens, dim = x.shape
    qkv = F.linear(x, attention.in_proj_weight, attention.in_proj_bias)
    q, k, _ = qkv.view(batch, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), dim=-1)


def rollout(attentions: list[Tensor], head_fusion: str, discard_ratio: float) -> Tensor:
    """(B, T, T) rollout of per-layer (B, heads, T, T) attention weights, first layer first."""
    import torch

    batch, _, tokens, _ = attentions[0].shape
    eye = torch.eye(tokens, dtype=attentions[0].dtype, device=attentions[0].device)
    result = eye.expand(batch, tokens, tokens)
    for weights in attentions:
        fused = {"mean": weights.mean(1), "max": weights.amax(1), "min": weights.amin(1)}[head_fusion]
        if discard_ratio > 0:
            flat = fused.reshape(batch, -1)
            drop = int(flat.shape[1] * discard_ratio)
            lowest = flat.topk(drop, dim=1, largest=False).indices
            flat = flat.scatter(1, lowest, 0.0)
            fused = flat.view(batch, tokens, tokens)
        mixed = 0.5 * fused + 0.5 * eye
        mixed = mixed / mixed.sum(-1, keepdim=True)
        result = mixed @ result
    return result


@register("method", "attention_rollout")
@dataclass(frozen=True)
class AttentionRollout:
    """Attention rollout (Abnar & Zuidema, 2020) for torchvision ``VisionTransformer`` models: how
    much attention flows from each patch to the class token through all layers.

    Not class-specific (the same map for every target); non-negative. ``head_fusion`` fuses heads
    (mean, as the paper); ``discard_ratio`` drops the weakest attention weights per layer.
    Cost: one forward pass.
    """

    version: ClassVar[str] = "1"
    head_fusion: Literal["mean", "max", "min"] = "mean"
    discard_ratio: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {self.discard_ratio}")

    def check(self, model: nn.Module) -> None:
        if is_script(model) or _vision_transformer(model) is None:
            raise IncompatibleError(
                f"attention_rollout cannot explain {type(model).__name__}: it needs a torchvision VisionTransformer "
                "(attention layers to roll out); use grad_cam or a gradient method"
            )

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        import torch.nn.functional as F

        self.check(model)
        _, vit = _vision_transformer(model)
        attentions: list[Tensor] = []
        handles = []
        for block in vit.encoder.layers:

            def keep(module, args, output, attention=block.self_attention):
                attentions.append(attention_weights(attention, output))

            handles.append(block.ln_1.register_forward_hook(keep))
        try:
            with torch.no_grad():
                model(inputs)
        finally:
            for handle in handles:
                handle.remove()
        flow = rollout(attentions, self.head_fusion, self.discard_ratio)[:, 0, 1:]  # class token <- patches
        side = math.isqrt(flow.shape[1])
        grid = flow.reshape(-1, 1, side, side)
        heat = F.interpolate(grid, size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False)
        return heat.expand_as(inputs).contiguous()
