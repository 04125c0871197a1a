"""`mnist_cnn`: the small CNN of the built-in models, trained on the 5,000 bundled MNIST digits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xaibench.datasets.mnist import Mnist
from xaibench.models.cnn import _TrainedCNN
from xaibench.registry import register


@register("model", "mnist_cnn")
@dataclass(frozen=True)
class MnistCNN(_TrainedCNN):
    """Small CNN for `mnist` (28x28 real digits; about 97% test accuracy on the 1,000 test
    items); trains on first use in about a minute on 2 CPU cores and is cached.

    ``seed`` seeds initialisation and shuffling.
    """

    version: ClassVar[str] = "1"
    seed: int = 0
    width: int = 16
    epochs: int = 8
    lr: float = 0.005
    batch_size: int = 64

    def train_data(self) -> Mnist:
        return Mnist()
