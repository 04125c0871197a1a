"""Seeded shapes on noise, with ground-truth masks: a dataset whose evidence is known exactly."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from xaibench.api import Batch
from xaibench.datasets.splits import check_split
from xaibench.registry import register

SHAPES = ("square", "disk", "triangle", "cross")
_SPLIT_CODE = {"train": 1, "test": 2}


@register("dataset", "synthetic")
@dataclass(frozen=True)
class Synthetic:
    """Seeded shapes (square, disk, triangle, cross) on uniform noise; the label is the shape.

    Each item is generated on demand from (seed, split, index), so any number of items streams
    in constant memory and item ``synthetic-test-000042`` is the same image forever. ``masks``
    marks the shape's pixels: the only evidence for the label, for localisation metrics.
    """

    version: ClassVar[str] = "1"
    provides: ClassVar[frozenset[str]] = frozenset({"masks"})
    # Split sizes only cap how many items exist: item i is the same image whatever they are.
    not_in_key: ClassVar[frozenset[str]] = frozenset({"n_train", "n_test"})
    size: int = 32
    channels: int = 1
    n_train: int = 2000
    n_test: int = 10000
    noise: float = 0.35
    seed: int = 0

    def __post_init__(self):
        if not 12 <= self.size <= 256:
            raise ValueError(f"size must be between 12 and 256, got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not 0.0 <= self.noise <= 0.5:
            raise ValueError(f"noise must be between 0 and 0.5, got {self.noise}")
        if not (1 <= self.n_train <= 1_000_000 and 1 <= self.n_test <= 1_000_000):
            raise ValueError("n_train and n_test must be between 1 and 1,000,000")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")

    @property
    def revision(self) -> str:
        recipe = f"shapes-v1:{self.seed}:{self.size}:{self.channels}:{self.noise}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    @property
    def num_classes(self) -> int:
        return len(SHAPES)

    def count(self, split: str) -> int:
        check_split(split, "synthetic")
        return self.n_train if split == "train" else self.n_test

    def item(self, split: str, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """(image (C, H, W) float32, label, mask (H, W) bool) of one item."""
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[split], index])
        label = int(rng.integers(len(SHAPES)))
        n = self.size
        radius = rng.uniform(n / 8, n / 4.5)
        cy, cx = rng.uniform(radius + 1, n - radius - 1, size=2)
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        if SHAPES[label] == "square":
            mask = (np.abs(dx) <= 0.8 * radius) & (np.abs(dy) <= 0.8 * radius)
        elif SHAPES[label] == "disk":
            mask = dx**2 + dy**2 <= radius**2
        elif SHAPES[label] == "triangle":
            mask = (np.abs(dy) <= radius) & (np.abs(dx) <= (dy + radius) / 2)
        else:
            arm = radius / 3
            mask = ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))
        background = rng.uniform(0.0, self.noise, size=(self.channels, n, n))
        brightness = rng.uniform(0.6, 1.0, size=(self.channels, 1, 1))
        image = np.where(mask[None], brightness, background).astype(np.float32)
        return image, label, mask

    def item_ids(self, split: str, limit: int | None = None) -> list[str]:
        total = self.count(split)
        n = total if limit is None else min(limit, total)
        return [f"synthetic-{split}-{i:06d}" for i in range(n)]

    def batches(self, split: str, batch_size: int, limit: int | None = None, start: int = 0) -> Iterator[Batch]:
        import torch

        total = self.count(split)
        n = total if limit is None else min(limit, total)
        for first in range(start, n, batch_size):
            indices = range(first, min(first + batch_size, n))
            images, labels, masks = zip(*(self.item(split, i) for i in indices), strict=True)
            yield Batch(
                ids=[f"synthetic-{split}-{i:06d}" for i in indices],
                inputs=torch.from_numpy(np.stack(images)),
                labels=torch.tensor(labels, dtype=torch.long),
                masks=torch.from_numpy(np.stack(masks)).unsqueeze(1),
            )
