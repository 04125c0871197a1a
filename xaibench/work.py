"""Execute one task in this process (the driver, or a Dask worker) and return a small summary.

A worker keeps one ``Session`` per run: its cache handle, the fitted modules it has loaded and
the plugins it imported, so consecutive tasks on a worker reuse them. Outputs go straight to
the shared cache and results folder; the summary the driver collects holds only counts, the
task's key and, for a failure, the error line and traceback. An exception inside a task is
caught here, so Dask only ever sees a worker that died (and then reruns the task, whose
outputs have deterministic names: a rerun replaces files, never adds copies).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from xaibench import keys, registry, results
from xaibench.activations import layer_activations, layer_spec, reads_layer
from xaibench.api import LOGITS, Batch
from xaibench.cache import Cache
from xaibench.devices import resolve_device
from xaibench.fitting import FittedModels
from xaibench.rows import RowBuffer, check_scores, task_columns
from xaibench.seeding import item_seeds
from xaibench.task_types import ActivationTask, AttributeTask, FitTask, RunContext, ScoreTask, Task
from xaibench.tasks import batches_in_range

COUNTERS = ("models_trained", "forward_items", "activation_items", "attributed_items", "scored_items", "rows_written")


class Session:
    """Per-process state of one run: cache, device, fitted modules, loaded plugins."""

    def __init__(self, ctx: RunContext, log: Callable[[str], None] = print):
        import torch

        registry.load_builtins()
        for source in ctx.plugins:
            registry.load_plugin_source(source, None, where=f"plugin {source}")
        if ctx.threads:
            torch.set_num_threads(ctx.threads)
        self.ctx = ctx
        self.log = log
        self.device = resolve_device(ctx.options.device)
        self.cache = Cache(ctx.cache_root)
        self.fitted = FittedModels(self.cache, self.device, lambda message: self.log(message), context=self)


_SESSIONS: dict[tuple[str, int], Session] = {}


def session(ctx: RunContext, log: Callable[[str], None] | None = None) -> Session:
    key = (ctx.run_id, os.getpid())
    if key not in _SESSIONS:
        _SESSIONS.clear()  # one run at a time per process: drop the previous run's modules
        # On a Dask worker nobody reads stdout: the driver reports fits from the task summaries.
        _SESSIONS[key] = Session(ctx, log or (lambda message: None))
    elif log is not None:
        _SESSIONS[key].log = log
    return _SESSIONS[key]


def execute(task: Task, ctx: RunContext, *dependencies: dict, log: Callable[[str], None] | None = None) -> dict:
    """Run one task; never raises for a failure of the task itself (it is in the summary)."""
    summary: dict[str, Any] = {"key": task.key, "kind": task.kind, "label": task.label, "error": None}
    summary.update(dict.fromkeys(COUNTERS, 0))
    failed = [d for d in dependencies if d and d.get("error")]
    if failed:  # not run: carries the root cause, so a job's failure names what broke
        summary.update(error=failed[0]["error"], cause=failed[0].get("cause", failed[0]["label"]), skipped=True)
        return summary
    started = time.perf_counter()
    try:
        state = session(ctx, log)
        if isinstance(task, FitTask):  # the fitted-model store locks per fit key itself
            before = state.fitted.trained
            state.fitted.get(task.spec)
            summary["models_trained"] = state.fitted.trained - before
        elif isinstance(task, ActivationTask):
            with claim(state.cache.root / "locks", task.key):
                _activations(state, task, summary)
        elif isinstance(task, AttributeTask):
            with claim(state.cache.root / "locks", task.key):
                _attribute(state, task, summary)
        else:
            with claim(Path(ctx.results_dir) / ".locks", task.key):
                _score(state, task, summary)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # a failing plugin fails its own task (and what depends on it) only
        summary["error"] = f"{type(error).__name__}: {error}"
        summary["traceback"] = traceback.format_exc()
    summary["seconds"] = time.perf_counter() - started
    return summary


@contextlib.contextmanager
def claim(folder: Path, key: str) -> Iterator[None]:
    """Hold an exclusive lock on one task key across processes (concurrent runs, Dask workers).

    A second run reaching the same task waits, then finds its outputs stored and does nothing:
    no double work, no duplicate rows. The kernel drops the lock when its holder dies (even by
    SIGKILL), so a killed run never leaves a stale claim behind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recipe(task, split: str, target: str | None = None) -> dict:
    """How a shard's maps were made, stored beside them so `cache verify --recompute` can redo
    them: only for the original fit (a retrain's transform is not rebuilt from a record)."""
    method = task.method if hasattr(task, "method") else task.job.method
    dataset = task.dataset if hasattr(task, "dataset") else task.job.dataset
    seed = task.seed if hasattr(task, "seed") else task.job.seed
    if task.fit.role != "original" or task.fit.transform is not None:
        return {}
    return {
        "recipe": {
            "model": [task.fit.model.name, task.fit.model.params_json],
            "dataset": [dataset.name, dataset.params_json],
            "method": [method.name, method.params_json],
            "split": split,
            "target": target or "predicted",
            "seed": seed,
        }
    }


def _on_device(batch: Batch, device: torch.device) -> Batch:
    masks = None if batch.masks is None else batch.masks.to(device)
    extras = {name: value.to(device) for name, value in batch.extras.items()}
    return Batch(batch.ids, batch.inputs.to(device), batch.labels.to(device), masks, extras)


def _logits(state: Session, key: str, module, items: Batch, summary: dict) -> torch.Tensor:
    import torch

    found = state.cache.get("logits", key, items.ids)
    todo = [n for n, i in enumerate(items.ids) if i not in found]
    if todo:
        with torch.no_grad():
            computed = module(items.inputs[todo]).detach().cpu()
        fresh = [items.ids[n] for n in todo]
        state.cache.put("logits", key, fresh, computed)
        found.update(zip(fresh, computed.unbind(0), strict=True))
        summary["forward_items"] += len(todo)
    return torch.stack([found[i] for i in items.ids]).to(state.device)


def _targets(state: Session, items: Batch, logits: torch.Tensor, mode: str | None = None) -> tuple:
    """(the explained class per item, the prediction): the label or the prediction by ``mode``."""
    predictions = logits.argmax(1)
    mode = mode or state.ctx.options.target
    return (items.labels if mode == "label" else predictions), predictions


def _compute_maps(method, module, items: Batch, target: torch.Tensor, seeds: torch.Tensor, **extra) -> torch.Tensor:
    import torch

    maps = method.attribute(module, items.inputs, target, seeds, **extra)
    if not isinstance(maps, torch.Tensor) or maps.shape != items.inputs.shape or not maps.is_floating_point():
        got = f"{tuple(maps.shape)} {maps.dtype}" if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(
            f"method {type(method).plugin_name!r} returned {got}; expected a float tensor of the "
            f"input's shape {tuple(items.inputs.shape)}"
        )
    return maps.detach()


def _attribute(state: Session, task: AttributeTask, summary: dict) -> None:
    todo = set(task.ids)
    hits = state.cache.has("attributions", task.keys.attribution, sorted(todo))
    todo -= {i for i, hit in zip(sorted(todo), hits, strict=True) if hit}
    if not todo:
        return
    module = state.fitted.get(task.fit)
    method = task.method.instance()
    options = state.ctx.options
    dataset = task.dataset.instance()
    split, target_mode = task.split or options.split, task.target or options.target
    for batch in batches_in_range(dataset, split, options.batch_size, task.start, task.stop):
        keep = [n for n, i in enumerate(batch.ids) if i in todo]
        if not keep:
            continue
        items = _on_device(batch.select(keep), state.device)
        target, _ = _targets(state, items, _logits(state, task.keys.logits, module, items, summary), target_mode)
        extra = {}
        if reads_layer(method):
            key = keys.activation_key(task.fit.key(), keys.data_key(dataset, split), layer_spec(method))
            extra["activations"] = _layer_outputs(state, key, module, method.layer, items, summary)
        maps = _compute_maps(method, module, items, target, item_seeds(task.seed, items.ids, "method"), **extra)
        state.cache.put("attributions", task.keys.attribution, items.ids, maps, recipe(task, split, target_mode))
        summary["attributed_items"] += len(keep)


def _activations(state: Session, task: ActivationTask, summary: dict) -> None:
    hits = state.cache.has("activations", task.activations, list(task.ids))
    todo = {i for i, hit in zip(task.ids, hits, strict=True) if not hit}
    if not todo:
        return
    module = state.fitted.get(task.fit)
    name = "" if task.layer.startswith("auto") else task.layer
    options = state.ctx.options
    for batch in batches_in_range(task.dataset.instance(), options.split, options.batch_size, task.start, task.stop):
        keep = [n for n, i in enumerate(batch.ids) if i in todo]
        if keep:
            _layer_outputs(state, task.activations, module, name, _on_device(batch.select(keep), state.device), summary)


def _layer_outputs(state: Session, key: str, module, layer_name: str, items: Batch, summary: dict) -> torch.Tensor:
    """The layer's cached outputs for the items; missing ones (first use, a damaged shard) are
    computed, by a forward pass that stops at the layer, and stored."""
    import torch

    from xaibench.methods.cam import find_layer

    found = state.cache.get("activations", key, items.ids)
    todo = [n for n, i in enumerate(items.ids) if i not in found]
    if todo:
        layer = find_layer(module, items.inputs, layer_name, "activations")
        computed = layer_activations(module, layer, items.inputs[todo]).cpu()
        fresh = [items.ids[n] for n in todo]
        state.cache.put("activations", key, fresh, computed)
        found.update(zip(fresh, computed.unbind(0), strict=True))
        summary["activation_items"] += len(todo)
    return torch.stack([found[i] for i in items.ids]).to(state.device)


def _score(state: Session, task: ScoreTask, summary: dict) -> None:
    import torch

    ctx, options = state.ctx, state.ctx.options
    results_dir = Path(ctx.results_dir)
    todo = set(task.ids) - results.done_in_parts(results_dir, task.keys.score)
    if not todo:
        return
    job = task.job
    module = state.fitted.get(task.fit)
    method, metric = job.method.instance(), job.metric.instance()
    buffer = RowBuffer(task_columns(task, ctx, str(state.device)), type(metric))
    last_flush = time.monotonic()
    for batch in batches_in_range(job.dataset.instance(), options.split, options.batch_size, task.start, task.stop):
        keep = [n for n, i in enumerate(batch.ids) if i in todo]
        if not keep:
            continue
        items = _on_device(batch.select(keep), state.device)
        logits = _logits(state, task.keys.logits, module, items, summary)
        target, predictions = _targets(state, items, logits)
        items = Batch(items.ids, items.inputs, items.labels, items.masks, {**items.extras, LOGITS: logits})
        method_seeds = item_seeds(job.seed, items.ids, "method")
        maps, attribution_s = _maps(state, task, method, module, items, target, method_seeds, summary)

        def explain(model, inputs, explain_target, seeds=None, item_seeds_=method_seeds):
            # Recompute with the method under evaluation (randomization tests, sensitivity) with
            # the items' own seeds; k copies per item (item-major) repeat each item's seed.
            if seeds is None:
                copies, rest = divmod(len(inputs), len(item_seeds_))
                if rest:
                    raise ValueError(f"explain got {len(inputs)} inputs for {len(item_seeds_)} items; pass seeds")
                seeds = item_seeds_.repeat_interleave(copies)
            return method.attribute(model, inputs, explain_target, seeds)

        started = time.perf_counter()
        metric_seeds = item_seeds(job.seed, items.ids, f"metric:{job.metric.name}")
        if task.extra_fits:
            fitted = {name: state.fitted.get(spec) for name, spec in task.extra_fits}
            scores = metric.score(module, items, target, maps, explain, metric_seeds, fitted=fitted)
        else:
            scores = metric.score(module, items, target, maps, explain, metric_seeds)
        check_scores(scores, len(items), job.metric.name)
        elapsed = (time.perf_counter() - started) / len(items)
        finite = torch.isfinite(maps.flatten(1)).all(1).cpu()
        buffer.add(items, target.cpu(), predictions.cpu(), scores, finite, attribution_s, elapsed)
        summary["scored_items"] += len(items)
        if time.monotonic() - last_flush >= ctx.flush_seconds:  # a kill loses at most ~30 s of work
            _flush(results_dir, task, buffer, summary)
            last_flush = time.monotonic()
    _flush(results_dir, task, buffer, summary)


def _maps(state, task: ScoreTask, method, module, items: Batch, target, seeds, summary) -> tuple[torch.Tensor, float]:
    """The cached maps; any that went missing (a damaged shard) are recomputed and stored."""
    import torch

    key = task.keys.attribution
    found = state.cache.get("attributions", key, items.ids)
    missing = [n for n, i in enumerate(items.ids) if i not in found]
    seconds = 0.0
    if missing:
        started = time.perf_counter()
        sub = items.select(missing)
        computed = _compute_maps(method, module, sub, target[missing], seeds[missing]).cpu()
        seconds = (time.perf_counter() - started) / len(missing)
        state.cache.put(
            "attributions", key, sub.ids, computed, recipe(task, state.ctx.options.split, state.ctx.options.target)
        )
        found.update(zip(sub.ids, computed.unbind(0), strict=True))
        summary["attributed_items"] += len(missing)
    return torch.stack([found[i] for i in items.ids]).to(state.device), seconds


def _flush(results_dir, task: ScoreTask, buffer: RowBuffer, summary: dict) -> None:
    if not len(buffer):
        return
    ids, columns = buffer.take()
    results.write_part(results_dir, task.keys.score, ids, columns)
    summary["rows_written"] += len(columns["item_id"])
