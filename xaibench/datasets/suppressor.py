"""Suppressor variables (Wilming et al., "Theoretical behavior of XAI methods in the presence of
suppressor variables", ICML 2023), rendered as small grey images."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from xaibench.datasets.generated import Generated, check_seed
from xaibench.registry import register

# Pixel value = 0.5 + SCALE * latent value, so the latent's usual range fits in [0, 1].
SCALE = 0.1


def regions(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(signal, suppressor) (H, W) bool squares of side 3/8 of the image, in opposite corners."""
    side, margin = size * 3 // 8, size // 8
    signal = np.zeros((size, size), dtype=bool)
    suppressor = np.zeros((size, size), dtype=bool)
    signal[margin : margin + side, margin : margin + side] = True
    suppressor[size - margin - side : size - margin, size - margin - side : size - margin] = True
    return signal, suppressor


@register("dataset", "suppressor")
@dataclass(frozen=True)
class Suppressor(Generated):
    """Wilming et al.'s two-feature construction as images: x = a z + b d + noise, where z = +-1
    is the class (label 1 or 0), a is a block pattern on the signal square, d ~ N(0, 1) is a
    distractor shared by the signal square and the suppressor square (pattern b covers both),
    and every pixel has white noise. Pixel = 0.5 + 0.1 x, clipped to [0, 1] (rarely reached).

    The suppressor square carries no information about the class (it is independent of z), but
    it reveals d, so a linear classifier that subtracts it from the signal square cancels the
    distractor: with the defaults, about 84% accuracy from the signal square alone and nearly
    100% with the suppressor. A method that marks the suppressor as important reports a
    feature that is not associated with the label (the paper's point).

    ``masks``: the signal square (the truth). ``extras["mask:suppressor"]``: the suppressor
    square. ``signal``, ``distractor`` and ``noise`` are the latent amplitudes of z, d and the
    white noise. Items are generated from (seed, split, index).
    """

    version: ClassVar[str] = "1"
    provides: ClassVar[frozenset[str]] = frozenset({"masks", "mask:suppressor"})
    not_in_key: ClassVar[frozenset[str]] = frozenset({"n_train", "n_test"})
    prefix: ClassVar[str] = "suppressor"
    size: int = 16
    signal: float = 1.0
    distractor: float = 1.0
    noise: float = 0.5
    n_train: int = 2000
    n_test: int = 1000
    seed: int = 0

    def __post_init__(self):
        if not 8 <= self.size <= 128:
            raise ValueError(f"size must be between 8 and 128, got {self.size}")
        for name in ("signal", "distractor", "noise"):
            if not 0.0 <= getattr(self, name) <= 5.0:
                raise ValueError(f"{name} must be between 0 and 5, got {getattr(self, name)}")
        if self.signal == 0:
            raise ValueError("signal must be above 0: with no signal the label is noise")
        check_seed(self.seed)
        for name in ("n_train", "n_test"):  # the upper bound keeps a typo from generating for hours
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise ValueError(f"{name} must be between 1 and 1,000,000, got {getattr(self, name)}")

    @property
    def revision(self) -> str:
        recipe = f"suppressor-v1:{self.seed}:{self.size}:{self.signal}:{self.distractor}:{self.noise}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.size, self.size)

    @property
    def num_classes(self) -> int:
        return 2

    def item(self, split: str, index: int) -> tuple[np.ndarray, int, dict[str, np.ndarray]]:
        rng = self.rng(split, index)
        label = int(rng.integers(2))
        distractor = rng.normal()
        white = rng.normal(size=(self.size, self.size))
        signal, suppressor = regions(self.size)
        latent = (
            self.signal * (2 * label - 1) * signal
            + self.distractor * distractor * (signal | suppressor)
            + self.noise * white
        )
        image = np.clip(0.5 + SCALE * latent, 0.0, 1.0).astype(np.float32)[None]
        return image, label, {"masks": signal, "mask:suppressor": suppressor}
