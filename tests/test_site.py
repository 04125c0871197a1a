"""The static leaderboard site: run history and regressions against known answers, saliency
map rendering, and the whole site from a real small run opened in headless Chromium.

Browser: Debian's ``chromium`` driven over the DevTools protocol on ``--remote-debugging-pipe``
(tests/cdp.py, no extra package). The browser test asserts no console error, exception, failed
load or request leaving the folder; the expected methods in the tables; sorting by a header
click; and keeps a full-page screenshot of each page in ``$XAIBENCH_ARTIFACTS/site-screenshots``
(default ``results/site-screenshots``). Without chromium it skips, unless ``CI`` is set: then it
fails.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xaibench import results
from xaibench.cache import Cache
from xaibench.manifest import load, parse, with_options
from xaibench.runner import Runner
from xaibench.site import history, record_history, write_site
from xaibench.site.grid import map_image

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("XAIBENCH_ARTIFACTS", ROOT / "results")) / "site-screenshots"
METHODS = ["integrated_gradients", "random", "saliency"]
MANIFEST = """
name: site-test
options: {{split: test, limit: {limit}, batch_size: 16, seeds: [0]}}
models: [digits_cnn]
datasets: [digits]
methods: [random, saliency, integrated_gradients: {{n_steps: 8}}]
metrics: [{metrics}]
"""
ALL_METRICS = "deletion, insertion, road: {fractions: [0.2, 0.5, 0.8]}"


def _history(runs: list[tuple[str, float, float, float]], higher: bool = True) -> pd.DataFrame:
    lines = [
        {
            "run_id": run,
            "time": f"2026-01-0{i + 1}T00:00:00+00:00",
            "model": "m",
            "dataset": "d",
            "split": "test",
            "target_mode": "predicted",
            "metric": "insertion",
            "score": "auc",
            "method": "saliency",
            "mean": mean,
            "ci_low": low,
            "ci_high": high,
            "higher_is_better": higher,
        }
        for i, (run, mean, low, high) in enumerate(runs)
    ]
    return history._frame(lines)


def test_a_mean_outside_the_previous_ci_on_the_worse_side_is_a_regression():
    runs = [("r1", 0.80, 0.75, 0.85), ("r2", 0.78, 0.72, 0.83), ("r3", 0.70, 0.65, 0.74), ("r4", 0.90, 0.85, 0.95)]
    compared = history.compare(_history(runs))
    # r2 inside r1's CI; r3 below r2's CI (worse when higher is better); r4 above r3's CI.
    assert list(compared["change"]) == ["", "", "regression", "improvement"]
    assert list(compared["prev_mean"].fillna(-1)) == [-1, 0.80, 0.78, 0.70]
    lower = history.compare(_history(runs, higher=False))
    assert list(lower["change"]) == ["", "", "improvement", "regression"]
    latest = history.latest_changes(_history(runs[:3]))
    assert list(latest["method"]) == ["saliency"] and list(latest["change"]) == ["regression"]


def test_map_rendering_is_diverging_and_scaled_to_the_largest_magnitude():
    attribution = torch.tensor([[[2.0, -2.0], [0.0, 1.0]]])
    image = map_image(attribution)
    red, blue, white = image[0, 0], image[0, 1], image[1, 0]
    assert int(red[0]) - int(red[2]) > 60 and red[1] < 30  # +max: the colormap's (dark) red end
    assert int(blue[2]) - int(blue[0]) > 60 and blue[1] < 60  # -max: its (dark) blue end
    assert abs(int(white[0]) - int(white[2])) < 10 and white.min() > 230  # zero: white
    assert np.array_equal(map_image(attribution * 7), image)  # own scale: magnitude does not matter


def _run(tmp_path: Path, cache: Cache, limit: int, metrics: str = ALL_METRICS):
    manifest = parse(MANIFEST.format(limit=limit, metrics=metrics), source="site-test.yaml")
    return Runner(manifest, tmp_path / "results", cache=cache, log=lambda message: None).run()


@pytest.fixture
def small_site(tmp_path, warm_cache):
    """Two real runs (32 then 48 items) with recorded history, a planted regression on the
    first run's line, and integrated gradients' maps removed from the cache."""
    first = _run(tmp_path, warm_cache, 32)
    record_history(first.results_dir, first.run_id)
    second = _run(tmp_path, Cache(warm_cache.root), 48)
    assert second.run_id != first.run_id
    path = record_history(second.results_dir, second.run_id)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {line["run_id"] for line in lines} == {first.run_id, second.run_id}
    for line in lines:  # saliency's insertion in run 1 was far better than run 2 can be
        if (line["run_id"], line["method"], line["metric"]) == (first.run_id, "saliency", "insertion"):
            line.update(mean=0.999, ci_low=0.998, ci_high=1.0)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = results.read(second.results_dir)
    key = rows.loc[rows["method"] == "integrated_gradients", "attribution_key"].iloc[0]
    shutil.rmtree(warm_cache.root / "attributions" / key[:2] / key)  # the layout of Cache._key_dir
    started = time.perf_counter()
    index = write_site(tmp_path / "results", tmp_path / "site", warm_cache.root, n_items=4)
    return index, time.perf_counter() - started, second


def test_record_history_matches_the_rebuilt_history_and_is_idempotent(tmp_path, warm_cache):
    report = _run(tmp_path, warm_cache, 16, "deletion")
    path = record_history(report.results_dir, report.run_id)
    again = record_history(report.results_dir, report.run_id)
    recorded, was_recorded = history.load_history(report.results_dir)
    assert path == again and was_recorded
    assert recorded["run_id"].unique().tolist() == [report.run_id]  # no duplicate lines for one run
    rebuilt = history.rebuild_history(report.results_dir)
    key = [*history.KEY]
    joined = recorded.merge(rebuilt, on=key, suffixes=("", "_rebuilt"))
    assert len(joined) == len(recorded) == len(rebuilt) > 0
    assert np.allclose(joined["mean"], joined["mean_rebuilt"])


def _chromium() -> str:
    from cdp import find_chromium

    found = find_chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required under CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium); CI runs this test")
    return found


def _texts(browser, selector: str) -> list[str]:
    return browser.evaluate(f"Array.from(document.querySelectorAll({json.dumps(selector)})).map(e => e.textContent)")


def test_site_of_a_real_run_loads_cleanly_and_sorts_in_chromium(small_site, tmp_path):
    from cdp import Browser

    executable = _chromium()
    index, seconds, report = small_site
    site = index.parent
    page = site / "site-test" / "index.html"
    assert page.exists() and (site / "site-test" / "summary.png").exists()
    browser = Browser(executable, tmp_path / "profile")
    try:
        browser.open(index.as_uri())
        assert browser.problems() == []
        assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        regressions = browser.evaluate("document.getElementById('regressions').textContent")
        assert "1 regression" in regressions and "saliency" in regressions and "insertion" in regressions
        assert _texts(browser, "#manifests tbody td:first-child") == ["site-test"]
        browser.screenshot(ARTIFACTS / "overview.png")

        browser.open(page.as_uri())
        assert browser.problems() == []
        assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert browser.evaluate("document.images.length") >= 4 * 3 + 4  # grid inputs and maps, pictures
        tables = browser.evaluate("document.querySelectorAll('table[id^=summary-]').length")
        assert tables == 4  # deletion, insertion, ROAD's two areas
        for i in range(tables):
            assert sorted(_texts(browser, f"#summary-{i} tbody td:nth-child(2)")) == METHODS
        assert "saliency" in " ".join(_texts(browser, "tr.regressed td:nth-child(2)"))
        # Sort by mean: ascending, then descending on a second click; by method: alphabetical.
        browser.click("#summary-0 th:nth-child(3)")
        means = [float(v) for v in _texts(browser, "#summary-0 tbody td:nth-child(3)")]
        assert means == sorted(means) and len(set(means)) == 3
        browser.click("#summary-0 th:nth-child(3)")
        assert [float(v) for v in _texts(browser, "#summary-0 tbody td:nth-child(3)")] == sorted(means, reverse=True)
        browser.click("#summary-0 th:nth-child(2)")
        assert _texts(browser, "#summary-0 tbody td:nth-child(2)") == METHODS
        # Grid: 4 items; integrated gradients' maps were removed from the cache: "not cached".
        assert len(_texts(browser, "table.grid tbody tr")) == 4
        assert _texts(browser, "table.grid td.missing") == ["not cached"] * 4
        assert len(_texts(browser, "#runs tbody tr")) == 2
        browser.screenshot(ARTIFACTS / "site-test.png")
        assert browser.problems() == []
    finally:
        browser.close()
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    print(f"site built in {seconds:.1f}s, {size / 1e3:.0f} kB; screenshots in {ARTIFACTS}")


def test_site_command_writes_the_site_and_refuses_a_foreign_folder(tmp_path, warm_cache):
    from typer.testing import CliRunner

    from xaibench import cli_site  # noqa: F401  (registers `site` on the app)
    from xaibench.cli import app

    _run(tmp_path, warm_cache, 8, "deletion")
    out = tmp_path / "site"
    result = CliRunner().invoke(app, ["site", str(tmp_path / "results"), "--out", str(out), "--items", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").exists() and (out / "site-test" / "index.html").exists()
    again = CliRunner().invoke(app, ["site", str(tmp_path / "results"), "--out", str(out)])
    assert again.exit_code == 0, again.output  # a previous site is replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    refused = CliRunner().invoke(app, ["site", str(tmp_path / "results"), "--out", str(foreign)])
    assert refused.exit_code == 2 and "not an xaibench site" in refused.output
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_quickstart_site_renders_in_chromium(tmp_path, warm_cache):
    from cdp import Browser

    executable = _chromium()
    manifest = with_options(load(ROOT / "manifests" / "quickstart.yaml"), limit=16)
    report = Runner(manifest, tmp_path / "results", cache=warm_cache, log=lambda message: None).run()
    record_history(report.results_dir, report.run_id)
    index = write_site(tmp_path / "results", tmp_path / "site", warm_cache.root)
    browser = Browser(executable, tmp_path / "profile")
    try:
        for page in (index, index.parent / "quickstart" / "index.html"):
            browser.open(page.as_uri())
            assert browser.problems() == []
            assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            browser.screenshot(ARTIFACTS / f"quickstart-{page.parent.name}.png")
        methods = set(_texts(browser, "#summary-0 tbody td:nth-child(2)"))
        assert methods == {m.name for m in manifest.methods}
        assert _texts(browser, "table.grid td.missing") == []  # every map of a fresh run is cached
    finally:
        browser.close()
