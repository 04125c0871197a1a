"""Sanity checks: does a map change when the model's weights or training labels are randomised?

Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018); Sixt et al., "When
Explanations Lie" (ICML 2020); Hedström et al., "Sanity Checks Revisited" (2023). See the Sanity
checks section of PROTOCOLS.md. Every score here compares maps of the method under evaluation
with each other, by a similarity measure from ``xaibench.similarity`` (``similarity`` param,
``spearman_abs`` by default); the comparison is to the original model's map inside the metric,
so ``reference`` is ``"original"``, not the ``random`` method. Lower similarity means the map
depends more on what was randomised: lower is better, and a method *passes* a check when its
mean similarity is below 0.5 (``gate_schema.SANITY_PASS``: the score and threshold per metric,
which the ``passes`` gate and the sanity board use; the gate takes another ``value``).
A model-independent map (``sobel``, ``random`` with its seeded noise) keeps similarity 1.

Layers: the modules with parameters of their own and their own initialiser
(``reset_parameters``: Conv, Linear, BatchNorm, LayerNorm, ...), in the order a forward pass
first calls them; they are randomised from the logits towards the input. Modules with
parameters but no initialiser (a ViT's position embedding) are left alone. Each layer is
re-initialised on the CPU with its own initialiser under a seed made of the job-level ``seed``
and its position from the top, so every method, both modes and every device see the same
random weights (not the items' seeds). The model passed in is never changed: the metric works
on a ``copy.deepcopy``.

BatchNorm (and any layer with buffers): ``reset_parameters`` would also reset the running mean
and variance to 0 and 1, which forgets the scale of the activations below and can blow the
randomised network up; so only the layer's parameters (BatchNorm's affine weight and bias, to 1
and 0 by its own initialiser) are re-initialised and its buffers (running statistics) are kept.
A randomised model therefore gives finite outputs whenever the original did.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from torch import Tensor, nn

from xaibench.api import Batch, Curve, Explain
from xaibench.imaging import importance_map
from xaibench.metrics.perturbation import Reduce
from xaibench.registry import register
from xaibench.seeding import item_seed, per_item
from xaibench.similarity import CONSTANT_MAP_REASON, Similarity, check_name, similarity

CASCADING_LABEL = "layers randomised"
INDEPENDENT_LABEL = "layer randomised (from the top)"


def _initialiser(module: nn.Module):
    return getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)


def parameter_layers(model: nn.Module, inputs: Tensor) -> list[tuple[str, nn.Module]]:
    """Modules with own parameters and an initialiser, in the order a forward pass first calls them."""
    import torch

    candidates = {
        name: module
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False)) and callable(_initialiser(module))
    }
    order: list[str] = []
    handles = [
        module.register_forward_hook(lambda m, i, o, name=name: order.append(name) if name not in order else None)
        for name, module in candidates.items()
    ]
    try:
        with torch.no_grad():
            model(inputs[:1])
    finally:
        for handle in handles:
            handle.remove()
    return [(name, candidates[name]) for name in order]


def reinitialise(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module``'s own parameters in place with its own initialiser, seeded, on the
    CPU (device-independent weights); buffers such as BatchNorm running statistics are kept."""
    import torch

    fresh = copy.deepcopy(module).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            _initialiser(fresh)()
    own = dict(fresh.named_parameters(recurse=False))
    with torch.no_grad():
        for name, parameter in module.named_parameters(recurse=False):
            parameter.copy_(own[name].to(parameter.device, parameter.dtype))


def layer_seed(seed: int, position: int) -> int:
    """The seed of the layer ``position`` places from the top (0 = the logits layer)."""
    return item_seed(seed, f"layer:{position}", "model_randomization")


def _own_state(module: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters(recurse=False)}


def _restore(module: nn.Module, state: dict[str, Tensor]) -> None:
    import torch

    with torch.no_grad():
        for name, parameter in module.named_parameters(recurse=False):
            parameter.copy_(state[name])


def randomised_maps(model, inputs, target, explain, mode: str, seed: int):
    """Yield (step, maps) for each randomisation step: cascading from the top, or one layer at a time."""
    copy_ = copy.deepcopy(model)
    layers = parameter_layers(copy_, inputs)[::-1]  # from the logits towards the input
    if not layers:
        raise ValueError("the model has no layers with parameters and an initialiser to randomise")
    for position, (_, layer) in enumerate(layers):
        saved = _own_state(layer) if mode == "independent" else None
        reinitialise(layer, layer_seed(seed, position))
        yield position + 1, len(layers), explain(copy_, inputs, target).detach()
        if saved is not None:
            _restore(layer, saved)


def fully_randomised(model: nn.Module, inputs: Tensor, seed: int) -> nn.Module:
    """A copy of ``model`` with every layer randomised (the last step of the cascade)."""
    copy_ = copy.deepcopy(model)
    for position, (_, layer) in enumerate(parameter_layers(copy_, inputs)[::-1]):
        reinitialise(layer, layer_seed(seed, position))
    return copy_


def _check(similarity_name: str, seed: int) -> None:
    check_name(similarity_name)
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be between 0 and 2**63 - 1, got {seed}")


@register("metric", "model_randomization")
@dataclass(frozen=True)
class ModelRandomization:
    """Model parameter randomization test (Adebayo et al., NeurIPS 2018): similarity of the map
    on a progressively (``cascading``, top-down) or singly (``independent``) randomised model to
    the original map, per layer step; lower is better (the map depends on the weights).

    Scores: ``similarity``, a curve over the steps (x = layers randomised, or for independent the
    layer's position from the top), and for cascading ``final``, the similarity after every layer
    is randomised (pass: mean below 0.5). Cost: one explanation per layer per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = False
    invalid_reason: ClassVar[str] = CONSTANT_MAP_REASON  # why a row is NaN: stored with it
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "original"
    mode: Literal["cascading", "independent"] = "cascading"
    similarity: Similarity = "spearman_abs"
    seed: int = 0

    def __post_init__(self):
        if self.mode not in ("cascading", "independent"):
            raise ValueError(f"mode must be cascading or independent, got {self.mode!r}")
        _check(self.similarity, self.seed)

    def score(
        self, model: nn.Module, batch: Batch, target: Tensor, attributions: Tensor, explain: Explain, seeds: Tensor
    ) -> dict[str, Tensor | Curve]:
        import torch

        columns = []
        for _, _, maps in randomised_maps(model, batch.inputs, target, explain, self.mode, self.seed):
            columns.append(similarity(self.similarity, maps, attributions))
        values = torch.stack(columns, 1)
        x = torch.arange(1, values.shape[1] + 1, dtype=torch.float32)
        label = CASCADING_LABEL if self.mode == "cascading" else INDEPENDENT_LABEL
        out: dict[str, Tensor | Curve] = {"similarity": Curve(x, values, label, {"model_role": "randomized"})}
        if self.mode == "cascading":
            out["final"] = values[:, -1]
        return out


@register("metric", "data_randomization")
@dataclass(frozen=True)
class DataRandomization:
    """Data randomization test (Adebayo et al., NeurIPS 2018): similarity between the method's
    map on a model of the same architecture trained on permuted training labels and its map on
    the original model, for the original targets. Lower is better (pass: mean below 0.5).

    The permuted-label model is a cached fit (``transforms.PermutedLabels``, role
    ``permuted_labels``), trained once per cache with ``epochs`` (the model plugin's own when 0)
    so that it memorises the training set: digits_cnn reaches train accuracy 1.0 on permuted
    labels with 100 epochs (43 s on one core; test accuracy 0.13, chance). Cost: one fit, one
    explanation per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = False
    invalid_reason: ClassVar[str] = CONSTANT_MAP_REASON  # why a row is NaN: stored with it
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "original"
    similarity: Similarity = "spearman_abs"
    seed: int = 0
    epochs: int = 100

    def __post_init__(self):
        _check(self.similarity, self.seed)
        if not 0 <= self.epochs <= 1000:
            raise ValueError(f"epochs must be between 0 (the model's own) and 1000, got {self.epochs}")

    def needs(self, job, fit, options):
        from xaibench.fitting import FitSpec
        from xaibench.manifest import PluginSpec
        from xaibench.task_types import Needs
        from xaibench.transforms import PermutedLabels

        model = fit.model
        params = model.params
        if self.epochs and "epochs" in params:  # memorising random labels takes longer than learning digits
            params = {**params, "epochs": self.epochs}
            model = PluginSpec(model.kind, model.name, _canonical(params), model.where)
        spec = FitSpec(model, PermutedLabels(seed=self.seed), role="permuted_labels")
        return Needs(fits=(("permuted_labels", spec),))

    def score(self, model, batch, target, attributions, explain, seeds, fitted) -> dict[str, Tensor]:
        maps = explain(fitted["permuted_labels"], batch.inputs, target).detach()
        return {"similarity": similarity(self.similarity, maps, attributions)}


def _canonical(params: dict) -> str:
    import json

    return json.dumps(params, sort_keys=True, separators=(",", ":"))


@register("metric", "random_logit")
@dataclass(frozen=True)
class RandomLogit:
    """Random logit test (Sixt et al., ICML 2020): similarity between the map for the explained
    class and the map for a random other class (drawn per item from its seed). Lower is better:
    a class-sensitive method explains another class differently (pass: mean below 0.5).
    Cost: one explanation per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = False
    invalid_reason: ClassVar[str] = CONSTANT_MAP_REASON  # why a row is NaN: stored with it
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "original"
    similarity: Similarity = "spearman_abs"

    def __post_init__(self):
        check_name(self.similarity)

    def score(self, model, batch, target, attributions, explain, seeds) -> dict[str, Tensor]:
        import torch

        with torch.no_grad():
            classes = model(batch.inputs[:1]).shape[1]
        if classes < 2:
            raise ValueError("random_logit needs a model with at least two classes")
        shift = per_item(seeds, lambda g: torch.randint(1, classes, (), generator=g)).to(target.device)
        other = (target + shift) % classes  # uniform over the other classes
        maps = explain(model, batch.inputs, other).detach()
        return {"similarity": similarity(self.similarity, maps, attributions)}


def discrete_entropy(maps: Tensor, bins: int, reduce: str) -> Tensor:
    """Entropy (nats) of the histogram of each item's importance values over ``bins`` equal bins
    between its minimum and maximum; 0 for a constant map."""
    import torch

    pixel = importance_map(maps.detach().double(), reduce)
    low, high = pixel.min(1, keepdim=True).values, pixel.max(1, keepdim=True).values
    span = torch.where(high > low, high - low, torch.ones_like(high))
    index = ((pixel - low) / span * bins).long().clamp(0, bins - 1)
    counts = torch.zeros(pixel.shape[0], bins, dtype=torch.float64, device=pixel.device)
    counts.scatter_add_(1, index, torch.ones_like(pixel))
    p = counts / counts.sum(1, keepdim=True)
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)
    return torch.where(torch.isfinite(pixel).all(1), entropy, torch.full_like(entropy, float("nan")))


@register("metric", "emprt")
@dataclass(frozen=True)
class EMPRT:
    """Efficient MPRT (Hedström et al., "Sanity Checks Revisited", 2023): relative rise in
    explanation complexity from the original to the fully randomised model,
    H(map on randomised) / H(map on original) - 1, where H is the discrete entropy of the map's
    histogram (``bins`` equal bins, ``reduce`` over channels). Higher is better: a map of a
    random network should be noisier. Hedström et al. report the ratio (this plus 1). NaN when
    the original map is constant (H = 0). Cost: one explanation per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "original"
    bins: int = 100
    reduce: Reduce = "sum"
    seed: int = 0

    def __post_init__(self):
        if not 2 <= self.bins <= 100_000:
            raise ValueError(f"bins must be between 2 and 100000, got {self.bins}")
        _check("spearman_abs", self.seed)

    def score(self, model, batch, target, attributions, explain, seeds) -> dict[str, Tensor]:
        import torch

        randomised = fully_randomised(model, batch.inputs, self.seed)
        maps = explain(randomised, batch.inputs, target).detach()
        before = discrete_entropy(attributions, self.bins, self.reduce)
        after = discrete_entropy(maps, self.bins, self.reduce)
        rise = after / torch.where(before > 0, before, torch.ones_like(before)) - 1
        return {"rise": torch.where(before > 0, rise, torch.full_like(rise, float("nan"))).float()}


@register("metric", "smprt")
@dataclass(frozen=True)
class SMPRT:
    """Smooth MPRT (Hedström et al., "Sanity Checks Revisited", 2023): cascading model
    randomization where each map, original and randomised, is first averaged over ``samples``
    noisy copies of the input (Gaussian noise of std ``noise`` on inputs in [0, 1], drawn per item
    from its seed, not clipped), which removes shattered-gradient noise before comparing.
    Scores as ``model_randomization``: a ``similarity`` curve and ``final``; lower is better.
    Cost: ``samples`` x (layers + 1) explanations per item."""

    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = False
    invalid_reason: ClassVar[str] = CONSTANT_MAP_REASON  # why a row is NaN: stored with it
    requires: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = "original"
    samples: int = 10
    noise: float = 0.1
    similarity: Similarity = "spearman_abs"
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.samples <= 1000:
            raise ValueError(f"samples must be between 1 and 1000, got {self.samples}")
        if not 0.0 <= self.noise <= 10.0:
            raise ValueError(f"noise must be between 0 and 10, got {self.noise}")
        _check(self.similarity, self.seed)

    def score(self, model, batch, target, attributions, explain, seeds) -> dict[str, Tensor | Curve]:
        import torch

        inputs, k = batch.inputs, self.samples
        noise = per_item(seeds, lambda g: torch.randn(k, *inputs.shape[1:], generator=g)).to(inputs.device)
        noisy = (inputs.unsqueeze(1) + self.noise * noise).flatten(0, 1)  # item-major copies
        noisy_target = target.repeat_interleave(k)

        def smooth(m: nn.Module) -> Tensor:
            return explain(m, noisy, noisy_target).detach().view(len(inputs), k, *inputs.shape[1:]).mean(1)

        original = smooth(model)
        columns = [
            similarity(self.similarity, maps.view(len(inputs), k, *inputs.shape[1:]).mean(1), original)
            for _, _, maps in randomised_maps(model, noisy, noisy_target, explain, "cascading", self.seed)
        ]
        values = torch.stack(columns, 1)
        x = torch.arange(1, values.shape[1] + 1, dtype=torch.float32)
        curve = Curve(x, values, CASCADING_LABEL, {"model_role": "randomized"})
        return {"similarity": curve, "final": values[:, -1]}
