"""XRAI (Kapishnikov et al., ICCV 2019): integrated-gradients mass ranked over image regions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.registry import register

# The reference implementation's settings (PAIR-code saliency, xrai.py), for 224 x 224 images.
SCALES = (50, 100, 150, 250, 500, 1200)
SIGMA = 0.8
REFERENCE_SIDE = 224
MIN_SEGMENT = 150  # pixels at 224 x 224
DILATION = 5  # pixels at 224 x 224
MIN_PIXEL_DIFF = 50  # pixels at 224 x 224


def segment_masks(image: np.ndarray) -> np.ndarray:
    """(R, H, W) bool region masks from Felzenszwalb segmentations at every scale of ``SCALES``.

    The image (C, H, W) in [0, 1] is rescaled to [-1, 1] as in the reference. It is segmented at
    its own resolution (the reference resizes to 224 x 224 first), so the minimum segment size
    and the dilation radius are scaled by the image's size relative to 224.
    """
    from skimage.morphology import dilation, disk
    from skimage.segmentation import felzenszwalb

    channels, height, width = image.shape
    ratio = height * width / REFERENCE_SIDE**2
    picture = image[0] * 2 - 1 if channels == 1 else np.moveaxis(image, 0, -1) * 2 - 1
    axis = None if channels == 1 else -1
    min_size = max(1, round(MIN_SEGMENT * ratio))
    radius = round(DILATION * height / REFERENCE_SIDE)
    masks = []
    for scale in SCALES:
        labels = felzenszwalb(picture, scale=scale, sigma=SIGMA, min_size=min_size, channel_axis=axis)
        for value in np.unique(labels):
            mask = labels == value
            masks.append(dilation(mask, disk(radius)) if radius else mask)
    return np.stack(masks)


def xrai_regions(attribution: np.ndarray, masks: np.ndarray, min_pixel_diff: int) -> list[tuple[np.ndarray, float]]:
    """The reference's greedy selection: (region, gain) in the order the regions were added.

    At each step the region whose not-yet-covered pixels have the highest mean attribution
    (the gain) is added; regions adding fewer than ``min_pixel_diff`` new pixels are dropped.
    The pixels no region covers form a last region with their own mean.
    """
    flat = masks.reshape(len(masks), -1)
    values = attribution.reshape(-1).astype(np.float64)
    covered = np.zeros(values.shape, dtype=bool)
    alive = np.ones(len(flat), dtype=bool)
    chosen: list[tuple[np.ndarray, float]] = []
    while alive.any() and not covered.all():
        new = flat & ~covered
        counts = new.sum(1)
        alive &= counts >= min_pixel_diff
        if not alive.any():
            break
        gains = np.where(alive, (new * values).sum(1) / np.maximum(counts, 1), -np.inf)
        best = int(np.argmax(gains))
        chosen.append((new[best], float(gains[best])))
        covered |= new[best]
        alive[best] = False
    if not covered.all():
        chosen.append((~covered, float(values[~covered].mean())))
    return chosen


@register("method", "xrai")
@dataclass(frozen=True)
class Xrai:
    """XRAI (Kapishnikov et al., ICCV 2019): regions of Felzenszwalb segmentations at six scales
    (scikit-image) are added greedily by their integrated-gradients density, and every pixel gets
    the value of the region that first covers it.

    Attribution: integrated gradients (captum, ``n_steps``) from a black and from a white
    baseline, averaged, then the maximum over channels, as in the reference implementation.
    ``output``: ``rank`` (default) gives the regions, sorted by gain as the reference sorts its
    trace, the values (R - k) / R for the k-th of R regions: positive and in XRAI's order, so any
    channel reduction keeps that order; ``gain`` gives the reference's raw gain (the region's mean
    attribution over its new pixels, which may be negative). Higher = more important.

    Simplification: segmentation runs at the image's resolution, with the minimum segment size,
    the dilation radius and the minimum new-pixel count scaled from the reference's 224 x 224.
    Cost: 2 x ``n_steps`` gradient passes, 6 segmentations and a greedy pass over the regions
    (quadratic in their number) per item; the last two run on the CPU with numpy.
    """

    version: ClassVar[str] = "1"
    n_steps: int = 32
    output: Literal["rank", "gain"] = "rank"

    def __post_init__(self):
        if not 1 <= self.n_steps <= 10_000:  # the upper bound keeps a typo from running for hours
            raise ValueError(f"n_steps must be between 1 and 10,000, got {self.n_steps}")
        if self.output not in ("rank", "gain"):
            raise ValueError(f"output must be 'rank' or 'gain', got {self.output!r}")

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        from captum.attr import IntegratedGradients

        ig = IntegratedGradients(model)
        with torch.enable_grad():
            black = ig.attribute(inputs, baselines=0.0, target=target, n_steps=self.n_steps)
            white = ig.attribute(inputs, baselines=1.0, target=target, n_steps=self.n_steps)
        attribution = ((black + white) / 2).amax(1).detach().cpu().double().numpy()
        images = inputs.detach().cpu().double().numpy()
        height, width = inputs.shape[-2:]
        min_pixel_diff = max(1, round(MIN_PIXEL_DIFF * height * width / REFERENCE_SIDE**2))
        maps = []
        for image, attr in zip(images, attribution, strict=True):
            regions = xrai_regions(attr, segment_masks(image), min_pixel_diff)
            ranked = sorted(regions, key=lambda region: -region[1])
            out = np.zeros(height * width)
            for k, (pixels, gain) in enumerate(ranked):
                out[pixels] = (len(ranked) - k) / len(ranked) if self.output == "rank" else gain
            maps.append(out.reshape(1, height, width))
        result = torch.from_numpy(np.stack(maps)).float().to(inputs.device)
        return result.expand_as(inputs).contiguous()
