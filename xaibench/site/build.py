"""Write the static site: an overview of every manifest folder and one page per manifest.

``write_site(results_root, out, cache_root)`` builds the whole site in a hidden folder beside
``out`` and then swaps it in, so a web server publishing ``out`` never serves half a site. An
existing ``out`` is replaced only when it is a site this function wrote (it holds the marker
file ``.xaibench-site``) or an empty folder; anything else is a user error, never deleted.

Layout: ``out/index.html`` (overview), ``out/<manifest>/index.html`` with its PNGs beside it
and the saliency grid's PNGs in ``out/<manifest>/grid/``. Every page is self-contained (inline
CSS and JavaScript, relative image links): it opens offline from ``file://``, with no server.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pandas as pd

from xaibench import atomic
from xaibench.errors import UserError
from xaibench.site.pages import ManifestInfo, changes_table, manifest_page
from xaibench.site.templates import cell, esc, page, table

MARKER = ".xaibench-site"


def manifest_folders(root: Path) -> list[Path]:
    """``root`` itself when it holds results (a manifest folder), else its subfolders that do."""

    def holds(folder: Path) -> bool:
        return any(folder.glob("*.parquet")) or any(folder.glob("*-run.json"))

    if holds(root):
        return [root]
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and holds(p)]


def slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "manifest"
    candidate, i = base, 2
    while candidate in taken:
        candidate, i = f"{base}-{i}", i + 1
    taken.add(candidate)
    return candidate


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the site")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"--out {out} is a folder that is not an xaibench site; choose an empty or new folder")


def overview(infos: list[ManifestInfo]) -> str:
    parts = ["<h1>Leaderboards</h1>"]
    changes = [info.changes.assign(manifest=info.name) for info in infos if not info.changes.empty]
    regressions = pd.concat(changes, ignore_index=True) if changes else pd.DataFrame()
    if not regressions.empty:
        regressions = regressions[regressions["change"] == "regression"]
    if not regressions.empty:
        parts.append(
            f'<div class="box alert" id="regressions"><strong>{len(regressions)} regression(s)</strong> '
            "in the latest run against the previous one (a mean outside the previous run's 95% CI, on the worse side)"
        )
        parts.append(changes_table(regressions, link="manifest") + "</div>")
    else:
        parts.append('<div class="box ok" id="regressions">No regression in any manifest\'s latest run.</div>')
    verdicts = sorted({v for info in infos for v in info.verdicts})
    headers = ["manifest", "last ran (UTC)", "runs", "rows", "items", "methods", *verdicts, "regressions", "studies"]
    rows = []
    for info in infos:
        link = f'<td><a href="{esc(info.slug)}/index.html">{esc(info.name)}</a></td>'
        last = "never" if info.last_run is None else str(info.last_run)[:19]
        regressed = int((info.changes["change"] == "regression").sum()) if not info.changes.empty else 0
        study_links = " ".join(
            f'<a href="{esc(info.slug)}/index.html#study-{esc(s.split()[0])}">{esc(s)}</a>' for s in info.studies
        )
        cells = [
            link,
            cell(last, last),
            cell(str(info.runs), info.runs, "num"),
            cell(str(info.rows), info.rows, "num"),
            cell(str(info.items), info.items, "num"),
            cell(", ".join(info.methods)),
            *[cell(str(info.verdicts.get(v, 0)), info.verdicts.get(v, 0), "num") for v in verdicts],
            cell(str(regressed), regressed, "num"),
            f"<td>{study_links or '–'}</td>",
        ]
        rows.append((cells, "regressed" if regressed else ""))
    parts += ["<h2>Manifests</h2>", table(headers, rows, ident="manifests")]
    parts.append(
        '<p class="muted">Verdict columns count (cell, method) pairs of the latest board; "–" is a method '
        "without a paired test. Each manifest's page has the sortable tables, study boards, curves, "
        "saliency grid and run history.</p>"
    )
    return "\n".join(parts)


def write_site(results_root: Path, out: Path, cache_root: Path | None = None, n_items: int = 8) -> Path:
    """Build the site of every manifest folder under ``results_root`` into ``out``; returns the
    overview page's path. Reads results and the cache only; opens no server, needs no network."""
    from xaibench.cache import Cache

    results_root, out = Path(results_root), Path(out)
    if not results_root.is_dir():
        raise UserError(f"results folder not found: {results_root}; run `xaibench run MANIFEST` first")
    folders = manifest_folders(results_root)
    if not folders:
        raise UserError(f"{results_root}: no result rows found; run `xaibench run MANIFEST` first")
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building-{uuid.uuid4().hex[:8]}"
    cache = Cache(cache_root)
    try:
        staging.mkdir()
        infos, taken = [], set()
        for folder in folders:
            name = slug(folder.name, taken)
            (staging / name).mkdir()
            body, info = manifest_page(folder, staging / name, cache, n_items)
            info.slug = name
            atomic.write_text(staging / name / "index.html", page(folder.name, body, home="../index.html"))
            infos.append(info)
        atomic.write_text(staging / "index.html", page("xaibench leaderboards", overview(infos)))
        (staging / MARKER).write_text("written by `xaibench site`; the whole folder is replaced on the next build\n")
        _swap(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "index.html"


def _swap(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` with two renames (the old site is removed afterwards)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def size(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
