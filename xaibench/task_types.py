"""The task kinds of a run's graph and what every task needs: frozen, picklable dataclasses.

``tasks.py`` builds the graph from a manifest (``plan``); ``work.py`` executes one task. An
executor sends these objects to Dask workers as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xaibench.fitting import FitSpec
from xaibench.manifest import Job, Options, PluginSpec


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
class ActivationTask:
    kind: ClassVar[str] = "activations"
    key: str
    fit: FitSpec
    dataset: PluginSpec
    layer: str  # a layer name, or ``activations.AUTO_LAYER_RULE``
    activations: str  # the cache key
    start: int
    stop: int
    ids: tuple[str, ...]  # items of the range whose activations are missing
    deps: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        layer = "auto layer" if self.layer.startswith("auto") else f"layer {self.layer}"
        return f"activations ({layer}) of {self.fit.model.display} on {self.dataset.display} [{self.start}:{self.stop}]"


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


Task = FitTask | ActivationTask | AttributeTask | ScoreTask


def job_label(job: Job) -> str:
    parts = (job.model, job.dataset, job.method, job.metric)
    return " x ".join(spec.display for spec in parts) + f" (seed {job.seed})"
