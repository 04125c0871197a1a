"""Plan and execute jobs: share work, stream batch by batch, skip rows that already exist.

For each (model, dataset) pair the runner loads the model once and walks the dataset batch by
batch. Per batch it works out which (job, item) rows are missing, and only for those items it
runs one forward pass (cached logits), one attribution per (method, seed) reused by every metric
(cached attributions), then each metric. Rows are flushed to Parquet as they accumulate, so peak
memory does not grow with the number of items and an interrupted run keeps what it finished.
A job that fails is recorded with its error while the other jobs go on.
"""

from __future__ import annotations

import functools
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from xaibench import provenance
from xaibench.api import Batch
from xaibench.cache import Cache, make_key
from xaibench.devices import resolve_device
from xaibench.errors import IncompatibleError, UserError
from xaibench.manifest import Job, Manifest, PluginSpec
from xaibench.model_store import ModelStore, model_key
from xaibench.registry import key_params, plugin_version
from xaibench.results import done_items, write_json, write_rows
from xaibench.seeding import item_seeds

FLUSH_ROWS = 20_000  # buffered rows before a Parquet part is written


@dataclass
class WorkCounts:
    """What a run actually computed; a warm rerun shows zeros everywhere but `skipped_items`."""

    models_trained: int = 0
    forward_items: int = 0
    attributed_items: int = 0
    scored_items: int = 0
    rows_written: int = 0
    skipped_items: int = 0


@dataclass
class RunReport:
    run_id: str
    manifest: str
    results_dir: Path
    jobs: int
    counts: WorkCounts
    failures: dict[str, str] = field(default_factory=dict)  # job label -> error line
    seconds: float = 0.0


@dataclass(frozen=True)
class _Attributed:
    """One method's maps for some items, with what a metric needs to recompute them."""

    method: Any
    seeds: torch.Tensor
    maps: torch.Tensor
    seconds: float  # attribution seconds per computed item in this batch (0 when all were cached)


@dataclass(frozen=True)
class _Keys:
    """The cache and result keys of one job (DESIGN.md, Cache)."""

    model: str
    data: str
    logits: str
    attribution: str
    job: str


def data_key(spec: PluginSpec, dataset: Any, split: str) -> str:
    return make_key(
        {
            "kind": "dataset",
            "name": spec.name,
            "version": plugin_version(dataset),
            "params": key_params(dataset),
            "revision": dataset.revision,
            "split": split,
        }
    )


def job_label(job: Job) -> str:
    parts = (job.model, job.dataset, job.method, job.metric)
    return " x ".join(spec.display for spec in parts) + f" (seed {job.seed})"


class Runner:
    """Executes a manifest's jobs in this process. ``progress`` gets (event, info) callbacks."""

    def __init__(
        self,
        manifest: Manifest,
        results_root: Path | str = "results",
        cache: Cache | None = None,
        progress: Callable[[str, dict], None] | None = None,
        log: Callable[[str], None] = print,
    ):
        self.manifest = manifest
        self.options = manifest.options
        self.results_dir = Path(results_root) / manifest.name
        self.cache = cache or Cache()
        self.progress = progress or (lambda event, info: None)
        self.log = log
        self.device = resolve_device(self.options.device)
        self.models = ModelStore(self.cache, self.device, log)
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.counts = WorkCounts()
        self.failures: dict[str, str] = {}
        self.failure_traces: dict[str, str] = {}
        self.item_ids: set[str] = set()  # every item this run visited (the board shows these)
        self._buffers: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self._buffered = 0
        self._parts: dict[str, int] = defaultdict(int)
        self._provenance = provenance.collect(str(self.device))

    # ---- planning ------------------------------------------------------------------------
    def pairs(self) -> Iterator[tuple[PluginSpec, PluginSpec, list[Job]]]:
        """Jobs grouped by (model, dataset): one model load and one data pass per group."""
        groups: dict[tuple, list[Job]] = defaultdict(list)
        for job in self.manifest.jobs():
            groups[(job.model, job.dataset)].append(job)
        for (model, dataset), jobs in groups.items():
            yield model, dataset, jobs

    def job_keys(self) -> set[str]:
        """Result keys of every job of the manifest (the board shows these rows only)."""
        keys = set()
        for model_spec, dataset_spec, jobs in self.pairs():
            model, dataset = model_spec.instance(), dataset_spec.instance()
            keys.update(self._keys(job, model, dataset).job for job in jobs)
        return keys

    # ---- execution -----------------------------------------------------------------------
    def run(self) -> RunReport:
        started = time.perf_counter()
        preflight(self.manifest)
        self.cache.ensure_writable()
        ensure_folder(self.results_dir, "results folder", "--results")
        done = done_items(self.results_dir)
        jobs_total = len(self.manifest.jobs())
        self.progress("start", {"jobs": jobs_total})
        try:
            for model_spec, dataset_spec, jobs in self.pairs():
                self._run_pair(model_spec, dataset_spec, jobs, done)
        finally:
            # Whatever happened (a crash, Ctrl-C), rows of finished batches reach the disk.
            self._flush()
            self.counts.models_trained = self.models.trained
            report = RunReport(
                self.run_id,
                self.manifest.name,
                self.results_dir,
                jobs_total,
                self.counts,
                dict(self.failures),
                time.perf_counter() - started,
            )
            self._write_run_record(report)
        return report

    def _run_pair(self, model_spec: PluginSpec, dataset_spec: PluginSpec, jobs: list[Job], done: dict) -> None:
        model = model_spec.instance()
        dataset = dataset_spec.instance()
        split, limit = self.options.split, self.options.limit
        try:
            total = dataset.count(split)
        except UserError as error:
            raise UserError(f"{dataset_spec.where}: {error}") from None
        total = total if limit is None else min(limit, total)
        keys = {job: self._keys(job, model, dataset) for job in jobs}
        module = None
        self.progress("pair", {"label": f"{model_spec.name} x {dataset_spec.name}", "items": total, "jobs": len(jobs)})
        try:
            for batch in dataset.batches(split, self.options.batch_size, limit):
                self.item_ids.update(batch.ids)
                live = [job for job in jobs if job_label(job) not in self.failures]
                missing = {
                    job: [i for i, item in enumerate(batch.ids) if item not in done.get(keys[job].job, ())]
                    for job in live
                }
                needed = sorted({i for positions in missing.values() for i in positions})
                self.counts.skipped_items += len(batch) - len(needed)
                if needed:
                    if module is None:
                        module = self.models.get(model)
                    self._run_batch(module, batch, needed, missing, keys)
                self.progress("advance", {"items": len(batch)})
        except UserError:
            raise
        except Exception as error:  # the model, its forward pass or the data broke: fail this pair only
            for job in jobs:
                if job_label(job) not in self.failures:
                    self._fail(job, error)
        self.progress("pair_done", {"jobs": len(jobs)})

    def _run_batch(self, module, batch: Batch, needed: list[int], missing: dict[Job, list[int]], keys) -> None:
        """One forward pass, one attribution per (method, seed), every metric: only for ``needed``."""
        sub = batch.select(needed)
        sub = Batch(sub.ids, sub.inputs.to(self.device), sub.labels.to(self.device), sub.masks, sub.extras)
        position = {item: i for i, item in enumerate(sub.ids)}
        logits = self._cached(
            "logits",
            next(iter(keys.values())).logits,
            sub.ids,
            lambda idx: _forward(module, sub.inputs[idx]),
            "forward_items",
        )
        predictions = logits.argmax(1).to(self.device)
        target = sub.labels if self.options.target == "label" else predictions

        by_attribution: dict[tuple[PluginSpec, int], list[Job]] = defaultdict(list)
        for job, positions in missing.items():
            if positions:
                by_attribution[(job.method, job.seed)].append(job)
        for (method_spec, seed), group in by_attribution.items():
            # Items of `sub` that at least one metric of this attribution still needs.
            rows = sorted({position[batch.ids[i]] for job in group for i in missing[job]})
            method = method_spec.instance()
            seeds = item_seeds(seed, sub.ids, "method")
            try:
                started, before = time.perf_counter(), self.counts.attributed_items
                maps = self._cached(
                    "attributions",
                    keys[group[0]].attribution,
                    [sub.ids[r] for r in rows],
                    lambda idx, r=rows, m=method, s=seeds: m.attribute(
                        module, sub.inputs[r][idx], target[r][idx], s[r][idx]
                    ),
                    "attributed_items",
                ).to(self.device)
                computed = self.counts.attributed_items - before
                seconds = (time.perf_counter() - started) / computed if computed else 0.0
            except Exception as error:  # a method failing at run time fails its jobs only
                for job in group:
                    self._fail(job, error)
                continue
            row_of = {r: i for i, r in enumerate(rows)}
            for job in group:
                local = [position[batch.ids[i]] for i in missing[job]]
                attributed = _Attributed(method, seeds[local], maps[[row_of[r] for r in local]], seconds)
                self._score(job, module, sub.select(local), target[local], predictions[local], attributed, keys[job])

    def _score(self, job: Job, module, items: Batch, target, predictions, attributed: _Attributed, keys) -> None:
        metric = job.metric.instance()

        def explain(model, inputs, explain_target):
            # Recompute with the method under evaluation (randomization tests), same item seeds.
            return attributed.method.attribute(model, inputs, explain_target, attributed.seeds)

        try:
            started = time.perf_counter()
            scores = metric.score(
                module,
                items,
                target,
                attributed.maps,
                explain,
                item_seeds(job.seed, items.ids, f"metric:{job.metric.name}"),
            )
            elapsed = (time.perf_counter() - started) / max(1, len(items))
            for name, values in scores.items():
                if values.shape != (len(items),):
                    raise ValueError(f"score {name!r} has shape {tuple(values.shape)}, expected ({len(items)},)")
        except Exception as error:
            self._fail(job, error)
            return
        self.counts.scored_items += len(items)
        self._add_rows(job, keys, items, target, predictions, scores, type(metric), attributed.seconds, elapsed)

    def _cached(self, kind: str, key: str, ids: list[str], compute, counter: str) -> torch.Tensor:
        """Rows for ``ids`` from the cache; ``compute(positions)`` fills and stores the rest."""
        found = self.cache.get(kind, key, ids)
        todo = [i for i, item in enumerate(ids) if item not in found]
        if todo:
            computed = compute(torch.as_tensor(todo)).detach().cpu()
            fresh = [ids[i] for i in todo]
            self.cache.put(kind, key, fresh, computed)
            found.update(zip(fresh, computed.unbind(0), strict=True))
            setattr(self.counts, counter, getattr(self.counts, counter) + len(todo))
        return torch.stack([found[item] for item in ids])

    # ---- rows ----------------------------------------------------------------------------
    def _keys(self, job: Job, model: Any, dataset: Any) -> _Keys:
        mkey = model_key(model)
        dkey = data_key(job.dataset, dataset, self.options.split)
        method = job.method.instance()
        akey = make_key(
            {
                "model": mkey,
                "data": dkey,
                "method": job.method.name,
                "version": plugin_version(method),
                "params": key_params(method),
                "target": self.options.target,
                "seed": job.seed,
            }
        )
        metric = job.metric.instance()
        jkey = make_key(
            {
                "attribution": akey,
                "metric": job.metric.name,
                "version": plugin_version(metric),
                "params": key_params(metric),
            }
        )
        return _Keys(mkey, dkey, make_key({"model": mkey, "data": dkey}), akey, jkey)

    @functools.cache  # noqa: B019 - one runner per run; bounded by its jobs
    def _job_columns(self, job: Job, keys: _Keys) -> dict[str, Any]:
        """The columns every row of a job shares."""
        model, dataset, method = job.model.instance(), job.dataset.instance(), job.method.instance()
        metric_cls = type(job.metric.instance())
        return {
            "run_id": self.run_id,
            "manifest": self.manifest.name,
            "job_key": keys.job,
            "attribution_key": keys.attribution,
            "model": job.model.name,
            "model_params": job.model.params_json,
            "model_version": plugin_version(model),
            "model_revision": model.revision,
            "dataset": job.dataset.name,
            "dataset_params": job.dataset.params_json,
            "dataset_version": plugin_version(dataset),
            "dataset_revision": dataset.revision,
            "split": self.options.split,
            "method": job.method.name,
            "method_params": job.method.params_json,
            "method_version": plugin_version(method),
            "metric": job.metric.name,
            "metric_params": job.metric.params_json,
            "metric_version": plugin_version(metric_cls),
            "target_mode": self.options.target,
            "seed": job.seed,
            **self._provenance,
        }

    def _add_rows(self, job, keys, batch, target, predictions, scores, metric_cls, attribution_s, elapsed):
        shared = {
            **self._job_columns(job, keys),
            "time": datetime.now(timezone.utc),
            "attribution_s": attribution_s,
            "elapsed_s": elapsed,
        }
        buffer = self._buffers[keys.job]
        n = len(batch)
        for name, values in scores.items():
            row_constants = {**shared, "score": name, "higher_is_better": higher_is_better(metric_cls, name)}
            for column, value in row_constants.items():
                buffer[column].extend([value] * n)
            buffer["item_id"].extend(batch.ids)
            buffer["label"].extend(batch.labels.tolist())
            buffer["prediction"].extend(predictions.tolist())
            buffer["target"].extend(target.tolist())
            buffer["value"].extend(values.detach().double().cpu().tolist())
            self._buffered += n
        if self._buffered >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        for job_key, columns in self._buffers.items():
            if not columns["item_id"]:
                continue
            part = self._parts[job_key]
            self._parts[job_key] += 1
            path = self.results_dir / f"{self.run_id}-{job_key[:16]}-{part:04d}.parquet"
            write_rows(path, dict(columns))
            self.counts.rows_written += len(columns["item_id"])
        self._buffers.clear()
        self._buffered = 0

    def _fail(self, job: Job, error: Exception) -> None:
        label = job_label(job)
        message = f"{type(error).__name__}: {error}"
        self.failures[label] = message
        self.log(f"job failed: {label}: {message}")
        self.failure_traces[label] = traceback.format_exc()

    def _write_run_record(self, report: RunReport) -> None:
        if report.counts.rows_written == 0 and not report.failures:
            return  # a fully cached rerun leaves no trace
        write_json(
            self.results_dir / f"{self.run_id}-run.json",
            {
                "run_id": self.run_id,
                "manifest": self.manifest.name,
                "manifest_path": str(self.manifest.path) if self.manifest.path else None,
                "options": self.options.__dict__,
                "jobs": report.jobs,
                "counts": report.counts.__dict__,
                "seconds": report.seconds,
                "failures": report.failures,
                "tracebacks": self.failure_traces,
                "provenance": self._provenance,
            },
        )


def preflight(manifest: Manifest) -> None:
    """Checks that need no trained weights: the device, each dataset's split, incompatible
    (method, model) pairs, metric needs."""
    for dataset_spec in manifest.datasets:
        try:
            dataset_spec.instance().count(manifest.options.split)
        except UserError as error:
            raise UserError(f"{dataset_spec.where}: {error}") from None
    for metric in manifest.metrics:
        needs = type(metric.instance()).requires
        if needs:
            raise UserError(
                f"{metric.where}: metric {metric.name!r} requires {', '.join(sorted(needs))}, "
                "which this version of the runner does not provide"
            )
    for model_spec in manifest.models:
        module = model_spec.instance().build()
        for method_spec in manifest.methods:
            method = method_spec.instance()
            if hasattr(method, "check"):
                try:
                    method.check(module)
                except IncompatibleError as error:
                    raise UserError(f"{method_spec.where}: with model {model_spec.name!r}: {error}") from None


def higher_is_better(metric_cls: type, score: str) -> bool:
    """A metric's direction, per score when it declares a mapping (e.g. ROAD's MoRF vs LeRF)."""
    direction = metric_cls.higher_is_better
    return bool(direction[score] if isinstance(direction, dict) else direction)


def _forward(module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(inputs)


def ensure_folder(folder: Path, what: str, option: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"{what} {folder} is not writable ({error.strerror or error}); choose another with {option}"
        ) from None
