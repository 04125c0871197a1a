"""Keyed transforms of a training split: what a study changes before a model is retrained.

A transform has a ``name``, JSON-ready ``params()`` (its identity in the fit key) and
``apply(data, split, context)`` returning a new ``TrainingSet`` (never changing its input).
``split`` is "train" or "test": a study may transform the test split too (ROAR evaluates the
retrained model on test images with the same removal), or leave it alone (permuted labels).
``context`` gives access to what the transform may need from earlier tasks (cached attributions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from xaibench.api import TrainingSet


@dataclass(frozen=True)
class PermutedLabels:
    """Data randomization (Adebayo et al., 2018): the training labels randomly permuted with a
    fixed seed, so the labels carry no information about the images. The test split keeps its
    true labels (the permuted model's test accuracy is about chance)."""

    name: ClassVar[str] = "permuted_labels"
    seed: int = 0

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def apply(self, data: TrainingSet, split: str, context: Any = None) -> TrainingSet:
        import torch

        if split != "train":
            return data
        generator = torch.Generator().manual_seed(self.seed)
        permutation = torch.randperm(len(data.labels), generator=generator)
        return TrainingSet(data.inputs, data.labels[permutation], data.ids, data.key)
