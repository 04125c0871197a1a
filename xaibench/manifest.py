"""YAML manifest -> frozen, validated ``Manifest`` -> ``Job``s, under a closed schema.

YAML is data, not code: no includes, no templates. Every error names the file, line and path
of the offending value and, where one is close, the valid name the user probably meant.
Jobs are the product models x datasets x methods x metrics x seeds, or, with
``options.pairing: matching``, the part of it whose models accept their datasets and whose
metrics suit them (``xaibench.pairing``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaibench import pairing, registry
from xaibench.cache import canonical_json
from xaibench.devices import check_device
from xaibench.errors import UserError
from xaibench.gate_schema import CONTROLS, Gate, parse_gates  # noqa: F401  (CONTROLS re-exported)
from xaibench.manifest_yaml import Locator, load_yaml
from xaibench.pairing import MODES

FORMAT_VERSION = 1
TOP_LEVEL = (
    "name",
    "version",
    "description",
    "plugins",
    "options",
    "models",
    "datasets",
    "methods",
    "metrics",
    "gates",
)
REQUIRED = ("name", "models", "datasets", "methods", "metrics")
PLUGIN_LISTS = {"models": "model", "datasets": "dataset", "methods": "method", "metrics": "metric"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Options:
    split: str = "test"
    limit: int | None = 256
    batch_size: int = 64
    target: str = "predicted"  # or "label"
    seeds: tuple[int, ...] = (0,)
    device: str = "cpu"
    chunk_size: int = 256  # items per attribute/score task; not in any key (never changes a value)
    pairing: str = "product"  # or "matching": see xaibench.pairing


OPTION_TYPES = {
    "split": (str, "a string such as test"),
    "limit": (int, "a positive integer or null for all items"),
    "batch_size": (int, "a positive integer"),
    "target": (str, "predicted or label"),
    "seeds": (list, "a list of integers"),
    "device": (str, "cpu, cuda or cuda:N"),
    "chunk_size": (int, "a positive integer (items per task)"),
    "pairing": (str, "product (every model with every dataset) or matching (each model with the datasets it accepts)"),
}
# Bounds that catch typos before hours of work: (low, high) inclusive.
OPTION_RANGES = {"limit": (1, 10_000_000), "batch_size": (1, 65_536), "chunk_size": (1, 1_000_000)}


@dataclass(frozen=True)
class PluginSpec:
    """One configured plugin: kind, registered name, full (defaults included) parameters."""

    kind: str
    name: str
    params_json: str  # canonical JSON of every parameter: the plugin's identity
    where: str

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    @functools.cached_property  # read for every job on every batch: build the defaults once
    def display(self) -> str:
        """The name, plus the parameters set away from their defaults: ``occlusion[window=4]``."""
        try:
            defaults = registry.canonical_params(registry.build(self.kind, self.name, {}, self.where))
        except UserError:  # a plugin with required parameters has no defaults to compare with
            defaults = {}
        changed = [f"{k}={v}" for k, v in self.params.items() if defaults.get(k) != v]
        return f"{self.name}[{','.join(changed)}]" if changed else self.name

    def instance(self):
        return _build_cached(registry.get(self.kind, self.name), self.kind, self.name, self.params_json, self.where)


@functools.lru_cache(maxsize=1024)
def _build_cached(cls: type, kind: str, name: str, params_json: str, where: str):
    # Plugins are frozen dataclasses, so one shared instance per spec is safe, and it keeps
    # cached properties alive across batches. `cls` is in the key so a re-registered name
    # (a user's plugin file reloaded) never gets an instance of the old class.
    return registry.build(kind, name, json.loads(params_json), where)


@dataclass(frozen=True)
class Job:
    model: PluginSpec
    dataset: PluginSpec
    method: PluginSpec
    metric: PluginSpec
    seed: int


@dataclass(frozen=True)
class Manifest:
    name: str
    path: Path | None
    description: str
    options: Options
    models: tuple[PluginSpec, ...]
    datasets: tuple[PluginSpec, ...]
    methods: tuple[PluginSpec, ...]
    metrics: tuple[PluginSpec, ...]
    gates: tuple[Gate, ...] = ()
    plugins: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    # The (model, dataset) and (dataset, metric) pairs that run (``xaibench.pairing``); None: all.
    model_data: frozenset | None = None
    data_metric: frozenset | None = None

    def jobs(self) -> list[Job]:
        return [
            Job(model, dataset, method, metric, seed)
            for model, dataset, method, metric, seed in itertools.product(
                self.models, self.datasets, self.methods, self.metrics, self.options.seeds
            )
            if (self.model_data is None or (model, dataset) in self.model_data)
            and (self.data_metric is None or (dataset, metric) in self.data_metric)
        ]

    def model_dataset_pairs(self) -> list[tuple[PluginSpec, PluginSpec]]:
        """The (model, dataset) pairs that run, in manifest order."""
        return [
            (m, d) for m in self.models for d in self.datasets if self.model_data is None or (m, d) in self.model_data
        ]


def with_options(manifest: Manifest, **changes) -> Manifest:
    """The same manifest with some options replaced (e.g. ``--limit`` on the command line)."""
    for key, (low, high) in OPTION_RANGES.items():
        value = changes.get(key)
        if value is not None and not low <= value <= high:
            raise UserError(f"--{key.replace('_', '-')} must be between {low:,} and {high:,}, got {value}")
    return dataclasses.replace(manifest, options=dataclasses.replace(manifest.options, **changes))


def load(path: str | Path) -> Manifest:
    """Read and validate a manifest file (loads plugin sources it names, no model)."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        folder = path.parent if path.parent.is_dir() else None
        if folder is not None:
            hint = registry.suggest(path.name, [p.name for p in folder.glob("*.y*ml")])
        raise UserError(f"manifest not found: {path}{hint}")
    text = path.read_bytes()
    return parse(text, source=str(path), base_dir=path.parent, path=path)


def parse(
    text: str | bytes, source: str = "<manifest>", base_dir: Path | None = None, path: Path | None = None
) -> Manifest:
    data = load_yaml(text, source)
    locate = Locator(source, text if isinstance(text, str) else text.decode("utf-8", "replace"))
    return from_dict(data, locate, base_dir=base_dir, path=path)


def from_dict(
    data: Any, locate: Locator | None = None, base_dir: Path | None = None, path: Path | None = None
) -> Manifest:
    locate = locate or Locator("<manifest>", "")
    if not isinstance(data, dict):
        raise UserError(f"{locate()}: a manifest is a mapping with keys {', '.join(REQUIRED)}")
    for key in data:
        if key not in TOP_LEVEL:
            raise UserError(f"{locate(key)}: unknown key {key!r}{registry.suggest(str(key), TOP_LEVEL)}")
    for key in REQUIRED:
        if key not in data:
            raise UserError(f"{locate()}: missing required key {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise UserError(
            f"{locate('name')}: name must be letters, digits, '_', '.' or '-' (it names the results folder)"
        )
    version = data.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise UserError(
            f"{locate('version')}: manifest format version {version!r} is not supported; use {FORMAT_VERSION}"
        )
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise UserError(f"{locate('description')}: expected a string")

    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise UserError(f"{locate('plugins')}: expected a list of 'package.module:attr' or 'file.py' strings")
    registry.load_builtins()
    for i, spec in enumerate(plugins):
        registry.load_plugin_source(spec, base_dir, where=locate("plugins", i))

    options = _options(data.get("options") or {}, locate)
    lists = {key: _plugin_list(data[key], kind, key, locate) for key, kind in PLUGIN_LISTS.items()}
    gates = parse_gates(data.get("gates") or [], lists, locate)
    warnings = []
    if "random" not in {m.name for m in lists["methods"]}:
        warnings.append("no `random` method: the leaderboard cannot compare methods with the random baseline")
    model_data, data_metric = pairing.pairs(lists["models"], lists["datasets"], lists["metrics"], options.pairing)
    return Manifest(
        name=name,
        path=path,
        description=description,
        options=options,
        models=lists["models"],
        datasets=lists["datasets"],
        methods=lists["methods"],
        metrics=lists["metrics"],
        gates=gates,
        plugins=tuple(plugins),
        warnings=tuple(warnings),
        model_data=model_data,
        data_metric=data_metric,
    )


def _options(raw: Any, locate: Locator) -> Options:
    if not isinstance(raw, dict):
        raise UserError(f"{locate('options')}: expected a mapping of options ({', '.join(OPTION_TYPES)})")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in OPTION_TYPES:
            raise UserError(
                f"{locate('options', key)}: unknown option {key!r}{registry.suggest(str(key), OPTION_TYPES)}"
            )
        expected, described = OPTION_TYPES[key]
        if key == "limit" and value is None:
            values[key] = None
            continue
        if not isinstance(value, expected) or isinstance(value, bool):
            raise UserError(f"{locate('options', key)}: expected {described}, got {value!r}")
        values[key] = value
    for key, (low, high) in OPTION_RANGES.items():
        value = values.get(key)
        if value is not None and not low <= value <= high:
            raise UserError(f"{locate('options', key)}: {key} must be between {low:,} and {high:,}, got {value!r}")
    if values.get("pairing", "product") not in MODES:
        raise UserError(
            f"{locate('options', 'pairing')}: expected 'product' or 'matching', got {values['pairing']!r}"
            f"{registry.suggest(str(values['pairing']), MODES)}"
        )
    if values.get("target", "predicted") not in ("predicted", "label"):
        raise UserError(f"{locate('options', 'target')}: expected 'predicted' or 'label', got {values['target']!r}")
    if "seeds" in values:
        seeds = values["seeds"]
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63 for s in seeds):
            raise UserError(
                f"{locate('options', 'seeds')}: expected a non-empty list of integers between 0 and 2**63 - 1"
            )
        if len(set(seeds)) != len(seeds):
            raise UserError(f"{locate('options', 'seeds')}: seeds repeat")
        values["seeds"] = tuple(seeds)
    check_device(values.get("device", "cpu"), where=locate("options", "device"))
    return Options(**values)


def _plugin_list(raw: Any, kind: str, key: str, locate: Locator) -> tuple[PluginSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{locate(key)}: expected a non-empty list of {kind} names (`xaibench ls {kind}`)")
    specs: list[PluginSpec] = []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            name, params, where_path = entry, {}, (key, i)
        elif isinstance(entry, dict) and len(entry) == 1:
            name, params = next(iter(entry.items()))
            where_path = (key, i, name)
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise UserError(f"{locate(*where_path)}: parameters must be a mapping such as {{n_steps: 32}}")
        else:
            raise UserError(f"{locate(key, i)}: expected a name or a one-key mapping name: {{param: value}}")
        if not isinstance(name, str):
            raise UserError(f"{locate(key, i)}: a {kind} name must be a string")
        for param in params:
            if not isinstance(param, str):
                raise UserError(f"{locate(*where_path)}: parameter names must be strings, got {param!r}")
        where = locate(*where_path)
        instance = registry.build(kind, name, params, where)
        spec = PluginSpec(kind, name, canonical_json(registry.canonical_params(instance)), where)
        if any(s.name == spec.name and s.params_json == spec.params_json for s in specs):
            raise UserError(f"{where}: {kind} {name!r} is listed twice with the same parameters")
        specs.append(spec)
    return tuple(specs)
