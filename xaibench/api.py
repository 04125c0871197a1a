"""The data that flows between plugins (`Batch`) and the plugin protocols. No logic.

Plugins are frozen dataclasses whose fields are their parameters; they are registered with
``xaibench.registry.register(kind, name)`` and carry metadata as class variables
(``version``, and for metrics ``higher_is_better`` and ``requires``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Batch:
    """A batch of items. ``inputs`` are float32 in [0, 1], shape (B, C, H, W).

    ``ids`` are stable strings (the cache and results key items by them); ``masks`` are optional
    ground-truth (B, 1, H, W) bool masks; ``extras`` holds named per-item tensors a study needs,
    such as variants of an item (a scene-only image for BAM), each with leading dim B.
    """

    ids: list[str]
    inputs: Tensor
    labels: Tensor
    masks: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, keep: list[int]) -> Batch:
        """The sub-batch of the given positions, in that order."""
        index = torch.as_tensor(keep, dtype=torch.long)
        return Batch(
            ids=[self.ids[i] for i in keep],
            inputs=self.inputs[index],
            labels=self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            extras={k: v[index] for k, v in self.extras.items()},
        )


# explain(model, inputs, target) -> attributions; lets a metric recompute attributions
# (randomization tests) with the method under evaluation.
Explain = Callable[[nn.Module, Tensor, Tensor], Tensor]


@runtime_checkable
class Dataset(Protocol):
    version: ClassVar[str]

    @property
    def revision(self) -> str:
        """Pins the data: a hash of the files or the generator seed."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input."""

    @property
    def num_classes(self) -> int: ...

    def count(self, split: str) -> int:
        """Number of items in a split."""

    def batches(self, split: str, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        """Deterministic order; the first ``limit`` items of a split are always the same."""


@runtime_checkable
class Model(Protocol):
    """Builds a network with its own input normalisation inside ("black" is 0 for every model).

    ``fit`` trains it from scratch (its seed is a parameter); the model store caches the result,
    so loading is ``build`` + cached weights. ``revision`` pins the training data. Optional:
    ``evaluate(module) -> dict`` (recorded beside the weights).
    """

    version: ClassVar[str]

    @property
    def revision(self) -> str: ...

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def build(self) -> nn.Module: ...

    def fit(self, module: nn.Module) -> nn.Module: ...


@runtime_checkable
class Method(Protocol):
    """``attribute`` returns a tensor of the input's shape and must leave the model unchanged.

    ``seeds`` holds one int64 per item (from the run seed and the item id), so a random method
    gives an item the same map whatever the batch it is in. Optional: ``check(module)`` raises
    ``IncompatibleError`` for a model it cannot explain (checked before any work).
    """

    version: ClassVar[str]

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, seeds: Tensor) -> Tensor: ...


@runtime_checkable
class Metric(Protocol):
    """``score`` returns named per-item scores, each of shape (B,)."""

    version: ClassVar[str]
    higher_is_better: ClassVar[bool]
    requires: ClassVar[frozenset[str]]

    def score(
        self,
        model: nn.Module,
        batch: Batch,
        target: Tensor,
        attributions: Tensor,
        explain: Explain,
        seeds: Tensor,
    ) -> dict[str, Tensor]: ...


KINDS: tuple[str, ...] = ("model", "dataset", "method", "metric")
