"""The paired BAM models (Yang and Kim, 2019): one CNN trained on object labels, one on scene labels.

Both see the same `bam_synth` images; only the label set differs. So, relative to the scene
model, the object matters more to the object model: the contrast MCS measures. Each trains on
first use (cached by the fitted-model store) to at least 90% test accuracy on its own labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xaibench.datasets.bam_synth import BamSynth
from xaibench.models.cnn import _TrainedCNN
from xaibench.registry import register


@dataclass(frozen=True)
class _BamCNN(_TrainedCNN):
    """Small CNN on `bam_synth`; ``size``, ``patch`` and ``data_seed`` must match the dataset's."""

    label_set: ClassVar[str] = "object"
    size: int = 32
    patch: float = 0.2
    data_seed: int = 0
    n_train: int = 6000
    seed: int = 0
    width: int = 16
    epochs: int = 8
    lr: float = 0.005
    batch_size: int = 64

    def __post_init__(self):
        # Checked here so the error names `data_seed`; the dataset would call it `seed`.
        if not 0 <= self.data_seed < 2**63:
            raise ValueError(f"data_seed must be between 0 and 2**63 - 1, got {self.data_seed}")
        super().__post_init__()

    def train_data(self) -> BamSynth:
        return BamSynth(
            labels=self.label_set, size=self.size, patch=self.patch, n_train=self.n_train, seed=self.data_seed
        )


@register("model", "bam_obj")
@dataclass(frozen=True)
class BamObj(_BamCNN):
    """BAM object model: a small CNN trained on `bam_synth` object labels (the digit).

    Evaluate it on ``bam_synth: {labels: object}``. It must ignore the scene, so attribution
    inside the object mask should be high.
    """

    version: ClassVar[str] = "1"
    label_set: ClassVar[str] = "object"


@register("model", "bam_scene")
@dataclass(frozen=True)
class BamScene(_BamCNN):
    """BAM scene model: a small CNN trained on `bam_synth` scene labels (the texture).

    Evaluate it on ``bam_synth: {labels: scene}``. The object carries no information about the
    scene, so attribution inside the object mask should be low.
    """

    version: ClassVar[str] = "1"
    label_set: ClassVar[str] = "scene"
