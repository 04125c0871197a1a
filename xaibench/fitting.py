"""The fitted-model store: trained weights by fit key, trained at most once ever.

A fit is (model plugin, training data + transform, seed). Fits of one plugin coexist: the
original, a label-permuted retrain, ROAR at fraction f and repeat r. Each is stored under its
fit key (``keys.fit_key``) with a JSON record of train and test accuracy, training time and the
environment it ran in (thread count, torch version, device, CPU).

Determinism: fits always run with ``keys.FIT_THREADS`` intra-op threads, whatever ``--threads``
says, because a different thread count changes the order of float reductions in the backward
pass and so the weights (measured on digits_cnn: up to 0.42 apart between 1 and 2 threads). So a
fit in-process, on a Dask worker or on a laptop gives identical weights on the same CPU
architecture and torch version; what can still differ (GPU against CPU, torch versions) is
recorded in the record's ``environment``.

Concurrency: training takes an exclusive file lock per fit key, so two runs sharing a cache
train a model once; the second waits and loads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

from xaibench import keys, provenance
from xaibench.api import TrainingSet
from xaibench.cache import Cache
from xaibench.errors import UserError
from xaibench.manifest import PluginSpec

ORIGINAL = "original"


@dataclass(frozen=True)
class FitSpec:
    """One fit: a model plugin, an optional training-data transform, a seed, and its role."""

    model: PluginSpec
    transform: Any = None  # a transforms.* instance, or None for the plugin's own data
    seed: int | None = None  # None: the model plugin's own ``seed`` parameter (or 0)
    role: str = ORIGINAL
    labels: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # e.g. repeat

    def instance(self):
        return self.model.instance()

    @property
    def trainable(self) -> bool:
        return hasattr(self.instance(), "fit")

    def fit_seed(self) -> int:
        if self.seed is not None:
            return self.seed
        return int(getattr(self.instance(), "seed", 0))

    def key(self) -> str:
        """The fit key; a model without ``fit`` (weights from a file) is keyed by its model key."""
        model = self.instance()
        model_key = keys.model_key(model)
        if not hasattr(model, "fit"):
            if self.transform is not None or self.seed is not None:
                # Never hand back the pretrained weights as if they were a retrain.
                raise UserError(
                    f"model {self.model.name!r} cannot be trained (it has no fit), so it cannot be "
                    f"retrained for {self.role}; use a trainable model such as digits_cnn or small_cnn"
                )
            return model_key
        train = keys.data_key(model.train_data(), "train")
        transform = None
        if self.transform is not None:
            # Every field of a dataclass transform is part of its identity, whatever params() forgets.
            fields = dataclasses.asdict(self.transform) if dataclasses.is_dataclass(self.transform) else {}
            transform = keys.transform_key(self.transform.name, {**fields, **self.transform.params()})
        return keys.fit_key(model_key, train, transform, self.fit_seed())


def training_set(dataset: Any, split: str) -> TrainingSet:
    """A whole split in memory (the built-in training sets are a few thousand small images)."""
    import torch

    batches = list(dataset.batches(split, batch_size=1024))
    if not batches:
        raise UserError(f"dataset {type(dataset).plugin_name!r} has no items in split {split!r} to train on")
    return TrainingSet(
        inputs=torch.cat([b.inputs for b in batches]),
        labels=torch.cat([b.labels for b in batches]),
        ids=[i for b in batches for i in b.ids],
        key=keys.data_key(dataset, split),
    )


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def accuracy(module: nn.Module, data: TrainingSet, device: torch.device) -> float:
    import torch

    with torch.no_grad():
        predictions = torch.cat([module(chunk.to(device)).argmax(1).cpu() for chunk in data.inputs.split(512)])
    return (predictions == data.labels).float().mean().item()


class FittedModels:
    """Gives each fit's module once per process, training it at most once ever (per cache)."""

    def __init__(self, cache: Cache, device: torch.device, log: Callable[[str], None] = print, context: Any = None):
        self.cache = cache
        self.device = device
        self.log = log
        self.context = context  # handed to transforms (e.g. ROAR reads cached attributions)
        self.trained = 0
        self._loaded: dict[str, nn.Module] = {}

    def is_done(self, spec: FitSpec) -> bool:
        return not spec.trainable or self.cache.has_model_state(spec.key())

    def record(self, spec: FitSpec) -> dict[str, Any] | None:
        return self.cache.model_record(spec.key())

    def get(self, spec: FitSpec) -> nn.Module:
        """The fitted module in eval mode on the device, parameters frozen."""
        key = spec.key()
        if key in self._loaded:
            return self._loaded[key]
        model = spec.instance()
        module = self._load_or_train(spec, model, key) if hasattr(model, "fit") else model.build()
        module = module.to(self.device).eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)  # attribution needs input gradients only
        self._loaded[key] = module
        return module

    def _build(self, model: Any, seed: int) -> nn.Module:
        import torch

        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
            torch.manual_seed(seed)
            return model.build()

    def _load_or_train(self, spec: FitSpec, model: Any, key: str) -> nn.Module:
        module = self._build(model, spec.fit_seed())
        stored = self.cache.load_model_state(key)
        if stored is None:
            with self._lock(key):
                stored = self.cache.load_model_state(key)  # another process may have trained it meanwhile
                if stored is None:
                    return self._train(spec, model, module, key)
        module.load_state_dict(stored[0])
        return module

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        self.cache.ensure_writable()
        path = self.cache.root / "models" / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _train(self, spec: FitSpec, model: Any, module: nn.Module, key: str) -> nn.Module:
        name = model.plugin_name if spec.role == ORIGINAL else f"{model.plugin_name} ({spec.role})"
        self.log(f"training {name} (first use; cached afterwards)")
        dataset = model.train_data()
        train, test = training_set(dataset, "train"), training_set(dataset, "test")
        if spec.transform is not None:
            train = spec.transform.apply(train, "train", self.context)
            test = spec.transform.apply(test, "test", self.context)
        started = time.perf_counter()
        with pinned_threads(keys.FIT_THREADS):
            module = model.fit(module.to(self.device), train, spec.fit_seed(), self.device).eval()
            elapsed = time.perf_counter() - started
            train_accuracy = accuracy(module, train, self.device)
            test_accuracy = accuracy(module, test, self.device)
        self.log(
            f"trained {name} in {elapsed:.1f}s; train accuracy {train_accuracy:.4f}, test accuracy {test_accuracy:.4f}"
        )
        self.trained += 1
        self.cache.save_model_state(
            key,
            {k: v.detach().cpu() for k, v in module.state_dict().items()},
            {
                "name": model.plugin_name,
                "params": dataclasses.asdict(model),
                "revision": model.revision,
                "role": spec.role,
                "transform": None
                if spec.transform is None
                else {"name": spec.transform.name, **spec.transform.params()},
                "seed": spec.fit_seed(),
                "fit_key": key,
                "train_seconds": elapsed,
                "train_accuracy": train_accuracy,
                "test_accuracy": test_accuracy,
                "environment": {**provenance.environment(str(self.device)), "threads": keys.FIT_THREADS},
            },
        )
        return module
