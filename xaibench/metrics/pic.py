"""Performance Information Curves (Kapishnikov et al., "XRAI: Better Attributions Through
Regions", ICCV 2019, section 4.2).

Each item starts as a blurred copy ("bokeh" image) and is re-sharpened: at each fraction f of
``fractions`` the top round(f * H * W) pixels in attribution order (``reduce`` over channels,
ties broken by ``rank_pixels`` with the metric seed) take their original values. For every copy
the model's output and the copy's *information level* are recorded:

- information: the compressed size in bytes of the copy, normalised between the fully blurred
  image (0) and the original (1) and clipped to [0, 1]. The paper uses the WebP file size as
  the entropy estimate; like the authors' code (PAIR saliency ``estimate_image_entropy``),
  xaibench encodes the image quantised to 8 bits with Pillow's *lossless* WebP at quality 100
  (``codec: webp``) or with PNG (``codec: png``). Lossless keeps the size a function of the
  pixels only, with no rate control.
- SIC (softmax information curve): softmax probability of the target divided by that of the
  original image, clipped to [0, 1].
- AIC (accuracy information curve): 1 when the top class is the target, else 0.

Each item's points (information, score), with the fully blurred image at 0 and the original at
1, are sorted by information, made non-decreasing by a running maximum when ``monotone`` (the
reference code's ``keep_monotonous``), and linearly interpolated onto ``bins`` + 1 evenly spaced
information levels in [0, 1]. Scores: curves ``sic`` and ``aic`` (``x`` = information level)
and their areas ``sic_auc`` and ``aic_auc`` in [0, 1] (trapezoid over [0, 1]). Higher is better
for all: a faithful map recovers the prediction with little information.

Choices (documented differences from the paper): the blur is a Gaussian (``blur_sigma``, 0 =
image side / 4, strong enough that blurring lowers the compressed size even on 8x8 images); no
random 1% of sharp pixels is added to every copy; items are not filtered by the original's
confidence (the paper drops images below 0.8; pick ``target: predicted`` and filter the rows).
An item whose original image does not compress to more bytes than its blurred copy has no
information scale: its scores are NaN (the runner marks them invalid).

Cost: len(fractions) + 2 forward passes per item (batched in ``PASS_ELEMENTS`` chunks) and as
many image encodings on the CPU (about 0.1 ms for a 32x32 image with WebP).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.api import Batch, Curve, Explain
from xaibench.imaging import blur, importance_map, rank_pixels
from xaibench.metrics.perturbation import PASS_ELEMENTS, Reduce
from xaibench.registry import register

# The sharpened fractions of the authors' PIC code (saliency library, examples).
PAPER_FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75)
Codec = Literal["webp", "png"]


def compressed_size(images: Tensor, codec: str = "webp") -> Tensor:
    """Bytes of each (C, H, W) image in [0, 1], quantised to 8 bits and encoded losslessly.

    One channel is encoded as grey, three as RGB; any other count as its channels side by side
    in one grey image. Returns (N,) float64.
    """
    import torch
    from PIL import Image

    pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    sizes = []
    for image in pixels:
        if image.shape[0] == 3:
            picture = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), "RGB")
        else:
            picture = Image.fromarray(np.ascontiguousarray(np.concatenate(list(image), axis=1)), "L")
        buffer = io.BytesIO()
        if codec == "webp":
            picture.save(buffer, format="webp", lossless=True, quality=100)
        else:
            picture.save(buffer, format="png", optimize=True)
        sizes.append(buffer.tell())
    return torch.tensor(sizes, dtype=torch.float64)


def information_level(sizes: Tensor, blurred: Tensor, original: Tensor) -> Tensor:
    """(B, K) sizes -> normalised information in [0, 1]; NaN rows where the original is not larger."""
    import torch

    span = original - blurred
    level = ((sizes - blurred[:, None]) / span.clamp_min(1e-12)[:, None]).clamp(0, 1)
    return torch.where((span > 0)[:, None], level, torch.full_like(level, float("nan")))


def curve_on_bins(information: np.ndarray, score: np.ndarray, bins: np.ndarray, monotone: bool) -> np.ndarray:
    """One item's points -> its curve at ``bins`` (sorted by information, linear interpolation)."""
    order = np.argsort(information, kind="stable")
    x, y = information[order], score[order]
    if monotone:
        y = np.maximum.accumulate(y)
    return np.interp(bins, x, y)


@register("metric", "pic")
@dataclass(frozen=True)
class Pic:
    """Performance Information Curves (Kapishnikov et al., XRAI, ICCV 2019): SIC (normalised
    softmax of the target) and AIC (accuracy) of blurred images re-sharpened in attribution order,
    against the information level (normalised lossless WebP or PNG size). ``sic_auc`` and
    ``aic_auc``: areas in [0, 1], higher is better; ``sic`` and ``aic``: the curves at ``bins``
    + 1 information levels. See the module doc for the choices and the cost."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[dict[str, bool]] = {"sic": True, "aic": True, "sic_auc": True, "aic_auc": True}
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "random"

    fractions: tuple[float, ...] = PAPER_FRACTIONS
    bins: int = 20
    codec: Codec = "webp"
    blur_sigma: float = 0.0
    monotone: bool = True
    reduce: Reduce = "abs_sum"

    def __post_init__(self):
        fractions = tuple(float(f) for f in self.fractions)
        if not fractions or not all(0.0 < f < 1.0 for f in fractions):
            raise ValueError(f"fractions must be a non-empty list of numbers in (0, 1), got {list(fractions)}")
        if any(b <= a for a, b in zip(fractions[:-1], fractions[1:], strict=True)):
            raise ValueError(f"fractions must be strictly increasing, got {list(fractions)}")
        if not 1 <= self.bins <= 1000:
            raise ValueError(f"bins must be between 1 and 1000, got {self.bins}")
        if self.codec not in ("webp", "png"):
            raise ValueError(f"codec must be webp or png, got {self.codec!r}")
        if not 0.0 <= self.blur_sigma < float("inf"):
            raise ValueError(f"blur_sigma must be a finite number >= 0 (0 = automatic), got {self.blur_sigma}")
        if self.reduce not in ("abs_sum", "sum", "max_abs"):
            raise ValueError(f"reduce must be abs_sum, sum or max_abs, got {self.reduce!r}")
        object.__setattr__(self, "fractions", fractions)

    def copies(self, inputs: Tensor, order: Tensor) -> Tensor:
        """(B, K, C, H, W): the fully blurred image, one re-sharpened copy per fraction, the original."""
        import torch

        batch, _, height, width = inputs.shape
        pixels = height * width
        sigma = self.blur_sigma or max(1.0, min(height, width) / 4)
        blurred = blur(inputs, sigma)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(pixels, device=order.device).expand_as(order))
        counts = torch.tensor([0, *(round(f * pixels) for f in self.fractions), pixels], device=inputs.device)
        sharp = rank.view(batch, 1, 1, height, width) < counts.view(1, -1, 1, 1, 1)  # (B, K, 1, H, W)
        return torch.where(sharp, inputs.unsqueeze(1), blurred.unsqueeze(1))

    def score(
        self,
        model: nn.Module,
        batch: Batch,
        target: Tensor,
        attributions: Tensor,
        explain: Explain,
        seeds: Tensor,
    ) -> dict[str, Tensor | Curve]:
        import torch

        inputs = batch.inputs
        order = rank_pixels(importance_map(attributions, self.reduce), seeds)
        images = self.copies(inputs, order)
        n, k = images.shape[:2]
        flat = images.flatten(0, 1)
        per_pass = max(1, PASS_ELEMENTS.get(inputs.device.type, PASS_ELEMENTS["cpu"]) // inputs[0].numel())
        goal = target.repeat_interleave(k)
        probability, correct = [], []
        with torch.no_grad():
            for start in range(0, len(flat), per_pass):
                logits = model(flat[start : start + per_pass])
                part = goal[start : start + per_pass]
                probability.append(logits.softmax(-1).gather(1, part[:, None]).squeeze(1))
                correct.append((logits.argmax(-1) == part).double())
        probability = torch.cat(probability).view(n, k).double().cpu()
        correct = torch.cat(correct).view(n, k).cpu()
        sic = (probability / probability[:, -1:].clamp_min(1e-30)).clamp(0, 1)
        sizes = compressed_size(flat, self.codec).view(n, k)
        information = information_level(sizes, sizes[:, 0], sizes[:, -1])
        # the two ends are 0 and 1 by definition (the clip can already put other copies there)
        information[:, 0], information[:, -1] = 0.0, 1.0
        information[sizes[:, -1] <= sizes[:, 0]] = float("nan")

        bins = np.linspace(0.0, 1.0, self.bins + 1)
        curves = {}
        for name, values in (("sic", sic), ("aic", correct)):
            rows = [
                np.full(len(bins), np.nan) if np.isnan(info).any() else curve_on_bins(info, value, bins, self.monotone)
                for info, value in zip(information.numpy(), values.numpy(), strict=True)
            ]
            curves[name] = torch.from_numpy(np.stack(rows))
        x = torch.from_numpy(bins)
        scores: dict[str, Tensor | Curve] = {}
        for name, values in curves.items():
            scores[name] = Curve(
                x=x.float().to(inputs.device), values=values.float().to(inputs.device), x_label="information"
            )
            scores[f"{name}_auc"] = torch.trapezoid(values, x, dim=1).float().to(inputs.device)
        return scores
