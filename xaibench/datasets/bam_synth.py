"""BAM-style generated images: a digit object pasted on a procedural scene (Yang and Kim, 2019).

"Benchmarking Attribution Methods with Relative Feature Importance" pastes COCO objects on
MiniPlaces scenes so that every image has an object label and a scene label, and a model trained
on one label set is known to rely on the object more than a model trained on the other. Here the
scenes are 10 seeded procedural textures and the objects scikit-learn's bundled digits, upscaled
to between 1/sqrt(3) and 1/sqrt(2) of the side and filled with a random saturated colour, so the
set is generated offline at any size. Each block of 100 consecutive items holds every
(object, scene) pair once, in a seeded order: the object says nothing about the scene.

Per item: ``batch.labels`` is the label set chosen by ``labels``; both sets are in
``extras["labels:object"]`` and ``extras["labels:scene"]``; ``masks`` are the object's pixels
(exactly the pasted ones); ``extras["variant:scene_only"]`` is the same scene without the
object (IDR); ``extras["variant:patch"]`` is the image with a small square of the same scene's
texture, copied from elsewhere in it, pasted away from the object, and ``extras["mask:patch"]``
marks that square (IIR: the metric keeps only pairs whose logits barely change). Cost: about
0.1 ms per item to generate, on demand from (seed, split, index).
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

from xaibench.api import Batch
from xaibench.errors import UserError
from xaibench.registry import register

SCENES = ("h_stripes", "v_stripes", "diagonal", "checker", "dots", "rings", "blobs", "gradient", "grain", "hatch")
SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 1, "test": 2, "val": 3}
# Which sklearn digit instances each split draws objects from (index mod 5), so test objects
# are handwriting the object model never saw.
_DIGIT_POOL = {"train": (0, 1, 2), "val": (3,), "test": (4,)}
# Two colours per scene class (RGB); darker and less saturated than the objects' colours.
_PALETTE = np.array(
    [
        [[0.15, 0.25, 0.45], [0.45, 0.55, 0.70]],
        [[0.40, 0.20, 0.15], [0.65, 0.50, 0.35]],
        [[0.20, 0.40, 0.20], [0.45, 0.60, 0.35]],
        [[0.25, 0.25, 0.25], [0.60, 0.60, 0.60]],
        [[0.35, 0.15, 0.40], [0.60, 0.45, 0.60]],
        [[0.40, 0.35, 0.10], [0.65, 0.60, 0.35]],
        [[0.10, 0.35, 0.40], [0.35, 0.60, 0.60]],
        [[0.45, 0.25, 0.30], [0.20, 0.30, 0.45]],
        [[0.30, 0.30, 0.20], [0.55, 0.50, 0.45]],
        [[0.15, 0.15, 0.30], [0.50, 0.40, 0.25]],
    ],
    dtype=np.float32,
)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits in [0, 1] and their labels (bundled, no download)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)


@functools.lru_cache(maxsize=8)
def _pool(split: str, digit: int) -> np.ndarray:
    images, labels = _digits()
    index = np.flatnonzero(labels == digit)
    return index[np.isin(index % 5, _DIGIT_POOL[split])]


def texture(scene: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(3, n, n) float32 texture of scene class ``scene``; phase, scale and colours jitter per item."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    period = n / 5.0 * rng.uniform(0.85, 1.15)
    phase = rng.uniform(0, 2 * np.pi)
    if scene == 0:
        t = 0.5 + 0.5 * np.sin(2 * np.pi * yy / period + phase)
    elif scene == 1:
        t = 0.5 + 0.5 * np.sin(2 * np.pi * xx / period + phase)
    elif scene == 2:
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + yy) / (1.4 * period) + phase)
    elif scene == 3:
        shift = rng.uniform(0, period, size=2)
        t = ((np.floor((yy + shift[0]) / period) + np.floor((xx + shift[1]) / period)) % 2).astype(np.float32)
    elif scene == 4:
        shift = rng.uniform(0, period, size=2)
        dy = (yy + shift[0]) % period - period / 2
        dx = (xx + shift[1]) % period - period / 2
        t = (dy**2 + dx**2 <= (period / 3.5) ** 2).astype(np.float32)
    elif scene == 5:
        cy, cx = rng.uniform(0, n, size=2)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / period + phase)
    elif scene == 6:
        t = ndimage.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), sigma=n / 10, mode="wrap")
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif scene == 7:
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * (xx - n / 2) + np.sin(angle) * (yy - n / 2)) / n + 0.5
    elif scene == 8:
        t = rng.uniform(0, 1, size=(n, n)).astype(np.float32)
    else:
        shift = rng.integers(0, max(1, int(period)), size=2)
        line = max(1, n // 16)
        t = ((((yy + shift[0]) % int(period)) < line) | (((xx + shift[1]) % int(period)) < line)).astype(np.float32)
    colours = np.clip(_PALETTE[scene] + rng.uniform(-0.06, 0.06, size=(2, 3)), 0, 1).astype(np.float32)
    t = np.clip(t, 0, 1)[None]
    image = colours[0][:, None, None] * (1 - t) + colours[1][:, None, None] * t
    image = image + rng.normal(0, 0.02, size=image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


@register("dataset", "bam_synth")
@dataclass(frozen=True)
class BamSynth:
    """BAM-style objects (digits) on scenes (procedural textures), 10 classes each, RGB.

    ``labels`` picks which label set is ``batch.labels``: ``object`` for the object model,
    ``scene`` for the scene model (both sets are always in the extras). ``patch`` is the side of
    the IIR patch as a fraction of the image side. Items are generated from (seed, split, index);
    ids are ``bam-SPLIT-NNNNNN`` whatever the label set, so the rows of the two models join.
    """

    version: ClassVar[str] = "1"
    provides: ClassVar[frozenset[str]] = frozenset(
        {"masks", "labels:object", "labels:scene", "variant:scene_only", "variant:patch", "mask:patch"}
    )
    # Split sizes only cap how many items exist: item i is the same image whatever they are.
    not_in_key: ClassVar[frozenset[str]] = frozenset({"n_train", "n_val", "n_test"})
    labels: Literal["object", "scene"] = "object"
    size: int = 32
    patch: float = 0.2
    n_train: int = 10000
    n_val: int = 1000
    n_test: int = 2000
    seed: int = 0

    def __post_init__(self):
        if self.labels not in ("object", "scene"):
            raise ValueError(f"labels must be 'object' or 'scene', got {self.labels!r}")
        if not 24 <= self.size <= 256:
            raise ValueError(f"size must be between 24 and 256, got {self.size}")
        if not 0.05 <= self.patch <= 0.3:
            raise ValueError(f"patch must be between 0.05 and 0.3 (fraction of the side), got {self.patch}")
        for name in ("n_train", "n_val", "n_test"):
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise ValueError(f"{name} must be between 1 and 1,000,000, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")

    @property
    def revision(self) -> str:
        images, labels = _digits()
        digits = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:12]
        recipe = f"bam-synth-v1:{self.seed}:{self.size}:{self.patch}:{digits}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    @property
    def num_classes(self) -> int:
        return 10

    def count(self, split: str) -> int:
        if split not in SPLITS:
            raise UserError(f"dataset 'bam_synth' has no split {split!r}; use one of {', '.join(SPLITS)}")
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def pair(self, split: str, index: int) -> tuple[int, int]:
        """(object, scene) of an item: each block of 100 items holds all 100 pairs once."""
        block = np.random.default_rng([self.seed, _SPLIT_CODE[split], index // 100, 7]).permutation(100)
        code = int(block[index % 100])
        return code // 10, code % 10

    def item(self, split: str, index: int) -> dict[str, np.ndarray | int]:
        """One item: image, scene_only, patched image, object mask, patch mask, object and scene labels."""
        from scipy import ndimage

        n = self.size
        obj, scene = self.pair(split, index)
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[split], index])
        scene_only = texture(scene, n, rng)
        # The object: a digit, upscaled to a side in [n/sqrt(3), n/sqrt(2)], one saturated colour.
        images, _ = _digits()
        pool = _pool(split, obj)
        digit = images[pool[rng.integers(len(pool))]]
        side = int(rng.integers(int(np.ceil(n / np.sqrt(3))), int(np.floor(n / np.sqrt(2))) + 1))
        shape = ndimage.zoom(digit, side / 8.0, order=1, grid_mode=True, mode="nearest")[:side, :side]
        row, col = (int(v) for v in rng.integers(0, n - side + 1, size=2))
        mask = np.zeros((n, n), dtype=bool)
        mask[row : row + side, col : col + side] = shape > 0.35
        colour = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), 1.0, 1.0), dtype=np.float32)
        image = np.where(mask[None], colour[:, None, None], scene_only).astype(np.float32)
        # The patch: a square of this scene's texture from elsewhere, pasted away from the object
        # (off its bounding box where it fits, else off its pixels).
        p = max(2, round(self.patch * n))
        box = np.zeros((n, n), dtype=bool)
        box[max(0, row - 1) : row + side + 1, max(0, col - 1) : col + side + 1] = True
        spots = _free_spots(box, p)
        if not spots.any():
            spots = _free_spots(ndimage.binary_dilation(mask), p)
        candidates = np.argwhere(spots)
        if len(candidates):
            py, px = (int(v) for v in candidates[rng.integers(len(candidates))])
        else:  # no room: the patch goes anywhere (the metric's logit check decides if it counts)
            py, px = (int(v) for v in rng.integers(0, n - p + 1, size=2))
        sy, sx = (int(v) for v in rng.integers(0, n - p + 1, size=2))
        patched = image.copy()
        patched[:, py : py + p, px : px + p] = scene_only[:, sy : sy + p, sx : sx + p]
        patch_mask = np.zeros((n, n), dtype=bool)
        patch_mask[py : py + p, px : px + p] = True
        return {
            "image": image,
            "scene_only": scene_only,
            "patched": patched,
            "mask": mask,
            "patch_mask": patch_mask,
            "object": obj,
            "scene": scene,
        }

    def item_ids(self, split: str, limit: int | None = None) -> list[str]:
        total = self.count(split)
        n = total if limit is None else min(limit, total)
        return [f"bam-{split}-{i:06d}" for i in range(n)]

    def batches(self, split: str, batch_size: int, limit: int | None = None, start: int = 0) -> Iterator[Batch]:
        total = self.count(split)
        n = total if limit is None else min(limit, total)
        for first in range(start, n, batch_size):
            stop = min(first + batch_size, n)
            # A run's attribute and score tasks walk the same item windows one after another:
            # the last few small batches are kept (consumers index them, which copies).
            yield _recent(self, split, first, stop) if stop - first <= 256 else self._batch(split, first, stop)

    def _batch(self, split: str, first: int, stop: int) -> Batch:
        import torch

        items = [self.item(split, i) for i in range(first, stop)]

        def stack(key: str) -> torch.Tensor:
            return torch.from_numpy(np.stack([it[key] for it in items]))

        objects = torch.tensor([it["object"] for it in items], dtype=torch.long)
        scenes = torch.tensor([it["scene"] for it in items], dtype=torch.long)
        return Batch(
            ids=[f"bam-{split}-{i:06d}" for i in range(first, stop)],
            inputs=stack("image"),
            labels=objects if self.labels == "object" else scenes,
            masks=stack("mask").unsqueeze(1),
            extras={
                "labels:object": objects,
                "labels:scene": scenes,
                "variant:scene_only": stack("scene_only"),
                "variant:patch": stack("patched"),
                "mask:patch": stack("patch_mask").unsqueeze(1),
            },
        )


@functools.lru_cache(maxsize=8)
def _recent(dataset: BamSynth, split: str, first: int, stop: int) -> Batch:
    return dataset._batch(split, first, stop)


def _free_spots(blocked: np.ndarray, p: int) -> np.ndarray:
    """Top-left corners (y, x) of p x p squares that avoid every blocked pixel."""
    n = blocked.shape[0]
    counts = np.pad(blocked.astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    inside = counts[p:, p:] - counts[:-p, p:] - counts[p:, :-p] + counts[:-p, :-p]
    return inside[: n - p + 1, : n - p + 1] == 0
