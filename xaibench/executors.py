"""Where tasks run: in this process, or on a dask.distributed cluster. One small interface.

``executor.run(tasks, ctx, on_result)`` runs tasks given in dependency order and calls
``on_result(task, summary)`` as each finishes. Tasks write their own outputs (cache shards,
result parts named from the task key and items), so the driver only receives small summaries.

- ``InProcess``: one task after another, in the given order (each attribution followed by the
  scores that read it, so its maps are still in memory).
- ``Dask``: ``--workers N`` starts a LocalCluster of N single-threaded worker processes;
  ``--scheduler ADDRESS`` uses an existing cluster (the workers must share the cache and
  results folders, and have xaibench and the manifest's plugin files). Dependencies become
  Dask futures. A worker that dies makes Dask rerun its task elsewhere; outputs have
  deterministic names, so a rerun replaces files instead of duplicating rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from typing import Protocol

from xaibench import work
from xaibench.errors import UserError
from xaibench.task_types import RunContext, Task

OnResult = Callable[[Task, dict], None]
MAX_WORKERS = 256  # local worker processes; a typo such as 100000 must not fork a machine to death


class Executor(Protocol):
    name: str

    def run(self, tasks: list[Task], ctx: RunContext, on_result: OnResult, log: Callable[[str], None]) -> None: ...


class InProcess:
    name = "in-process"

    def run(self, tasks: list[Task], ctx: RunContext, on_result: OnResult, log: Callable[[str], None]) -> None:
        finished: dict[str, dict] = {}
        for task in tasks:
            summary = work.execute(task, ctx, *(finished[d] for d in task.deps if d in finished), log=log)
            finished[task.key] = summary
            on_result(task, summary)


class Dask:
    """A LocalCluster of ``workers`` single-threaded processes, or the cluster at ``scheduler``."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None, connect_timeout: float | None = None):
        if (workers is None) == (scheduler is None):
            raise ValueError("give exactly one of workers or scheduler")
        if workers is not None and workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.scheduler = scheduler
        # Seconds to wait for a scheduler; XAIBENCH_CONNECT_TIMEOUT overrides the default 20.
        self.connect_timeout = connect_timeout or float(os.environ.get("XAIBENCH_CONNECT_TIMEOUT", "20"))
        self.name = f"dask ({workers} local workers)" if workers else f"dask ({scheduler})"
        self.worker_peak_rss_mb: dict[str, float] = {}

    def _client(self):
        from distributed import Client, LocalCluster

        if self.scheduler is not None:
            try:
                return Client(self.scheduler, timeout=self.connect_timeout), None
            except (OSError, TimeoutError) as error:
                raise UserError(
                    f"--scheduler {self.scheduler}: cannot reach a Dask scheduler there ({error}); "
                    "start one with `dask scheduler` and workers with `dask worker ADDRESS`"
                ) from None
        import dask

        # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand memory
        # back after nearly every torch allocation: measured 34.1 s against 25.9 s for the
        # synthetic manifest at 64 items. Workers here keep the allocator's default.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        return Client(cluster), cluster

    def run(self, tasks: list[Task], ctx: RunContext, on_result: OnResult, log: Callable[[str], None]) -> None:
        from distributed import as_completed

        if not tasks:
            return
        client, cluster = self._client()
        try:
            futures = {}
            owner = {}
            for task in tasks:
                deps = [futures[d] for d in task.deps if d in futures]
                # The Dask key must be unique per task: a task key is a 64-hex key plus its item window.
                dask_key = f"{task.kind}-{hashlib.sha256(task.key.encode()).hexdigest()[:24]}-{ctx.run_id}"
                future = client.submit(work.execute, task, ctx, *deps, key=dask_key, pure=False)
                futures[task.key] = future
                owner[future.key] = task
            for future in as_completed(list(futures.values())):
                task = owner[future.key]
                try:
                    summary = future.result()
                except Exception as error:  # the worker died more often than Dask retries, or a lost dependency
                    summary = {
                        "key": task.key,
                        "kind": task.kind,
                        "label": task.label,
                        "error": f"{type(error).__name__}: {error}",
                    }
                    summary.update(dict.fromkeys(work.COUNTERS, 0))
                on_result(task, summary)
            self.worker_peak_rss_mb = _worker_peaks(client)
        except BaseException:
            client.cancel(list(futures.values()) if "futures" in locals() else [])
            raise
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker_peaks(client) -> dict[str, float]:
    """Each worker process's peak resident memory (MB), for the run record and benchmarks."""
    try:
        return dict(client.run(_peak_rss_mb))
    except Exception:  # a worker gone at the end: the peaks are information, not results
        return {}


def choose(workers: int | None, scheduler: str | None) -> Executor:
    if workers is not None and scheduler is not None:
        raise UserError("give --workers or --scheduler, not both")
    if scheduler is not None:
        return Dask(scheduler=scheduler)
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"--workers must be between 1 and {MAX_WORKERS}, got {workers} (omit it to run in-process)")
    if workers is not None:
        return Dask(workers=workers)
    return InProcess()
