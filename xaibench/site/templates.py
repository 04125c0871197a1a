"""HTML pieces of the static site: the page frame with its inline CSS and sorting script, and
DataFrame -> sortable ``<table>``.

Everything a page needs is inline (no CDN, no web font, no external script), so a page opens
offline from ``file://``. Sorting is a few lines of vanilla JavaScript: a click on a header
sorts the body rows by that column, numerically when the cells carry numbers (``data-v``),
missing values last in both directions; a second click reverses the order.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Iterable

import pandas as pd

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;background:#fff}
header{background:#24292f;color:#fff;padding:10px 24px}header a{color:#9cd0ff}
main{padding:12px 24px 48px;max-width:1500px}
h1{font-size:22px;margin:6px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 14px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right}
.beats{color:#1a7f37;font-weight:600}.worse{color:#cf222e;font-weight:600}.reference{color:#0550ae}
tr.regressed td{background:#ffebe9}tr.improved td{background:#dafbe1}
.box{border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;margin:10px 0}
.alert{border-color:#cf222e;background:#fff5f5}.ok{border-color:#1a7f37;background:#f4fff6}
.muted{color:#57606a}img.plot{max-width:100%;border:1px solid #eaeef2;margin:4px 0}
table.grid td{text-align:center;font-size:12px}
table.grid img{width:96px;height:96px;image-rendering:pixelated;display:block;margin:auto}
td.missing{width:96px;height:96px;color:#57606a;
background:repeating-linear-gradient(45deg,#f6f8fa,#f6f8fa 6px,#eaeef2 6px,#eaeef2 12px)}
table.grid td:first-child{white-space:nowrap}
nav.toc a{margin-right:14px}
"""

# Sort a table by the clicked header. Cells sort by data-v (a number or text) when present,
# else by their text; empty values go last in both directions so "–" never tops a ranking.
JS = """
(function(){
  function value(cell){
    var raw = cell.hasAttribute('data-v') ? cell.getAttribute('data-v') : cell.textContent.trim();
    if (raw === '' || raw === '\\u2013') return null;
    var number = Number(raw);
    return isNaN(number) ? raw.toLowerCase() : number;
  }
  function sortBy(th){
    var table = th.closest('table'), body = table.tBodies[0];
    var column = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    Array.prototype.forEach.call(th.parentNode.children, function(h){ h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = value(a.cells[column]), y = value(b.cells[column]);
      if (x === null || y === null) return (x === null) - (y === null);
      var order;
      if (typeof x === 'number' && typeof y === 'number') order = x - y;
      else order = String(x).localeCompare(String(y));
      return ascending ? order : -order;
    });
    rows.forEach(function(row){ body.appendChild(row); });
  }
  document.querySelectorAll('table.sortable th').forEach(function(th){
    th.addEventListener('click', function(){ sortBy(th); });
  });
})();
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def page(title: str, body: str, home: str | None = None) -> str:
    """A whole HTML document; ``home`` is the relative link to the overview (None on the overview)."""
    back = f' · <a href="{esc(home)}">overview</a>' if home else ""
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        '<link rel=icon href="data:,">'  # no favicon request: nothing may load from outside the folder
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
        f"<header><strong>xaibench</strong> leaderboard{back}</header>\n<main>\n{body}\n</main>"
        f"<script>{JS}</script></body></html>\n"
    )


def number(value, digits: int = 3) -> str:
    if missing(value):
        return "–"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def verdict_class(text: str) -> str:
    if text.startswith("beats") or text == "pass":
        return "beats"
    if text.startswith("worse") or text.lower() == "fail":
        return "worse"
    return "reference" if text == "reference" else ""


def cell(text: str, sort_value=None, css: str = "") -> str:
    """One ``<td>``; ``sort_value`` (a number, or "" for missing) is what the sort compares."""
    attributes = f' class="{css}"' if css else ""
    if sort_value is not None:
        attributes += f' data-v="{esc("" if missing(sort_value) else sort_value)}"'
    return f"<td{attributes}>{esc(text)}</td>"


def table(headers: Iterable[str], rows: Iterable[tuple[list[str], str]], css: str = "sortable", ident: str = "") -> str:
    """A table from already rendered ``<td>`` cells: rows are (cells, row class)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(f'<tr class="{esc(kind)}">' + "".join(cells) + "</tr>" for cells, kind in rows)
    identity = f' id="{esc(ident)}"' if ident else ""
    return f'<table class="{css}"{identity}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def frame_table(frame: pd.DataFrame, ident: str = "") -> str:
    """Any DataFrame as a sortable table: numbers right-aligned to 3 decimals and sorted as numbers."""
    rows = []
    for record in frame.itertuples(index=False, name=None):
        cells = []
        for value in record:
            if isinstance(value, bool) or type(value).__name__ == "bool_":
                cells.append(cell(str(value)))
            elif missing(value) or isinstance(value, numbers.Real):
                cells.append(cell(number(value), value if not missing(value) else "", "num"))
            else:
                text = str(value)
                cells.append(cell(text, css=verdict_class(text)))
        rows.append((cells, ""))
    return table([str(c) for c in frame.columns], rows, ident=ident)


def figure(path: str, alt: str) -> str:
    return f'<img class="plot" src="{esc(path)}" alt="{esc(alt)}">'
