"""Jobs -> a graph of keyed tasks, and what of it is already done (DESIGN.md, the flow).

Three kinds of task, each with explicit dependencies and an output stored under its key:
- ``fit``: train a model (maybe on transformed data) -> the fitted-model store;
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from xaibench import keys
from xaibench.fitting import FitSpec
from xaibench.manifest import Job, Manifest, Options, PluginSpec


@dataclass(frozen=True)
class RunContext:
    """What every task needs besides itself; picklable, identical on every worker."""

    manifest: str
    results_dir: str
    cache_root: str
    run_id: str
    options: Options
    plugins: tuple[str, ...] = ()  # plugin sources, .py paths absolute, loaded on each worker
    threads: int | None = None  # torch intra-op threads for attribution and scoring
    flush_seconds: float = 30.0


@dataclass(frozen=True)
class JobKeys:
    fit: str
    data: str
    logits: str
    attribution: str
    score: str


@dataclass(frozen=True)
class FitTask:
    kind: ClassVar[str] = "fit"
    key: str
    spec: FitSpec
    deps: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        role = "" if self.spec.role == "original" else f" ({self.spec.role})"
        return f"fit {self.spec.model.display}{role}"


@dataclass(frozen=True)
class AttributeTask:
    kind: ClassVar[str] = "attribute"
    key: str
    fit: FitSpec
    dataset: PluginSpec
    method: PluginSpec
    seed: int
    keys: JobKeys
    start: int
    stop: int
    ids: tuple[str, ...]  # items of the range whose maps are missing
    deps: tuple[str, ...] = ()
    split: str | None = None  # None: the manifest's split and target
    target: str | None = None

    @property
    def label(self) -> str:
        where = f"{self.fit.model.display} x {self.dataset.display}"
        split = f" {self.split}" if self.split else ""
        return f"attribute {self.method.display} on {where}{split} [{self.start}:{self.stop}]"


@dataclass(frozen=True)
class ScoreTask:
    kind: ClassVar[str] = "score"
    key: str
    job: Job
    fit: FitSpec
    keys: JobKeys
    start: int
    stop: int
    ids: tuple[str, ...]  # items of the range with no rows yet
    deps: tuple[str, ...] = ()
    extra_fits: tuple[tuple[str, FitSpec], ...] = ()  # a study metric's other models, by name

    @property
    def label(self) -> str:
        return job_label(self.job) + f" [{self.start}:{self.stop}]"


@dataclass(frozen=True)
class Needs:
    """What a study metric needs beyond the job's maps, declared by ``metric.needs(job, fit, options)``.

    ``attributions``: (split, target) pairs: the job's method on the job's fitted model over the
    whole split (no limit), computed by attribute tasks before the extra fits, whose transforms
    read them from the cache (``split_attribution_key`` gives their key). ``fits``: extra fitted
    models by name (a permuted-label retrain, ROAR retrains); each becomes a fit task, and the
    metric's ``score`` receives them as ``fitted={name: module}``.
    """

    attributions: tuple[tuple[str, str], ...] = ()
    fits: tuple[tuple[str, FitSpec], ...] = ()


Task = FitTask | AttributeTask | ScoreTask


def job_label(job: Job) -> str:
    parts = (job.model, job.dataset, job.method, job.metric)
    return " x ".join(spec.display for spec in parts) + f" (seed {job.seed})"


@dataclass
class Plan:
    """Every task of a manifest; ``todo`` holds those whose output is missing, in run order."""

    tasks: list[Task]
    todo: list[Task]
    jobs: int
    job_keys: set[str]
    item_ids: set[str]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {k: {"total": 0, "todo": 0} for k in ("fit", "attribute", "score")}
        for task in self.tasks:
            out[task.kind]["total"] += 1
        for task in self.todo:
            out[task.kind]["todo"] += 1
        return out

    def work(self) -> dict[str, int]:
        """Fits, attributions (items) and scored items still to compute."""
        return {
            "fits": sum(1 for t in self.todo if t.kind == "fit"),
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


def _prune(task: Task, live: set[str]) -> Task:
    from dataclasses import replace

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
