"""ROAR / KAR removal (Hooker et al., NeurIPS 2019), PROTOCOLS.md "ROAR": the keyed training-data
transform of a remove-and-retrain fit, and the removal itself (shared with the ``roar`` metric,
which applies the same removal to the test items it scores).

Removal is exact: a fraction f of an image's H*W pixels is k = round(f * H * W) pixels, kept
between 1 and H*W - 1 (noisy linear imputation needs a kept pixel, and KAR must remove one).
Pixels are ranked by ``importance_map(maps, reduce)`` with ties broken by a random order seeded
per item (``rank_pixels``), so a flat or sparse map gives the same mask in any batch. ROAR removes
the top k pixels, KAR the other H*W - k: at the same fraction the two masks are exact complements.
All channels of a pixel are removed together. Fill: ``mean`` writes the per-channel mean of the
original (untransformed) training split, the published protocol; ``nli`` is ROAD's noisy linear
imputation (``xaibench.imputation``, noise sigma ``NLI_NOISE``), which hides the mask's shape
better than a constant that never occurs in real images.

Seeds: the tie-break order and the imputation noise of an item come from
``item_seeds(seed, [id], SEED_PURPOSE)`` with ``seed`` the job's seed: exactly the ``seeds`` the
runner hands the ``roar`` metric's ``score``, so the test removal at score time is the removal the
fit's record measured.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import Tensor

from xaibench.api import TrainingSet
from xaibench.imaging import importance_map, rank_pixels
from xaibench.seeding import item_seeds

SEED_PURPOSE = "metric:roar"  # the purpose the runner uses for the `roar` metric's seeds
NLI_NOISE = 0.01  # ROAD's default imputation noise
MODES = ("roar", "kar")
FILLS = ("mean", "nli")
REDUCES = ("abs_sum", "sum", "max_abs")


def removed_count(fraction: float, pixels: int) -> int:
    """Pixels ROAR removes (KAR keeps) at ``fraction``: round(f * pixels), within [1, pixels - 1]."""
    return min(max(round(fraction * pixels), 1), pixels - 1)


def removal_masks(maps: Tensor, fraction: float, mode: str, reduce: str, seeds: Tensor) -> Tensor:
    """(B, 1, H, W) bool: True where a pixel is removed (ROAR: the top fraction; KAR: the rest)."""
    import torch

    b, _, h, w = maps.shape
    k = removed_count(fraction, h * w)
    order = rank_pixels(importance_map(maps, reduce), seeds.cpu()).to(maps.device)
    top = torch.zeros(b, h * w, dtype=torch.bool, device=maps.device)
    top.scatter_(1, order[:, :k], True)
    removed = top if mode == "roar" else ~top
    return removed.view(b, 1, h, w)


def fill(images: Tensor, removed: Tensor, how: str, mean: tuple[float, ...], seeds: Tensor) -> Tensor:
    """Images with the ``removed`` pixels replaced by the training mean or by noisy linear imputation."""
    import torch

    if how == "mean":
        value = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return torch.where(removed, value, images)
    from xaibench.imputation import impute  # imports torch: only when a task fills images

    return impute(images, removed, NLI_NOISE, seeds.cpu())


@functools.lru_cache(maxsize=8)
def _training_mean(name: str, params_json: str) -> tuple[float, ...]:
    import json

    from xaibench import registry

    dataset = registry.build("dataset", name, json.loads(params_json))
    total, count = None, 0
    for batch in dataset.batches("train", 1024):
        sums = batch.inputs.double().sum(dim=(0, 2, 3))
        total = sums if total is None else total + sums
        count += batch.inputs.shape[0] * batch.inputs.shape[2] * batch.inputs.shape[3]
    if total is None:
        raise ValueError(f"dataset {name!r} has no training items to take a fill mean from")
    return tuple(round(float(v), 8) for v in total / count)  # rounded: a stable transform key


def training_mean(dataset_spec: Any) -> tuple[float, ...]:
    """Per-channel mean of a dataset's original training split (a manifest ``PluginSpec``), once per process."""
    return _training_mean(dataset_spec.name, dataset_spec.params_json)


@dataclass(frozen=True)
class RoarRemoval:
    """Remove the top (ROAR) or bottom (KAR) ``fraction`` of every image's pixels by its cached map.

    ``train_key`` / ``test_key``: attribution keys of the method's maps on the whole train and
    test splits (cached by the attribute tasks the ``roar`` metric asks for); ``fill_mean``: the
    per-channel mean of the original training split (used when ``fill`` is "mean");
    ``seed``: the job's seed (tie-breaks and imputation noise, see the module doc).
    ``output="masks"`` returns the binary removal masks (N, 1, H, W) as inputs instead of the
    filled images: the training data of the mask-leakage classifier.
    """

    name: ClassVar[str] = "roar_removal"
    train_key: str
    test_key: str
    fraction: float
    mode: str = "roar"
    fill: str = "mean"
    fill_mean: tuple[float, ...] = ()
    reduce: str = "abs_sum"
    seed: int = 0
    output: str = "images"

    def __post_init__(self):
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}")
        for field, value, allowed in (
            ("mode", self.mode, MODES),
            ("fill", self.fill, FILLS),
            ("reduce", self.reduce, REDUCES),
            ("output", self.output, ("images", "masks")),
        ):
            if value not in allowed:
                raise ValueError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")
        if self.fill == "mean" and self.output == "images" and not self.fill_mean:
            raise ValueError("fill_mean (the training split's per-channel mean) is needed for fill 'mean'")

    def params(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def apply(self, data: TrainingSet, split: str, context: Any = None) -> TrainingSet:
        import torch

        key = self.train_key if split == "train" else self.test_key
        if context is None:
            raise ValueError("roar_removal reads cached attributions: it needs the run's context")
        found = context.cache.get("attributions", key, data.ids)
        missing = [i for i in data.ids if i not in found]
        if missing:
            raise ValueError(
                f"roar_removal: {len(missing)} of {len(data.ids)} {split} items have no cached attribution "
                f"map under {key[:12]} (first: {missing[0]}); the roar metric's attribute tasks must run first"
            )
        maps = torch.stack([found[i] for i in data.ids]).float()
        seeds = item_seeds(self.seed, data.ids, SEED_PURPOSE)
        removed = removal_masks(maps, self.fraction, self.mode, self.reduce, seeds)
        if self.output == "masks":
            return TrainingSet(removed.float(), data.labels, data.ids, data.key)
        return TrainingSet(
            fill(data.inputs, removed, self.fill, self.fill_mean, seeds), data.labels, data.ids, data.key
        )
