"""The `gates:` section of a manifest: the rules, their keys, and parsing into ``Gate``s.

Rules (evaluation lives in ``gates.py``; this module only validates what a manifest says, so
``check`` refuses a bad gate before any work):

- ``passes``: a sanity check (``SANITY_PASS``: model_randomization, data_randomization,
  random_logit, smprt, emprt) is passed: the method's mean of the check's score is below
  ``value`` (default 0.5) for a similarity, above it (default 0) for eMPRT's complexity rise.
- ``beats_reference``: the method's verdict against the metric's reference method (its
  ``reference``: ``random`` for perturbation metrics) is "beats"; ``beats_random`` is the same
  with ``random`` named.
- ``min_mean`` / ``max_mean``: the method's mean is at least / at most ``value``.
- ``no_regression``: the method's mean is no worse than in the ``baseline`` results folder by
  more than ``value`` (tolerance in the score's units, default 0).
``methods`` is a list, ``all`` or ``all_but_controls`` (the default); ``score`` picks one score
of a metric with several.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xaibench import registry
from xaibench.errors import UserError

GATE_RULES = ("passes", "beats_reference", "beats_random", "min_mean", "max_mean", "no_regression")
GATE_KEYS = ("rule", "metric", "score", "methods", "value", "baseline")
PASS_THRESHOLD = 0.5  # default `passes` bound: mean similarity below it (Adebayo et al.'s "low")
# Sanity checks: metric -> (the score a method must pass on, default threshold). Similarities
# pass below the threshold, eMPRT's complexity rise (higher is better) above it. A plugin metric
# may declare ``pass_score`` and ``pass_threshold`` class variables instead.
SANITY_PASS: dict[str, tuple[str, float]] = {
    "model_randomization": ("final", PASS_THRESHOLD),
    "smprt": ("final", PASS_THRESHOLD),
    "data_randomization": ("similarity", PASS_THRESHOLD),
    "random_logit": ("similarity", PASS_THRESHOLD),
    "emprt": ("rise", 0.0),
}


def pass_rule(metric: str, metric_cls: type | None = None) -> tuple[str, float] | None:
    """(score, default threshold) of a sanity-check metric, or None for other metrics."""
    if metric_cls is not None and hasattr(metric_cls, "pass_score"):
        return metric_cls.pass_score, float(getattr(metric_cls, "pass_threshold", PASS_THRESHOLD))
    return SANITY_PASS.get(metric)


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
    baseline: str | None = None  # no_regression: the baseline results folder (or --baseline)
    reference: str = "random"  # the metric's reference method (beats_reference)

    def describe(self) -> str:
        methods = self.methods if isinstance(self.methods, str) else ", ".join(self.methods)
        bound = f" {self.value}" if self.value is not None else ""
        against = f" vs {self.baseline}" if self.baseline else ""
        return f"{self.rule}{bound} on {self.metric}{'/' + self.score if self.score else ''} for {methods}{against}"


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
            if not methods:  # a gate over no method would pass with nothing judged
                raise UserError(
                    f"{locate('gates', i, 'methods')}: the gate names no method; "
                    "list some, or use all or all_but_controls"
                )
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
        metric_cls = registry.get("metric", metric)
        reference = getattr(metric_cls, "reference", "random")
        if rule in ("beats_random", "beats_reference") and value is not None:
            raise UserError(f"{locate('gates', i, 'value')}: rule {rule} takes no 'value'")
        if rule == "beats_random" and "random" not in method_names:
            raise UserError(f"{locate('gates', i, 'rule')}: beats_random needs the `random` method in methods")
        if rule == "beats_reference" and reference not in method_names:
            hint = (
                "it compares with the original model's map itself; use rule passes"
                if reference == "original"
                else f"add the `{reference}` method to methods"
            )
            raise UserError(
                f"{locate('gates', i, 'rule')}: metric {metric}'s reference is {reference!r}, not a method of "
                f"this manifest: {hint}"
            )
        sanity = pass_rule(metric, metric_cls)
        if rule == "passes":
            if sanity is None:
                raise UserError(
                    f"{locate('gates', i, 'rule')}: rule passes is for sanity checks (model_randomization, "
                    f"data_randomization, random_logit, smprt, emprt); use min_mean or max_mean for {metric}"
                )
            value = sanity[1] if value is None else value
        if rule == "no_regression":
            value = 0.0 if value is None else value
            if value < 0:
                raise UserError(f"{locate('gates', i, 'value')}: a tolerance is 0 or more, got {value}")
        baseline = entry.get("baseline")
        if baseline is not None and (rule != "no_regression" or not isinstance(baseline, str)):
            raise UserError(f"{locate('gates', i, 'baseline')}: only no_regression takes a baseline folder")
        score = entry.get("score")
        if score is not None and not isinstance(score, str):
            raise UserError(f"{locate('gates', i, 'score')}: expected a score name such as auc")
        if score is None and rule == "passes":
            score = sanity[0]
        gates.append(
            Gate(
                rule,
                metric,
                score,
                methods,
                None if value is None else float(value),
                locate("gates", i),
                baseline,
                "random" if rule == "beats_random" else reference,
            )
        )
    return tuple(gates)
