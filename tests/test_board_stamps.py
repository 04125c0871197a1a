"""Study pictures are redrawn only when what they are drawn from changes (boards/stamps.py)."""

from __future__ import annotations

import types

import pandas as pd
import pytest
from PIL import Image

from xaibench.boards import stamps, studies


@pytest.fixture
def study(monkeypatch):
    """One study whose plot draws a small PNG and counts its drawings."""
    drawn = []

    def plot(rows, path):
        if rows.empty:
            return None
        Image.new("RGB", (4, 3), (len(rows), 0, 0)).save(path)
        drawn.append(len(rows))
        return path

    module = types.SimpleNamespace(plot=plot)
    monkeypatch.setattr(studies, "modules", lambda: iter([("toy", module)]))
    return drawn


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "value": [0.5] * n})


def test_the_same_rows_are_not_drawn_again(study, tmp_path):
    stem = tmp_path / "board.png"
    assert studies.plots(frame(3), stem) == [tmp_path / "board-toy.png"]
    assert studies.plots(frame(3), stem) == [tmp_path / "board-toy.png"]
    assert study == [3], "drawn once"
    studies.plots(frame(4), stem)
    assert study == [3, 4], "other rows: drawn again"
    studies.plots(frame(4).assign(value=0.25), stem)
    assert study == [3, 4, 4], "another value: drawn again"
    (tmp_path / "board-toy.png").unlink()
    studies.plots(frame(4).assign(value=0.25), stem)
    assert study == [3, 4, 4, 4], "a removed picture is drawn again"
    assert studies.plots(frame(0), stem) == [] and study == [3, 4, 4, 4]


def test_a_stamped_png_is_still_a_valid_png(study, tmp_path):
    studies.plots(frame(2), tmp_path / "board.png")
    path = tmp_path / "board-toy.png"
    with Image.open(path) as image:
        image.load()  # checks every chunk's CRC
        assert image.size == (4, 3)
        assert image.text[stamps.KEYWORD.decode()] == stamps.of(frame(2)) == stamps.read(path)


def test_read_without_a_stamp(tmp_path):
    assert stamps.read(tmp_path / "missing.png") is None
    (tmp_path / "text.png").write_text("not a png")
    assert stamps.read(tmp_path / "text.png") is None
    Image.new("RGB", (2, 2)).save(tmp_path / "plain.png")
    assert stamps.read(tmp_path / "plain.png") is None


def test_the_stamp_covers_column_names_and_types():
    rows = frame(2)
    assert stamps.of(rows) == stamps.of(rows.copy())
    assert stamps.of(rows) != stamps.of(rows.rename(columns={"value": "score"}))
    assert stamps.of(rows) != stamps.of(rows.assign(value=rows["value"].astype("float32")))
