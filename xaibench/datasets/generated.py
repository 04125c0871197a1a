"""Shared body of datasets whose items are generated on demand from (seed, split, index).

A subclass defines ``item(split, index) -> (image (C, H, W) float32, label, masks)``, where
``masks`` maps ``"masks"`` (the ground truth, ``Batch.masks``) and any ``"mask:NAME"`` (into
``Batch.extras``) to (H, W) bool arrays, plus ``prefix``, ``n_train`` and ``n_test``. Any item
streams in constant memory and is the same forever, whatever the batch size or split sizes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from xaibench.api import Batch
from xaibench.datasets.splits import check_split

SPLIT_CODE = {"train": 1, "test": 2}


def check_seed(seed: int) -> None:
    """numpy seeds items from (seed, split, index) and refuses a negative seed, so refuse it
    when the dataset is configured, where `check` sees it, and not in the middle of a run."""
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be between 0 and 2**63 - 1, got {seed}")


class Generated:
    """Mixin: ``count``, ``item_ids`` and ``batches`` from the subclass's ``item``."""

    prefix: str

    def item(self, split: str, index: int) -> tuple[np.ndarray, int, dict[str, np.ndarray]]:
        raise NotImplementedError

    def rng(self, split: str, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_CODE[split], index])

    def count(self, split: str) -> int:
        check_split(split, self.prefix)
        return self.n_train if split == "train" else self.n_test

    def _range(self, split: str, limit: int | None, start: int = 0) -> range:
        total = self.count(split)
        return range(start, total if limit is None else min(limit, total))

    def item_ids(self, split: str, limit: int | None = None) -> list[str]:
        return [f"{self.prefix}-{split}-{i:06d}" for i in self._range(split, limit)]

    def batches(self, split: str, batch_size: int, limit: int | None = None, start: int = 0) -> Iterator[Batch]:
        import torch

        indices = self._range(split, limit, start)
        for first in range(indices.start, indices.stop, batch_size):
            chunk = range(first, min(first + batch_size, indices.stop))
            images, labels, masks = zip(*(self.item(split, i) for i in chunk), strict=True)
            stacked = {name: torch.from_numpy(np.stack([m[name] for m in masks])).unsqueeze(1) for name in masks[0]}
            yield Batch(
                ids=[f"{self.prefix}-{split}-{i:06d}" for i in chunk],
                inputs=torch.from_numpy(np.stack(images)),
                labels=torch.tensor(labels, dtype=torch.long),
                masks=stacked.pop("masks", None),
                extras=stacked,
            )
