"""ROAD: RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022), PROTOCOLS.md "ROAD".

No retraining: at each removal fraction the top pixels (MoRF, most relevant first) or the bottom
pixels (LeRF, least relevant first) are filled by Noisy Linear Imputation
(``xaibench.imputation``), which leaks much less of the removal mask's shape than a constant
fill, and the model's target probability and correctness are recorded.

Scores per item (``Curve`` values have ``x`` = fraction, one row per (item, fraction)):
- ``morf_prob``, ``morf_correct``: target probability / prediction == target after removing the
  most important pixels. Lower is better (a faithful map destroys the evidence first).
- ``lerf_prob``, ``lerf_correct``: the same removing the least important pixels. Higher is better.
- ``morf_auc``, ``lerf_auc``: trapezoid area under the ``area`` curve (probability by default,
  or correctness) divided by the fraction span, so it is the curve's mean level in [0, 1].
  The mean of ``*_correct`` over items at a fraction is ROAD's accuracy curve.

Choices: a fraction f removes round(f * H * W) pixels, at most all but one (the imputation needs
a kept pixel); noise is added to the imputed pixels only, unclipped, as in the reference code;
each (item, order, fraction) copy draws its noise from the item seed, so an item's scores do not
depend on its batch. Cost: one sparse solve per copy (2 x len(fractions) per item) and the same
number of forward passes, imputed ``SOLVE_ELEMENTS`` and sent ``PASS_ELEMENTS`` at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.api import Batch, Curve, Explain
from xaibench.imaging import importance_map, rank_pixels
from xaibench.metrics.perturbation import PASS_ELEMENTS
from xaibench.registry import register
from xaibench.seeding import per_item

ORDERS = ("morf", "lerf")
# N*C*H*W of the copies imputed by one call: bounds memory; the imputer splits them into its own
# cache-sized solves, grouped by solver and by how much is removed, so a call should hold many
SOLVE_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 27}


@register("metric", "road")
@dataclass(frozen=True)
class Road:
    """ROAD (Rong et al., ICML 2022): MoRF and LeRF curves with noisy linear imputation.

    MoRF scores: lower is better; LeRF scores: higher is better (see the module doc). ``orders``
    is "both", "morf" or "lerf"; ``noise`` the imputation's Gaussian sigma (0.01 in the paper);
    ``area`` which curve ``*_auc`` integrates ("prob" or "correct").
    """

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "morf_prob": False,
        "morf_correct": False,
        "morf_auc": False,
        "lerf_prob": True,
        "lerf_correct": True,
        "lerf_auc": True,
    }
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "random"

    fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    orders: Literal["both", "morf", "lerf"] = "both"
    noise: float = 0.01
    reduce: Literal["abs_sum", "sum", "max_abs"] = "abs_sum"
    area: Literal["prob", "correct"] = "prob"

    def __post_init__(self):
        fractions = tuple(self.fractions)
        if not fractions or not all(0.0 < f < 1.0 for f in fractions):
            raise ValueError(f"fractions must be a non-empty list of numbers in (0, 1), got {list(fractions)}")
        if any(b <= a for a, b in zip(fractions[:-1], fractions[1:], strict=True)):
            raise ValueError(f"fractions must be strictly increasing, got {list(fractions)}")
        if not (math.isfinite(self.noise) and 0.0 <= self.noise <= 1.0):  # images lie in [0, 1]
            raise ValueError(f"noise must be a finite number between 0 and 1, got {self.noise}")
        for name, value, allowed in (
            ("orders", self.orders, ("both", *ORDERS)),
            ("reduce", self.reduce, ("abs_sum", "sum", "max_abs")),
            ("area", self.area, ("prob", "correct")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        object.__setattr__(self, "fractions", fractions)

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
        n, channels, height, width = inputs.shape
        pixels = height * width
        orders = ORDERS if self.orders == "both" else (self.orders,)
        order = rank_pixels(importance_map(attributions, self.reduce), seeds)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(pixels, device=order.device).expand_as(order))
        rank = rank.view(n, 1, height, width)
        counts = [min(round(f * pixels), pixels - 1) for f in self.fractions]
        removed = torch.stack(
            [rank < k if name == "morf" else rank >= pixels - k for name in orders for k in counts], dim=1
        )  # (n, copies, 1, H, W), copies ordered (order, fraction)
        probability, correct = self._evaluate(model, inputs, removed, seeds, orders, target)
        x = torch.tensor(self.fractions, dtype=torch.float32, device=inputs.device)
        scores: dict[str, Tensor | Curve] = {}
        for i, name in enumerate(orders):
            prob = probability[:, i * len(counts) : (i + 1) * len(counts)]
            hit = correct[:, i * len(counts) : (i + 1) * len(counts)]
            scores[f"{name}_prob"] = Curve(x=x, values=prob, x_label="fraction")
            scores[f"{name}_correct"] = Curve(x=x, values=hit, x_label="fraction")
            scores[f"{name}_auc"] = mean_level(prob if self.area == "prob" else hit, x)
        return scores

    def _evaluate(
        self, model: nn.Module, inputs: Tensor, removed: Tensor, seeds: Tensor, orders: tuple[str, ...], target: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Impute every copy and send it through the model: (n, copies) probabilities and hits.

        Items go in groups of about ``SOLVE_ELEMENTS`` (all their copies, so the imputer sees every
        fraction at once); a group's copies are made, noised and imputed only when it is its turn.
        """
        import torch

        # The imputer imports torch at its top: load it only when a ROAD task runs.
        from xaibench.imputation import impute

        n, copies = removed.shape[:2]
        shape = inputs.shape[1:]
        device = inputs.device.type
        per_solve = max(1, SOLVE_ELEMENTS.get(device, SOLVE_ELEMENTS["cpu"]) // (copies * inputs[0].numel()))
        per_pass = max(1, PASS_ELEMENTS.get(device, PASS_ELEMENTS["cpu"]) // inputs[0].numel())
        picks = [ORDERS.index(name) for name in orders]
        probability, correct = [], []
        with torch.no_grad():
            for start in range(0, n, per_solve):
                items = slice(start, start + per_solve)
                count = len(inputs[items])
                # one generator per item draws the noise of all its copies (per-copy generators cost
                # 3x the imputation on 8x8 images); a copy's noise depends only on its item's seed
                noise = per_item(
                    seeds[items], lambda g: torch.randn((2, copies // len(orders), *shape), generator=g), salt=2
                )
                noise = noise[:, picks].reshape(count * copies, *shape).to(inputs.device)
                flat_inputs = inputs[items].unsqueeze(1).expand(count, copies, *shape).reshape(count * copies, *shape)
                flat_removed = removed[items].reshape(count * copies, 1, *shape[1:])
                filled = impute(flat_inputs, flat_removed, 0.0)
                filled = torch.where(flat_removed, filled + self.noise * noise, filled)
                goals = target[items].repeat_interleave(copies)
                for begin in range(0, len(filled), per_pass):
                    logits = model(filled[begin : begin + per_pass])
                    goal = goals[begin : begin + per_pass]
                    probability.append(logits.softmax(-1).gather(1, goal[:, None]).squeeze(1))
                    correct.append((logits.argmax(-1) == goal).float())
        return torch.cat(probability).view(n, copies), torch.cat(correct).view(n, copies)


def mean_level(values: Tensor, x: Tensor) -> Tensor:
    """Trapezoid area under (x, values) divided by the span of x: the curve's mean level, (B,)."""
    import torch

    if len(x) == 1:
        return values[:, 0].clone()
    return torch.trapezoid(values, x, dim=1) / (x[-1] - x[0])
