"""Infidelity and max-sensitivity (Yeh et al., "On the (In)fidelity and Sensitivity of
Explanations", NeurIPS 2019), computed by ``captum.metrics`` (not rewritten here).

Both draw random perturbations. captum would draw them from torch's global RNG, over the whole
batch, so a value would depend on the batch and on everything drawn before. Here the perturbation
functions handed to captum draw every sample from a generator of its own item (seeded by the
item's seed, ``xaibench.seeding``), one sample at a time in captum's item-major layout: an item
gets the same perturbations whatever its batch, its position or captum's chunking, and the global
RNG is never touched. Perturbed images are not clipped to [0, 1] (as in captum and the paper).
Copies go through the model (or the method) in chunks of the ``PASS_ELEMENTS`` budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

from xaibench.api import Batch, Explain
from xaibench.metrics.perturbation import PASS_ELEMENTS
from xaibench.registry import register
from xaibench.seeding import generator

INFIDELITY_SALT, SENSITIVITY_SALT = 3, 4  # distinct draws from the other uses of an item's seed

Sampler = Callable[["torch.Size", "torch.Generator"], "Tensor"]


class ItemNoise:
    """Per-item generators; each call draws the next samples of every item, item-major.

    captum repeats each item k times in a row (``repeat_interleave``) and may call the
    perturbation function several times with smaller k; drawing sample by sample from each
    item's own generator gives the same sequence of perturbations for any split.
    """

    def __init__(self, seeds: Tensor, salt: int, sample: Sampler):
        self.generators = [generator(s, salt) for s in seeds.tolist()]
        self.sample = sample

    def __call__(self, expanded: Tensor) -> Tensor:
        import torch

        repeats, remainder = divmod(len(expanded), len(self.generators))
        assert remainder == 0, "captum passes every item the same number of times"
        shape = expanded.shape[1:]
        noise = [self.sample(shape, g) for g in self.generators for _ in range(repeats)]
        return torch.stack(noise).to(device=expanded.device, dtype=expanded.dtype)


def gaussian(std: float) -> Sampler:
    import torch

    return lambda shape, g: torch.randn(shape, generator=g) * std


def uniform(radius: float) -> Sampler:
    import torch

    return lambda shape, g: (torch.rand(shape, generator=g) * 2 - 1) * radius


def examples_per_pass(inputs: Tensor, n_samples: int) -> int:
    """captum's ``max_examples_per_batch`` from the device budget, within the range it accepts."""
    budget = PASS_ELEMENTS.get(inputs.device.type, PASS_ELEMENTS["cpu"]) // inputs[0].numel()
    return min(max(budget, len(inputs)), len(inputs) * n_samples)


def infidelity_perturbation(seeds: Tensor, std: float) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """captum's perturb_func: (perturbation I, inputs - I) with I ~ N(0, std^2), seeded per item."""
    noise = ItemNoise(seeds, INFIDELITY_SALT, gaussian(std))

    def perturb(inputs: Tensor) -> tuple[Tensor, Tensor]:
        perturbation = noise(inputs)
        return perturbation, inputs - perturbation

    return perturb


def sensitivity_perturbation(seeds: Tensor, radius: float) -> Callable[[Tensor], Tensor]:
    """captum's perturb_func: inputs + U(-radius, radius) per element (captum's default
    distribution), seeded per item."""
    noise = ItemNoise(seeds, SENSITIVITY_SALT, uniform(radius))
    return lambda inputs: inputs + noise(inputs)


@register("metric", "infidelity")
@dataclass(frozen=True)
class Infidelity:
    """Infidelity (Yeh et al., NeurIPS 2019) by captum.metrics.infidelity: the mean squared error
    between attributions . I and the fall of the target logit, f(x) - f(x - I), over
    ``n_perturb_samples`` Gaussian perturbations I ~ N(0, ``noise_std``^2) of the input. Lower is
    better, >= 0. ``normalize`` (default on) first rescales the attributions by the least-squares
    factor, so a map's arbitrary scale does not count (captum's option; Yeh et al. do the same
    for their comparisons). The logit is used because the methods explain logits. Cost:
    n_perturb_samples forward passes per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = False
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "random"
    n_perturb_samples: int = 16
    noise_std: float = 0.1
    normalize: bool = True

    def __post_init__(self):
        if not 1 <= self.n_perturb_samples <= 10_000:
            raise ValueError(f"n_perturb_samples must be between 1 and 10000, got {self.n_perturb_samples}")
        if not 0.0 < self.noise_std < float("inf"):
            raise ValueError(f"noise_std must be a finite number > 0, got {self.noise_std}")

    def score(
        self,
        model: nn.Module,
        batch: Batch,
        target: Tensor,
        attributions: Tensor,
        explain: Explain,
        seeds: Tensor,
    ) -> dict[str, Tensor]:
        from captum.metrics import infidelity

        values = infidelity(
            model,
            infidelity_perturbation(seeds, self.noise_std),
            batch.inputs,
            attributions.to(batch.inputs.device, batch.inputs.dtype),
            target=target,
            n_perturb_samples=self.n_perturb_samples,
            max_examples_per_batch=examples_per_pass(batch.inputs, self.n_perturb_samples),
            normalize=self.normalize,
        )
        return {"infidelity": values.detach().float()}


@register("metric", "sensitivity_max")
@dataclass(frozen=True)
class SensitivityMax:
    """Max-sensitivity (Yeh et al., NeurIPS 2019) by captum.metrics.sensitivity_max: the largest
    relative change of the map, ||phi(x + d) - phi(x)|| / ||phi(x)|| (Frobenius), over
    ``n_perturb_samples`` perturbations d drawn uniformly from the L-inf ball of ``radius``.
    Lower is better, >= 0. The map is recomputed by the method under evaluation (the ``explain``
    callable), for the item and each perturbed copy. Cost: n_perturb_samples + 1 explanations
    per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = False
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "random"
    n_perturb_samples: int = 10
    radius: float = 0.02

    def __post_init__(self):
        if not 1 <= self.n_perturb_samples <= 10_000:
            raise ValueError(f"n_perturb_samples must be between 1 and 10000, got {self.n_perturb_samples}")
        if not 0.0 < self.radius < float("inf"):
            raise ValueError(f"radius must be a finite number > 0, got {self.radius}")

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
        from captum.metrics import sensitivity_max

        def explanation(inputs: Tensor | tuple[Tensor, ...], target: Tensor) -> tuple[Tensor]:
            # captum passes the unperturbed inputs as a 1-tuple and runs under no_grad; it also
            # iterates over the first result as a tuple (a bare tensor would be split into rows)
            inputs = inputs[0] if isinstance(inputs, tuple) else inputs
            with torch.enable_grad():
                return (explain(model, inputs, target).detach(),)

        values = sensitivity_max(
            explanation,
            batch.inputs,
            perturb_func=sensitivity_perturbation(seeds, self.radius),
            n_perturb_samples=self.n_perturb_samples,
            max_examples_per_batch=examples_per_pass(batch.inputs, self.n_perturb_samples),
            target=target,
        )
        return {"sensitivity_max": values.detach().float()}
