"""Models for the ground-truth datasets `suppressor` and `low_snr`: a linear classifier and small CNNs.

Each trains on its dataset's train split (``fit``); the fitted-model store caches the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import nn

from xaibench.api import TrainingSet
from xaibench.datasets.low_snr import LowSnr
from xaibench.datasets.suppressor import Suppressor
from xaibench.models.cnn import small_cnn
from xaibench.models.training import train_classifier
from xaibench.registry import register


def _reset(module: nn.Module, seed: int) -> None:
    """Re-initialise every layer from ``seed`` (global RNG untouched), so a fit's seed sets the
    initial weights as well as the shuffling."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in module.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()


def _fit(module: nn.Module, data: TrainingSet, seed: int, device, *, epochs: int, lr: float) -> nn.Module:
    from xaibench.models.layers import Normalize

    _reset(module, seed)
    inputs, labels = data.inputs.to(device), data.labels.to(device)
    module = module.to(device)
    if isinstance(module[0], Normalize):  # the CNN standardises inside, from the training data
        module[0].mean.copy_(inputs.mean(dim=(0, 2, 3)).view(1, -1, 1, 1))
        module[0].std.copy_(inputs.std(dim=(0, 2, 3)).clamp_min(1e-3).view(1, -1, 1, 1))
    return train_classifier(module, inputs, labels, epochs=epochs, lr=lr, batch_size=64, seed=seed)


@dataclass(frozen=True)
class _GroundTruthModel:
    """Shared body: range checks, revision, input shape, and seeded construction from the training data."""

    def __post_init__(self):
        # Ranges keep a typo (epochs: 1e9, lr: .nan) from training for hours or into NaN weights;
        # `check` reports them up front. The same bounds as models/cnn.py's trained CNNs.
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")
        if not 1 <= self.epochs <= 1000:
            raise ValueError(f"epochs must be between 1 and 1000, got {self.epochs}")
        if not (math.isfinite(self.lr) and 0.0 < self.lr <= 10.0):
            raise ValueError(f"lr must be a finite number in (0, 10], got {self.lr}")
        if hasattr(self, "width") and not 1 <= self.width <= 256:
            raise ValueError(f"width must be between 1 and 256, got {self.width}")
        self.train_data()  # the data parameters (size, noise, ...) are checked by the dataset

    def train_data(self):
        raise NotImplementedError

    @property
    def revision(self) -> str:
        return f"{type(self.train_data()).plugin_name}:{self.train_data().revision}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train_data().shape

    def build(self) -> nn.Module:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.network().eval()

    def fit(self, module: nn.Module, data: TrainingSet, seed: int, device) -> nn.Module:
        return _fit(module, data, seed, device, epochs=self.epochs, lr=self.lr)


@register("model", "suppressor_linear")
@dataclass(frozen=True)
class SuppressorLinear(_GroundTruthModel):
    """Linear classifier (Flatten, Linear) for `suppressor`, no normalisation: the model of
    Wilming et al.'s analysis. It reaches about 99% test accuracy only by giving the suppressor
    square weights of the opposite sign to the signal square's (see the dataset). ``size``,
    ``distractor`` and ``noise`` must match the dataset's."""

    version: ClassVar[str] = "1"
    size: int = 16
    distractor: float = 1.0
    noise: float = 0.5
    seed: int = 0
    epochs: int = 20
    lr: float = 0.01

    def train_data(self) -> Suppressor:
        return Suppressor(size=self.size, distractor=self.distractor, noise=self.noise)

    def network(self) -> nn.Module:
        from torch import nn

        return nn.Sequential(nn.Flatten(), nn.Linear(self.size * self.size, 2))


@register("model", "suppressor_cnn")
@dataclass(frozen=True)
class SuppressorCNN(_GroundTruthModel):
    """Small CNN (``small_cnn``) for `suppressor`; settings must match the dataset's."""

    version: ClassVar[str] = "1"
    size: int = 16
    distractor: float = 1.0
    noise: float = 0.5
    seed: int = 0
    width: int = 8
    epochs: int = 15
    lr: float = 0.005

    def train_data(self) -> Suppressor:
        return Suppressor(size=self.size, distractor=self.distractor, noise=self.noise)

    def network(self) -> nn.Module:
        return small_cnn(1, self.size, 2, self.width)


@register("model", "low_snr_cnn")
@dataclass(frozen=True)
class LowSnrCNN(_GroundTruthModel):
    """Small CNN (``small_cnn``) for `low_snr`; ``size``, ``classes`` and ``snr`` must match the
    dataset's (one model per noise condition, as in ChaosMining)."""

    version: ClassVar[str] = "1"
    size: int = 16
    classes: int = 4
    snr: float = 1.0
    seed: int = 0
    width: int = 8
    epochs: int = 15
    lr: float = 0.005

    def train_data(self) -> LowSnr:
        return LowSnr(size=self.size, classes=self.classes, snr=self.snr)

    def network(self) -> nn.Module:
        return small_cnn(1, self.size, self.classes, self.width)
