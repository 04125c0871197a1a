"""Perturbation curves: deletion and insertion, MoRF or LeRF order (PROTOCOLS.md).

Pixels are ordered by importance (``reduce`` over channels, seeded tie-break). At ``steps`` + 1
evenly spaced fractions of pixels from 0 to 1, the first pixels of that order are switched from a
start image to an end image, and the softmax probability of the target is recorded; the score is
the area under that curve over the fraction axis (trapezoid), in [0, 1]. All perturbed copies of
a batch go through the model in as few forward passes as the ``PASS_ELEMENTS`` budget of the
device allows; a start or end image that every item shares (black) goes through once. On a CPU
the model runs with its 4-D weights in channels-last layout (same values up to float rounding,
faster oneDNN kernels; the module is given back as it was).

``order``: ``morf`` (default) switches the most relevant pixels first, ``lerf`` the least
relevant first: the exact reverse of the MoRF order, ties included. A faithful map does opposite
things under the two orders, so the direction of the score depends on the order, and each order
reports under its own score name: ``auc`` for MoRF, ``lerf_auc`` for LeRF, with the direction
given per name in ``higher_is_better``. The LeRF-minus-MoRF gap is less sensitive to the fill
value than either curve alone (Rong et al., ROAD, ICML 2022). Because LeRF is the reversed MoRF
order, LeRF deletion with fill F is the same curve, read backwards, as MoRF insertion from start
F (and vice versa): the two AUCs agree whenever ``fraction * pixels`` is a whole number at every
step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.api import LOGITS, Batch, Explain
from xaibench.imaging import blur, importance_map, rank_pixels
from xaibench.registry import register

# Input elements per forward pass: bounds memory, never results. On a CPU, passes of 2^16
# elements (64 images of 32x32, 16 of 64x64) keep a small CNN's activations (~4 MiB) in cache:
# with channels-last weights, deletion ran 1.6x faster at 32x32 than with 2^17 or 2^18, and no
# slower at 8x8 or 64x64 (benchmarks/quantus_pixel_flipping.py); a GPU wants the largest pass
# that fits.
PASS_ELEMENTS = {"cpu": 1 << 16, "cuda": 1 << 24}
# Copies per pass of a curve, at most: on small images the input budget alone gives passes of
# 1024 copies (8x8) whose activations, many channels per input pixel, spill the cache; 256 ran
# 1.5x faster there (digits_cnn, benchmarks/quantus_pixel_flipping.py).
PASS_COPIES = {"cpu": 256}

Reduce = Literal["abs_sum", "sum", "max_abs"]
Fill = Literal["black", "mean", "blur"]
Order = Literal["morf", "lerf"]
SCORE_NAME = {"morf": "auc", "lerf": "lerf_auc"}


def fill_image(inputs: Tensor, fill: str, blur_sigma: float) -> Tensor:
    """The image removed pixels take: black (0), each channel's mean, or a blurred copy."""
    import torch

    if fill == "black":
        return torch.zeros_like(inputs)
    if fill == "mean":
        return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs)
    sigma = blur_sigma or max(1.0, inputs.shape[-1] / 4)
    return blur(inputs, sigma)


def switch_curve(
    model: nn.Module,
    start: Tensor,
    end: Tensor,
    order: Tensor,
    target: Tensor,
    fractions: Tensor,
    known: dict[int, Tensor] | None = None,
) -> Tensor:
    """Target probability as the top ``fraction`` of pixels in ``order`` take ``end``'s values.

    start, end: (B, C, H, W); order: (B, N) pixel indices, most important first. Returns
    (B, len(fractions)). ``known``: {number of pixels switched: (B,) probabilities already
    measured}, e.g. the model's output on the unchanged input, which the run has (its logits
    chose the target): those points need no forward pass.
    """
    import torch

    batch, _, height, width = start.shape
    n_pixels = height * width
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_pixels, device=order.device).expand_as(order))
    rank = rank.view(batch, 1, height, width)
    counts = torch.round(fractions * n_pixels).long().tolist()
    curve = torch.empty(len(counts), batch, device=start.device)
    # Passes of whole fractions (every item), or of a slice of the items of one fraction when a
    # fraction alone is over the budget: slices and broadcasts, never a gather of copies.
    device = start.device.type
    per_pass = max(1, PASS_ELEMENTS.get(device, PASS_ELEMENTS["cpu"]) // start[0].numel())
    per_pass = min(per_pass, PASS_COPIES.get(device, per_pass))
    swapped = channels_last_weights(model) if device == "cpu" else []
    try:
        with torch.inference_mode():
            rows = list(range(len(counts)))
            for count, probabilities in (known or {}).items():
                curve[[row for row in rows if counts[row] == count]] = probabilities.to(curve.dtype)
                rows = [row for row in rows if counts[row] != count]
            # With no pixel switched a copy is ``start``, with all of them ``end``: when that image
            # is the same for every item (black), one forward pass serves the whole batch.
            for image, count in ((start, 0), (end, n_pixels)):
                shared = [row for row in rows if counts[row] == count]
                if batch > 1 and shared and bool((image == image[:1]).all()):
                    curve[shared] = forward(model, image[:1], swapped).softmax(-1)[0, target]
                    rows = [row for row in rows if counts[row] != count]
            if per_pass >= batch:
                whole = per_pass // batch
                passes = [(rows[i : i + whole], slice(None)) for i in range(0, len(rows), whole)]
            else:
                pieces = -(-batch // per_pass)
                size = -(-batch // pieces)  # even slices: 32 + 32 items, not 48 + 16
                passes = [([row], slice(i, i + size)) for row in rows for i in range(0, batch, size)]
            for chunk, items in passes:
                limit = torch.tensor([counts[row] for row in chunk], device=start.device).view(-1, 1, 1, 1, 1)
                copies = torch.where(rank[items] < limit, end[items], start[items]).flatten(0, 1)
                logits = forward(model, copies, swapped)
                probs = logits.softmax(-1).view(len(chunk), -1, logits.shape[-1])
                curve[chunk, items] = probs.gather(2, target[items].view(1, -1, 1).expand(len(chunk), -1, 1)).squeeze(2)
    finally:
        restore(swapped)
    return curve.T


def forward(model: nn.Module, inputs: Tensor, swapped: list[tuple[nn.Parameter, Tensor]]) -> Tensor:
    """``model(inputs)``; should that fail with channels-last weights, again in the model's own layout."""
    try:
        return model(inputs)
    except RuntimeError:
        if not swapped:
            raise
        restore(swapped)  # e.g. a model that ``view``s activations it assumes NCHW-contiguous
        swapped.clear()
        return model(inputs)


def channels_last_weights(model: nn.Module) -> list[tuple[nn.Parameter, Tensor]]:
    """Put ``model``'s 4-D weights in channels-last layout; returns what ``restore`` puts back.

    On a CPU, oneDNN's convolutions and max-pooling run 1.3-8x faster on channels-last
    activations (benchmarks/quantus_pixel_flipping.py), and a convolution's output takes that
    layout from its weight, 1-channel inputs included. The values do not change, only the
    strides, and only until ``restore``: the caller's module is left as it was.
    """
    import torch

    swapped = []
    for parameter in model.parameters():
        if parameter.dim() == 4:
            swapped.append((parameter, parameter.data))
            # ``to``, not ``contiguous``: a 1-input-channel kernel counts as contiguous in both
            # layouts, and only a copy with channels-last strides makes oneDNN choose that layout.
            parameter.data = parameter.data.to(memory_format=torch.channels_last)
    return swapped


def restore(swapped: list[tuple[nn.Parameter, Tensor]]) -> None:
    """Give the parameters ``channels_last_weights`` changed their own tensors back."""
    for parameter, data in swapped:
        parameter.data = data


@dataclass(frozen=True)
class _Curve:
    """Shared body of deletion and insertion; subclasses choose the start and end images."""

    steps: int = 20
    reduce: Reduce = "abs_sum"
    blur_sigma: float = 0.0
    order: Order = "morf"

    def __post_init__(self):
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.steps}")
        if not 0.0 <= self.blur_sigma <= 1000.0:  # pixels; the blur kernel is cut to the image anyway
            raise ValueError(f"blur_sigma must be between 0 (automatic) and 1000 pixels, got {self.blur_sigma}")

    def endpoints(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def score(
        self,
        model: nn.Module,
        batch: Batch,
        target: Tensor,
        attributions: Tensor,
        explain: Explain,
        seeds: Tensor,
    ) -> dict[str, Tensor]:
        import torch

        fractions = torch.linspace(0.0, 1.0, self.steps + 1, device=batch.inputs.device)
        order = rank_pixels(importance_map(attributions, self.reduce), seeds)
        if self.order == "lerf":
            order = order.flip(1)  # least relevant first: the exact reverse, ties included
        start, end = self.endpoints(batch.inputs)
        known = {}
        if LOGITS in batch.extras:  # the model's output on the items as they are (the run's logits)
            original = batch.extras[LOGITS].softmax(-1).gather(1, target.view(-1, 1)).squeeze(1)
            n_pixels = batch.inputs.shape[-2] * batch.inputs.shape[-1]
            known = {0: original} if start is batch.inputs else {n_pixels: original} if end is batch.inputs else {}
        curve = switch_curve(model, start, end, order, target, fractions, known)
        return {SCORE_NAME[self.order]: torch.trapezoid(curve, fractions, dim=1)}


@register("metric", "deletion")
@dataclass(frozen=True)
class Deletion(_Curve):
    """Deletion (Petsiuk et al., RISE, BMVC 2018): remove pixels (set to ``fill``) in order of
    importance and take the area under the target-probability curve, in [0, 1]. ``order: morf``
    (default) removes the most important first, score ``auc``, lower is better: a faithful map
    makes the probability collapse early. ``order: lerf`` removes the least important first,
    score ``lerf_auc``, higher is better: a faithful map keeps the probability high until the
    relevant pixels go last. Cost: steps + 1 forward passes per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[dict[str, bool]] = {"auc": False, "lerf_auc": True}
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "random"
    fill: Fill = "black"

    def endpoints(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        return inputs, fill_image(inputs, self.fill, self.blur_sigma)


@register("metric", "insertion")
@dataclass(frozen=True)
class Insertion(_Curve):
    """Insertion (Petsiuk et al., RISE, BMVC 2018): start from a blurred copy (``start``) and
    restore pixels in order of importance; area under the target-probability curve, in [0, 1].
    ``order: morf`` (default) restores the most important first, score ``auc``, higher is better:
    a faithful map recovers the prediction early. ``order: lerf`` restores the least important
    first, score ``lerf_auc``, lower is better: a faithful map holds the prediction back until the
    relevant pixels return last. Cost: steps + 1 forward passes per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[dict[str, bool]] = {"auc": True, "lerf_auc": False}
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "random"
    start: Fill = "blur"

    def endpoints(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        return fill_image(inputs, self.start, self.blur_sigma), inputs
