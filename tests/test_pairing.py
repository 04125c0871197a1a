"""`options.pairing: matching`: one manifest runs each model on the datasets it was trained for
(the ground-truth study's noise sweep), and each metric only on datasets that provide what it needs.
Under the default `product`, the same manifest is refused, naming the mismatch."""

from __future__ import annotations

import json

import pytest
from cli_helpers import invoke, one_error_line

from xaibench import results
from xaibench.manifest import parse

SWEEP = """\
name: paired
options: {limit: 12, batch_size: 12, pairing: matching}
models:
  - low_snr_cnn: {snr: 1.0, epochs: 1}
  - low_snr_cnn: {snr: 2.0, epochs: 1}
  - suppressor_cnn: {epochs: 1}
datasets:
  - low_snr: {snr: 1.0}
  - low_snr: {snr: 2.0}
  - suppressor
methods: [random, saliency]
metrics: [mass_in_mask, mass_in_mask: {mask: suppressor}]
"""


def _snr(params_json: str) -> float | None:
    return json.loads(params_json).get("snr")


def test_matching_keeps_only_the_pairs_that_fit():
    manifest = parse(SWEEP)
    pairs = [(m.name, _snr(m.params_json), d.name, _snr(d.params_json)) for m, d in manifest.model_dataset_pairs()]
    assert pairs == [
        ("low_snr_cnn", 1.0, "low_snr", 1.0),
        ("low_snr_cnn", 2.0, "low_snr", 2.0),
        ("suppressor_cnn", None, "suppressor", None),
    ]
    jobs = manifest.jobs()
    # low_snr has no suppressor mask: one metric there, two on suppressor; two methods each.
    assert len(jobs) == (2 * 1 + 1 * 2) * 2
    for job in jobs:
        assert _snr(job.model.params_json) == _snr(job.dataset.params_json)
        if json.loads(job.metric.params_json).get("mask") == "suppressor":
            assert job.dataset.name == "suppressor"


def test_product_refuses_the_same_manifest():
    text = SWEEP.replace(", pairing: matching", "")
    with pytest.raises(Exception, match=r"differs from the data 'low_snr_cnn' was trained on: snr: 2.0"):
        parse(text)


def test_a_matching_run_writes_rows_for_its_pairs_only(tmp_path, monkeypatch):
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "paired.yaml"
    path.write_text(SWEEP)
    checked = invoke("check", str(path))
    assert checked.exit_code == 0, checked.output
    assert "8 jobs (3 matching model-dataset pairs x 2 methods x 2 metrics x 1 seeds)" in checked.stdout

    done = invoke("run", str(path), "--results", str(tmp_path / "results"))
    assert done.exit_code == 0, done.output
    rows = results.read(tmp_path / "results" / "paired")
    assert len(rows) == 8 * 12  # jobs x items: one score per mass_in_mask job
    snr = {name: rows[f"{name}_params"].map(_snr).fillna(-1) for name in ("model", "dataset")}
    assert (snr["model"] == snr["dataset"]).all()
    assert set(rows.loc[rows["score"] == "distractor_mass", "dataset"]) == {"suppressor"}
    assert "distractor_mass" not in set(rows.loc[rows["dataset"] == "low_snr", "score"])
    # One board shows every pair: the noise sweep side by side with the suppressor.
    assert "suppressor_cnn" in done.stdout and "snr=2.0" in done.stdout


def test_matching_names_a_dataset_no_model_accepts(tmp_path, monkeypatch):
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "bad.yaml"
    path.write_text(SWEEP.replace("  - suppressor\nmethods", "  - suppressor\n  - low_snr: {snr: 3.0}\nmethods"))
    message = one_error_line(invoke("check", str(path)))
    assert "bad.yaml:11: datasets[3].low_snr" in message and "no model in the manifest accepts this dataset" in message
    assert "snr: 3.0 (model trained with 1.0)" in message
