"""`xaibench board` and the board a run prints: computed from the result rows, or read back
from the memo of an unchanged folder (``board_memo``), then rendered as a rich table, Markdown
or CSV, with each study's picture beside the results."""

from __future__ import annotations

from pathlib import Path

import typer

from xaibench import board_memo
from xaibench.cli import FORMAT_OPTION, Format, app, err, out, user_errors
from xaibench.errors import UserError


class RunBoard:
    """The boards of a results folder limited to a scope (a run: its jobs and items; `board`:
    every row); rows are read only when the memo misses or a caller needs them."""

    def __init__(self, folder: Path, job_keys: set[str] | None = None, item_ids: set[str] | None = None):
        self.folder = Path(folder)
        self.job_keys, self.item_ids = job_keys, item_ids
        self._rows = None
        if job_keys is None:
            self.scope = {"all": True}
        else:
            self.scope = {"jobs": board_memo.scope_digest(job_keys), "items": board_memo.scope_digest(item_ids)}
        if not board_memo.parts(self.folder):
            self.boards, self.from_memo = None, False
            return
        self.boards, self.from_memo = board_memo.load_or_compute(self.folder, self.scope, self.rows)

    def rows(self):
        if self._rows is None:
            from xaibench import results

            rows = results.read(self.folder)
            if self.job_keys is not None:
                # This manifest's jobs on the items this run covered: not rows of removed methods,
                # nor items beyond a limit that was since lowered.
                rows = rows[rows["job_key"].isin(self.job_keys) & rows["item_id"].isin(self.item_ids)]
            self._rows = rows
        return self._rows

    def print(self, fmt: Format) -> None:
        if fmt is Format.table:
            _print_rich(self.boards)
        else:
            typer.echo(board_text(self.boards, fmt), nl=False)

    def plots(self, stem: Path | None = None) -> list[Path]:
        """Each study's picture (``<stem>-<study>.png``, by default ``board-<study>.png`` in the
        folder), drawn unless the memo says it was drawn from these rows and it is still there."""
        from xaibench.boards import stamps, studies

        stem = stem or self.folder / "board.png"
        known = self.boards.plots
        if self.from_memo and known.get("stem") == str(stem):
            kept = [Path(p) for p in known if p != "stem"]
            if all(stamps.read(path) == known[str(path)] for path in kept):
                return kept
        paths = studies.plots(self.rows(), stem)
        self.boards.plots = {"stem": str(stem), **{str(p): stamps.read(p) or "" for p in paths}}
        board_memo.remember_plots(self.folder, self.scope, self.boards)
        return paths


def _print_rich(boards: board_memo.Boards) -> None:
    from xaibench.boards import render

    render.print_rich(boards.table, boards.overall, out)
    for _, title, frame in boards.studies:
        render.print_frame(title, frame, out)
    for warning in boards.warnings:
        err.print(f"warning: {warning}", markup=False)


def board_text(boards: board_memo.Boards, fmt: Format) -> str:
    from xaibench.boards import render

    if fmt is Format.csv:
        return render.csv(boards.table)
    text = render.markdown(boards.table, boards.overall)
    for _, title, frame in boards.studies:
        text += "\n" + render.frame_markdown(title, frame)
    for warning in boards.warnings:
        text += f"\n> warning: {warning}\n"
    return text


@app.command()
@user_errors
def board(
    results_dir: Path = typer.Argument(..., help="A manifest's results folder, or the whole results tree."),
    fmt: Format = FORMAT_OPTION,
    output: Path | None = typer.Option(
        None, "--output", "--out", "-o", help="Write to this file (a folder for --format html) instead of stdout."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw each method's mean and CI to this PNG."),
):
    """Render the leaderboard of stored results (no model work)."""
    if fmt is Format.html:  # a static site: overview, per-manifest pages, grids, history
        if output is None:
            raise UserError("--format html writes a folder: give it with --out DIR")
        from xaibench.site import write_site

        index = write_site(results_dir, output, None)
        err.print(f"wrote {index}")
        return
    if not results_dir.exists():
        raise UserError(f"results folder not found: {results_dir}; run `xaibench run MANIFEST` first")
    if results_dir.is_file():
        raise UserError(f"{results_dir} is a file; give a results folder such as results/quickstart")
    shown = RunBoard(results_dir)
    if shown.boards is None:
        raise UserError(f"{results_dir}: no result rows found; run `xaibench run MANIFEST` first")
    if plot is not None:
        from xaibench.boards.plot import plot_board

        if not shown.boards.table.empty:
            plot_board(shown.boards.table, plot)
            err.print(f"wrote {plot}")
        for path in shown.plots(plot):
            err.print(f"wrote {path}")
    if output is None:
        shown.print(fmt)
        return
    from xaibench.results import write_text

    write_text(output, board_text(shown.boards, Format.md if fmt is Format.table else fmt))
    err.print(f"wrote {output}")
