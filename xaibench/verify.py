"""`xaibench cache verify --recompute N`: redo a random sample of cached maps and stored rows.

A cache carried between machines (a CI cache, a laptop's folder copied to a server) is only
trustworthy if what it holds is what this machine would compute. This module samples N cached
attributions (from shards that record their recipe: model, dataset, method, split, target mode,
seed) and N scalar result rows of original models, recomputes each from scratch in this process,
and reports every value that differs by more than ``TOLERANCE``. Rows of study metrics that
retrain (ROAR, data randomization) are not sampled: their fits are keyed tasks of their own.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from xaibench import registry
from xaibench.api import LOGITS, Batch
from xaibench.cache import Cache
from xaibench.fitting import FitSpec, FittedModels
from xaibench.manifest import PluginSpec
from xaibench.seeding import item_seeds
from xaibench.tasks import batches_in_range, item_ids

TOLERANCE = 1e-6
# Items are recomputed among companions from the same shard or job (8 in all): a pass of one
# item may take another kernel than the batches a run used (measured: saliency moved by 2e-6
# between a batch of 1 and one of 32 at one thread; batches of 7 and 64 agree bit for bit).
COMPANIONS = 8


def _with_companions(item: str, pool: list[str]) -> list[str]:
    others = [i for i in pool if i != item][: COMPANIONS - 1]
    return [item, *others]


@dataclass
class Difference:
    what: str  # "attribution" or "row"
    where: str
    difference: float


def _spec(kind: str, name: str, params_json: str) -> PluginSpec:
    return PluginSpec(kind, name, params_json, f"recompute {kind} {name}")


def _items(dataset_spec: PluginSpec, split: str, ids: list[str]) -> Batch:
    """The batch of exactly these items, in this order."""
    import torch

    dataset = dataset_spec.instance()
    order = {item: n for n, item in enumerate(item_ids(dataset, split, None))}
    found: dict[str, Batch] = {}
    for item in ids:
        if item not in order:
            raise KeyError(f"item {item} is no longer in {dataset_spec.name} {split}")
        for batch in batches_in_range(dataset, split, 1, order[item], order[item] + 1):
            found[item] = batch
    parts = [found[i] for i in ids]
    masks = None if parts[0].masks is None else torch.cat([p.masks for p in parts])
    extras = {k: torch.cat([p.extras[k] for p in parts]) for k in parts[0].extras}
    return Batch(ids, torch.cat([p.inputs for p in parts]), torch.cat([p.labels for p in parts]), masks, extras)


class Recomputer:
    def __init__(self, cache: Cache):
        # Runs compute with one intra-op thread by default; so does the check (see cli._execute).
        import torch

        torch.set_num_threads(1)
        self.cache = cache
        self.models = FittedModels(cache, torch.device("cpu"), log=lambda message: None)

    def maps(self, recipe: dict, ids: list[str]) -> tuple[torch.Tensor, Batch, torch.Tensor, torch.Tensor]:
        import torch

        module = self.models.get(FitSpec(_spec("model", *recipe["model"])))
        items = _items(_spec("dataset", *recipe["dataset"]), recipe["split"], ids)
        with torch.no_grad():
            logits = module(items.inputs)
        predictions = logits.argmax(1)
        # As a run scores: with the logits that chose the target (metrics may reuse them).
        items = Batch(items.ids, items.inputs, items.labels, items.masks, {**items.extras, LOGITS: logits})
        target = items.labels if recipe["target"] == "label" else predictions
        method = _spec("method", *recipe["method"]).instance()
        seeds = item_seeds(recipe["seed"], ids, "method")
        return method.attribute(module, items.inputs, target, seeds).detach(), items, target, predictions


def _attribution_records(cache: Cache) -> list[tuple[str, dict]]:
    out = []
    for path in sorted((cache.root / "attributions").rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "recipe" in record:
            out.append((path.parent.name, record))
    return out


def attributions(cache: Cache, n: int, rng: random.Random) -> tuple[int, list[Difference]]:
    pool = [(key, record, item) for key, record in _attribution_records(cache) for item in record["ids"]]
    sample = rng.sample(pool, min(n, len(pool)))
    recompute, out = Recomputer(cache), []
    for key, record, item in sample:
        stored = cache.get("attributions", key, [item]).get(item)
        if stored is None:
            continue  # damaged shard: moved aside by the read, recomputed by the next run
        fresh, *_ = recompute.maps(record["recipe"], _with_companions(item, record["ids"]))
        difference = float((fresh[0] - stored).abs().max())
        if not difference <= TOLERANCE:
            out.append(
                Difference("attribution", f"{record['recipe']['method'][0]} {item} (key {key[:12]})", difference)
            )
    return len(sample), out


def rows(cache: Cache, results_root: Path, n: int, rng: random.Random) -> tuple[int, list[Difference]]:
    from xaibench import results

    frames = []
    for folder in sorted(p for p in results_root.iterdir() if p.is_dir()) if results_root.is_dir() else []:
        frame = results.read(folder)
        if not frame.empty:
            frames.append(frame)
    if not frames:
        return 0, []
    import pandas as pd

    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["x"].isna() & frame["valid"].fillna(True).astype(bool) & (frame["model_role"] == "original")]
    frame = frame[[not hasattr(registry.get("metric", m), "needs") for m in frame["metric"]]]
    if frame.empty:
        return 0, []
    sample = frame.sample(min(n, len(frame)), random_state=rng.randrange(2**31))
    recompute, out = Recomputer(cache), []
    for _, row in sample.iterrows():
        recipe = {
            "model": [row["model"], row["model_params"]],
            "dataset": [row["dataset"], row["dataset_params"]],
            "method": [row["method"], row["method_params"]],
            "split": row["split"],
            "target": row["target_mode"],
            "seed": int(row["seed"]),
        }
        companions = frame.loc[frame["job_key"] == row["job_key"], "item_id"].unique().tolist()
        maps, items, target, _ = recompute.maps(recipe, _with_companions(row["item_id"], companions))
        module = recompute.models.get(FitSpec(_spec("model", *recipe["model"])))
        method = _spec("method", *recipe["method"]).instance()
        metric = _spec("metric", row["metric"], row["metric_params"]).instance()
        method_seeds = item_seeds(recipe["seed"], items.ids, "method")

        def explain(model, inputs, explain_target, seeds=None, item_seeds_=method_seeds, method=method):
            if seeds is None:
                seeds = item_seeds_.repeat_interleave(len(inputs) // len(item_seeds_))
            return method.attribute(model, inputs, explain_target, seeds)

        scores = metric.score(
            module, items, target, maps, explain, item_seeds(recipe["seed"], items.ids, f"metric:{row['metric']}")
        )
        value = scores.get(row["score"])
        if value is None:
            continue
        difference = abs(float(value[0]) - float(row["value"]))
        if not difference <= TOLERANCE:
            out.append(
                Difference("row", f"{row['metric']}/{row['score']} {row['method']} {row['item_id']}", difference)
            )
    return len(sample), out
