"""`xaibench plan MANIFEST`: the task graph's counts, done and to do, without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from xaibench.cli import RESULTS_OPTION, app, user_errors


@app.command()
@user_errors
def plan(
    manifest: Path = typer.Argument(..., help="YAML manifest."),
    results: Path = RESULTS_OPTION,
    limit: int | None = typer.Option(None, help="Override options.limit (items per dataset)."),
):
    """Print the manifest's tasks by kind, how many are done, and the work still to do (runs nothing)."""
    from xaibench import manifest as manifest_module
    from xaibench.cache import Cache
    from xaibench.preflight import preflight
    from xaibench.tasks import plan as make_plan

    loaded = manifest_module.load(manifest)
    if limit is not None:
        loaded = manifest_module.with_options(loaded, limit=limit)
    preflight(loaded)
    graph = make_plan(loaded, Cache(), results / loaded.name)
    typer.echo(f"{manifest}: {graph.jobs} jobs -> {len(graph.tasks)} tasks")
    for kind, count in graph.counts().items():
        if kind == "activations" and not count["total"]:
            continue  # no CAM method: no layer activations to plan
        done = count["total"] - count["todo"]
        typer.echo(f"  {kind:<11} {count['total']:>6} tasks  {done:>6} done  {count['todo']:>6} to do")
    work = graph.work()
    forward = sum(len(t.ids) for t in graph.todo if t.kind == "attribute")
    activations = f"{work['activations']} layer activations, " if work["activations"] else ""
    typer.echo(
        f"still to do: {work['fits']} fits, {activations}{work['attributions']} attributions, "
        f"{work['scores']} items to score, at most {forward} forward passes (items) for attribution"
    )
