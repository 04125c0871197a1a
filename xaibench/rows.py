"""Result rows of one score task: shared columns, curves flattened to (item, x) rows, validity.

A metric's score is a (B,) tensor (one row per item, ``x`` NaN) or a ``Curve`` (one row per
item and point, with ``x`` and ``x_label``). A non-finite value is kept as it is, with
``valid`` false and a reason: a NaN or infinite attribution map invalidates every score of that
item ("attribution map has non-finite values"); a non-finite score marks its own row, with the
metric's ``invalid_reason`` class variable when it has one (e.g. a rank correlation with a
constant map). The board counts invalid rows per cell and never ranks, tests or gates them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from xaibench import provenance
from xaibench.api import Batch, Curve
from xaibench.registry import plugin_version

INVALID_MAP = "attribution map has non-finite values"
INVALID_SCORE = "score is not finite"


def higher_is_better(metric_cls: type, score: str) -> bool:
    """A metric's direction, per score when it declares a mapping (e.g. ROAD's MoRF vs LeRF)."""
    direction = metric_cls.higher_is_better
    if isinstance(direction, dict):
        if score not in direction:
            raise ValueError(f"metric {metric_cls.plugin_name!r} declares no direction for its score {score!r}")
        return bool(direction[score])
    return bool(direction)


def task_columns(task: Any, ctx: Any, device: str) -> dict[str, Any]:
    """The columns every row of a score task shares."""
    import torch

    job = task.job
    model, dataset, method = job.model.instance(), job.dataset.instance(), job.method.instance()
    metric = job.metric.instance()
    return {
        "run_id": ctx.run_id,
        "manifest": ctx.manifest,
        "job_key": task.keys.score,
        "attribution_key": task.keys.attribution,
        "fit_key": task.keys.fit,
        "model": job.model.name,
        "model_params": job.model.params_json,
        "model_version": plugin_version(model),
        "model_revision": model.revision,
        "model_role": task.fit.role,
        "repeat": task.fit.labels.get("repeat"),
        "dataset": job.dataset.name,
        "dataset_params": job.dataset.params_json,
        "dataset_version": plugin_version(dataset),
        "dataset_revision": dataset.revision,
        "split": ctx.options.split,
        "method": job.method.name,
        "method_params": job.method.params_json,
        "method_version": plugin_version(method),
        "metric": job.metric.name,
        "metric_params": job.metric.params_json,
        "metric_version": plugin_version(metric),
        "reference": getattr(type(metric), "reference", "random"),
        "target_mode": ctx.options.target,
        "seed": job.seed,
        **provenance.collect(device, torch.get_num_threads()),
    }


def check_scores(scores: Any, n: int, metric_name: str) -> None:
    """A metric must return named (n,) tensors or Curves of (n, K) values at K points."""
    import torch

    if not isinstance(scores, dict) or not scores:
        raise ValueError(f"metric {metric_name!r} returned {type(scores).__name__}, expected a dict of named scores")
    for name, value in scores.items():
        if isinstance(value, Curve):
            k = value.x.numel()
            if value.values.shape != (n, k) or value.x.dim() != 1:
                raise ValueError(
                    f"metric {metric_name!r}: curve {name!r} has values {tuple(value.values.shape)} at x "
                    f"{tuple(value.x.shape)}, expected ({n}, K) at (K,)"
                )
        elif not isinstance(value, torch.Tensor) or value.shape != (n,):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"metric {metric_name!r}: score {name!r} has shape {shape}, expected ({n},)")


class RowBuffer:
    """Columns of rows not yet written, and the ids they cover."""

    def __init__(self, shared: dict[str, Any], metric_cls: type):
        self.shared = shared
        self.metric_cls = metric_cls
        self.columns: dict[str, list] = defaultdict(list)
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(
        self,
        items: Batch,
        target: torch.Tensor,
        predictions: torch.Tensor,
        scores: dict[str, Any],
        map_finite: torch.Tensor,
        attribution_s: float,
        elapsed_s: float,
    ) -> None:
        now = datetime.now(timezone.utc)
        # A metric may say why its values are undefined (e.g. a rank correlation with a constant map).
        score_reason = getattr(self.metric_cls, "invalid_reason", INVALID_SCORE)
        labels, preds, targets = items.labels.tolist(), predictions.tolist(), target.tolist()
        map_ok = map_finite.tolist()
        for entry, value in scores.items():
            name = entry.split("@", 1)[0]  # "roar@r1" is score "roar", told apart by its labels
            direction = higher_is_better(self.metric_cls, name)
            overrides = {}
            if isinstance(value, Curve):
                xs, label = [float(v) for v in value.x.tolist()], value.x_label
                matrix = value.values.detach().double().cpu().tolist()
                overrides = dict(value.labels)
            else:
                xs, label = [math.nan], None
                matrix = [[v] for v in value.detach().double().cpu().tolist()]
            for row, item in enumerate(items.ids):
                for x, v in zip(xs, matrix[row], strict=True):
                    reason = None if map_ok[row] else INVALID_MAP
                    if reason is None and not math.isfinite(v):
                        reason = score_reason
                    self._append(
                        overrides,
                        item_id=item,
                        label=labels[row],
                        prediction=preds[row],
                        target=targets[row],
                        score=name,
                        x=x,
                        x_label=label,
                        value=v,
                        valid=reason is None,
                        invalid_reason=reason,
                        higher_is_better=direction,
                        time=now,
                        attribution_s=attribution_s,
                        elapsed_s=elapsed_s,
                    )
        self.ids.extend(items.ids)

    def _append(self, overrides: dict[str, Any], **row: Any) -> None:
        for column, value in self.shared.items():
            self.columns[column].append(overrides.get(column, value))
        for column, value in row.items():
            self.columns[column].append(value)

    def take(self) -> tuple[list[str], dict[str, list]]:
        ids, columns = self.ids, dict(self.columns)
        self.ids, self.columns = [], defaultdict(list)
        return ids, columns
