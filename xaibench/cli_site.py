"""`xaibench site`: write the static HTML leaderboard site of a results tree (no server, no network)."""

from __future__ import annotations

from pathlib import Path

import typer

from xaibench.cli import HELP_OPTIONS, app, err, user_errors


@app.command("site", context_settings=HELP_OPTIONS)
@user_errors
def site(
    results_dir: Path = typer.Argument(..., help="The results tree (every manifest folder) or one manifest's folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the site (created; a previous site is replaced)."),
    items: int = typer.Option(8, "--items", help="Items per saliency grid (the first N of each model x dataset)."),
    cache: Path | None = typer.Option(None, "--cache", help="Cache root to read maps from (default: XAIBENCH_CACHE)."),
):
    """Write a static leaderboard site: overview, sortable tables, curves, saliency grids, run history."""
    from xaibench.errors import UserError
    from xaibench.site.build import size, write_site

    if not 0 <= items <= 64:
        raise UserError(f"--items must be between 0 and 64, got {items}")
    index = write_site(results_dir, out, cache, n_items=items)
    err.print(f"wrote {index} ({size(out) / 1e6:.2f} MB); open it in a browser, no server needed")
