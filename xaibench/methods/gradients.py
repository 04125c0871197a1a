"""Gradient-based attributions over captum: saliency, input x gradient, IG, guided backprop,
deconvolution, DeepLift and GradientSHAP. Each returns a map of the input's shape; the sign
is kept (metrics reduce it with ``abs_sum`` by default)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.errors import IncompatibleError
from xaibench.methods.cam import is_script
from xaibench.registry import register
from xaibench.seeding import generator


@contextmanager
def numpy_seeded(seed: int):
    """Seed numpy's global RNG (captum's GradientShap draws from it), then restore its state."""
    state = np.random.get_state()
    np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
    try:
        yield
    finally:
        np.random.set_state(state)


def refuse_script(model: nn.Module, method: str, why: str) -> None:
    """Refuse a TorchScript model for a method that must replace or hook its modules' backward."""
    if is_script(model):
        raise IncompatibleError(
            f"{method} cannot explain {type(model).__name__}: {why}; use saliency or integrated_gradients"
        )


@register("method", "saliency")
@dataclass(frozen=True)
class SaliencyMethod:
    """Vanilla gradient of the target logit (Simonyan et al., 2014). Signed; |.| is taken by the metric."""

    version: ClassVar[str] = "1"

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        from captum.attr import Saliency

        with torch.enable_grad():
            return Saliency(model).attribute(inputs, target=target, abs=False).detach()


@register("method", "input_x_gradient")
@dataclass(frozen=True)
class InputXGradientMethod:
    """Input times gradient (Shrikumar et al., 2016)."""

    version: ClassVar[str] = "1"

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        from captum.attr import InputXGradient

        with torch.enable_grad():
            return InputXGradient(model).attribute(inputs, target=target).detach()


@register("method", "integrated_gradients")
@dataclass(frozen=True)
class IntegratedGradientsMethod:
    """Integrated Gradients (Sundararajan et al., ICML 2017) from a black (zero) baseline.

    For a linear model the result is exactly x * w. ``n_steps`` points of a Gauss-Legendre rule.
    """

    version: ClassVar[str] = "1"
    n_steps: int = 32

    def __post_init__(self):
        if not 1 <= self.n_steps <= 10_000:
            raise ValueError(f"n_steps must be at least 1 and at most 10,000, got {self.n_steps}")

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        from captum.attr import IntegratedGradients

        with torch.enable_grad():
            return (
                IntegratedGradients(model)
                .attribute(
                    inputs,
                    baselines=torch.zeros_like(inputs),
                    target=target,
                    n_steps=self.n_steps,
                    internal_batch_size=512,  # bounds memory; results do not depend on it
                )
                .detach()
            )


@register("method", "guided_backprop")
@dataclass(frozen=True)
class GuidedBackpropMethod:
    """Guided backpropagation (Springenberg et al., 2015): only positive gradients pass ReLUs.

    Adebayo et al. (2018) found it nearly invariant to model randomisation: a known failure.
    TorchScript models are refused: captum hooks ReLU modules, which a scripted model hides, so
    the result would silently be the plain gradient.
    """

    version: ClassVar[str] = "1"

    def check(self, model: nn.Module) -> None:
        refuse_script(
            model, "guided_backprop", "its ReLUs cannot be hooked in TorchScript (it would be the plain gradient)"
        )

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        from captum.attr import GuidedBackprop

        with torch.enable_grad():
            return GuidedBackprop(model).attribute(inputs, target=target).detach()


@register("method", "deconvolution")
@dataclass(frozen=True)
class DeconvolutionMethod:
    """Deconvolution (Zeiler & Fergus, 2014): ReLU applied to the backward signal.

    TorchScript models are refused, as for guided backprop (ReLU modules cannot be hooked)."""

    version: ClassVar[str] = "1"

    def check(self, model: nn.Module) -> None:
        refuse_script(
            model, "deconvolution", "its ReLUs cannot be hooked in TorchScript (it would be the plain gradient)"
        )

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        from captum.attr import Deconvolution

        with torch.enable_grad():
            return Deconvolution(model).attribute(inputs, target=target).detach()


@register("method", "deeplift")
@dataclass(frozen=True)
class DeepLiftMethod:
    """DeepLIFT, Rescale rule (Shrikumar et al., ICML 2017), from a black (zero) reference.

    TorchScript models are refused: captum's DeepLift hooks every nonlinearity module."""

    version: ClassVar[str] = "1"

    def check(self, model: nn.Module) -> None:
        refuse_script(
            model, "deeplift", "its nonlinearities cannot be hooked in TorchScript (DeepLift's rules need hooks)"
        )

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        from captum.attr import DeepLift

        with torch.enable_grad():
            return DeepLift(model).attribute(inputs, baselines=torch.zeros_like(inputs), target=target).detach()


@register("method", "gradient_shap")
@dataclass(frozen=True)
class GradientShapMethod:
    """GradientSHAP (Lundberg & Lee, 2017) via captum: expected gradients over random baselines.

    Baselines: black and one uniform-noise image per item. captum draws its samples from the
    global torch and numpy RNGs (noise; baseline choice and interpolation points), so each item
    is attributed with both seeded from its own seed (independent of the batch), and both RNG
    states are restored afterwards.
    """

    version: ClassVar[str] = "1"
    n_samples: int = 16
    stdevs: float = 0.05

    def __post_init__(self):
        # Upper bounds keep a typo from running for hours; noise above 10 drowns any image in [0, 1].
        if not 1 <= self.n_samples <= 10_000:
            raise ValueError(f"n_samples must be between 1 and 10,000, got {self.n_samples}")
        if not (math.isfinite(self.stdevs) and 0.0 <= self.stdevs <= 10.0):
            raise ValueError(f"stdevs must be a finite number between 0 and 10, got {self.stdevs}")

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor:
        import torch
        from captum.attr import GradientShap

        explainer = GradientShap(model)
        maps = []
        with torch.enable_grad():
            for x, t, seed in zip(inputs, target, seeds.tolist(), strict=True):
                noise = torch.rand(x.shape, generator=generator(seed, salt=2)).to(x.device)
                baselines = torch.stack([torch.zeros_like(x), noise])
                with torch.random.fork_rng(devices=[]), numpy_seeded(seed):
                    torch.manual_seed(seed)
                    maps.append(
                        explainer.attribute(
                            x[None],
                            baselines=baselines,
                            target=int(t),
                            n_samples=self.n_samples,
                            stdevs=self.stdevs,
                        ).detach()
                    )
        return torch.cat(maps)
