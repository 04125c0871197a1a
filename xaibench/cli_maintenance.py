"""`xaibench cache ...` and `xaibench results ...`: inspect, verify, clear and compact stored outputs."""

from __future__ import annotations

from pathlib import Path

import typer

from xaibench.cli import HELP_OPTIONS, app, user_errors
from xaibench.errors import UserError

cache_app = typer.Typer(
    help="Inspect or clear the cache of trained models, logits, layer activations and attributions.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
)
results_app = typer.Typer(help="Maintain result folders.", no_args_is_help=True, context_settings=HELP_OPTIONS)
app.add_typer(cache_app, name="cache")
app.add_typer(results_app, name="results")


@cache_app.command("info")
@user_errors
def cache_info():
    """Where the cache is and how much it holds."""
    from xaibench.cache import Cache

    cache = Cache()
    typer.echo(f"cache root: {cache.root}  (move it with XAIBENCH_CACHE)")
    for row in cache.info():
        typer.echo(
            f"  {row['kind']:<13} {row['entries']:>6} entries {row['files']:>7} files {row['bytes'] / 1e6:>9.1f} MB"
        )
    for record in cache.models():
        if "damaged" in record:
            typer.echo(f"  damaged model record: {record['damaged']} (moved aside and retrained on next use)")
            continue
        extra = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.endswith("accuracy") and isinstance(v, float))
        role = f" ({record['role']})" if record.get("role", "original") != "original" else ""
        typer.echo(f"  model {record.get('name')}{role}: trained in {record.get('train_seconds', 0):.1f}s; {extra}")


@cache_app.command("clear")
@user_errors
def cache_clear(
    kind: str | None = typer.Argument(None, help="models, logits, activations or attributions (default: all)."),
):
    """Delete cached entries (all, or one kind)."""
    from xaibench.cache import KINDS, Cache

    if kind is not None and kind not in KINDS:
        raise UserError(f"unknown cache kind {kind!r}; use one of {', '.join(KINDS)}")
    freed = Cache().clear(kind)
    typer.echo(f"cleared {kind or 'all'}: {freed / 1e6:.1f} MB freed")


@cache_app.command("verify")
@user_errors
def cache_verify(
    recompute: int = typer.Option(
        0, "--recompute", help="Also recompute N random cached maps and N stored rows and compare (tolerance 1e-6)."
    ),
    results: Path = typer.Option(Path("results"), "--results", "-r", help="Results root whose rows to sample."),
    seed: int = typer.Option(0, help="Seed of the random sample."),
):
    """Check every cached file against its stored hash; with --recompute, redo a sample and compare."""
    import random

    from xaibench.cache import Cache

    if not 0 <= recompute <= 100_000:
        raise UserError(f"--recompute must be between 0 and 100,000, got {recompute}")
    cache = Cache()
    bad = cache.verify()
    for path in bad:
        typer.echo(f"corrupt: {path}")
    typer.echo(f"{len(bad)} corrupt file(s)" if bad else "cache ok: every file matches its hash")
    differing = []
    if recompute:
        from xaibench import verify

        rng = random.Random(seed)
        checked_maps, map_diffs = verify.attributions(cache, recompute, rng)
        checked_rows, row_diffs = verify.rows(cache, results, recompute, rng)
        differing = map_diffs + row_diffs
        for diff in differing:
            typer.echo(f"differs: {diff.what} {diff.where}: {diff.difference:.3g} > {verify.TOLERANCE}")
        typer.echo(
            f"recomputed {checked_maps} cached maps and {checked_rows} result rows: "
            f"{len(map_diffs)} maps and {len(row_diffs)} rows differ beyond {verify.TOLERANCE}"
        )
    if bad or differing:
        raise typer.Exit(1)


@results_app.command("compact")
@user_errors
def results_compact(results_dir: Path = typer.Argument(..., help="A manifest's results folder.")):
    """Merge a results folder's part files into one deduplicated file (atomic; safe during a run)."""
    from xaibench import results as results_module

    if not results_dir.is_dir():
        raise UserError(f"results folder not found: {results_dir}")
    folders = [results_dir, *[p for p in sorted(results_dir.iterdir()) if p.is_dir()]]
    for folder in folders:
        merged, rows = results_module.compact(folder)
        if merged:
            typer.echo(f"{folder}: {merged} files -> 1 ({rows} rows)")
    typer.echo("done")
