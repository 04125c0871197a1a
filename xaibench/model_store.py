"""Trained models by cache key: load cached weights, or build, fit, evaluate and store them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from xaibench.cache import Cache, make_key
from xaibench.registry import key_params, plugin_version


def model_key(model: Any) -> str:
    """name, plugin version, params and revision (the training data) identify trained weights."""
    return make_key(
        {
            "kind": "model",
            "name": model.plugin_name,
            "version": plugin_version(model),
            "params": key_params(model),
            "revision": model.revision,
        }
    )


class ModelStore:
    """Gives each model plugin's trained module once per process, training at most once ever."""

    def __init__(self, cache: Cache, device: torch.device, log: Callable[[str], None] = print):
        self.cache = cache
        self.device = device
        self.log = log
        self.trained = 0  # models trained by this store (0 on a warm cache)
        self._loaded: dict[str, nn.Module] = {}

    def get(self, model: Any) -> nn.Module:
        key = model_key(model)
        if key in self._loaded:
            return self._loaded[key]
        module = model.build()
        stored = self.cache.load_model_state(key)
        if stored is not None:
            module.load_state_dict(stored[0])
        elif hasattr(model, "fit"):
            module = self._train(model, module, key)
        module = module.to(self.device).eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)  # attribution needs input gradients only
        self._loaded[key] = module
        return module

    def _train(self, model: Any, module: nn.Module, key: str) -> nn.Module:
        self.log(f"training {model.plugin_name} (first use; cached afterwards)")
        started = time.perf_counter()
        module = model.fit(module).eval()
        elapsed = time.perf_counter() - started
        evaluation = model.evaluate(module) if hasattr(model, "evaluate") else {}
        summary = ", ".join(f"{k} {v:.4f}" for k, v in evaluation.items())
        self.log(f"trained {model.plugin_name} in {elapsed:.1f}s{'; ' + summary if summary else ''}")
        self.trained += 1
        self.cache.save_model_state(
            key,
            {k: v.detach().cpu() for k, v in module.state_dict().items()},
            {
                "name": model.plugin_name,
                "params": dataclasses.asdict(model),
                "revision": model.revision,
                "train_seconds": elapsed,
                **evaluation,
            },
        )
        return module
