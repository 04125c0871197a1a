"""One manifest folder's page: summary tables (sortable), the mean-and-CI picture, every study
board's tables and picture, curves, the saliency grid and the run history.

Study sections come from ``xaibench.boards.studies``: whatever boards exist and have rows show
up, so a new study needs no change here. A board that raises is shown as an error box on its
section (with the exception) instead of taking the whole site down.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from xaibench import results
from xaibench.boards import studies
from xaibench.boards import summary as summary_board
from xaibench.boards.render import _cell_title
from xaibench.boards.summary import CELL, REFERENCE
from xaibench.site import figures, history
from xaibench.site.grid import grids
from xaibench.site.templates import cell, esc, figure, frame_table, missing, number, table, verdict_class


@dataclass
class ManifestInfo:
    """What the overview lists about one manifest folder."""

    name: str
    slug: str
    last_run: pd.Timestamp | None
    runs: int
    rows: int
    items: int
    methods: list[str]
    verdicts: dict[str, int]
    changes: pd.DataFrame
    failures: int
    studies: list[str] = field(default_factory=list)


def _verdict_text(row) -> str:
    if isinstance(row["verdict"], str):
        return row["verdict"]
    reference = row["reference"] if isinstance(row.get("reference"), str) else REFERENCE
    return "reference" if row["method"] == reference else "–"


def verdict_counts(board: pd.DataFrame) -> dict[str, int]:
    if board.empty:
        return {}
    texts = [_verdict_text(row) for _, row in board.iterrows()]
    return {k: texts.count(k) for k in dict.fromkeys(sorted(texts)) if k != "reference"}


SUMMARY_HEADERS = ["#", "method", "mean", "95% CI", "n", "invalid", "Δ vs reference", "Δ 95% CI", "p (Holm)", "verdict"]


def summary_tables(board: pd.DataFrame, changes: pd.DataFrame) -> str:
    """One sortable table per summary cell; rows that regressed (improved) since the previous run
    are highlighted."""
    marks = {}
    for _, change in changes.iterrows():
        marks[tuple(change[c] for c in [*CELL, "method"])] = (
            "regressed" if change["change"] == "regression" else "improved"
        )
    parts = []
    for number_, (_, group) in enumerate(board.groupby(CELL, sort=False, dropna=False)):
        rows = []
        for _, r in group.iterrows():
            verdict = _verdict_text(r)
            ci = "–" if missing(r["ci_low"]) else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
            delta_ci = "–" if missing(r["delta_low"]) else f"[{r['delta_low']:+.3f}, {r['delta_high']:+.3f}]"
            p = "–" if missing(r["p_holm"]) else ("<0.001" if r["p_holm"] < 0.001 else f"{r['p_holm']:.3f}")
            cells = [
                cell("–" if missing(r["rank"]) else str(int(r["rank"])), "" if missing(r["rank"]) else int(r["rank"])),
                cell(r["method"]),
                cell(number(r["mean"]), r["mean"], "num"),
                cell(ci, r["ci_low"]),
                cell(str(int(r["n"])), int(r["n"]), "num"),
                cell(str(int(r["invalid"])), int(r["invalid"]), "num"),
                cell("–" if missing(r["delta"]) else f"{r['delta']:+.3f}", r["delta"], "num"),
                cell(delta_ci, r["delta_low"]),
                cell(p, r["p_holm"], "num"),
                cell(verdict, css=verdict_class(verdict)),
            ]
            rows.append((cells, marks.get(tuple(r[c] for c in [*CELL, "method"]), "")))
        parts.append(f"<h3>{esc(_cell_title(group.iloc[0]))}</h3>")
        parts.append(table(SUMMARY_HEADERS, rows, ident=f"summary-{number_}"))
    return "\n".join(parts)


def _error_box(what: str, error: BaseException) -> str:
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    return f'<div class="box alert"><strong>{esc(what)} failed:</strong> <code>{esc(detail)}</code></div>'


def study_sections(rows: pd.DataFrame, folder: Path) -> tuple[str, list[str]]:
    """Each study board with rows: its tables and its picture. Returns (html, study names shown)."""
    parts, shown = [], []
    for name, module in studies.modules():
        try:
            frames = module.tables(rows)
            picture = module.plot(rows, folder / f"study-{name}.png")
        except Exception as error:  # noqa: BLE001 - one broken board must not hide the others
            parts += [f'<h3 id="study-{esc(name)}">{esc(name)}</h3>', _error_box(f"the {name} board", error)]
            shown.append(f"{name} (board failed)")
            continue
        if not frames and picture is None:
            continue
        shown.append(name)
        parts.append(f'<h3 id="study-{esc(name)}">{esc(name)}</h3>')
        for i, (title, frame) in enumerate(frames):
            parts += [f"<h4>{esc(title)}</h4>", frame_table(frame, ident=f"study-{name}-{i}")]
        if picture is not None:
            parts.append(figure(Path(picture).name, f"{name} board"))
    return "\n".join(parts), shown


def grid_section(rows: pd.DataFrame, cache, folder: Path, n_items: int) -> str:
    parts = []
    for grid in grids(rows, cache, folder, "grid", n_items):
        parts.append(f"<h3>{esc(grid.title)}</h3>")
        if grid.note:
            parts.append(f'<p class="muted">{esc(grid.note)}</p>')
        head = "".join(f"<th>{esc(h)}</th>" for h in ["item", "input", *grid.methods])
        body = []
        for item in grid.items:
            cells = [f"<td>{esc(item.item_id)}<br>label {esc(item.label)}<br>pred {esc(item.prediction)}</td>"]
            if item.input_png:
                cells.append(f'<td><img src="{esc(item.input_png)}" alt="input {esc(item.item_id)}"></td>')
            else:
                cells.append('<td class="missing">input unavailable</td>')
            for method in grid.methods:
                path = item.maps.get(method)
                if path:
                    cells.append(f'<td><img src="{esc(path)}" alt="{esc(method)} map of {esc(item.item_id)}"></td>')
                else:
                    cells.append('<td class="missing">not cached</td>')
            body.append("<tr>" + "".join(cells) + "</tr>")
        parts.append(f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')
    if not parts:
        return '<p class="muted">No attribution maps are referenced by these rows.</p>'
    legend = "Each map summed over channels; red positive, blue negative, scaled to its own largest magnitude."
    return f'<p class="muted">{legend}</p>' + "\n".join(parts)


def history_section(compared: pd.DataFrame, recorded: bool, records: list[dict], folder: Path) -> str:
    source = (
        "recorded at the end of each run (history.jsonl)"
        if recorded
        else "rebuilt from the stored rows (no history.jsonl yet)"
    )
    parts = [f'<p class="muted">History {esc(source)}.</p>']
    trend = figures.trends(compared, folder / "trends.png")
    if trend is not None:
        parts.append(figure(trend.name, "trend of each method's mean across runs"))
    if compared.empty:
        return parts[0] + '<p class="muted">No runs recorded.</p>'
    by_record = {r["run_id"]: r for r in records}
    rows = []
    for run_id, group in compared.groupby("run_id", sort=False):
        record = by_record.get(run_id, {})
        counts = record.get("counts", {})
        regressions = int((group["change"] == "regression").sum())
        improvements = int((group["change"] == "improvement").sum())
        rows.append(
            (
                [
                    cell(run_id),
                    cell(str(group["time"].iloc[0])[:19], str(group["time"].iloc[0])),
                    cell(str(group["method"].nunique()), group["method"].nunique(), "num"),
                    cell(number(counts.get("rows_written")), counts.get("rows_written", ""), "num"),
                    cell(number(record.get("seconds"), 1), record.get("seconds", ""), "num"),
                    cell(str(len(record.get("failures", {}))), len(record.get("failures", {})), "num"),
                    cell(str(regressions), regressions, "num"),
                    cell(str(improvements), improvements, "num"),
                ],
                "regressed" if regressions else "",
            )
        )
    headers = ["run", "time (UTC)", "methods", "rows written", "seconds", "failed tasks", "regressions", "improvements"]
    parts.append(table(headers, rows, ident="runs"))
    return "\n".join(parts)


def changes_table(changes: pd.DataFrame, link: str | None = None) -> str:
    rows = []
    for _, c in changes.iterrows():
        where = f"{c['model']} × {c['dataset']} · {c['metric']}/{c['score']}"
        direction = "higher is better" if c["higher_is_better"] else "lower is better"
        cells = [
            cell(str(c.get("manifest", ""))) if link else "",
            cell(where),
            cell(c["method"]),
            cell(c["change"], css="worse" if c["change"] == "regression" else "beats"),
            cell(number(c["prev_mean"]), c["prev_mean"], "num"),
            cell(f"[{c['prev_ci_low']:.3f}, {c['prev_ci_high']:.3f}]", c["prev_ci_low"]),
            cell(number(c["mean"]), c["mean"], "num"),
            cell(direction),
            cell(f"{c['prev_run']} → {c['run_id']}"),
        ]
        rows.append(([x for x in cells if x], "regressed" if c["change"] == "regression" else "improved"))
    headers = ["cell", "method", "change", "previous mean", "previous 95% CI", "mean", "direction", "runs"]
    return table((["manifest"] if link else []) + headers, rows, ident="changes")


def manifest_page(folder: Path, page_dir: Path, cache, n_items: int) -> tuple[str, ManifestInfo]:
    """The body of one manifest's page (its images written into ``page_dir``) and its overview line."""
    rows = results.read(folder)
    records = history.run_records(folder)
    board = summary_board.summary(rows) if not rows.empty else pd.DataFrame()
    hist, recorded = history.load_history(folder, rows)
    compared = history.compare(hist)
    changes = history.latest_changes(hist)
    regressions = changes[changes["change"] == "regression"] if not changes.empty else changes
    times = [t for t in [rows["time"].max() if not rows.empty else None] if t is not None and not pd.isna(t)]
    times += [t for t in (history.run_time(r["run_id"]) for r in records) if t is not None]
    last = max(times) if times else None
    failures = len(records[-1].get("failures", {})) if records else 0

    parts = [f"<h1>{esc(folder.name)}</h1>"]
    methods = sorted(board["method"].unique()) if not board.empty else []
    parts.append(
        f'<p class="muted">last ran {esc(str(last)[:19] if last is not None else "never")} UTC · '
        f"{len(records)} run record(s) · {len(rows)} rows · {rows['item_id'].nunique() if not rows.empty else 0} items"
        f" · methods: {esc(', '.join(methods) or '–')}</p>"
    )
    parts.append(
        '<nav class="toc"><a href="#summary">summary</a><a href="#studies">studies</a><a href="#curves">curves</a>'
        '<a href="#grid">saliency grid</a><a href="#history">history</a></nav>'
    )
    if not regressions.empty:
        parts.append(
            f'<div class="box alert"><strong>{len(regressions)} regression(s) against the previous run</strong>'
        )
        parts.append(changes_table(regressions) + "</div>")
    elif compared["run_id"].nunique() > 1 if not compared.empty else False:
        parts.append('<div class="box ok">No regression against the previous run.</div>')
    if failures:
        parts.append(
            f'<div class="box alert">The last run had {failures} failed job(s): '
            f"{esc('; '.join(f'{k}: {v}' for k, v in records[-1]['failures'].items()))}</div>"
        )
    parts.append('<h2 id="summary">Summary</h2>')
    if board.empty:
        parts.append('<p class="muted">No result rows.</p>')
    else:
        from xaibench.boards.plot import plot_board

        scalar = board[board["n"] > 0]
        if not scalar.empty:
            plot_board(scalar, page_dir / "summary.png")
            parts.append(figure("summary.png", "each method's mean with its 95% CI per cell"))
        parts.append(summary_tables(board, changes))
        overall = summary_board.overall(rows)
        if not overall.empty and overall["metrics"].max() > 1:
            parts += ["<h3>Overall mean rank across metrics</h3>", frame_table(overall, ident="overall")]
        for warning in summary_board.environment_warnings(rows):
            parts.append(f'<p class="muted">warning: {esc(warning)}</p>')
    studies_html, shown = study_sections(rows, page_dir) if not rows.empty else ("", [])
    parts += ['<h2 id="studies">Studies</h2>', studies_html or '<p class="muted">No study board has rows here.</p>']
    curve = figures.curves(rows, page_dir / "curves.png") if not rows.empty else None
    parts.append('<h2 id="curves">Curves</h2>')
    parts.append(
        figure(curve.name, "mean curve per method with 95% CI band")
        if curve
        else '<p class="muted">No curve rows (deletion and insertion store only their area: see the summary).</p>'
    )
    parts += ['<h2 id="grid">Saliency grid</h2>', grid_section(rows, cache, page_dir, n_items)]
    parts += ['<h2 id="history">Run history</h2>', history_section(compared, recorded, records, page_dir)]
    info = ManifestInfo(
        name=folder.name,
        slug="",
        last_run=last,
        runs=max(len(records), compared["run_id"].nunique() if not compared.empty else 0),
        rows=len(rows),
        items=rows["item_id"].nunique() if not rows.empty else 0,
        methods=methods,
        verdicts=verdict_counts(board),
        changes=changes,
        failures=failures,
        studies=shown,
    )
    return "\n".join(parts), info
