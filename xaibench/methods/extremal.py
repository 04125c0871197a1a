"""Extremal perturbation (Fong, Patrick & Vedaldi, ICCV 2019): the smooth mask of a fixed area
that best preserves the target output, found by gradient ascent."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.imaging import blur
from xaibench.registry import register
from xaibench.seeding import per_item

# TorchRay's reference settings: SGD at 0.01 with momentum 0.9 (dampening 0.9) from a mask of
# ones, area weight 300 grown by 0.35% per step (so the constraint ends up nearly hard),
# smooth-max temperature 20.
LEARNING_RATE = 0.01
MOMENTUM = 0.9
AREA_WEIGHT = 300.0
AREA_WEIGHT_GROWTH = 1.0035
COLDNESS = 20.0


def smooth_max_operator(size: tuple[int, int], step: int, sigma: float) -> tuple[Tensor, Tensor, Tensor, int]:
    """Kernel weights and neighbourhood of the smooth max-convolution that maps the parameter
    grid to the mask: mask(u) = smoothmax_v k(|u - p_v| / sigma) m_v over the grid points p_v
    near pixel u, with TorchRay's kernel k(z) = exp(-2 max(z - 1/2, 0)^2).

    As in TorchRay, the mask covers the image plus a margin of ceil(sigma) pixels on every
    side (the area term applies there too, so the mask can vanish at the border), and grid
    points lie every ``step`` pixels out to the kernel's reach past that margin. Returns, for
    the P pixels of the padded mask and their K nearest grid points: weights (P, K), whether
    each is in the neighbourhood (P, K) bool, the grid points' indices (P, K), and the margin.
    """
    import torch

    height, width = size
    margin = math.ceil(sigma)
    reach = math.ceil((margin + sigma + step) / step)
    rows = torch.arange(-reach, math.ceil(height / step) + reach, dtype=torch.float64) * step
    cols = torch.arange(-reach, math.ceil(width / step) + reach, dtype=torch.float64) * step
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")
    pix_y, pix_x = torch.meshgrid(
        torch.arange(-margin, height + margin, dtype=torch.float64),
        torch.arange(-margin, width + margin, dtype=torch.float64),
        indexing="ij",
    )
    distance = torch.cdist(
        torch.stack([pix_y.flatten(), pix_x.flatten()], 1), torch.stack([grid_y.flatten(), grid_x.flatten()], 1)
    )
    near = distance <= sigma + step  # TorchRay's window: (2 radius + 1)^2 points, radius ~ sigma / step
    weights = torch.exp(-2 * ((distance / sigma) - 0.5).clamp_min(0) ** 2)
    # Keep only each pixel's K nearest grid points (K = the largest neighbourhood): (P, K).
    k = int(near.sum(1).max())
    index = distance.topk(k, dim=1, largest=False).indices
    return weights.gather(1, index).float(), near.gather(1, index), index, margin


def generate_mask(params: Tensor, weights: Tensor, near: Tensor, index: Tensor) -> Tensor:
    """(B, G) grid parameters in [0, 1] -> (B, P) smooth mask in [0, 1] over the padded pixels."""
    values = weights[None] * params[:, index]  # (B, P, K)
    logits = (COLDNESS * values).masked_fill(~near[None], float("-inf"))
    return (values * logits.softmax(-1)).sum(-1).clamp(0, 1)


@register("method", "extremal_perturbation")
@dataclass(frozen=True)
class ExtremalPerturbation:
    """Extremal perturbation (Fong, Patrick & Vedaldi, ICCV 2019), preservation game: the smooth
    mask m of area ``area`` (a share of the pixels) that maximises the target logit of
    m * x + (1 - m) * blur(x). The output is the mask, in [0, 1] (1 = kept = important).

    The area is enforced, without a tunable weight, by the paper's ranking regulariser: the
    mask's sorted values are pulled towards a step vector with ``area`` ones, with TorchRay's
    weight schedule (300, grown by 0.35% per iteration). The mask is a smooth max-convolution
    of a parameter grid with a spacing of ``step`` pixels and a kernel width ``sigma`` (0 =
    automatic: the paper's 7 and 21 pixels at 224 x 224, scaled to the input; at least 1 pixel).
    SGD (learning rate 0.01, momentum 0.9) for ``iterations`` steps from a mask of ones, as in
    TorchRay, the authors' implementation.

    Caveat of the fixed weight: the reward is the target logit, so a model whose logit moves by
    only a few units between the image and its blur (low-contrast inputs, a linear model on
    ``suppressor``) loses to the area term and gets a mask near 0 everywhere; the hand-built
    test model's logit spans about 35 units and its mask finds the region.

    Simplifications: the blurred input is one Gaussian blur of ``blur_sigma`` (0 = side / 4;
    the paper's blur pyramid interpolates between levels), and there is no horizontal-flip
    jitter. Cost: ``iterations`` forward and backward passes per item, all items of a batch
    optimised together (each item's loss and parameters are its own).
    """

    version: ClassVar[str] = "1"
    area: float = 0.1
    iterations: int = 300
    step: int = 0
    sigma: float = 0.0
    blur_sigma: float = 0.0

    def __post_init__(self):
        if not 0.0 < self.area < 1.0:
            raise ValueError(f"area must be in (0, 1), got {self.area}")
        # Upper bounds keep a typo from running for hours or building kernels larger than any
        # image; NaN or inf sigmas would turn the mask into NaN. 0 = automatic for the last three.
        if not 1 <= self.iterations <= 100_000:
            raise ValueError(f"iterations must be between 1 and 100,000, got {self.iterations}")
        if not 0 <= self.step <= 1024:
            raise ValueError(f"step must be between 0 (automatic) and 1024, got {self.step}")
        for name, value in (("sigma", self.sigma), ("blur_sigma", self.blur_sigma)):
            if not (math.isfinite(value) and 0.0 <= value <= 1000.0):
                raise ValueError(f"{name} must be a finite number between 0 (automatic) and 1000 pixels, got {value}")

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch

        batch = len(inputs)
        height, width = inputs.shape[-2:]
        side = min(height, width)
        step = self.step or max(1, round(side * 7 / 224))
        sigma = self.sigma or max(1.0, side * 21 / 224)
        weights, near, index, margin = smooth_max_operator((height, width), step, sigma)
        weights, near, index = weights.to(inputs.device), near.to(inputs.device), index.to(inputs.device)
        grid = int(index.max()) + 1
        padded = (height + 2 * margin, width + 2 * margin)
        pixels = padded[0] * padded[1]
        # The step vector: ``area`` of the image's pixels on, every other pixel of the padded
        # mask off (TorchRay takes the share of the padded mask; the image's is what we report).
        reference = torch.zeros(pixels, device=inputs.device)
        reference[pixels - round(height * width * self.area) :] = 1.0  # ascending, like the sorted mask
        blurred = blur(inputs, self.blur_sigma or max(1.0, side / 4)).detach()
        inputs = inputs.detach()

        def image_mask(params: Tensor) -> tuple[Tensor, Tensor]:
            full = generate_mask(params, weights, near, index)
            crop = full.view(batch, 1, *padded)[..., margin : margin + height, margin : margin + width]
            return full, crop

        # Sorting ties (every pixel starts at 1) follow a random order seeded per item, not the
        # pixel index, which would favour the image's bottom rows while the mask is still flat.
        shuffle = per_item(seeds, lambda g: torch.randperm(pixels, generator=g), salt=7).to(inputs.device)
        params = torch.ones(batch, grid, device=inputs.device, requires_grad=True)
        optimizer = torch.optim.SGD([params], lr=LEARNING_RATE, momentum=MOMENTUM, dampening=MOMENTUM)
        area_weight = AREA_WEIGHT
        with torch.enable_grad():
            for _ in range(self.iterations):
                full, mask = image_mask(params)
                perturbed = mask * inputs + (1 - mask) * blurred
                reward = model(perturbed).gather(1, target[:, None]).squeeze(1)
                ranked = full.gather(1, shuffle).sort(dim=1, stable=True).values
                area_loss = (ranked - reference).pow(2).mean(1)
                # Items are independent: the sum's gradient for an item is its own loss's gradient.
                energy = (reward - area_weight * area_loss).sum()
                # autograd.grad, not backward(): no gradient may accumulate in the model.
                (params.grad,) = torch.autograd.grad(-energy, [params])
                optimizer.step()
                with torch.no_grad():
                    params.clamp_(0, 1)
                area_weight *= AREA_WEIGHT_GROWTH
        with torch.no_grad():
            _, mask = image_mask(params)
        return mask.detach().expand(batch, inputs.shape[1], height, width).contiguous()
