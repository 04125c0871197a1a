"""Small CNNs for the embedded datasets, trained on first use and cached by the model store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

from xaibench.api import TrainingSet
from xaibench.datasets.digits import Digits
from xaibench.datasets.synthetic import Synthetic
from xaibench.models.training import train_classifier
from xaibench.registry import register


def small_cnn(channels: int, size: int, num_classes: int, width: int) -> nn.Sequential:
    """Conv-ReLU stack, one max-pool per halving down to 8 pixels or less, then a 2-layer head.

    Every ReLU is its own module (guided backprop, deconvolution and DeepLift replace or hook
    ReLU modules; a functional or shared ReLU would silently give plain gradients).
    """
    from torch import nn

    from xaibench.models.layers import Normalize

    layers: list[nn.Module] = [
        Normalize(channels),
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]
    side = size // 2
    while side > 8:
        layers += [nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        side //= 2
    layers += [
        nn.Conv2d(2 * width, 4 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * width, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    ]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class _TrainedCNN:
    """Shared body of the built-in CNN plugins: build, and fit on a (maybe transformed) train split."""

    def __post_init__(self):
        # Ranges keep a typo (epochs: 1e9) from training for hours; check reports them up front.
        if not 1 <= self.epochs <= 1000:
            raise ValueError(f"epochs must be between 1 and 1000, got {self.epochs}")
        if not 0.0 < self.lr <= 10.0:
            raise ValueError(f"lr must be a number in (0, 10], got {self.lr}")
        if not 1 <= self.batch_size <= 65536:
            raise ValueError(f"batch_size must be between 1 and 65536, got {self.batch_size}")
        if not 1 <= self.width <= 256:
            raise ValueError(f"width must be between 1 and 256, got {self.width}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")
        self.train_data()  # the data parameters (size, channels, ...) are checked by the dataset

    def train_data(self):
        raise NotImplementedError

    @property
    def revision(self) -> str:
        return f"{type(self.train_data()).plugin_name}:{self.train_data().revision}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train_data().shape

    @property
    def num_classes(self) -> int:
        return self.train_data().num_classes

    def build(self) -> nn.Module:
        """The untrained network; the fitted-model store seeds its initialisation with the fit's seed."""
        data = self.train_data()
        channels, size, _ = data.shape
        return small_cnn(channels, size, data.num_classes, self.width)

    def fit(self, module: nn.Module, data: TrainingSet, seed: int, device: torch.device) -> nn.Module:
        """Standardise with the training set's channel statistics, then Adam + one-cycle (``seed``
        orders the mini-batches)."""
        inputs, labels = data.inputs.to(device), data.labels.to(device)
        module[0].mean.copy_(inputs.mean(dim=(0, 2, 3)).view(1, -1, 1, 1))
        module[0].std.copy_(inputs.std(dim=(0, 2, 3)).clamp_min(1e-3).view(1, -1, 1, 1))
        return train_classifier(
            module,
            inputs,
            labels,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=seed,
        )


@register("model", "digits_cnn")
@dataclass(frozen=True)
class DigitsCNN(_TrainedCNN):
    """Small CNN for `digits` (about 98% test accuracy); trains on first use in seconds on 2 cores.

    ``size`` must match the digits dataset's ``size``; ``seed`` seeds initialisation and shuffling.
    """

    version: ClassVar[str] = "1"
    size: int = 8
    seed: int = 0
    width: int = 16
    epochs: int = 30
    lr: float = 0.005
    batch_size: int = 64

    def train_data(self) -> Digits:
        return Digits(size=self.size)


@register("model", "synthetic_cnn")
@dataclass(frozen=True)
class SyntheticCNN(_TrainedCNN):
    """Small CNN for `synthetic` shapes; ``size``, ``channels`` and ``noise`` must match the dataset's."""

    version: ClassVar[str] = "1"
    size: int = 32
    seed: int = 0
    channels: int = 1
    noise: float = 0.35
    n_train: int = 2000
    width: int = 8
    epochs: int = 12
    lr: float = 0.005
    batch_size: int = 64

    def train_data(self) -> Synthetic:
        return Synthetic(size=self.size, channels=self.channels, noise=self.noise, n_train=self.n_train)
