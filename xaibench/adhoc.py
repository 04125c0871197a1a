"""The manifest behind `xaibench eval`: one model and dataset, methods and metrics from flags."""

from __future__ import annotations

from typing import Any

from xaibench import registry
from xaibench.errors import UserError
from xaibench.manifest import Manifest, from_dict
from xaibench.manifest_yaml import Locator, load_yaml


def _short(text: str, width: int = 60) -> str:
    """``repr`` of a command-line value, cut so an error stays one readable line."""
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def adhoc(
    *,
    model: str,
    dataset: str,
    methods: list[str],
    metrics: list[str],
    params: list[str],
    plugins: list[str],
    options: dict[str, Any],
) -> Manifest:
    """The manifest behind `xaibench eval`: one model and dataset, ``KIND.PARAM=VALUE`` or
    ``PLUGIN.PARAM=VALUE`` parameters. A kind-wide parameter goes to each plugin of that kind
    that has it (``method.n_steps`` reaches integrated_gradients, not saliency)."""
    registry.load_builtins()
    for spec in plugins:
        registry.load_plugin_source(spec, None, where=f"--plugin {spec}")
    chosen = {"model": [model], "dataset": [dataset], "method": methods, "metric": metrics}
    entries: dict[str, dict[str, dict[str, Any]]] = {kind: {n: {} for n in names} for kind, names in chosen.items()}
    for item in params:
        key, sep, raw = item.partition("=")
        prefix, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise UserError(
                f"--param {_short(item)}: expected KIND.PARAM=VALUE or PLUGIN.PARAM=VALUE, e.g. method.n_steps=16"
            )
        try:
            # The manifest's bounded reader: a value is YAML, so it can nest or alias without end too.
            value = load_yaml(raw, "value")
        except UserError as error:
            reason = str(error).removeprefix("value").lstrip(":0123456789 ")
            raise UserError(f"--param {_short(item)}: cannot read value {_short(raw)} ({reason})") from None
        if prefix in chosen:
            fields = {n: [f.name for f in registry.parameters(registry.get(prefix, n))] for n in chosen[prefix]}
            targets = [n for n, names in fields.items() if param in names]
            if not targets:
                every = sorted({f for names in fields.values() for f in names})
                raise UserError(
                    f"--param {_short(item)}: no {prefix} of this evaluation ({', '.join(chosen[prefix])}) has a "
                    f"parameter {param!r}{registry.suggest(param, every)}"
                )
            for name in targets:
                entries[prefix][name][param] = value
        else:
            kinds = [kind for kind, names in chosen.items() if prefix in names]
            if not kinds:
                every = [n for names in chosen.values() for n in names]
                raise UserError(
                    f"--param {_short(item)}: {prefix!r} is neither a kind (model, dataset, method, metric) "
                    f"nor a plugin of this evaluation{registry.suggest(prefix, [*chosen, *every])}"
                )
            for kind in kinds:
                entries[kind][prefix][param] = value
    data = {
        "name": "eval",
        "plugins": plugins,
        "options": options,
        **{f"{kind}s": [{name: p} for name, p in by_name.items()] for kind, by_name in entries.items()},
    }
    return from_dict(data, Locator("eval", ""))
