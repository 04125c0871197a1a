"""`xaibench gate MANIFEST --results DIR`: evaluate a manifest's gates on stored results (no model work).

Exit 0 when every gate passes, 1 when one fails (each failure printed with its reason), 2 for
a user error (no gates, no results folder). ``--junit`` and ``--summary`` write the CI reports
of ``gates.write_junit`` and ``gates.write_summary``; ``--baseline`` names the results folder
``no_regression`` gates compare with.
"""

from __future__ import annotations

from pathlib import Path

import typer

from xaibench.cli import EXIT_GATE, RESULTS_OPTION, app, err, user_errors
from xaibench.errors import UserError

JUNIT_OPTION = typer.Option(None, "--junit", help="Write a JUnit XML report (one test case per gate and per job).")
SUMMARY_OPTION = typer.Option(None, "--summary", help="Write a Markdown summary (for a CI step summary).")
BASELINE_OPTION = typer.Option(
    None, "--baseline", help="Baseline results folder for no_regression gates (overrides the manifest's)."
)


def print_results(results, console=err) -> int:
    """Print each gate's verdict and reasons; the exit code (0, or 1 when a gate failed)."""
    code = 0
    for result in results:
        status = "[green]pass[/]" if result.passed else "[red]FAIL[/]"
        console.print(f"gate {status}: {result.gate.describe()}")
        for failure in result.failures:
            console.print(f"  - {failure}", markup=False)
        code = code or (0 if result.passed else EXIT_GATE)
    return code


def manifest_rows(loaded, results_root: Path):
    """The stored rows of the manifest's current jobs on its items (as `run` shows them)."""
    from xaibench import results as results_module
    from xaibench.fitting import FitSpec
    from xaibench.tasks import item_ids, job_keys

    folder = results_root / loaded.name
    if not folder.is_dir():
        if not results_root.is_dir():
            raise UserError(f"results folder not found: {folder}; run `xaibench run` first or pass --results")
        folder = results_root  # given the manifest's own folder
    rows = results_module.read(folder)
    if rows.empty:
        return rows
    options = loaded.options
    keys = {job_keys(job, FitSpec(job.model), options).score for job in loaded.jobs()}
    items = {i for spec in loaded.datasets for i in item_ids(spec.instance(), options.split, options.limit)}
    return rows[rows["job_key"].isin(keys) & rows["item_id"].isin(items)]


@app.command("gate")
@user_errors
def gate(
    manifest: Path = typer.Argument(..., help="YAML manifest whose gates to evaluate."),
    results: Path = RESULTS_OPTION,
    baseline: Path | None = BASELINE_OPTION,
    junit: Path | None = JUNIT_OPTION,
    summary: Path | None = SUMMARY_OPTION,
):
    """Evaluate a manifest's gates on stored results, without running anything (exit 1 when one fails)."""
    import pandas as pd

    from xaibench import gates as gates_module
    from xaibench import manifest as manifest_module
    from xaibench.boards import summary as summary_board

    loaded = manifest_module.load(manifest)
    if not loaded.gates:
        raise UserError(f"{manifest}: the manifest has no gates: to evaluate")
    rows = manifest_rows(loaded, results)
    board = summary_board.summary(rows) if not rows.empty else pd.DataFrame(columns=["metric", "score", "method"])
    outcome = gates_module.evaluate(loaded.gates, board, baseline=baseline)
    code = print_results(outcome)
    jobs = gates_module.job_outcomes(loaded, rows)
    if junit is not None:
        gates_module.write_junit(outcome, jobs, junit, name=f"xaibench.{loaded.name}")
        err.print(f"wrote {junit}")
    if summary is not None:
        gates_module.write_summary(outcome, jobs, summary, title=f"xaibench {loaded.name}")
        err.print(f"wrote {summary}")
    raise typer.Exit(code)
