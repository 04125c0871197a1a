"""The plugin registry: ``register(kind, name)``, ``get``, ``names``, ``build`` and plugin loading.

Built-ins live in ``xaibench.models``, ``datasets``, ``methods`` and ``metrics``; third-party
packages add plugins through the ``xaibench.plugins`` entry-point group; a manifest can name
``package.module:attr`` or a path to a ``.py`` file, which is imported so that its
``@register`` decorators run.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any

from xaibench.api import KINDS
from xaibench.errors import UserError

_REGISTRY: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
_BUILTINS_LOADED = False


def register(kind: str, name: str):
    """Class decorator: register a frozen-dataclass plugin under an explicit snake_case name."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown plugin kind {kind!r}; expected one of {', '.join(KINDS)}")

    def decorate(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__}: a plugin must be a dataclass (its fields are its parameters)")
        version = getattr(cls, "version", None)
        if not isinstance(version, str) or not version:
            # The version goes into every cache key and result row: without one, an edited
            # plugin would silently reuse stale maps and scores.
            raise TypeError(
                f'{kind} {name!r} ({cls.__name__}) has no `version`; declare `version: ClassVar[str] = "1"` '
                "and bump it when its results change"
            )
        existing = _REGISTRY[kind].get(name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"{kind} {name!r} is registered twice ({existing.__module__}.{existing.__qualname__} and "
                f"{cls.__module__}.{cls.__qualname__}); give one of them another name"
            )
        cls.plugin_kind = kind
        cls.plugin_name = name
        _REGISTRY[kind][name] = cls
        return cls

    return decorate


def suggest(word: str, options: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the nearest option, or '' when none is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def load_builtins() -> None:
    """Import the built-in plugin packages and the ``xaibench.plugins`` entry points, once."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    for package in ("models", "datasets", "methods", "metrics"):
        importlib.import_module(f"xaibench.{package}")
    for entry_point in importlib.metadata.entry_points(group="xaibench.plugins"):
        try:
            entry_point.load()
        except (Exception, SystemExit) as error:  # a broken third-party plugin must not break every command
            print(
                f"warning: plugin entry point {entry_point.name!r} failed to load: {_describe(error)}",
                file=sys.stderr,
            )


def load_plugin_source(spec: str, base_dir: Path | None = None, where: str = "plugins") -> None:
    """Import ``package.module:attr`` or a ``.py`` file so its ``@register`` calls run."""
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise UserError(f"{where}: plugin file not found: {path}; give a path relative to the manifest")
        module_name = f"xaibench_user_{abs(hash(str(path.resolve())))}"
        if module_name in sys.modules:
            return
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as error:  # sys.exit() in a plugin must not end xaibench silently
            del sys.modules[module_name]
            raise UserError(f"{where}: importing {path} failed: {_describe(error)}") from None
        return
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise UserError(
            f"{where}: cannot import module {module_name!r} ({_describe(error)}); is it installed or on PYTHONPATH?"
        ) from None
    except (Exception, SystemExit) as error:
        raise UserError(f"{where}: importing module {module_name!r} failed: {_describe(error)}") from None
    if attr and not hasattr(module, attr):
        raise UserError(f"{where}: module {module_name!r} has no attribute {attr!r}")
    if attr:
        obj = getattr(module, attr)
        if not hasattr(obj, "plugin_kind"):
            raise UserError(f"{where}: {spec} is not a registered plugin; decorate it with @register(kind, name)")


def _describe(error: BaseException) -> str:
    """``Type: message`` on one line (a plugin's exception may span several)."""
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r}) while being imported"
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def names(kind: str) -> list[str]:
    load_builtins()
    return sorted(_REGISTRY[kind])


def get(kind: str, name: str, where: str | None = None) -> type:
    """The plugin class, or a UserError naming the nearest registered name."""
    load_builtins()
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        prefix = f"{where}: " if where else ""
        raise UserError(
            f"{prefix}unknown {kind} {name!r}{suggest(name, _REGISTRY[kind])} (`xaibench ls {kind}` lists them)"
        ) from None


def parameters(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def build(kind: str, name: str, params: dict[str, Any] | None = None, where: str | None = None):
    """Instantiate a plugin from plain (YAML) values, checking names and types of parameters."""
    cls = get(kind, name, where)
    params = dict(params or {})
    where = where or f"{kind} {name}"
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in parameters(cls)}
    for key in params:
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise UserError(
                f"{where}: unknown parameter {key!r} for {kind} {name!r}{suggest(key, fields)} (parameters: {valid})"
            )
    values = {}
    for key, f in fields.items():
        if key in params:
            values[key] = coerce(params[key], hints[key], f"{where}.{key}")
        elif default_of(f) is dataclasses.MISSING:
            raise UserError(f"{where}: missing required parameter {key!r} for {kind} {name!r}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:  # __post_init__ range checks
        raise UserError(f"{where}: {error}") from None


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check a YAML value against a parameter's annotation; return it in the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except UserError as error:
                errors.append(str(error))
        raise UserError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            hint = suggest(str(value), [str(a) for a in args]) if isinstance(value, str) else ""
            raise UserError(f"{where}: {value!r} is not one of {choices}{hint}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item_type = args[0] if args else Any
        items = [coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


def type_name(annotation: Any) -> str:
    """A short readable name for a parameter's annotation (for `xaibench ls`)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (tuple, list):
        return f"list[{type_name(args[0]) if args else 'any'}]"
    if origin is not None and args:
        return " | ".join(type_name(a) for a in args)
    return getattr(annotation, "__name__", str(annotation))


@functools.lru_cache(maxsize=256)
def _source_digest(module_name: str) -> str:
    module = sys.modules.get(module_name)
    try:
        source = inspect.getsource(module) if module is not None else module_name
    except (OSError, TypeError):  # no source on disk (e.g. defined in a REPL)
        source = module_name
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def plugin_version(plugin: Any) -> str:
    """The version that goes into cache keys and result rows.

    Built-in plugins carry a hand-bumped ``version``. A user's plugin also gets a digest of its
    module's source, so editing the code of one's own method invalidates its cached maps and
    rows even when nobody remembers to bump ``version``.
    """
    cls = plugin if isinstance(plugin, type) else type(plugin)
    if cls.__module__.split(".")[0] == "xaibench":
        return str(cls.version)
    return f"{cls.version}+{_source_digest(cls.__module__)}"


def key_params(plugin: Any) -> dict[str, Any]:
    """Parameters that decide results: canonical params less the plugin's ``not_in_key`` ones
    (batching and sizing settings that never change an item's value)."""
    excluded = getattr(type(plugin), "not_in_key", frozenset())
    return {k: v for k, v in canonical_params(plugin).items() if k not in excluded}


def canonical_params(plugin: Any) -> dict[str, Any]:
    """Every parameter, defaults included, as JSON-ready values: the identity used in keys."""
    out = {}
    for f in parameters(type(plugin)):
        value = getattr(plugin, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def summary(cls: type) -> str:
    """First paragraph of the plugin's docstring, on one line (docstrings wrap their first sentence)."""
    doc = (cls.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())
