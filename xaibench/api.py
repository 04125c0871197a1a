"""The data that flows between plugins (`Batch`) and the plugin protocols. No logic.

Plugins are frozen dataclasses whose fields are their parameters; they are registered with
``xaibench.registry.register(kind, name)`` and carry metadata as class variables
(``version``; for metrics ``higher_is_better``, ``requires`` and ``reference``; for datasets
``provides``).

Requirements are plain strings that a dataset's ``provides`` must contain for ``check`` to
accept a metric on it: ``"masks"`` (ground-truth object masks in ``Batch.masks``),
``"labels:NAME"`` (a named label set in ``Batch.extras["labels:NAME"]``), ``"variant:NAME"``
(a paired image per item in ``Batch.extras["variant:NAME"]``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor, nn


LOGITS = "model:logits"  # Batch.extras key of the run's logits on the batch's inputs


@dataclass(frozen=True)
class Batch:
    """A batch of items. ``inputs`` are float32 in [0, 1], shape (B, C, H, W).

    ``ids`` are stable strings (the cache and results key items by them); ``masks`` are optional
    ground-truth (B, 1, H, W) bool masks; ``extras`` holds named per-item tensors a study needs,
    such as variants of an item (a scene-only image for BAM), each with leading dim B. When a run
    scores a batch, ``extras[LOGITS]`` holds the model's (B, classes) logits on the inputs (those
    that chose the target): a metric may use them instead of running the unchanged inputs again.
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
        import torch

        index = torch.as_tensor(keep, dtype=torch.long)
        return Batch(
            ids=[self.ids[i] for i in keep],
            inputs=self.inputs[index],
            labels=self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            extras={k: v[index] for k, v in self.extras.items()},
        )


@dataclass(frozen=True)
class Curve:
    """One score of each item along an axis, e.g. accuracy at each removal fraction.

    ``values`` is (B, K) at the K points ``x``; the runner writes one row per (item, point) with
    the result columns ``x`` and ``x_label``. A metric returns it in place of a (B,) tensor.
    Several curves may share one score name in the results by naming their dict entries
    ``"name@anything"``: the part before ``@`` is the stored score name (so repeats of a ROAR
    curve are one score told apart by their ``repeat`` label).
    """

    x: Tensor
    values: Tensor
    x_label: str
    # Columns these rows set instead of the task's, e.g. {"repeat": 2, "model_role": "retrained",
    # "fit_key": ...} for a ROAR curve measured on one retrained model.
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingSet:
    """A training split in memory, possibly transformed (ROAR masks, permuted labels).

    ``inputs`` float32 in [0, 1], (N, C, H, W), on the CPU; ``labels`` (N,) int64; ``ids`` the
    items' stable ids. ``key`` identifies the data and its transform (the fitted-model store
    keys fits by it).
    """

    inputs: Tensor
    labels: Tensor
    ids: list[str]
    key: str = ""

    def __len__(self) -> int:
        return len(self.ids)


# explain(model, inputs, target, seeds=None) -> attributions; lets a metric recompute
# attributions (randomization tests, sensitivity) with the method under evaluation. Without
# ``seeds``, inputs are the batch's items, or k copies of each item in item-major order, and get
# their items' seeds.
Explain = Callable[..., "Tensor"]


@runtime_checkable
class Dataset(Protocol):
    """Items of named splits ("train", "test", maybe "val"), in a fixed order.

    ``provides`` lists what its batches carry beyond inputs and labels (see the module doc).
    ``batches(split, batch_size, limit, start)`` yields items ``start`` to ``limit`` (exclusive)
    of the split; ``item_ids(split, limit)`` gives their ids without loading images.
    """

    version: ClassVar[str]
    provides: ClassVar[frozenset[str]]

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

    def batches(self, split: str, batch_size: int, limit: int | None = None, start: int = 0) -> Iterator[Batch]:
        """Deterministic order; the first ``limit`` items of a split are always the same."""

    def item_ids(self, split: str, limit: int | None = None) -> list[str]:
        """Ids of the first ``limit`` items of a split, cheaply (no images decoded if possible)."""


@runtime_checkable
class Model(Protocol):
    """Builds a network with its own input normalisation inside ("black" is 0 for every model).

    A trainable model also has ``train_data() -> Dataset`` (what it trains on by default) and
    ``fit(module, data, seed, device) -> nn.Module``, which trains the freshly built ``module``
    on ``data`` (a ``TrainingSet``, maybe transformed) with ``seed`` on ``device``. The
    fitted-model store keys each fit by (model key, training-data key with transform, seed) and
    records train/test accuracy and training time beside the weights. A model without ``fit``
    must load its weights in ``build`` (a local file); it is never silently left untrained.
    Optional: ``label_set`` (ClassVar str, default "label"): which labels it predicts.
    """

    version: ClassVar[str]

    @property
    def revision(self) -> str: ...

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def build(self) -> nn.Module: ...


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
    """``score`` returns named per-item scores: each a (B,) tensor or a ``Curve``.

    A study metric may also define ``needs(job, fit, options) -> tasks.Needs``: whole-split maps
    and extra fitted models (retrains) it needs; ``score`` then gets ``fitted={name: module}``.

    All scores of an item are written together or not at all. A NaN or infinite value is kept
    in its row marked invalid, with the reason, and never ranked. ``higher_is_better`` is a bool
    or a mapping from score name to bool. ``reference`` names what a relative verdict compares
    with: the ``random`` method for perturbation metrics, or ``"original"`` when the metric
    itself compares with the original model's map (randomization checks), so no method is the
    reference.
    """

    version: ClassVar[str]
    higher_is_better: ClassVar[bool | dict[str, bool]]
    requires: ClassVar[frozenset[str]]
    reference: ClassVar[str]

    def score(
        self,
        model: nn.Module,
        batch: Batch,
        target: Tensor,
        attributions: Tensor,
        explain: Explain,
        seeds: Tensor,
    ) -> dict[str, Tensor | Curve]: ...


KINDS: tuple[str, ...] = ("model", "dataset", "method", "metric")
