"""Checks that need no trained weights, run by `check`, `plan` and `run` before any work.

Each dataset's split must exist and each (model, method) pair must be compatible (a CAM
method needs a hookable spatial layer); what each metric needs of its datasets is checked with
the manifest (``xaibench.pairing``). The pair check builds the model, which imports torch
(seconds). A pair found compatible is remembered in the cache (``checks/<key>.ok``, keyed by
both plugins' names, versions, full parameters, the model's revision and xaibench's version),
so rechecking or rerunning an unchanged manifest answers at once; a failure is never remembered.
"""

from __future__ import annotations

from pathlib import Path

from xaibench import __version__
from xaibench.atomic import write_bytes
from xaibench.cache import Cache
from xaibench.errors import IncompatibleError, UserError
from xaibench.keys import make_key
from xaibench.manifest import Manifest
from xaibench.registry import canonical_params, plugin_version


def preflight(manifest: Manifest, cache: Cache | None = None) -> None:
    """Raise a UserError naming the first problem found; return when the manifest can run."""
    _check_splits(manifest)
    retraining = [m.name for m in manifest.metrics if hasattr(m.instance(), "needs")]
    checks = (cache or Cache()).root / "checks"
    for model_spec in manifest.models:
        if retraining and not hasattr(model_spec.instance(), "fit"):
            raise UserError(
                f"{model_spec.where}: metric {retraining[0]!r} retrains the model, and model "
                f"{model_spec.name!r} cannot be trained (it has no fit); use a trainable model"
            )
        pending = []
        for method_spec in manifest.methods:
            method = method_spec.instance()
            if hasattr(method, "check"):
                marker = checks / f"{_pair_key(model_spec.instance(), method)}.ok"
                if not marker.is_file():
                    pending.append((method_spec, method, marker))
        if not pending:
            continue
        module = _build(model_spec)
        for method_spec, method, marker in pending:
            try:
                method.check(module)
            except IncompatibleError as error:
                raise UserError(f"{method_spec.where}: with model {model_spec.name!r}: {error}") from None
            _remember(marker)


def _check_splits(manifest: Manifest) -> None:
    for dataset_spec in manifest.datasets:
        try:
            dataset_spec.instance().count(manifest.options.split)
        except UserError as error:
            raise UserError(f"{dataset_spec.where}: {error}") from None


def _build(model_spec):
    try:
        return model_spec.instance().build()
    except UserError as error:
        raise UserError(f"{model_spec.where}: {error}") from None
    except (ValueError, TypeError, RuntimeError, OverflowError) as error:
        # A parameter the plugin accepted but cannot build with: one line, never a traceback.
        raise UserError(f"{model_spec.where}: model {model_spec.name!r} cannot be built: {error}") from None


def _pair_key(model, method) -> str:
    def identity(plugin) -> dict:
        return {"name": type(plugin).plugin_name, "version": plugin_version(plugin), "params": canonical_params(plugin)}

    return make_key(
        {
            "kind": "compatible",
            "xaibench": __version__,
            "model": {**identity(model), "revision": model.revision},
            "method": identity(method),
        }
    )


def _remember(marker: Path) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(marker, b"")
    except OSError:  # a read-only cache only costs the next check its model build
        pass
