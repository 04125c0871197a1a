"""Jobs -> a graph of keyed tasks, and what of it is already done (DESIGN.md, the flow).

Four kinds of task, each with explicit dependencies and an output stored under its key:
- ``fit``: train a model (maybe on transformed data) -> the fitted-model store;
- ``activations``: the output of the layer CAM methods read, over an item range -> cached by
  item id, shared by every method on that layer (``xaibench/activations.py``);
- ``attribute``: one method over an item range of a split -> cached maps by item id;
- ``score``: one metric over an item range -> a result part file.
Item ranges are fixed windows of ``options.chunk_size`` items of the split's order, so raising
``limit`` adds tasks for new windows and the old ones stay done. A task's done-ness is read
from its outputs: a rerun executes only what is missing, and ``xaibench plan`` prints the same
counts without running anything. Tasks are frozen, picklable dataclasses: an executor can send
them to Dask workers as they are.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from xaibench import keys
from xaibench.fitting import FitSpec
from xaibench.manifest import Job, Manifest, Options, PluginSpec
from xaibench.task_types import (
    ActivationTask,
    AttributeTask,
    FitTask,
    JobKeys,
    Needs,
    ScoreTask,
    Task,
)


@dataclass
class Plan:
    """Every task of a manifest; ``todo`` holds those whose output is missing, in run order."""

    tasks: list[Task]
    todo: list[Task]
    jobs: int
    job_keys: set[str]
    item_ids: set[str]

    def counts(self) -> dict[str, dict[str, int]]:
        kinds = ("fit", "activations", "attribute", "score")
        out: dict[str, dict[str, int]] = {k: {"total": 0, "todo": 0} for k in kinds}
        for task in self.tasks:
            out[task.kind]["total"] += 1
        for task in self.todo:
            out[task.kind]["todo"] += 1
        return out

    def work(self) -> dict[str, int]:
        """Fits, layer activations, attributions (items) and scored items still to compute."""
        return {
            "fits": sum(1 for t in self.todo if t.kind == "fit"),
            "activations": sum(len(t.ids) for t in self.todo if t.kind == "activations"),
            "attributions": sum(len(t.ids) for t in self.todo if t.kind == "attribute"),
            "scores": sum(len(t.ids) for t in self.todo if t.kind == "score"),
        }


def item_ids(dataset: Any, split: str, limit: int | None) -> list[str]:
    """Ids of the first ``limit`` items; a dataset without ``item_ids`` is walked batch by batch."""
    if hasattr(dataset, "item_ids"):
        return list(dataset.item_ids(split, limit))
    return [i for batch in dataset.batches(split, 1024, limit) for i in batch.ids]


def batches_in_range(dataset: Any, split: str, batch_size: int, start: int, stop: int) -> Iterator:
    """Batches of items ``start`` to ``stop``; datasets whose ``batches`` lacks ``start`` are skipped through."""
    if "start" in inspect.signature(dataset.batches).parameters:
        yield from dataset.batches(split, batch_size, stop, start=start)
        return
    seen = 0
    for batch in dataset.batches(split, batch_size, stop):
        keep = [i for i in range(len(batch)) if seen + i >= start]
        seen += len(batch)
        if keep:
            yield batch if len(keep) == len(batch) else batch.select(keep)


def job_keys(job: Job, fit: FitSpec, options: Options) -> JobKeys:
    fit_key = fit.key()
    data_key = keys.data_key(job.dataset.instance(), options.split)
    attribution = keys.attribution_key(fit_key, data_key, job.method.instance(), options.target, job.seed)
    return JobKeys(
        fit=fit_key,
        data=data_key,
        logits=keys.logits_key(fit_key, data_key),
        attribution=attribution,
        score=keys.score_key(attribution, job.metric.instance()),
    )


def split_attribution_key(job: Job, fit: FitSpec, split: str, target: str) -> str:
    """The key of the job's method maps on ``split`` with ``target`` (what a study's transform reads)."""
    data_key = keys.data_key(job.dataset.instance(), split)
    return keys.attribution_key(fit.key(), data_key, job.method.instance(), target, job.seed)


def windows(total: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, total)) for start in range(0, total, chunk)]


def plan(manifest: Manifest, cache: Any, results_dir: Path, done: dict[str, set[str]] | None = None) -> Plan:
    """The task graph of a manifest's jobs and which tasks still have work (reads outputs only)."""
    from xaibench.results import done_items

    options = manifest.options
    done = done_items(results_dir) if done is None else done
    tasks: list[Task] = []
    todo: list[Task] = []
    all_job_keys: set[str] = set()
    visited: set[str] = set()
    fits: dict[str, FitTask] = {}
    fit_needed: set[str] = set()
    known: dict[str, Task] = {}  # study tasks by key, with whether they still have work
    studies: dict[Job, tuple] = {}  # each study job's (dependencies, extra fits, pending tasks)
    scheduled: set[str] = set()

    groups: dict[tuple[PluginSpec, PluginSpec], list[Job]] = defaultdict(list)
    for job in manifest.jobs():
        groups[(job.model, job.dataset)].append(job)
    ordered: list[Task] = []  # todo in run order: each attribution followed by its scores
    layer_tasks: dict[str, ActivationTask] = {}  # by task key; ids grow as methods need items
    for (model_spec, dataset_spec), jobs in groups.items():
        fit = FitSpec(model_spec)
        fit_key = fit.key()
        if fit.trainable and fit_key not in fits:
            fits[fit_key] = FitTask(fit_key, fit)
            tasks.append(fits[fit_key])
        fit_deps = (fit_key,) if fit.trainable else ()
        dataset = dataset_spec.instance()
        ids = item_ids(dataset, options.split, options.limit)
        visited.update(ids)
        by_attribution: dict[str, list[tuple[Job, JobKeys]]] = defaultdict(list)
        for job in jobs:
            k = job_keys(job, fit, options)
            all_job_keys.add(k.score)
            by_attribution[k.attribution].append((job, k))
        for attribution, members in by_attribution.items():
            first_job, first_keys = members[0]
            for start, stop in windows(len(ids), options.chunk_size):
                window = ids[start:stop]
                scores, study_work = [], []
                for job, k in members:
                    missing = tuple(i for i in window if i not in done.get(k.score, ()))
                    akey = f"{attribution}:{start}-{stop}"
                    extra_deps, extra_fits = (), ()
                    metric = job.metric.instance()
                    if hasattr(metric, "needs"):
                        # A job's needs (hundreds of retrains for ROAR) do not depend on the window.
                        if job not in studies:
                            needs = metric.needs(job, fit, options)
                            studies[job] = _study_tasks(job, fit, dataset, needs, options, cache, known)
                        extra_deps, extra_fits, prior = studies[job]
                        if missing:
                            study_work.extend(prior)
                    scores.append(
                        ScoreTask(
                            f"{k.score}:{start}-{stop}",
                            job,
                            fit,
                            k,
                            start,
                            stop,
                            missing,
                            (*fit_deps, akey, *extra_deps),
                            extra_fits,
                        )
                    )
                position = {item: n for n, item in enumerate(window)}
                needed = sorted({i for s in scores for i in s.ids}, key=position.__getitem__)
                cached = cache.has("attributions", attribution, needed) if needed else []
                to_attribute = tuple(i for i, hit in zip(needed, cached, strict=True) if not hit)
                attribute = AttributeTask(
                    f"{attribution}:{start}-{stop}",
                    fit,
                    dataset_spec,
                    first_job.method,
                    first_job.seed,
                    first_keys,
                    start,
                    stop,
                    to_attribute,
                    fit_deps,
                )
                layer_task = _layer_task(first_job, fit, dataset, options, start, stop, to_attribute, cache, fit_deps)
                if layer_task is not None:
                    attribute = replace(attribute, deps=(*attribute.deps, layer_task.key))
                    if layer_task.key in layer_tasks:
                        known_ids = layer_tasks[layer_task.key].ids
                        merged = known_ids + tuple(i for i in layer_task.ids if i not in known_ids)
                        layer_tasks[layer_task.key] = replace(layer_tasks[layer_task.key], ids=merged)
                    else:
                        layer_tasks[layer_task.key] = layer_task
                        ordered.append(layer_task)  # a placeholder: replaced below by its final ids
                tasks.append(attribute)
                tasks.extend(scores)
                for task in study_work:
                    if task.key not in scheduled:
                        scheduled.add(task.key)
                        ordered.append(task)
                if to_attribute:
                    ordered.append(attribute)
                ordered.extend(s for s in scores if s.ids)
                if to_attribute or any(s.ids for s in scores):
                    fit_needed.update(fit_deps)
    ordered = [layer_tasks.get(t.key, t) if t.kind == "activations" else t for t in ordered]
    ordered = [t for t in ordered if t.kind != "activations" or t.ids]
    tasks.extend(layer_tasks.values())
    listed = {t.key for t in tasks}
    tasks.extend(t for t in known.values() if t.key not in listed)
    # A dependency that is already done is dropped from the graph the executor sees.
    live = {t.key for t in ordered}
    for key in fit_needed:
        if not cache.has_model_state(key):
            todo.append(fits[key])
            live.add(key)
    for task in ordered:
        todo.append(_prune(task, live))
    if any(t.kind == "fit" and t.deps for t in todo):  # study fits wait for whole-split maps
        todo = _dependency_order(todo)
    jobs_total = len(manifest.jobs())
    return Plan(tasks, todo, jobs_total, all_job_keys, visited)


def _layer_task(job, fit, dataset, options, start, stop, items, cache, fit_deps) -> ActivationTask | None:
    """The activations task of a window for a method that reads a layer (None for any other
    method); its ids are the window's items the method still attributes whose activations are
    not cached."""
    from xaibench.activations import layer_spec, reads_layer

    method = job.method.instance()
    if not reads_layer(method):
        return None
    layer = layer_spec(method)
    key = keys.activation_key(fit.key(), keys.data_key(dataset, options.split), layer)
    hits = cache.has("activations", key, list(items)) if items else []
    missing = tuple(i for i, hit in zip(items, hits, strict=True) if not hit)
    return ActivationTask(f"{key}:{start}-{stop}", fit, job.dataset, layer, key, start, stop, missing, fit_deps)


def _prune(task: Task, live: set[str]) -> Task:
    return replace(task, deps=tuple(d for d in task.deps if d in live))


def _study_tasks(job, fit, dataset, needs: Needs, options: Options, cache, known: dict) -> tuple:
    """Attribute tasks over whole splits and extra fit tasks a study metric needs.

    Returns (dependency keys of its score tasks, extra fits, tasks still to run in order).
    Tasks are shared through ``known`` (two metrics needing one retrain plan it once).
    """
    fit_deps = (fit.key(),) if fit.trainable else ()
    attribute_keys, pending = [], []
    for split, target in needs.attributions:
        akey = split_attribution_key(job, fit, split, target)
        data_key = keys.data_key(dataset, split)
        split_keys = JobKeys(fit.key(), data_key, keys.logits_key(fit.key(), data_key), akey, "")
        ids = item_ids(dataset, split, None)
        for start, stop in windows(len(ids), options.chunk_size):
            key = f"{akey}:{start}-{stop}"
            if key not in known:
                window = ids[start:stop]
                hits = cache.has("attributions", akey, window)
                missing = tuple(i for i, hit in zip(window, hits, strict=True) if not hit)
                known[key] = AttributeTask(
                    key,
                    fit,
                    job.dataset,
                    job.method,
                    job.seed,
                    split_keys,
                    start,
                    stop,
                    missing,
                    fit_deps,
                    split,
                    target,
                )
            attribute_keys.append(key)
            if known[key].ids:
                pending.append(known[key])
    fit_keys = []
    for _, spec in needs.fits:
        key = spec.key()
        if key not in known:
            known[key] = FitTask(key, spec, (*fit_deps, *attribute_keys))
        fit_keys.append(key)
        if not cache.has_model_state(key):
            pending.append(known[key])
    return tuple(fit_keys), needs.fits, pending


def _dependency_order(tasks: list[Task]) -> list[Task]:
    """A stable topological order: each task after the tasks it depends on."""
    by_key = {t.key: t for t in tasks}
    placed: set[str] = set()
    out: list[Task] = []

    def place(task: Task) -> None:
        if task.key in placed:
            return
        placed.add(task.key)
        for dep in task.deps:
            if dep in by_key:
                place(by_key[dep])
        out.append(task)

    for task in tasks:
        place(task)
    return out
