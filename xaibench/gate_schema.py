"""The `gates:` section of a manifest: the rules, their keys, and parsing into ``Gate``s.

Evaluation lives in ``gates.py``; this module only validates what a manifest says, so
``check`` refuses a bad gate before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xaibench import registry
from xaibench.errors import UserError

GATE_RULES = ("beats_random", "min_mean", "max_mean")
GATE_KEYS = ("rule", "metric", "score", "methods", "value")
METHOD_GROUPS = ("all", "all_but_controls")
CONTROLS = ("random", "sobel", "blur_random")


@dataclass(frozen=True)
class Gate:
    rule: str
    metric: str
    score: str | None
    methods: tuple[str, ...] | str
    value: float | None
    where: str

    def describe(self) -> str:
        methods = self.methods if isinstance(self.methods, str) else ", ".join(self.methods)
        bound = f" {self.value}" if self.value is not None else ""
        return f"{self.rule}{bound} on {self.metric}{'/' + self.score if self.score else ''} for {methods}"


def parse_gates(raw: Any, lists: dict[str, tuple], locate: Any) -> tuple[Gate, ...]:
    """The manifest's gates, each checked against its methods and metrics; errors name the location."""
    if not isinstance(raw, list):
        raise UserError(f"{locate('gates')}: expected a list of gates such as {{rule: beats_random, metric: deletion}}")
    metric_names = [m.name for m in lists["metrics"]]
    method_names = [m.name for m in lists["methods"]]
    gates = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise UserError(f"{locate('gates', i)}: a gate is a mapping with keys {', '.join(GATE_KEYS)}")
        for key in entry:
            if key not in GATE_KEYS:
                raise UserError(
                    f"{locate('gates', i, key)}: unknown gate key {key!r}{registry.suggest(str(key), GATE_KEYS)}"
                )
        rule = entry.get("rule")
        if rule not in GATE_RULES:
            raise UserError(
                f"{locate('gates', i, 'rule')}: unknown rule {rule!r}{registry.suggest(str(rule), GATE_RULES)} "
                f"(rules: {', '.join(GATE_RULES)})"
            )
        metric = entry.get("metric")
        if metric not in metric_names:
            raise UserError(
                f"{locate('gates', i, 'metric')}: gate metric {metric!r} is not among the manifest's metrics"
                f"{registry.suggest(str(metric), metric_names)}"
            )
        methods = entry.get("methods", "all_but_controls")
        if isinstance(methods, str):
            if methods not in METHOD_GROUPS:
                raise UserError(
                    f"{locate('gates', i, 'methods')}: expected a list of methods or one of {', '.join(METHOD_GROUPS)}"
                )
        elif isinstance(methods, list):
            for j, method in enumerate(methods):
                if method not in method_names:
                    raise UserError(
                        f"{locate('gates', i, 'methods', j)}: gate method {method!r} is not among the manifest's "
                        f"methods{registry.suggest(str(method), method_names)}"
                    )
            methods = tuple(methods)
        else:
            raise UserError(f"{locate('gates', i, 'methods')}: expected a list of method names")
        value = entry.get("value")
        if rule in ("min_mean", "max_mean") and value is None:
            raise UserError(f"{locate('gates', i)}: rule {rule} needs a numeric 'value'")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{locate('gates', i, 'value')}: expected a number, got {value!r}")
        if rule == "beats_random" and value is not None:
            raise UserError(f"{locate('gates', i, 'value')}: rule beats_random takes no 'value'")
        if rule == "beats_random" and "random" not in method_names:
            raise UserError(f"{locate('gates', i, 'rule')}: beats_random needs the `random` method in methods")
        score = entry.get("score")
        if score is not None and not isinstance(score, str):
            raise UserError(f"{locate('gates', i, 'score')}: expected a score name such as auc")
        gates.append(
            Gate(
                rule,
                metric,
                score,
                methods,
                None if value is None else float(value),
                locate("gates", i),
            )
        )
    return tuple(gates)
