"""`torchvision`: the classic torchvision datasets read from a local root, never downloaded.

CIFAR10, CIFAR100, MNIST, FashionMNIST, SVHN and STL10 are opened with ``download=False``; when
the files are not there, one error names the folder and files torchvision expects. The whole
split is held in memory as uint8 (CIFAR: 150 MB for train) and converted per batch.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from xaibench.api import Batch
from xaibench.datasets.splits import check_split
from xaibench.errors import UserError
from xaibench.filehash import file_digests
from xaibench.registry import register

# name -> (files torchvision expects below root, (C, H, W), classes)
LAYOUT: dict[str, tuple[str, tuple[int, int, int], int]] = {
    "CIFAR10": ("cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)", (3, 32, 32), 10),
    "CIFAR100": ("cifar-100-python/ (train, test, meta)", (3, 32, 32), 100),
    "MNIST": ("MNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-...)", (1, 28, 28), 10),
    "FashionMNIST": ("FashionMNIST/raw/ (train-images-idx3-ubyte, ..., t10k-...)", (1, 28, 28), 10),
    "SVHN": ("train_32x32.mat and test_32x32.mat", (3, 32, 32), 10),
    "STL10": ("stl10_binary/ (train_X.bin, train_y.bin, test_X.bin, test_y.bin, ...)", (3, 96, 96), 10),
}
# the folder below root whose files pin the data (SVHN keeps its .mat files in root itself)
DATA_FOLDER = {
    "CIFAR10": "cifar-10-batches-py",
    "CIFAR100": "cifar-100-python",
    "MNIST": "MNIST",
    "FashionMNIST": "FashionMNIST",
    "STL10": "stl10_binary",
}


@functools.lru_cache(maxsize=4)
def _load(name: str, root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) uint8 and (N,) int64 of one split, read once per process."""
    import torch
    import torchvision.datasets as tvd

    cls = getattr(tvd, name)
    try:
        if name in ("SVHN", "STL10"):
            data = cls(root, split=split, download=False)
        else:
            data = cls(root, train=split == "train", download=False)
    except (RuntimeError, FileNotFoundError, OSError) as error:
        raise UserError(
            f"dataset torchvision {name}: not found under {Path(root).resolve()} ({error}); put {LAYOUT[name][0]} "
            "there (xaibench never downloads: use torchvision's download=True on a machine with internet, then copy)"
        ) from None
    images = data.data.numpy() if isinstance(data.data, torch.Tensor) else np.asarray(data.data)
    labels = getattr(data, "targets", None)
    if labels is None:
        labels = data.labels
    labels = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    if images.ndim == 3:  # MNIST, FashionMNIST: (N, H, W)
        images = images[:, None]
    elif images.shape[-1] == 3:  # CIFAR: (N, H, W, C)
        images = images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images), labels


@register("dataset", "torchvision")
@dataclass(frozen=True)
class TorchvisionDataset:
    """CIFAR10, CIFAR100, MNIST, FashionMNIST, SVHN or STL10 (``name``) from a local ``root``
    (the folder passed to torchvision), with its official train/test split; never downloaded.

    Item ids are ``<name>-<split>-<index>`` in the files' order. ``revision`` hashes the data
    files (remembered by path, size and mtime). Cost: the split is read into memory once.
    """

    version: ClassVar[str] = "1"
    provides: ClassVar[frozenset[str]] = frozenset()
    name: Literal["CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "SVHN", "STL10"] = "CIFAR10"
    root: str = ""

    def __post_init__(self):
        if not self.root:
            raise ValueError(f"give root, the folder that holds {LAYOUT[self.name][0]}")

    def _data(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        check_split(split, f"torchvision {self.name}")
        return _load(self.name, str(Path(self.root).expanduser()), split)

    @property
    def revision(self) -> str:
        self._data("test")  # the clear "not found" error first
        base = Path(self.root).expanduser()
        folder = base / DATA_FOLDER[self.name] if self.name in DATA_FOLDER else base
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        if self.name == "SVHN":
            files = [p for p in files if p.name in ("train_32x32.mat", "test_32x32.mat")]
        digest = hashlib.sha256()
        for path, content in zip(files, file_digests(files), strict=True):
            digest.update(f"{path.relative_to(base).as_posix()}\x1f{content}\n".encode())
        return f"sha256:{digest.hexdigest()}"

    @property
    def shape(self) -> tuple[int, int, int]:
        return LAYOUT[self.name][1]

    @property
    def num_classes(self) -> int:
        return LAYOUT[self.name][2]

    def count(self, split: str) -> int:
        return len(self._data(split)[1])

    def item_ids(self, split: str, limit: int | None = None) -> list[str]:
        n = self.count(split) if limit is None else min(limit, self.count(split))
        return [f"{self.name.lower()}-{split}-{i:06d}" for i in range(n)]

    def batches(self, split: str, batch_size: int, limit: int | None = None, start: int = 0) -> Iterator[Batch]:
        import torch

        images, labels = self._data(split)
        stop = len(labels) if limit is None else min(limit, len(labels))
        for first in range(start, stop, batch_size):
            last = min(first + batch_size, stop)
            yield Batch(
                ids=[f"{self.name.lower()}-{split}-{i:06d}" for i in range(first, last)],
                inputs=torch.from_numpy(images[first:last].astype(np.float32) / 255.0),
                labels=torch.from_numpy(labels[first:last]),
            )
