"""Class patterns buried in noise at a known position, after ChaosMining (Shi et al., 2024)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from xaibench.datasets.generated import Generated, check_seed
from xaibench.registry import register

NOISE_STD = 0.15  # pixel noise around grey 0.5; the signal amplitude is snr * NOISE_STD


@functools.lru_cache(maxsize=16)
def class_patterns(seed: int, classes: int, side: int) -> np.ndarray:
    """(classes, side, side) fixed random +-1 patterns, one per class, from the dataset seed."""
    rng = np.random.default_rng([seed, 0, 0])
    return rng.choice([-1.0, 1.0], size=(classes, side, side))


@register("dataset", "low_snr")
@dataclass(frozen=True)
class LowSnr(Generated):
    """ChaosMining-style low signal-to-noise images (Shi et al., "ChaosMining: a benchmark to
    evaluate post-hoc local attribution methods in low SNR environments", 2024): each class has
    a fixed random +-1 pattern of side 3/8 of the image, placed at a random position per item on
    grey (0.5) with i.i.d. Gaussian noise of std 0.15 everywhere. The pattern's amplitude is
    ``snr`` x 0.15 (the per-pixel amplitude signal-to-noise ratio); pixels are clipped to [0, 1].

    ``masks``: the pattern's pixels, the only evidence for the label. Sweep ``snr`` to see
    where methods stop finding it (ChaosMining's noise conditions). Items are generated from
    (seed, split, index); the patterns from ``seed`` alone.
    """

    version: ClassVar[str] = "1"
    provides: ClassVar[frozenset[str]] = frozenset({"masks"})
    not_in_key: ClassVar[frozenset[str]] = frozenset({"n_train", "n_test"})
    prefix: ClassVar[str] = "low_snr"
    size: int = 16
    classes: int = 4
    snr: float = 1.0
    n_train: int = 4000
    n_test: int = 1000
    seed: int = 0

    def __post_init__(self):
        if not 8 <= self.size <= 128:
            raise ValueError(f"size must be between 8 and 128, got {self.size}")
        if not 2 <= self.classes <= 20:
            raise ValueError(f"classes must be between 2 and 20, got {self.classes}")
        if not 0.0 < self.snr <= 10.0:
            raise ValueError(f"snr must be in (0, 10], got {self.snr}")
        check_seed(self.seed)
        for name in ("n_train", "n_test"):  # the upper bound keeps a typo from generating for hours
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise ValueError(f"{name} must be between 1 and 1,000,000, got {getattr(self, name)}")

    @property
    def revision(self) -> str:
        recipe = f"low_snr-v1:{self.seed}:{self.size}:{self.classes}:{self.snr}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.size, self.size)

    @property
    def num_classes(self) -> int:
        return self.classes

    def item(self, split: str, index: int) -> tuple[np.ndarray, int, dict[str, np.ndarray]]:
        rng = self.rng(split, index)
        side = self.size * 3 // 8
        label = int(rng.integers(self.classes))
        top, left = rng.integers(0, self.size - side + 1, size=2)
        image = 0.5 + NOISE_STD * rng.normal(size=(self.size, self.size))
        image[top : top + side, left : left + side] += (
            self.snr * NOISE_STD * class_patterns(self.seed, self.classes, side)[label]
        )
        mask = np.zeros((self.size, self.size), dtype=bool)
        mask[top : top + side, left : left + side] = True
        return np.clip(image, 0.0, 1.0).astype(np.float32)[None], label, {"masks": mask}
