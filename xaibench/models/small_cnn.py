"""``small_cnn``: the built-in small CNN (``xaibench.models.cnn.small_cnn``) for any dataset with a
fixed input size, trained on first use on that dataset's train split and cached.

Made for studies that retrain (ROAR, KAR, data randomization) on datasets that have no dedicated
model plugin. Same recipe as ``digits_cnn``: channel standardisation from the training split,
Adam with a one-cycle schedule, ``seed`` seeding initialisation and mini-batch order.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from xaibench import registry
from xaibench.keys import canonical_json
from xaibench.models.cnn import _TrainedCNN
from xaibench.registry import register


@register("model", "small_cnn")
@dataclass(frozen=True)
class SmallCNN(_TrainedCNN):
    """Small CNN for any registered dataset with a fixed input size (``dataset``, ``dataset_params``).

    The dataset's parameters must be those of the dataset the manifest evaluates on (its train
    split is what the model learns). Cost: a few seconds to a minute on a CPU for the built-in
    datasets, once per cache.
    """

    version: ClassVar[str] = "1"
    dataset: str = "digits"
    dataset_params: dict[str, Any] = field(default_factory=dict, hash=False)
    seed: int = 0
    width: int = 16
    epochs: int = 20
    lr: float = 0.005
    batch_size: int = 64

    def __post_init__(self):
        if not isinstance(self.dataset_params, dict):
            raise ValueError(
                f"dataset_params must be a mapping of the dataset's parameters, got {self.dataset_params!r}"
            )
        super().__post_init__()

    def train_data(self):
        return dataset_instance(self.dataset, self.dataset_params)


def dataset_instance(name: str, params: dict[str, Any]):
    """A dataset plugin from its name and parameters (built once per process; they are frozen)."""
    return _build(name, canonical_json(params))


@functools.lru_cache(maxsize=64)
def _build(name: str, params_json: str):
    dataset = registry.build("dataset", name, json.loads(params_json))
    if not hasattr(dataset, "shape"):
        raise ValueError(f"dataset {name!r} has no fixed input shape to build a CNN for")
    return dataset
