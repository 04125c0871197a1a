"""``roar_mask_classifier``: the mask-leakage diagnostic of ROAR (PROTOCOLS.md, "ROAR"), as a
trainable model so the fitted-model store keys, caches and parallelises it like any retrain.

ROAD (Rong et al., ICML 2022) showed that ROAR can be confounded: the shape of the removed
region alone may reveal the class. This "model" is multinomial logistic regression
(scikit-learn's ``LogisticRegression``, lbfgs, deterministic) on the flattened binary removal
masks (inputs (N, 1, H, W) in {0, 1}, as ``RoarRemoval(output="masks")`` gives them), copied
into an ``nn.Linear`` so it predicts like any other model. Its held-out accuracy near chance
means the masks carry no label information; well above chance means a ROAR row is confounded.
Not an image model: it exists for the ``roar`` metric, which plans one fit per (method,
fraction, mode). Cost: well under a second per fit on digits (1,437 masks of 64 pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

from xaibench.api import TrainingSet
from xaibench.models.small_cnn import dataset_instance
from xaibench.registry import register


@register("model", "roar_mask_classifier")
@dataclass(frozen=True)
class RoarMaskClassifier:
    """Mask-leakage classifier of the ``roar`` metric: logistic regression on binary removal masks.

    ``dataset``/``dataset_params`` name the data whose masks it learns; ``C`` is the inverse L2
    regularisation strength. Its input is a removal mask, never an image.
    """

    version: ClassVar[str] = "1"
    dataset: str = "digits"
    dataset_params: dict[str, Any] = field(default_factory=dict, hash=False)
    C: float = 1.0
    max_iter: int = 2000

    def __post_init__(self):
        if not isinstance(self.dataset_params, dict):
            raise ValueError(f"dataset_params must be a mapping, got {self.dataset_params!r}")
        if not 0.0 < self.C <= 1e6:
            raise ValueError(f"C must be in (0, 1e6], got {self.C}")
        if not 1 <= self.max_iter <= 100_000:
            raise ValueError(f"max_iter must be between 1 and 100000, got {self.max_iter}")
        self.train_data()

    def train_data(self):
        return dataset_instance(self.dataset, self.dataset_params)

    @property
    def revision(self) -> str:
        data = self.train_data()
        return f"{type(data).plugin_name}:{data.revision}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, h, w = self.train_data().shape
        return (1, h, w)

    def build(self) -> nn.Module:
        from torch import nn

        _, h, w = self.train_data().shape
        return nn.Sequential(nn.Flatten(), nn.Linear(h * w, self.train_data().num_classes))

    def fit(self, module: nn.Module, data: TrainingSet, seed: int, device: torch.device) -> nn.Module:
        """Fit scikit-learn's logistic regression on the masks and copy its weights into ``module``."""
        import torch
        from sklearn.linear_model import LogisticRegression

        features = data.inputs.flatten(1).double().numpy()
        labels = data.labels.numpy()
        classifier = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=seed)
        classifier.fit(features, labels)
        linear = module[1]
        weight = torch.zeros_like(linear.weight, dtype=torch.float64)
        bias = torch.full_like(linear.bias, -1e4, dtype=torch.float64)  # a class absent from training never wins
        coef, intercept = torch.from_numpy(classifier.coef_), torch.from_numpy(classifier.intercept_)
        classes = torch.as_tensor(classifier.classes_, dtype=torch.long)
        if len(classes) == 2:  # binary: sklearn keeps one row, the log-odds of classes_[1]
            coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros(1), intercept])
        weight[classes], bias[classes] = coef, intercept.double()
        with torch.no_grad():
            linear.weight.copy_(weight.float())
            linear.bias.copy_(bias.float())
        return module.to(device).eval()
