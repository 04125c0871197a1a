"""Every cache and result key recipe, in one place (DESIGN.md, Cache).

``key = sha256(canonical JSON of an explicit component mapping)``. Each recipe names its
components; golden tests (tests/test_keys.py) pin the hex of each, so changing a recipe is a
deliberate act that invalidates caches, never an accident.

- model: plugin name, version, key params, revision (what ``build`` depends on).
- data: dataset name, version, key params, revision, split.
- transform: a training-data transform's name and parameters (ROAR mask, permuted labels).
- fit: model key, training-data key, transform key (or none), seed, and the intra-op thread
  count of the fit (fits always run with ``FIT_THREADS`` threads, so the weights do not depend
  on the machine's cores: see ``fitting.py``).
- logits: fitted model and data.
- activations: fitted model, data, and the layer a CAM method reads (its name, or the
  automatic choice with the version of its rule), shared by every method on that layer.
- attribution: fitted model, data, method (name, version, key params), target mode, seed.
- score: attribution key, metric (name, version, key params).
Device and batch size are never in keys: they are provenance columns.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

FIT_THREADS = 1


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def make_key(components: dict[str, Any]) -> str:
    """The key of an explicit component mapping."""
    return hashlib.sha256(canonical_json(components).encode()).hexdigest()


def _plugin(plugin: Any) -> dict[str, Any]:
    from xaibench.registry import key_params, plugin_version

    return {"name": type(plugin).plugin_name, "version": plugin_version(plugin), "params": key_params(plugin)}


def model_key(model: Any) -> str:
    return make_key({"kind": "model", **_plugin(model), "revision": model.revision})


def data_key(dataset: Any, split: str) -> str:
    return make_key({"kind": "dataset", **_plugin(dataset), "revision": dataset.revision, "split": split})


def transform_key(name: str, params: dict[str, Any]) -> str:
    return make_key({"kind": "transform", "name": name, "params": params})


def fit_key(model_key_: str, train_data_key: str, transform_key_: str | None, seed: int) -> str:
    return make_key(
        {
            "kind": "fit",
            "model": model_key_,
            "train_data": train_data_key,
            "transform": transform_key_,
            "seed": seed,
            "threads": FIT_THREADS,
        }
    )


def logits_key(fit_key_: str, data_key_: str) -> str:
    return make_key({"model": fit_key_, "data": data_key_})


def activation_key(fit_key_: str, data_key_: str, layer: str) -> str:
    return make_key({"kind": "activations", "model": fit_key_, "data": data_key_, "layer": layer})


def attribution_key(fit_key_: str, data_key_: str, method: Any, target: str, seed: int) -> str:
    plugin = _plugin(method)
    return make_key(
        {
            "model": fit_key_,
            "data": data_key_,
            "method": plugin["name"],
            "version": plugin["version"],
            "params": plugin["params"],
            "target": target,
            "seed": seed,
        }
    )


def score_key(attribution_key_: str, metric: Any) -> str:
    plugin = _plugin(metric)
    return make_key(
        {
            "attribution": attribution_key_,
            "metric": plugin["name"],
            "version": plugin["version"],
            "params": plugin["params"],
        }
    )
