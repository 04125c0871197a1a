"""Gradient-free CAMs on a conv layer's activations: Score-CAM and Eigen-CAM.

Both read the activations of the layer ``grad_cam`` explains (``cam.find_layer``: the last
module with a spatial output larger than 1x1, the token grid of a vision transformer, or a named
module) in one forward pass, build a map at the layer's resolution, ReLU it, upsample it
bilinearly to the input and repeat it over channels, like ``grad_cam``. Neither uses gradients.
(Version 1 used the last Conv2d, which is 1x1 on a resnet18 at 32 px: Eigen-CAM was all zero.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.activations import layer_activations
from xaibench.methods.cam import check_cam, find_layer
from xaibench.metrics.perturbation import PASS_ELEMENTS
from xaibench.registry import register


def to_input(cam: Tensor, inputs: Tensor) -> Tensor:
    """(B, 1, h, w) layer-resolution map -> (B, C, H, W): bilinear upsampling, repeated over channels."""
    import torch.nn.functional as F

    cam = F.interpolate(cam, size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False)
    return cam.expand_as(inputs).contiguous()


@register("method", "score_cam")
@dataclass(frozen=True)
class ScoreCam:
    """Score-CAM (Wang et al., CVPR Workshops 2020): each activation map of a conv layer,
    upsampled to the input and min-max normalised to [0, 1], masks the input; the map's weight is
    the softmax probability of the target on that masked input. Output: ReLU of the weighted sum
    of the activation maps, upsampled (higher = more important). ``layer`` names a module
    (default: the layer ``grad_cam`` finds, see the module doc).

    Weight choice: the paper's "channel-wise increase of confidence" subtracts the score of a
    baseline input, f(X o M_k) - f(X_b); with one baseline for all channels that only shifts every
    weight by the same constant. Like the authors' code, xaibench uses the softmax probability
    f(X o M_k) itself; a channel whose map is constant has no mask and gets weight 0.

    Cost: one forward pass to the layer (none when cached), then one masked forward pass per channel of the layer
    (K copies per item, e.g. 32 on ``digits_cnn``), in chunks of ``PASS_ELEMENTS`` input elements.
    """

    version: ClassVar[str] = "2"
    reads_layer: ClassVar[bool] = True  # the layer's output may come from the cache (xaibench.activations)
    layer: str = ""

    def check(self, model: nn.Module) -> None:
        check_cam(model, self.layer, "score_cam")

    def attribute(
        self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor, activations: Tensor | None = None
    ) -> Tensor:
        import torch
        import torch.nn.functional as F

        if activations is None:  # (B, K, h, w); given when the layer's output is cached
            activations = layer_activations(model, find_layer(model, inputs, self.layer, "score_cam"), inputs)
        batch, channels = activations.shape[:2]
        masks = F.interpolate(activations, size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False)
        low = masks.flatten(2).amin(2)[..., None, None]
        span = masks.flatten(2).amax(2)[..., None, None] - low
        flat = span <= 0  # constant map: nothing to mask with
        masks = torch.where(flat, 0.0, (masks - low) / span.clamp_min(1e-12))  # (B, K, H, W)

        # Masked copies, item-major: copy b * K + k is item b masked by its channel k.
        copies_per_pass = max(1, PASS_ELEMENTS.get(inputs.device.type, PASS_ELEMENTS["cpu"]) // inputs[0].numel())
        item = torch.arange(batch, device=inputs.device).repeat_interleave(channels)
        channel = torch.arange(channels, device=inputs.device).repeat(batch)
        scores = []
        with torch.no_grad():
            for items, chans in zip(item.split(copies_per_pass), channel.split(copies_per_pass), strict=True):
                masked = inputs[items] * masks[items, chans].unsqueeze(1)
                probabilities = model(masked).softmax(-1)
                scores.append(probabilities.gather(1, target[items, None]).squeeze(1))
        weights = torch.cat(scores).view(batch, channels).masked_fill(flat[..., 0, 0], 0.0)
        cam = torch.relu((weights[..., None, None] * activations).sum(1, keepdim=True))
        return to_input(cam, inputs)


@register("method", "eigen_cam")
@dataclass(frozen=True)
class EigenCam:
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): projection of a conv layer's activations on
    their first principal component, class-agnostic and without gradients.

    Per item, the activations form an (h*w, K) matrix (positions x channels); it is centred over
    positions (as pytorch-grad-cam does) and its first right-singular vector v1 is found by SVD
    (in float64). The map is the projection A v1 at each position. An SVD's sign is arbitrary,
    so it is fixed deterministically: the projection is made to correlate positively with the
    channel-summed centred activation (where the layer is more active overall is "on"); when
    that correlation is 0, the largest-magnitude entry is made positive. Output: ReLU of the
    projection, upsampled (higher = more important). The target is ignored.

    Cost: one forward pass to the layer (none when cached) and one small SVD per item.
    """

    version: ClassVar[str] = "2"
    reads_layer: ClassVar[bool] = True  # the layer's output may come from the cache (xaibench.activations)
    layer: str = ""

    def check(self, model: nn.Module) -> None:
        check_cam(model, self.layer, "eigen_cam")

    def attribute(
        self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor, activations: Tensor | None = None
    ) -> Tensor:
        import torch

        if activations is None:  # given when the layer's output is cached: then no forward pass at all
            activations = layer_activations(model, find_layer(model, inputs, self.layer, "eigen_cam"), inputs)
        batch, _, height, width = activations.shape
        matrix = activations.flatten(2).transpose(1, 2).double()  # (B, h*w, K)
        centred = matrix - matrix.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        projection = (centred @ vh[:, 0, :, None]).squeeze(2)  # (B, h*w)
        overall = centred.sum(2)
        agreement = (projection * overall).sum(1)
        peak = projection.gather(1, projection.abs().argmax(1, keepdim=True)).squeeze(1)
        # A relative threshold: an agreement at rounding level must not flip the sign by batch.
        tiny = agreement.abs() <= 1e-9 * (projection.norm(dim=1) * overall.norm(dim=1)).clamp_min(1e-300)
        sign = torch.where(tiny, torch.sign(peak), torch.sign(agreement))
        sign = torch.where(sign == 0, 1.0, sign)
        cam = torch.relu(sign[:, None] * projection).float().view(batch, 1, height, width)
        return to_input(cam, inputs)
