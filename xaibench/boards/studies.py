"""The study boards beside the summary: each a module of ``boards`` with ``tables(rows)`` and
``plot(rows, path)``. Adding a study's board is adding its module name here."""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

STUDIES = ("faithfulness", "roar", "sanity", "bam", "ground_truth")


def modules():
    for name in STUDIES:
        try:
            yield name, importlib.import_module(f"xaibench.boards.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"xaibench.boards.{name}":
                raise  # a real missing dependency inside an existing board


def owned_metrics() -> set[str]:
    """Metrics whose per-item rows are a study's ingredients (BAM's region attributions), judged
    only by that study's board: the summary leaves them out."""
    return {metric for _, module in modules() for metric in getattr(module, "OWNS", ())}


def tables(rows: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(study, title, table) for every study with rows in ``rows``."""
    out = []
    for name, module in modules():
        for title, frame in module.tables(rows):
            out.append((name, title, frame))
    return out


def plots(rows: pd.DataFrame, stem: Path) -> list[Path]:
    """Each study's PNG, written as ``<stem>-<study>.png``; one already drawn from the same rows
    by the same code (its stamp, see ``stamps``) is kept as it is."""
    from xaibench.boards import stamps

    written = []
    stamp = stamps.of(rows)
    for name, module in modules():
        path = stem.with_name(f"{stem.stem}-{name}.png")
        if stamps.read(path) == stamp:
            written.append(path)
            continue
        path = module.plot(rows, path)
        if path is not None:
            stamps.write(path, stamp)
            written.append(path)
    return written
