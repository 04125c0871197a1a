"""Which (model, dataset) and (dataset, metric) combinations of a manifest become jobs.

``options.pairing: product`` (the default): every model with every dataset and every metric on
every dataset. Any combination that cannot run is an error, so a typo in a setting is named by
``check`` before any work.

``options.pairing: matching``: each model runs only on the datasets it accepts, and each metric
only on the datasets that provide what it needs. This is what a study over several models, each
trained on its own data, needs (ground truth: a suppressor CNN on ``suppressor`` and one
``low_snr_cnn`` per noise level on ``low_snr`` at that level, in one manifest and one board).
Every listed model, dataset and metric must still be in at least one job, so a typo that pairs a
model with nothing is the same one-line error as under ``product``.

A model accepts a dataset when the input shape and class count agree and, for a model trained
on a dataset plugin of the same type, every setting that shapes items or splits agrees (else
"test" items may have been training items). Under ``matching``, a model that declares the
dataset plugin it trains on accepts only that plugin (a suppressor model is never scored on
``low_snr``, even with the same shape); models without one (pretrained, your own) pair by shape
and classes. No model is built or loaded here.
"""

from __future__ import annotations

from typing import Any

from xaibench import registry
from xaibench.errors import UserError

MODES = ("product", "matching")


class _OtherPlugin(str):
    """A model trained on another dataset plugin: true of every other plugin in the manifest, so
    the least telling reason when a model pairs with nothing."""


def model_dataset_problem(model_spec, data_spec, mode: str = "product") -> str | None:
    """Why this model cannot run on this dataset (one line without location), or None. Under
    ``matching``, a model trained on a dataset plugin also refuses every other dataset plugin."""
    model, data = model_spec.instance(), data_spec.instance()
    expected, classes, trained_on = _model_facts(model, model_spec, data)
    if mode == "matching" and trained_on is not None and type(trained_on) is not type(data):
        trained = type(trained_on).plugin_name
        return _OtherPlugin(f"model {model_spec.name!r} was trained on {trained!r}, not {data_spec.name!r}")
    if expected != tuple(data.shape):
        return (
            f"dataset {data_spec.name!r} gives inputs of shape {tuple(data.shape)} "
            f"but model {model_spec.name!r} expects {expected}; set matching size/channels parameters"
        )
    if classes is not None and classes != data.num_classes:
        return (
            f"dataset {data_spec.name!r} has {data.num_classes} classes but model "
            f"{model_spec.name!r} predicts {classes}; use a model trained on this label set"
        )
    if type(trained_on) is type(data):
        mine, theirs = registry.key_params(data), registry.key_params(trained_on)
        differing = sorted(k for k in mine if mine[k] != theirs.get(k))
        if differing:
            settings = ", ".join(f"{k}: {mine[k]} (model trained with {theirs.get(k)})" for k in differing)
            return (
                f"{data_spec.name!r} differs from the data {model_spec.name!r} was trained on: {settings}; "
                f"use the same settings for both"
            )
    return None


def dataset_metric_problem(data_spec, metric_spec) -> str | None:
    """Why this metric cannot score this dataset's items (what it needs that is missing), or None."""
    provides = getattr(type(data_spec.instance()), "provides", frozenset())
    metric = metric_spec.instance()
    # A metric whose needs depend on its parameters (mass_in_mask's `mask`) says so itself.
    needs = metric.requirements() if hasattr(metric, "requirements") else type(metric).requires
    missing = sorted(set(needs) - set(provides))
    if not missing:
        return None
    return (
        f"metric {metric_spec.name!r} requires {', '.join(missing)}, which dataset {data_spec.name!r} "
        f"does not provide (it provides: {', '.join(sorted(provides)) or 'nothing extra'})"
    )


def pairs(models, datasets, metrics, mode: str) -> tuple[frozenset, frozenset]:
    """The allowed (model, dataset) and (dataset, metric) spec pairs; raises a UserError naming
    the first combination that cannot run (``product``) or the first plugin left in no job
    (``matching``)."""
    model_data = _allowed(models, datasets, lambda m, d: model_dataset_problem(m, d, mode), mode, "model", "datasets")
    data_metric = _allowed(datasets, metrics, dataset_metric_problem, mode, "dataset", "metrics")
    if mode == "matching":
        # A dataset that no model accepts, or that no metric can score, would run nothing.
        for data_spec in datasets:
            if not any(d == data_spec for _, d in model_data):
                why = _telling([model_dataset_problem(m, data_spec, mode) for m in models])
                raise UserError(f"{data_spec.where}: no model in the manifest accepts this dataset ({why})")
        for metric_spec in metrics:
            if not any(m == metric_spec for _, m in data_metric):
                why = dataset_metric_problem(datasets[0], metric_spec)
                raise UserError(f"{metric_spec.where}: no dataset in the manifest suits this metric ({why})")
    return model_data, data_metric


def _allowed(lefts, rights, problem, mode: str, left_kind: str, right_kinds: str) -> frozenset:
    """Pairs of (left, right) whose ``problem`` is None. Under ``product`` the first problem is an
    error at the right-hand spec; under ``matching`` a left spec with no partner is one at its own."""
    allowed = set()
    for left in lefts:
        problems = []
        for right in rights:
            found = problem(left, right)
            if found is None:
                allowed.add((left, right))
            elif mode == "product":
                # Located at the right-hand entry (the dataset for a model, the metric for a
                # dataset), as before pairing existed: that is the setting users change.
                raise UserError(f"{right.where}: {found}")
            else:
                problems.append(found)
        if mode == "matching" and not any(pair[0] == left for pair in allowed):
            message = f"{left_kind} {left.name!r} suits none of the manifest's {right_kinds} ({_telling(problems)})"
            raise UserError(f"{left.where}: {message}")
    return frozenset(allowed)


def _telling(problems: list[str | None]) -> str:
    """The problem most worth reading: a setting that differs on the right dataset plugin (a
    typo) rather than "trained on another plugin", which holds for every other dataset."""
    found = [p for p in problems if p is not None]
    specific = [p for p in found if not isinstance(p, _OtherPlugin)]
    return str((specific or found)[0])


def _model_facts(model: Any, spec, data: Any) -> tuple[tuple, int | None, Any]:
    """(input shape, classes, training data) a model declares. A model that builds its training
    data lazily only meets a range check of that data here: it is the model's setting, named so."""
    try:
        expected = tuple(getattr(model, "input_shape", data.shape))
        trained_on = model.train_data() if hasattr(model, "train_data") else None
        # A model that declares no class count predicts those of the data it is trained on.
        classes = getattr(model, "num_classes", getattr(trained_on, "num_classes", None))
    except (ValueError, TypeError, OverflowError) as error:
        raise UserError(f"{spec.where}: {error}") from None
    return expected, classes, trained_on
