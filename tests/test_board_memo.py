"""The board memo: an unchanged results folder's boards are read back, not recomputed, and read
back exactly; any new rows, a damaged memo or a changed scope computes them again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import invoke

from xaibench import board_memo, results
from xaibench.cache import default_root

MANIFEST = """
name: memo
models: [digits_cnn]
datasets: [digits]
methods: [random, saliency, grad_cam]
metrics: [deletion: {{steps: 8}}, road: {{fractions: [0.2, 0.6]}}]
options: {{split: test, limit: {limit}, batch_size: 16, seeds: [0]}}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("memo")
    (root / "memo.yaml").write_text(MANIFEST.format(limit=24))
    result = invoke("run", str(root / "memo.yaml"), "--results", str(root / "results"), "-f", "md")
    assert result.exit_code == 0, result.output
    return root


def memo_folders() -> set[Path]:
    return set((default_root() / "boards").glob("*"))


def computed(folder: Path, fmt: str) -> str:
    """The board text computed from the rows, bypassing the memo."""
    from xaibench.cli import Format
    from xaibench.cli_board import board_text

    boards = board_memo.compute(results.read(folder))
    return board_text(boards, Format(fmt))


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_a_board_read_back_from_the_memo_equals_the_computed_one(folder, fmt):
    results_dir = folder / "results" / "memo"
    first = invoke("board", str(results_dir), "-f", fmt)
    before = memo_folders()
    second = invoke("board", str(results_dir), "-f", fmt)
    assert first.exit_code == second.exit_code == 0
    assert memo_folders() == before, "the second board wrote no new memo: it was read back"
    assert second.stdout == first.stdout == computed(results_dir, fmt)
    assert "road" in first.stdout.lower() and "saliency" in first.stdout


def test_a_warm_run_reads_its_board_back_and_still_records_its_history(folder):
    results_dir = folder / "results" / "memo"
    args = ("run", str(folder / "memo.yaml"), "--results", str(folder / "results"), "-f", "md")
    invoke(*args)  # whatever the first run left, the memo now holds this run's boards
    before = memo_folders()
    lines = (results_dir / "history.jsonl").read_text().splitlines()
    warm = invoke(*args)
    assert warm.exit_code == 0 and "0 rows written" in warm.stderr
    assert memo_folders() == before
    after = (results_dir / "history.jsonl").read_text().splitlines()
    runs = {json.loads(line)["run_id"] for line in after} - {json.loads(line)["run_id"] for line in lines}
    assert len(runs) == 1 and len(after) > len(lines), "the warm run is one more point of the history"


def test_new_rows_and_a_damaged_memo_are_computed_again(folder, tmp_path):
    results_dir = folder / "results" / "memo"
    invoke("board", str(results_dir), "-f", "md")
    key = board_memo.key(results_dir, {"all": True})
    memo = default_root() / "boards" / key[:40]
    assert (memo / "index.json").is_file()
    (memo / "table.parquet").write_bytes(b"not parquet")  # damaged: recomputed, same text
    again = invoke("board", str(results_dir), "-f", "md")
    assert again.exit_code == 0 and again.stdout == computed(results_dir, "md")
    assert board_memo.read(memo) is not None, "the damaged memo was replaced by a good one"

    (folder / "memo.yaml").write_text(MANIFEST.format(limit=40))  # 16 more items: new part files
    bigger = invoke("run", str(folder / "memo.yaml"), "--results", str(folder / "results"), "-f", "md")
    assert bigger.exit_code == 0
    assert board_memo.key(results_dir, {"all": True}) != key
    shown = invoke("board", str(results_dir), "-f", "md")
    assert shown.stdout == computed(results_dir, "md")
    assert "| 40 |" in shown.stdout or " 40 " in shown.stdout, "the board counts the new items"
