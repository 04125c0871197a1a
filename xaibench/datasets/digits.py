"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import ClassVar

import numpy as np

from xaibench.api import Batch
from xaibench.datasets.splits import check_split, iterate
from xaibench.memo import remembered
from xaibench.registry import register


@functools.lru_cache(maxsize=4)
def _load(test_fraction: float, split_seed: int):
    """(images in [0, 1], labels, split -> sorted indices); loaded once per process."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = data.images.astype(np.float32) / 16.0
    labels = data.target.astype(np.int64)
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=split_seed)
    return images, labels, {"train": np.sort(train), "test": np.sort(test)}


def _source() -> dict:
    """What the bundled data depends on, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    stat = path.stat()
    return {"file": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sklearn": version("scikit-learn")}


@functools.lru_cache(maxsize=1)
def _revision() -> str:
    """Hash of the bundled pixels and labels: pins the data whatever scikit-learn ships."""

    def compute() -> str:
        images, labels, _ = _load(0.2, 0)
        return f"sklearn-digits-{hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]}"

    return remembered("digits-revision", _source(), compute)


@functools.lru_cache(maxsize=4)
def _split_indices(test_fraction: float, split_seed: int) -> dict[str, np.ndarray]:
    """Split -> sorted indices, remembered so `check` and a warm `run` need no scikit-learn import."""

    def compute() -> dict[str, list[int]]:
        return {name: index.tolist() for name, index in _load(test_fraction, split_seed)[2].items()}

    components = {**_source(), "test_fraction": test_fraction, "split_seed": split_seed}
    return {
        name: np.asarray(index, dtype=np.int64)
        for name, index in remembered("digits-split", components, compute).items()
    }


@register("dataset", "digits")
@dataclass(frozen=True)
class Digits:
    """Handwritten digits from scikit-learn (8x8, grey); fixed stratified 80/20 train/test split.

    Pixels are scaled from 0..16 to [0, 1]. ``size`` > 8 upsamples bilinearly (for methods and
    metrics that need more pixels). Item ids are ``digits-NNNN``, the index in ``load_digits``,
    so they survive any change of split or size. 1,437 train and 360 test items.
    """

    version: ClassVar[str] = "1"
    provides: ClassVar[frozenset[str]] = frozenset()
    size: int = 8
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self):
        if not 8 <= self.size <= 224:
            raise ValueError(f"size must be between 8 and 224, got {self.size}")
        if not 0.05 <= self.test_fraction <= 0.95:
            raise ValueError(f"test_fraction must be between 0.05 and 0.95, got {self.test_fraction}")
        if not 0 <= self.split_seed < 2**32:  # scikit-learn's random_state range
            raise ValueError(f"split_seed must be between 0 and 2**32 - 1, got {self.split_seed}")

    @property
    def _raw(self):
        return _load(self.test_fraction, self.split_seed)

    @property
    def revision(self) -> str:
        return _revision()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.size, self.size)

    @property
    def num_classes(self) -> int:
        return 10

    def count(self, split: str) -> int:
        check_split(split, "digits")
        return len(_split_indices(self.test_fraction, self.split_seed)[split])

    def item_ids(self, split: str, limit: int | None = None) -> list[str]:
        check_split(split, "digits")
        return [f"digits-{i:04d}" for i in _split_indices(self.test_fraction, self.split_seed)[split][:limit]]

    def batches(self, split: str, batch_size: int, limit: int | None = None, start: int = 0) -> Iterator[Batch]:
        import torch
        import torch.nn.functional as F

        check_split(split, "digits")
        images, labels, splits = self._raw
        index = splits[split][start:limit]
        inputs = torch.from_numpy(images[index]).unsqueeze(1)
        if self.size != 8:
            inputs = F.interpolate(inputs, size=(self.size, self.size), mode="bilinear", align_corners=False)
            inputs = inputs.clamp(0.0, 1.0)
        ids = [f"digits-{i:04d}" for i in index]
        yield from iterate(ids, inputs, torch.from_numpy(labels[index]), batch_size, None)
