"""Run a manifest: preflight checks, plan the task graph, execute it, record the run, compact.

Planning (``tasks.plan``) reads what is already stored, so a rerun executes only missing tasks;
execution goes to an executor (in-process by default, or Dask). Every task writes its own
outputs, so whatever stops the run (a failure, Ctrl-C, SIGTERM, a kill) keeps every finished
task's rows. A failing task fails only itself and the tasks that depend on it; the run goes
on and reports them (exit 3).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from xaibench import provenance, results
from xaibench.cache import Cache
from xaibench.errors import UserError
from xaibench.executors import Executor, InProcess
from xaibench.manifest import Manifest
from xaibench.preflight import preflight
from xaibench.task_types import RunContext, Task, job_label
from xaibench.tasks import Plan, plan
from xaibench.work import COUNTERS


@dataclass
class WorkCounts:
    """What a run actually computed; a warm rerun shows zeros everywhere but `skipped_items`."""

    models_trained: int = 0
    forward_items: int = 0
    activation_items: int = 0
    attributed_items: int = 0
    scored_items: int = 0
    rows_written: int = 0
    skipped_items: int = 0
    tasks_run: int = 0


@dataclass
class RunReport:
    run_id: str
    manifest: str
    results_dir: Path
    jobs: int
    counts: WorkCounts
    failures: dict[str, str] = field(default_factory=dict)  # job label -> error line (its root cause)
    skipped: int = 0  # tasks not run because a dependency failed
    seconds: float = 0.0
    executor: str = "in-process"


class Runner:
    """Executes a manifest's tasks. ``progress`` gets (event, info) callbacks."""

    def __init__(
        self,
        manifest: Manifest,
        results_root: Path | str = "results",
        cache: Cache | None = None,
        progress: Callable[[str, dict], None] | None = None,
        log: Callable[[str], None] = print,
        executor: Executor | None = None,
        threads: int | None = 1,
    ):
        self.manifest = manifest
        self.options = manifest.options
        self.results_dir = Path(results_root) / manifest.name
        self.cache = cache or Cache()
        self.progress = progress or (lambda event, info: None)
        self.log = log
        self.executor = executor or InProcess()
        self.threads = threads
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.counts = WorkCounts()
        self.failures: dict[str, str] = {}
        self.failure_traces: dict[str, str] = {}
        self.plan: Plan | None = None

    @property
    def item_ids(self) -> set[str]:
        return self.plan.item_ids if self.plan else set()

    def job_keys(self) -> set[str]:
        """Result keys of every job of the manifest (the board shows these rows only)."""
        return self.plan.job_keys if self.plan else set()

    def context(self) -> RunContext:
        return RunContext(
            manifest=self.manifest.name,
            results_dir=str(self.results_dir.resolve()),
            cache_root=str(self.cache.root.resolve()),
            run_id=self.run_id,
            options=self.options,
            plugins=plugin_sources(self.manifest),
            threads=self.threads,
        )

    def run(self) -> RunReport:
        started = time.perf_counter()
        preflight(self.manifest, self.cache)
        self.cache.ensure_writable()
        ensure_folder(self.results_dir, "results folder", "--results")
        self.plan = plan(self.manifest, self.cache, self.results_dir)
        todo = self.plan.todo
        skipped_tasks = 0
        pending = {i for t in todo if t.kind == "score" for i in t.ids}
        self.counts.skipped_items = len(self.plan.item_ids - pending)  # items with every score already stored
        self.progress("start", {"tasks": len(todo), "work": self.plan.work()})

        def on_result(task: Task, summary: dict) -> None:
            nonlocal skipped_tasks
            for counter in COUNTERS:
                setattr(self.counts, counter, getattr(self.counts, counter) + summary.get(counter, 0))
            self.counts.tasks_run += 1
            if summary.get("skipped"):
                skipped_tasks += 1
            elif summary.get("error"):
                self.failure_traces[task.label] = summary.get("traceback", "")
                self.log(f"task failed: {task.label}: {summary['error']}")
            if summary.get("error") and task.kind == "score":
                # Reported per job (what the user listed); the first failing range names the cause.
                self.failures.setdefault(job_label(task.job), summary["error"])
            self.progress("task", {"task": task, "summary": summary})

        try:
            self.executor.run(todo, self.context(), on_result, self.log)
        finally:
            # Whatever stopped the run, its record is written; finished tasks' rows are on disk.
            report = RunReport(
                self.run_id,
                self.manifest.name,
                self.results_dir,
                self.plan.jobs,
                self.counts,
                dict(self.failures),
                skipped_tasks,
                time.perf_counter() - started,
                self.executor.name,
            )
            self._write_run_record(report)
        if self.counts.rows_written:
            results.compact(self.results_dir)
        return report

    def _write_run_record(self, report: RunReport) -> None:
        if report.counts.rows_written == 0 and not report.failures and not report.counts.models_trained:
            return  # a fully cached rerun leaves no trace
        results.write_json(
            self.results_dir / f"{self.run_id}-run.json",
            {
                "run_id": self.run_id,
                "manifest": self.manifest.name,
                "manifest_path": str(self.manifest.path) if self.manifest.path else None,
                "options": self.options.__dict__,
                "executor": report.executor,
                "jobs": report.jobs,
                "counts": report.counts.__dict__,
                "seconds": report.seconds,
                "failures": report.failures,
                "skipped_tasks": report.skipped,
                "tracebacks": self.failure_traces,
                "provenance": provenance.collect(self.options.device, self.threads),
            },
        )


def plugin_sources(manifest: Manifest) -> tuple[str, ...]:
    """The manifest's plugin sources, ``.py`` paths made absolute (workers load them too)."""
    base = manifest.path.parent if manifest.path else None
    out = []
    for spec in manifest.plugins:
        if spec.endswith(".py") and base is not None and not Path(spec).is_absolute():
            spec = str((base / spec).resolve())
        out.append(spec)
    return tuple(out)


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
