"""The `xaibench` command line (Typer): run, eval, plan, check, ls, board, results, cache.

It parses options and calls the modules; no logic of its own. Exit codes: 0 ok, 1 a gate
failed, 2 a user error (one line, no traceback), 3 a task failed at run time, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM). Finished tasks' rows are kept in every case.
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

from xaibench.cli_errors import OneLineErrors
from xaibench.errors import UserError

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    cls=OneLineErrors,  # click's usage errors (unknown option, bad value) as one line, exit 2
    help="Benchmark attribution (saliency) methods for faithfulness: run manifests, evaluate one "
    "method ad hoc, render leaderboards with confidence intervals against a random baseline.\n\n"
    "Exit codes: 0 ok, 1 a gate failed, 2 a user error, 3 a task failed at run time, "
    "130 interrupted, 143 terminated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)


def _version_callback(value: bool) -> None:
    if value:
        import xaibench

        typer.echo(f"xaibench {xaibench.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
) -> None:
    """Benchmark attribution (saliency) methods for faithfulness."""


# Off a terminal (CI logs, pipes) rich would wrap tables at 80 columns; give them room instead.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

EXIT_GATE, EXIT_USER, EXIT_JOBS, EXIT_INTERRUPT, EXIT_TERMINATED = 1, 2, 3, 130, 143


class Terminated(BaseException):
    """SIGTERM (a CI timeout, a cluster preemption), handled like Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


class Format(str, Enum):
    table = "table"
    md = "md"
    csv = "csv"
    html = "html"


def user_errors(command):
    """Turn a UserError into one line on stderr and exit 2; Ctrl-C into exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(EXIT_USER) from None
        except OSError as error:  # a path the user gave: unreadable, a folder, a full disk
            where = f"{error.filename}: " if error.filename else ""
            typer.echo(f"error: {where}{error.strerror or error}", err=True)
            raise typer.Exit(EXIT_USER) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: rows of finished tasks are kept; rerun to continue", err=True)
            raise typer.Exit(EXIT_INTERRUPT) from None
        except Terminated:
            typer.echo("terminated: rows of finished tasks are kept; rerun to continue", err=True)
            raise typer.Exit(EXIT_TERMINATED) from None

    return wrapper


RESULTS_OPTION = typer.Option(Path("results"), "--results", "-r", help="Root folder of result tables.")
FORMAT_OPTION = typer.Option(Format.table, "--format", "-f", help="Leaderboard format.")
WORKERS_OPTION = typer.Option(
    None, "--workers", "-w", help="Run tasks on a local Dask cluster of N single-threaded worker processes."
)
SCHEDULER_OPTION = typer.Option(
    None, "--scheduler", help="Run tasks on the Dask cluster at ADDRESS (workers must share cache and results)."
)
THREADS_OPTION = typer.Option(
    None,
    "--threads",
    help="torch intra-op threads for attribution and scoring (default 1, in-process and per Dask worker: values "
    "are then identical on every machine; more threads can move them by ~1e-5). Fits always use 1.",
)


@app.command()
@user_errors
def run(
    manifest: Path = typer.Argument(..., help="YAML manifest (see manifests/)."),
    results: Path = RESULTS_OPTION,
    limit: int | None = typer.Option(None, help="Override options.limit (items per dataset)."),
    fmt: Format = FORMAT_OPTION,
    board: bool = typer.Option(True, help="Print the leaderboard at the end."),
    gates: bool = typer.Option(True, help="Evaluate the manifest's gates (exit 1 when one fails)."),
    workers: int | None = WORKERS_OPTION,
    scheduler: str | None = SCHEDULER_OPTION,
    threads: int | None = THREADS_OPTION,
    junit: Path | None = typer.Option(None, "--junit", help="Write a JUnit XML report (a case per gate and job)."),
    summary: Path | None = typer.Option(None, "--summary", help="Write a Markdown summary (a CI step summary)."),
    baseline: Path | None = typer.Option(None, "--baseline", help="Results folder for no_regression gates."),
):
    """Run every task of a manifest that is not done yet, then print its leaderboard and evaluate its gates."""
    from xaibench import manifest as manifest_module

    loaded = manifest_module.load(manifest)
    if limit is not None:
        loaded = manifest_module.with_options(loaded, limit=limit)
    reports = {"junit": junit, "summary": summary, "baseline": baseline}
    raise typer.Exit(_execute(loaded, results, fmt, board, gates, workers, scheduler, threads, reports))


@app.command("eval")
@user_errors
def eval_(
    model: str = typer.Option(..., "--model", help="Model plugin, e.g. digits_cnn."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset plugin, e.g. digits."),
    method: list[str] = typer.Option(..., "--method", help="Method plugin(s); repeat for several."),
    metric: list[str] = typer.Option(..., "--metric", help="Metric plugin(s); repeat for several."),
    limit: int | None = typer.Option(256, help="Items to evaluate (0 = all)."),
    param: list[str] = typer.Option(
        [],
        "--param",
        "-p",
        help="Parameter as KIND.PARAM=VALUE (every plugin of that kind that has PARAM) or PLUGIN.PARAM=VALUE, "
        "e.g. method.n_steps=16, metric.steps=10, integrated_gradients.n_steps=64, dataset.size=16.",
    ),
    seed: int = typer.Option(0, help="Run seed."),
    split: str = typer.Option("test", help="Dataset split."),
    target: str = typer.Option("predicted", help="Explain the predicted class or the label."),
    batch_size: int = typer.Option(64, help="Items per batch."),
    baseline: bool = typer.Option(True, help="Also run the `random` control for the paired comparison."),
    plugin: list[str] = typer.Option([], "--plugin", help="Extra plugin source: package.module:attr or file.py."),
    results: Path = RESULTS_OPTION,
    fmt: Format = FORMAT_OPTION,
    workers: int | None = WORKERS_OPTION,
    scheduler: str | None = SCHEDULER_OPTION,
    threads: int | None = THREADS_OPTION,
):
    """Evaluate methods on one model and dataset without writing a manifest."""
    from xaibench.adhoc import adhoc

    methods = list(dict.fromkeys(method))
    if baseline and "random" not in methods:
        methods.append("random")
    loaded = adhoc(
        model=model,
        dataset=dataset,
        methods=methods,
        metrics=list(dict.fromkeys(metric)),
        params=param,
        plugins=[str(Path(p).resolve()) if p.endswith(".py") else p for p in plugin],
        options={"split": split, "limit": limit or None, "batch_size": batch_size, "target": target, "seeds": [seed]},
    )
    raise typer.Exit(_execute(loaded, results, fmt, True, False, workers, scheduler, threads))


def _execute(
    loaded, results: Path, fmt: Format, board: bool, gates: bool, workers, scheduler, threads, reports=None
) -> int:
    import signal

    from xaibench import gates as gates_module
    from xaibench.executors import choose
    from xaibench.progress import RichProgress
    from xaibench.runner import Runner

    if threads is not None and not 1 <= threads <= 1024:
        raise UserError(f"--threads must be between 1 and 1024, got {threads}")
    executor = choose(workers, scheduler)
    # One intra-op thread by default, in-process and per Dask worker: with more, torch's bundled
    # MKL splits small matrix products differently by batch size (measured: logits moved by 5e-6
    # at 2 threads and 7 items), so values would depend on the machine. Parallelism comes from
    # --workers; --threads N trades that bit-for-bit reproducibility for speed.
    threads = 1 if threads is None else threads
    for warning in loaded.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with RichProgress(err) as progress:
            runner = Runner(
                loaded, results, progress=progress.update, log=progress.log, executor=executor, threads=threads
            )
            report = runner.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = report.counts
    err.print(
        f"{report.jobs} jobs, {counts.tasks_run} tasks in {report.seconds:.1f}s ({report.executor}) · computed: "
        f"{counts.models_trained} models trained, {counts.forward_items} forward, "
        + (f"{counts.activation_items} layer activations, " if counts.activation_items else "")
        + f"{counts.attributed_items} attributions, "
        f"{counts.scored_items} scores · {counts.rows_written} rows written · "
        f"{counts.skipped_items} items already done · results in {report.results_dir}"
    )
    from xaibench.cli_board import RunBoard

    shown = RunBoard(report.results_dir, runner.job_keys(), runner.item_ids)
    table = shown.boards.table if shown.boards is not None else None
    if shown.boards is not None:  # one line per run in results/<manifest>/history.jsonl (trends, regressions)
        from xaibench.site import record_history

        record_history(report.results_dir, report.run_id, None if shown.from_memo else shown.rows(), board=table)
    if board and shown.boards is not None:
        shown.print(Format.md if fmt is Format.html else fmt)
        for path in shown.plots():  # each study's picture beside its results (ROAR curves, sanity, ...)
            err.print(f"wrote {path}")
    code = 0
    reports = reports or {}
    if gates and loaded.gates:
        import pandas as pd

        from xaibench.cli_gate import print_results

        # No rows is no evidence: every gate then fails with "no results", never passes.
        judged = table if table is not None else pd.DataFrame(columns=["metric", "score", "method"])
        outcome = gates_module.evaluate(loaded.gates, judged, baseline=reports.get("baseline"))
        code = print_results(outcome)
        if reports.get("junit") or reports.get("summary"):
            jobs = gates_module.job_outcomes(loaded, shown.rows(), report.failures)
        if reports.get("junit"):
            gates_module.write_junit(outcome, jobs, reports["junit"], name=f"xaibench.{loaded.name}")
            err.print(f"wrote {reports['junit']}")
        if reports.get("summary"):
            gates_module.write_summary(outcome, jobs, reports["summary"], title=f"xaibench {loaded.name}")
            err.print(f"wrote {reports['summary']}")
    if report.failures:
        skipped = f"; {report.skipped} dependent task(s) skipped" if report.skipped else ""
        err.print(
            f"[red]{len(report.failures)} task(s) failed[/]{skipped} "
            f"(details in {report.results_dir}/{report.run_id}-run.json):",
            markup=True,
        )
        for label, message in report.failures.items():
            err.print(f"  - {label}: {message}", markup=False)
        code = EXIT_JOBS
    return code


@app.command()
@user_errors
def check(manifests: list[Path] = typer.Argument(..., help="Manifest file(s) to validate.")):
    """Validate manifests (schema, plugins, parameters, model/dataset fit) without loading a model."""
    from xaibench import manifest as manifest_module
    from xaibench.preflight import preflight

    for path in manifests:
        loaded = manifest_module.load(path)
        preflight(loaded)
        for warning in loaded.warnings:
            err.print(f"[yellow]warning:[/] {path}: {warning}")
        if loaded.options.pairing == "matching":
            shape = f"{len(loaded.model_dataset_pairs())} matching model-dataset pairs"
        else:
            shape = f"{len(loaded.models)} models x {len(loaded.datasets)} datasets"
        typer.echo(
            f"{path}: ok · {len(loaded.jobs())} jobs ({shape} x {len(loaded.methods)} methods "
            f"x {len(loaded.metrics)} metrics x {len(loaded.options.seeds)} seeds)"
        )


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `xaibench board ... | head`
        sys.stderr.close()


# Command groups live in their own modules (one job each); importing them adds them to `app`.
from xaibench import cli_gate  # noqa: E402, F401, I001
from xaibench import cli_ls  # noqa: E402, F401
from xaibench import cli_plan  # noqa: E402, F401
from xaibench import cli_site  # noqa: E402, F401
from xaibench import cli_maintenance  # noqa: E402, F401
from xaibench import cli_board  # noqa: E402, F401

if __name__ == "__main__":
    # `python -m xaibench.cli`: this file runs as `__main__`, a second copy of the module that the
    # command modules above never registered on; run the app of the real `xaibench.cli`.
    from xaibench.cli import main as cli_main

    cli_main()
