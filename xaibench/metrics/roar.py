"""ROAR: RemOve And Retrain, and KAR: Keep And Retrain (Hooker et al., "A Benchmark for
Interpretability Methods in Deep Neural Networks", NeurIPS 2019), PROTOCOLS.md "ROAR".

With the job's trained model, the job's method attributes every train and test image (whole-split
attribute tasks, cached, shared by every fraction and repeat). For each mode (ROAR / KAR),
fraction f and repeat r, a fresh model of the same architecture is trained on the training split
with the top-f pixels removed (ROAR) or all but the top-f removed (KAR), filled by the training
mean or by noisy linear imputation (``xaibench.transforms_roar``); each retrain is a keyed fit
task, so an interrupted sweep resumes and nothing is ever trained twice. The unmodified model is
retrained once per repeat as the reference (x = 0).

Scores per test item (every entry is a one-point ``Curve`` at x = fraction, labelled with its
``repeat``, ``model_role`` and ``fit_key``, so each row names the model that produced it):
- ``roar``: 1 if the ROAR retrain classifies the item, with the same removal, correctly.
  Lower is better: a faithful method removes the evidence, so accuracy falls faster than for
  ``random``.
- ``kar``: the same for KAR. Higher is better: a faithful method keeps the evidence.
- ``reference``: correctness of the unmodified retrain on the unmodified item (x = 0).
  Higher is better (it is the same for every method: the ceiling of both curves).
- ``leakage_roar``, ``leakage_kar``: correctness of the mask-leakage classifier (logistic
  regression on the binary removal masks of the train split alone, ``roar_mask_classifier``,
  one fit per (method, fraction, mode), independent of repeats) on the item's mask. Lower is
  better: accuracy well above chance means the removal's shape reveals the class and the
  method's ROAR row is confounded (the board flags it).

Seeds: repeat r's retrains (every mode and fraction) and its reference share one seed derived
from (the model's seed, r), so the curves of one repeat are paired; it never equals the
original fit's seed. ``retrain_epochs`` (None: the model's own recipe) makes every retrain, the
reference included, train for fewer epochs; the original model keeps its recipe.

Cost: len(fractions) x repeats x (1 or 2 modes) retrains per method, plus ``repeats`` reference
retrains per model and one leakage fit per (method, fraction, mode); scoring is one forward pass
per retrain per item.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench import keys, registry
from xaibench.api import Batch, Curve, Explain
from xaibench.errors import UserError
from xaibench.fitting import FitSpec
from xaibench.manifest import PluginSpec
from xaibench.registry import register
from xaibench.seeding import item_seed
from xaibench.task_types import Needs
from xaibench.tasks import split_attribution_key
from xaibench.transforms_roar import FILLS, MODES, REDUCES, RoarRemoval, fill, removal_masks, training_mean

RETRAINED, REFERENCE, LEAKAGE = "retrained", "retrained_reference", "leakage"


def retrain_seed(model_seed: int, repeat: int) -> int:
    """Repeat ``repeat``'s retrain seed: derived from (model seed, repeat), never the model's own seed."""
    seed = item_seed(model_seed, f"repeat-{repeat}", "roar-retrain")
    return seed if seed != model_seed else seed ^ 1


@register("metric", "roar")
@dataclass(frozen=True)
class Roar:
    """ROAR and KAR (Hooker et al., NeurIPS 2019): test accuracy of models retrained without
    (ROAR, lower is better) or with only (KAR, higher is better) each fraction of top pixels, and
    a mask-leakage diagnostic. Needs a trainable model (``fit``); see the module doc for the costs.

    ``target``: which class the training and test maps explain (``label`` or ``predicted``);
    ``fill``: ``mean`` (the training mean, published protocol) or ``nli`` (ROAD's imputation);
    ``retrain_epochs``: epochs of every retrain (None: the model's own ``epochs``).
    """

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "roar": False,
        "kar": True,
        "reference": True,
        "leakage_roar": False,
        "leakage_kar": False,
    }
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "random"

    fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    repeats: int = 3
    mode: Literal["roar", "kar", "both"] = "both"
    fill: Literal["mean", "nli"] = "mean"
    target: Literal["label", "predicted"] = "label"
    reduce: Literal["abs_sum", "sum", "max_abs"] = "abs_sum"
    retrain_epochs: int | None = None

    def __post_init__(self):
        fractions = tuple(self.fractions)
        if not fractions or not all(0.0 < f < 1.0 for f in fractions):
            raise ValueError(f"fractions must be a non-empty list of numbers in (0, 1), got {list(fractions)}")
        if any(b <= a for a, b in zip(fractions[:-1], fractions[1:], strict=True)):
            raise ValueError(f"fractions must be strictly increasing, got {list(fractions)}")
        if not 1 <= self.repeats <= 100:
            raise ValueError(f"repeats must be between 1 and 100, got {self.repeats}")
        if self.retrain_epochs is not None and not 1 <= self.retrain_epochs <= 1000:
            raise ValueError(f"retrain_epochs must be between 1 and 1000 (or null), got {self.retrain_epochs}")
        for name, value, allowed in (
            ("mode", self.mode, ("both", *MODES)),
            ("fill", self.fill, FILLS),
            ("target", self.target, ("label", "predicted")),
            ("reduce", self.reduce, REDUCES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        object.__setattr__(self, "fractions", fractions)

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.mode == "both" else (self.mode,)

    def needs(self, job: Any, fit: FitSpec, options: Any) -> Needs:
        """Whole-split maps (train and test) and every retrain, reference and leakage fit."""
        return _needs(self, job, fit, options)

    def score(
        self,
        model: nn.Module,
        batch: Batch,
        target: Tensor,
        attributions: Tensor,
        explain: Explain,
        seeds: Tensor,
        fitted: dict[str, nn.Module] | None = None,
    ) -> dict[str, Curve]:
        import torch

        if not fitted:
            raise ValueError("metric 'roar' scores retrained models: run it through the runner (xaibench run)")
        inputs, labels = batch.inputs, batch.labels
        if self.target == "label":
            wanted = labels
        else:
            with torch.no_grad():
                wanted = model(inputs).argmax(1)
        maps = attributions
        differ = wanted != target
        if differ.any():
            # The job's maps explain another class for these items (the manifest's target is not
            # this metric's): recompute them with the method and the items' own seeds.
            fresh = explain(model, inputs, wanted).detach()
            maps = torch.where(differ.view(-1, 1, 1, 1), fresh, attributions)
        masks = _Masks(maps, inputs, self.reduce, seeds)
        scores: dict[str, Curve] = {}
        with torch.no_grad():
            for name, module in fitted.items():
                info = json.loads(name)
                role, fraction = info["role"], info.get("fraction", 0.0)
                if role == REFERENCE:
                    data, entry = inputs, f"reference@r{info['repeat']}"
                elif role == RETRAINED:
                    data = masks.images(info["mode"], fraction, self.fill, tuple(info["fill_mean"]))
                    entry = f"{info['mode']}@{fraction:g}:r{info['repeat']}"
                else:
                    data = masks.removed(info["mode"], fraction).float()
                    entry = f"leakage_{info['mode']}@{fraction:g}"
                correct = (module(data).argmax(1) == labels).double()
                scores[entry] = Curve(
                    x=torch.tensor([fraction], dtype=torch.float64),
                    values=correct[:, None].cpu(),
                    x_label="fraction",
                    labels={"repeat": info.get("repeat"), "model_role": role, "fit_key": info["fit_key"]},
                )
        return scores


class _Masks:
    """Removal masks and filled images of a batch, computed once per (mode, fraction)."""

    def __init__(self, maps: Tensor, inputs: Tensor, reduce: str, seeds: Tensor):
        self.maps, self.inputs, self.reduce, self.seeds = maps, inputs, reduce, seeds
        self._removed: dict[tuple, Tensor] = {}
        self._images: dict[tuple, Tensor] = {}

    def removed(self, mode: str, fraction: float) -> Tensor:
        if (mode, fraction) not in self._removed:
            self._removed[mode, fraction] = removal_masks(self.maps, fraction, mode, self.reduce, self.seeds)
        return self._removed[mode, fraction]

    def images(self, mode: str, fraction: float, how: str, mean: tuple[float, ...]) -> Tensor:
        if (mode, fraction) not in self._images:
            self._images[mode, fraction] = fill(self.inputs, self.removed(mode, fraction), how, mean, self.seeds)
        return self._images[mode, fraction]


@functools.lru_cache(maxsize=256)  # plan() asks once per (job, item window)
def _needs(metric: Roar, job: Any, fit: FitSpec, options: Any) -> Needs:
    if not fit.trainable:
        raise UserError(
            f"metric roar retrains the model, but model {job.model.name!r} has no fit (weights from a file); "
            "use a trainable model such as digits_cnn, synthetic_cnn or small_cnn"
        )
    if options.split == "train":
        raise UserError("metric roar scores held-out items: set options.split to test")
    model = fit.instance()
    dataset = job.dataset.instance()
    if keys.data_key(dataset, "train") != keys.data_key(model.train_data(), "train"):
        raise UserError(
            f"metric roar retrains {job.model.name!r} on its own training data, which is not dataset "
            f"{job.dataset.display!r}'s train split; give the model and the dataset the same data parameters"
        )
    retrain = _retrain_spec(job.model, metric.retrain_epochs)
    train_key = split_attribution_key(job, fit, "train", metric.target)
    test_key = split_attribution_key(job, fit, "test", metric.target)
    mean = training_mean(job.dataset) if metric.fill == "mean" else ()
    model_seed = int(getattr(model, "seed", 0))
    fits: list[tuple[str, FitSpec]] = []

    def add(spec: FitSpec, **info: Any) -> None:
        fits.append((keys.canonical_json({**info, "fit_key": spec.key()}), spec))

    for repeat in range(metric.repeats):
        seed = retrain_seed(model_seed, repeat)
        add(FitSpec(retrain, None, seed, REFERENCE, {"repeat": repeat}), role=REFERENCE, repeat=repeat)
    classifier = _classifier_spec(job.dataset)
    for mode in metric.modes:
        for fraction in metric.fractions:
            removal = RoarRemoval(
                train_key, test_key, fraction, mode, metric.fill, mean, metric.reduce, job.seed, "images"
            )
            for repeat in range(metric.repeats):
                seed = retrain_seed(model_seed, repeat)
                spec = FitSpec(retrain, removal, seed, RETRAINED, {"repeat": repeat})
                add(spec, role=RETRAINED, mode=mode, fraction=fraction, repeat=repeat, fill_mean=list(mean))
            # masks do not depend on the fill: one leakage fit serves both fills
            masks = RoarRemoval(train_key, test_key, fraction, mode, "mean", (), metric.reduce, job.seed, "masks")
            add(FitSpec(classifier, masks, 0, LEAKAGE), role=LEAKAGE, mode=mode, fraction=fraction)
    return Needs(attributions=(("train", metric.target), ("test", metric.target)), fits=tuple(fits))


def _retrain_spec(model: PluginSpec, epochs: int | None) -> PluginSpec:
    if epochs is None:
        return model
    params = model.params
    if "epochs" not in params:
        raise UserError(f"metric roar: retrain_epochs is set, but model {model.name!r} has no epochs parameter")
    return _spec("model", model.name, {**params, "epochs": epochs}, f"{model.where} (roar retrain)")


def _classifier_spec(dataset: PluginSpec) -> PluginSpec:
    params = {"dataset": dataset.name, "dataset_params": dataset.params}
    return _spec("model", "roar_mask_classifier", params, f"{dataset.where} (roar leakage classifier)")


def _spec(kind: str, name: str, params: dict[str, Any], where: str) -> PluginSpec:
    full = registry.canonical_params(registry.build(kind, name, params, where))
    return PluginSpec(kind, name, keys.canonical_json(full), where)
