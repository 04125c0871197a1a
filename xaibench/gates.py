"""CI gates: rules over the summary board that make `xaibench run` exit 1 when they fail.

- ``beats_random``: every listed method's verdict is "beats random" in every cell of the metric.
- ``min_mean`` / ``max_mean``: every listed method's mean is at least / at most ``value``.
``methods`` is a list, ``all`` or ``all_but_controls`` (the default); ``score`` picks one score
of a metric with several.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from xaibench.boards.summary import VERDICT_BEATS
from xaibench.gate_schema import CONTROLS, Gate


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    passed: bool
    failures: tuple[str, ...]


def _methods(gate: Gate, available: list[str]) -> list[str]:
    if gate.methods == "all":
        return available
    if gate.methods == "all_but_controls":
        return [m for m in available if m.split("[")[0] not in CONTROLS]
    return [m for m in available if m.split("[")[0] in gate.methods]


def evaluate(gates: tuple[Gate, ...], board: pd.DataFrame) -> list[GateResult]:
    results = []
    for gate in gates:
        cells = board[board["metric"].str.split("[").str[0] == gate.metric]
        if gate.score:
            cells = cells[cells["score"] == gate.score]
        failures = []
        if cells.empty:
            failures.append(f"no results for metric {gate.metric}")
        for method in _methods(gate, list(dict.fromkeys(cells["method"]))):
            for _, row in cells[cells["method"] == method].iterrows():
                where = f"{method} on {row['model']} x {row['dataset']} {row['metric']}/{row['score']}"
                if gate.rule == "beats_random" and row["verdict"] != VERDICT_BEATS:
                    failures.append(f"{where}: {row['verdict']} (delta {row['delta']:+.3f}, p {row['p_holm']:.3g})")
                elif gate.rule == "min_mean" and not row["mean"] >= gate.value:
                    failures.append(f"{where}: mean {row['mean']:.3f} < {gate.value}")
                elif gate.rule == "max_mean" and not row["mean"] <= gate.value:
                    failures.append(f"{where}: mean {row['mean']:.3f} > {gate.value}")
        results.append(GateResult(gate, not failures, tuple(failures)))
    return results
