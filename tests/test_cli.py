"""End-to-end tests of the `xaibench` command line: run, eval, check, ls, board, cache, gates.

The module shares one ``XAIBENCH_CACHE`` (digits_cnn trains once, in the first test that needs it)
and one small results tree. Most commands run in-process through typer's CliRunner; the
rerun test starts the real console script in a subprocess, as a user would.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from cli_helpers import invoke, one_error_line

from xaibench import registry, results

REPO = Path(__file__).resolve().parents[1]

BUILTIN_METHODS = (
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "smoothgrad_sq",
    "vargrad",
    "guided_backprop",
    "deconvolution",
    "grad_cam",
    "guided_grad_cam",
    "deeplift",
    "gradient_shap",
    "occlusion",
    "feature_ablation",
    "random",
    "sobel",
    "blur_random",
)

SMALL = """\
name: {name}
options: {{limit: 48, batch_size: 64, seeds: [0]}}
models: [digits_cnn]
datasets: [digits]
methods: [random, saliency, integrated_gradients: {{n_steps: 8}}]
metrics: [deletion: {{steps: 10}}, insertion: {{steps: 10}}]
gates:
  - {gate}
"""
BEATS_RANDOM = "{rule: beats_random, metric: deletion, methods: [saliency]}"
SMALL_ROWS = 48 * 3 * 2  # items x methods x metrics (one score, auc, each)

MY_METHOD = '''
from dataclasses import dataclass
from typing import ClassVar

import torch

from xaibench.registry import register


@register("method", "{name}")
@dataclass(frozen=True)
class {cls}:
    """A user's own method: importance peaks at the image centre and falls off with distance."""

    version: ClassVar[str] = "1"
    width: float = 2.0

    def attribute(self, model, inputs, target, seeds):
        h, w = inputs.shape[-2:]
        ys = torch.arange(h, dtype=inputs.dtype, device=inputs.device) - (h - 1) / 2
        xs = torch.arange(w, dtype=inputs.dtype, device=inputs.device) - (w - 1) / 2
        peak = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * self.width**2))
        return peak.expand_as(inputs).contiguous()
'''


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def cache_root(tmp_path_factory) -> Path:
    """One cache for the module, so digits_cnn trains once; subprocesses inherit it."""
    root = tmp_path_factory.mktemp("cli-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XAIBENCH_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, cache_root) -> tuple[Path, object]:
    """The small manifest run once in-process (it trains digits_cnn): (results root, result)."""
    folder = tmp_path_factory.mktemp("small")
    manifest = folder / "small.yaml"
    manifest.write_text(SMALL.format(name="small", gate=BEATS_RANDOM))
    root = folder / "results"
    result = invoke("run", str(manifest), "--results", str(root))
    assert result.exit_code == 0, result.output
    return root, result


def raw_rows(folder: Path) -> pd.DataFrame:
    """Every row of every Parquet file, without the reader's dedupe."""
    files = results.result_files(folder)
    assert files, f"no result files in {folder}"
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


# ---- run -----------------------------------------------------------------------------------------
def test_run_prints_board_and_passing_gate(small_run):
    root, result = small_run
    for method in ("random", "saliency", "integrated_gradients"):
        assert method in result.stdout
    assert "beats random" in result.stdout
    assert "gate pass: beats_random on deletion for saliency" in result.stderr
    assert f"{SMALL_ROWS} rows written" in result.stderr
    rows = results.read(root / "small")
    assert len(rows) == SMALL_ROWS
    assert set(rows["method"]) == {"random", "saliency", "integrated_gradients"}
    assert rows["item_id"].nunique() == 48


def test_subprocess_rerun_does_no_work_and_writes_no_duplicates(small_run, cache_root, tmp_path):
    """The real console script; the second run of the same manifest computes and writes nothing."""
    cache = tmp_path / "cache"  # trained model only: the first run must compute every tensor
    shutil.copytree(cache_root / "models", cache / "models")
    env = {**os.environ, "XAIBENCH_CACHE": str(cache)}
    manifest = tmp_path / "rerun.yaml"
    manifest.write_text(SMALL.format(name="rerun", gate=BEATS_RANDOM))
    root = tmp_path / "results"
    script = Path(sys.executable).with_name("xaibench")
    assert script.is_file(), "the `xaibench` console script is not installed beside the interpreter"

    def run(command: list[str]) -> subprocess.CompletedProcess:
        args = [*command, "run", str(manifest), "--results", str(root)]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done

    first = run([str(script)])
    for method in ("random", "saliency", "integrated_gradients"):
        assert method in first.stdout
    assert "beats random" in first.stdout
    assert "0 models trained, 48 forward, 144 attributions, 288 scores" in first.stderr
    assert f"{SMALL_ROWS} rows written" in first.stderr
    assert "gate pass" in first.stderr
    folder = root / "rerun"
    files_before = results.result_files(folder)
    assert len(results.read(folder)) == SMALL_ROWS

    second = run([sys.executable, "-m", "xaibench.cli"])
    assert "0 models trained, 0 forward, 0 attributions, 0 scores" in second.stderr
    assert "0 rows written" in second.stderr
    assert "48 items already done" in second.stderr
    assert "beats random" in second.stdout, "a warm rerun still prints the board from stored rows"
    assert results.result_files(folder) == files_before
    raw = raw_rows(folder)
    assert len(raw) == SMALL_ROWS
    assert not raw.duplicated(results.ROW_KEY).any()
    assert len(results.read(folder)) == SMALL_ROWS

    for path in files_before:
        schema = pq.read_schema(path)
        assert schema.metadata[b"schema_version"] == b"2"
        for column in ("torch_version", "captum_version", "git_sha", "xaibench_version", "device"):
            assert column in schema.names
    assert set(raw["torch_version"]) == {version("torch")}
    assert set(raw["captum_version"]) == {version("captum")}
    (sha,) = set(raw["git_sha"])
    if (REPO / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", sha), sha
    assert set(raw["device"]) == {"cpu"}


def test_raising_limit_computes_only_new_items(small_run, tmp_path):
    manifest = tmp_path / "grow.yaml"
    manifest.write_text(SMALL.format(name="grow", gate=BEATS_RANDOM))
    root = tmp_path / "results"
    first = invoke("run", str(manifest), "--results", str(root), "--limit", "16", "--no-board", "--no-gates")
    assert first.exit_code == 0, first.output
    assert first.stdout == "", "--no-board prints no leaderboard"
    assert "96 rows written" in first.stderr  # 16 items x 6 jobs
    second = invoke("run", str(manifest), "--results", str(root), "--limit", "24", "--no-board", "--no-gates")
    assert second.exit_code == 0, second.output
    assert "48 rows written" in second.stderr  # 8 new items x 6 jobs
    assert "16 items already done" in second.stderr
    rows = results.read(root / "grow")
    assert len(rows) == 24 * 6
    assert not raw_rows(root / "grow").duplicated(results.ROW_KEY).any()


def test_failing_gate_exits_1_and_says_fail(small_run, tmp_path):
    manifest = tmp_path / "gated.yaml"
    gate = "{rule: min_mean, metric: deletion, value: 0.99, methods: [saliency]}"
    manifest.write_text(SMALL.format(name="gated", gate=gate))
    root = tmp_path / "results"
    result = invoke("run", str(manifest), "--results", str(root))
    assert result.exit_code == 1, result.output
    assert "gate FAIL: min_mean 0.99 on deletion for saliency" in result.stderr
    assert re.search(r"saliency on digits_cnn x digits deletion.*/auc: mean 0\.\d+ < 0\.99", result.stderr)
    assert "saliency" in result.stdout, "the board is printed even when a gate fails"

    skipped = invoke("run", str(manifest), "--results", str(root), "--no-gates")
    assert skipped.exit_code == 0, skipped.output
    assert "FAIL" not in skipped.stderr


def test_run_board_formats(small_run):
    root, _ = small_run
    manifest = root.parent / "small.yaml"
    markdown = invoke("run", str(manifest), "--results", str(root), "--format", "md")
    assert markdown.exit_code == 0, markdown.output
    assert "| # | method |" in markdown.stdout
    assert "0 rows written" in markdown.stderr


# ---- eval ----------------------------------------------------------------------------------------
def test_eval_adds_random_baseline_and_passes_params(small_run, tmp_path):
    root = tmp_path / "results"
    args = ["eval", "--model", "digits_cnn", "--dataset", "digits", "--method", "saliency", "--metric", "deletion"]
    result = invoke(*args, "--limit", "32", "--param", "metric.steps=10", "--results", str(root))
    assert result.exit_code == 0, result.output
    assert "saliency" in result.stdout and "random" in result.stdout
    assert "reference" in result.stdout, "random is the reference row of the board"
    rows = results.read(root / "eval")
    assert set(rows["method"]) == {"saliency", "random"}
    assert rows["item_id"].nunique() == 32
    assert {json.loads(p)["steps"] for p in rows["metric_params"]} == {10}

    no_baseline = invoke(*args, "--limit", "8", "--no-baseline", "--results", str(tmp_path / "alone"))
    assert no_baseline.exit_code == 0, no_baseline.output
    assert set(results.read(tmp_path / "alone" / "eval")["method"]) == {"saliency"}


def test_eval_params_reach_the_plugins_that_have_them(small_run, tmp_path):
    root = tmp_path / "results"
    args = ["eval", "--model", "digits_cnn", "--dataset", "digits", "--metric", "deletion", "--metric", "insertion"]
    methods = ["--method", "saliency", "--method", "integrated_gradients"]
    params = ["-p", "method.n_steps=4", "-p", "deletion.steps=5", "-p", "metric.reduce=sum"]
    result = invoke(*args, *methods, *params, "--limit", "8", "--results", str(root))
    assert result.exit_code == 0, result.output
    rows = results.read(root / "eval")
    method_params = {m: json.loads(p) for m, p in zip(rows["method"], rows["method_params"], strict=True)}
    assert method_params == {"saliency": {}, "integrated_gradients": {"n_steps": 4}, "random": {}}
    metric_params = {m: json.loads(p) for m, p in zip(rows["metric"], rows["metric_params"], strict=True)}
    assert metric_params["deletion"]["steps"] == 5 and metric_params["insertion"]["steps"] == 20
    assert metric_params["deletion"]["reduce"] == metric_params["insertion"]["reduce"] == "sum"


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--method", "saliency", "--param", "bogus"], ["--param 'bogus'", "KIND.PARAM=VALUE"]),
        (["--method", "saliency", "--param", "metrc.steps=3"], ["--param 'metrc.steps=3'"]),
        (["--method", "salency"], ["unknown method 'salency'", "did you mean 'saliency'"]),
        (
            ["--method", "integrated_gradients", "--param", "method.n_steps=many"],
            ["n_steps", "expected an integer"],
        ),
        (["--method", "saliency", "--param", "metric.stepz=3"], ["parameter 'stepz'", "did you mean 'steps'"]),
        (["--method", "saliency", "--param", "method.n_steps=3"], ["no method of this evaluation", "'n_steps'"]),
        (["--method", "salency", "--param", "salency.x=3"], ["unknown method 'salency'", "did you mean 'saliency'"]),
        (["--method", "my_center"], ["unknown method 'my_center'"]),  # a plugin needs --plugin
    ],
)
def test_eval_user_errors_are_one_line(tmp_path, extra, fragments):
    base = ["eval", "--model", "digits_cnn", "--dataset", "digits", "--metric", "deletion", "--limit", "8"]
    message = one_error_line(invoke(*base, *extra, "--results", str(tmp_path / "results")))
    for fragment in fragments:
        assert fragment in message, message
    assert not (tmp_path / "results").exists()


# ---- plugins -------------------------------------------------------------------------------------
def assert_not_registered(name: str) -> None:
    assert name not in registry.names("method"), f"{name} leaked from another test"


def test_manifest_plugin_file_relative_to_manifest(small_run, tmp_path, monkeypatch):
    assert_not_registered("my_center")
    study = tmp_path / "study"
    study.mkdir()
    (study / "my_method.py").write_text(MY_METHOD.format(name="my_center", cls="MyCenter"))
    (study / "mine.yaml").write_text(
        textwrap.dedent(
            """\
            name: mine
            plugins: [my_method.py]
            options: {limit: 32}
            models: [digits_cnn]
            datasets: [digits]
            methods: [random, my_center: {width: 1.5}]
            metrics: [deletion: {steps: 10}]
            """
        )
    )
    monkeypatch.chdir(tmp_path)  # not the manifest's folder: the plugin path is relative to the manifest
    assert invoke("check", "study/mine.yaml").exit_code == 0
    result = invoke("run", "study/mine.yaml", "--results", "results")
    assert result.exit_code == 0, result.output
    assert "my_center" in result.stdout
    rows = results.read(tmp_path / "results" / "mine")
    assert set(rows["method"]) == {"my_center", "random"}
    mine = rows[rows["method"] == "my_center"]
    assert len(mine) == 32
    assert {json.loads(p)["width"] for p in mine["method_params"]} == {1.5}


def test_eval_plugin_file(small_run, tmp_path):
    assert_not_registered("my_center")
    plugin = tmp_path / "my_method.py"
    plugin.write_text(MY_METHOD.format(name="my_center", cls="MyCenter"))
    root = tmp_path / "results"
    base = ["eval", "--model", "digits_cnn", "--dataset", "digits", "--metric", "deletion", "--limit", "32"]
    result = invoke(*base, "--plugin", str(plugin), "--method", "my_center", "--results", str(root))
    assert result.exit_code == 0, result.output
    rows = results.read(root / "eval")
    assert set(rows["method"]) == {"my_center", "random"}
    assert (rows["method"] == "my_center").sum() == 32

    message = one_error_line(invoke(*base, "--plugin", str(tmp_path / "nope.py"), "--method", "my_center"))
    assert "plugin file not found" in message and "nope.py" in message


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> Path:
    """`mymod.py` (registers method my_center_mod as MyMethod) in a folder put on sys.path."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "mymod.py").write_text(MY_METHOD.format(name="my_center_mod", cls="MyMethod"))
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("mymod", None)


def test_manifest_plugin_module_attr(small_run, user_module, tmp_path):
    assert_not_registered("my_center_mod")
    manifest = tmp_path / "mod.yaml"
    manifest.write_text(
        textwrap.dedent(
            """\
            name: mod
            plugins: ['mymod:MyMethod']
            options: {limit: 32}
            models: [digits_cnn]
            datasets: [digits]
            methods: [random, my_center_mod]
            metrics: [deletion: {steps: 10}]
            """
        )
    )
    result = invoke("run", str(manifest), "--results", str(tmp_path / "results"))
    assert result.exit_code == 0, result.output
    rows = results.read(tmp_path / "results" / "mod")
    assert set(rows["method"]) == {"my_center_mod", "random"}

    manifest.write_text(manifest.read_text().replace("mymod:MyMethod", "mymod:NotThere"))
    message = one_error_line(invoke("check", str(manifest)))
    assert "module 'mymod' has no attribute 'NotThere'" in message


def test_eval_plugin_module_attr(small_run, user_module, tmp_path):
    assert_not_registered("my_center_mod")
    root = tmp_path / "results"
    args = ["eval", "--model", "digits_cnn", "--dataset", "digits", "--metric", "deletion", "--limit", "32"]
    result = invoke(*args, "--plugin", "mymod:MyMethod", "--method", "my_center_mod", "--results", str(root))
    assert result.exit_code == 0, result.output
    assert set(results.read(root / "eval")["method"]) == {"my_center_mod", "random"}


def test_plugin_module_on_pythonpath_in_subprocess(user_module, tmp_path):
    """A real process finds `package.module:attr` plugins through PYTHONPATH."""
    manifest = tmp_path / "mod.yaml"
    manifest.write_text(
        "name: mod\nplugins: ['mymod:MyMethod']\nmodels: [digits_cnn]\ndatasets: [digits]\n"
        "methods: [random, my_center_mod]\nmetrics: [deletion]\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(user_module), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "xaibench.cli", "check", str(manifest)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{manifest}: ok" in done.stdout

    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot import module 'mymod'" in lines[0], done.stderr


# ---- check ---------------------------------------------------------------------------------------
def test_check_every_manifest_in_the_repo():
    manifests = sorted((REPO / "manifests").glob("*.yaml"))
    assert manifests
    result = invoke("check", *map(str, manifests))
    assert result.exit_code == 0, result.output
    for path in manifests:
        assert re.search(rf"^{re.escape(str(path))}: ok · \d+ jobs", result.stdout, re.M), result.stdout
    assert "Traceback" not in result.output


# ---- ls ------------------------------------------------------------------------------------------
def table_rows(table: str) -> dict[str, list[str]]:
    """name -> its other cells, for every row of the rich tables in `table` (wrapped cells joined)."""
    rows: dict[str, list[str]] = {}
    last = None
    for line in table.splitlines():
        if not line.startswith("│"):
            continue
        name, *cells = (cell.strip() for cell in line.strip("│").split("│"))
        if name:
            last = rows[name] = cells
        else:
            last[:] = [f"{old} {new}".strip() for old, new in zip(last, cells, strict=True)]
    return rows


def test_ls_all_kinds():
    result = invoke("ls")
    assert result.exit_code == 0, result.output
    for title in ("models", "datasets", "methods", "metrics"):
        assert re.search(rf"^{title}$", result.stdout, re.M), title
    rows = table_rows(result.stdout)
    for name in ("digits_cnn", "digits", "saliency", "deletion", "insertion"):
        assert name in rows


def test_ls_methods_lists_builtins_with_parameters():
    result = invoke("ls", "method")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert set(BUILTIN_METHODS) <= set(rows), set(BUILTIN_METHODS) - set(rows)
    assert list(rows) == registry.names("method")
    params, description = rows["integrated_gradients"]
    assert "n_steps: int = 32" in params
    assert description.startswith("Integrated Gradients (Sundararajan et al., ICML 2017)")
    assert rows["random"][0] == "–", "a plugin without parameters says so"
    assert not re.search(r"^(models|datasets|metrics)$", result.stdout, re.M)


def test_ls_plural_kind_and_metric_direction():
    result = invoke("ls", "metrics")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert {"deletion", "insertion"} <= set(rows)
    assert "saliency" not in rows
    assert rows["deletion"][1].endswith("[auc: lower is better; lerf_auc: higher is better]")
    assert rows["insertion"][1].endswith("[auc: higher is better; lerf_auc: lower is better]")


def test_ls_shows_brackets_and_whole_first_paragraph(tmp_path):
    """Descriptions and types are text, not rich markup; a wrapped first sentence is shown whole."""
    plugin = tmp_path / "bracket.py"
    plugin.write_text(
        textwrap.dedent(
            '''
            from dataclasses import dataclass
            from typing import ClassVar

            from xaibench.registry import register


            @register("method", "bracket_method")
            @dataclass(frozen=True)
            class BracketMethod:
                """Scores in [0, 1] per pixel, [bold]not bold[/bold], with a first sentence that
                wraps onto a second line.

                Details that ls does not show.
                """

                version: ClassVar[str] = "1"
                weights: tuple[float, ...] = (0.5, 0.5)
            '''
        )
    )
    registry.load_plugin_source(str(plugin))
    result = invoke("ls", "method")
    assert result.exit_code == 0, result.output
    params, description = table_rows(result.stdout)["bracket_method"]
    assert params == "weights: list[float] = (0.5, 0.5)"
    assert description == (
        "Scores in [0, 1] per pixel, [bold]not bold[/bold], with a first sentence that wraps onto a second line."
    )


def test_ls_unknown_kind():
    assert "unknown plugin kind 'bogus'" in one_error_line(invoke("ls", "bogus"))
    assert "did you mean 'method'" in one_error_line(invoke("ls", "metod"))


# ---- board ---------------------------------------------------------------------------------------
def test_board_markdown(small_run):
    root, _ = small_run
    result = invoke("board", str(root / "small"), "--format", "md")
    assert result.exit_code == 0, result.output
    assert "| # | method |" in result.stdout
    for method in ("random", "saliency", "integrated_gradients"):
        assert re.search(rf"^\| \d \| {method} \|", result.stdout, re.M), method
    assert "deletion/auc" in result.stdout and "insertion/auc" in result.stdout


def test_board_csv(small_run):
    root, _ = small_run
    result = invoke("board", str(root), "--format", "csv")  # the whole results tree works too
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {"ci_low", "ci_high", "mean", "method", "metric", "verdict"} <= set(table[0])
    assert {row["method"] for row in table} == {"random", "saliency", "integrated_gradients"}
    assert {row["metric"] for row in table} == {"deletion", "insertion"}
    assert {row["n"] for row in table} == {"48"}
    for row in table:
        assert float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])


def test_board_to_file(small_run, tmp_path):
    root, _ = small_run
    output = tmp_path / "board.md"
    result = invoke("board", str(root / "small"), "--format", "md", "--output", str(output))
    assert result.exit_code == 0, result.output
    assert "| # | method |" in output.read_text()
    assert result.stdout == ""
    assert f"wrote {output}" in result.stderr


def test_board_table_keeps_variant_labels(small_run, tmp_path):
    manifest = tmp_path / "variants.yaml"
    manifest.write_text(
        "name: variants\noptions: {limit: 16}\nmodels: [digits_cnn]\ndatasets: [digits]\n"
        "methods: [random, integrated_gradients: {n_steps: 4}, integrated_gradients: {n_steps: 8}]\n"
        "metrics: [deletion: {steps: 5}]\n"
    )
    root = tmp_path / "results"
    assert invoke("run", str(manifest), "--results", str(root), "--no-board").exit_code == 0
    markdown = invoke("board", str(root), "--format", "md").stdout
    assert "integrated_gradients[n_steps=4]" in markdown and "integrated_gradients[n_steps=8]" in markdown
    table = invoke("board", str(root)).stdout
    assert "integrated_gradients[n_steps=4]" in table and "integrated_gradients[n_steps=8]" in table


def test_board_without_results(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no result rows found" in one_error_line(invoke("board", str(tmp_path / "empty")))
    assert "results folder not found" in one_error_line(invoke("board", str(tmp_path / "missing")))


# ---- cache ---------------------------------------------------------------------------------------
def cache_counts(stdout: str) -> dict[str, int]:
    return {kind: int(n) for kind, n in re.findall(r"^\s+(models|logits|attributions)\s+(\d+) entries", stdout, re.M)}


def test_cache_info_and_verify(small_run, cache_root):
    info = invoke("cache", "info")
    assert info.exit_code == 0, info.output
    assert f"cache root: {cache_root}" in info.stdout
    counts = cache_counts(info.stdout)
    assert counts["models"] >= 1 and counts["logits"] >= 1 and counts["attributions"] >= 1
    assert re.search(r"model digits_cnn: trained in [\d.]+s; train_accuracy 1\.0+, test_accuracy 0\.9\d+", info.stdout)

    verify = invoke("cache", "verify")
    assert verify.exit_code == 0, verify.output
    assert "cache ok" in verify.stdout


def test_cache_clear_and_corruption(small_run, cache_root, tmp_path, monkeypatch):
    copy = tmp_path / "cache"
    shutil.copytree(cache_root, copy)
    monkeypatch.setenv("XAIBENCH_CACHE", str(copy))

    shard = next((copy / "logits").rglob("*.pt"))
    shard.write_bytes(shard.read_bytes()[:-8] + b"corrupt!")
    verify = invoke("cache", "verify")
    assert verify.exit_code == 1, verify.output
    assert "corrupt:" in verify.stdout and "1 corrupt file(s)" in verify.stdout

    before = cache_counts(invoke("cache", "info").stdout)
    cleared = invoke("cache", "clear", "attributions")
    assert cleared.exit_code == 0, cleared.output
    assert "cleared attributions" in cleared.stdout
    after = cache_counts(invoke("cache", "info").stdout)
    assert after["attributions"] == 0
    assert after["models"] == before["models"] >= 1, "clearing attributions keeps the trained models"

    assert "unknown cache kind 'bogus'" in one_error_line(invoke("cache", "clear", "bogus"))

    everything = invoke("cache", "clear")
    assert everything.exit_code == 0, everything.output
    assert set(cache_counts(invoke("cache", "info").stdout).values()) == {0}
    assert cache_counts(invoke("cache", "info").stdout) != {}
    assert (cache_root / "models").is_dir(), "the module's own cache is untouched"


# ---- help ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ([], ["run", "eval", "check", "ls", "board", "cache"]),
        (["run"], ["--results", "--limit", "--format", "--no-gates"]),
        (["eval"], ["--model", "--dataset", "--method", "--metric", "--param", "--plugin", "--limit"]),
        (["cache"], ["info", "clear", "verify"]),
    ],
)
def test_help(args, mentions):
    result = invoke(*args, "--help")
    assert result.exit_code == 0, result.output
    for word in mentions:
        assert word in result.stdout, word


# ---- review findings: stale rows, filesystem mistakes, edited plugins ---------------------------
def test_board_after_a_lower_limit_shows_only_the_items_of_this_run(small_run, tmp_path):
    root = tmp_path / "results"
    args = ["eval", "--model", "digits_cnn", "--dataset", "digits", "--method", "saliency", "--metric", "deletion"]
    assert invoke(*args, "--limit", "32", "--results", str(root), "--format", "csv").exit_code == 0
    lower = invoke(*args, "--limit", "16", "--results", str(root), "--format", "csv")
    assert lower.exit_code == 0, lower.output
    board = pd.read_csv(io.StringIO(lower.stdout))
    assert set(board["n"]) == {16}


def test_results_path_that_is_a_file_is_one_line(small_run, tmp_path):
    manifest = small_run[0].parent / "small.yaml"
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    message = one_error_line(invoke("run", str(manifest), "--results", str(blocker)))
    assert "results folder" in message and "--results" in message


def test_cache_path_that_is_a_file_is_one_line_before_any_work(small_run, tmp_path, monkeypatch):
    manifest = small_run[0].parent / "small.yaml"
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XAIBENCH_CACHE", str(blocker))
    message = one_error_line(invoke("run", str(manifest), "--results", str(tmp_path / "r")))
    assert "cache folder" in message and "XAIBENCH_CACHE" in message


def test_corrupt_result_file_is_named_in_one_line(small_run, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(small_run[0] / "small", folder)
    victim = sorted(folder.glob("*.parquet"))[0]
    victim.write_bytes(b"PAR1 garbage")
    message = one_error_line(invoke("board", str(folder)))
    assert victim.name in message and "delete it" in message


def test_board_output_to_a_folder_is_one_line(small_run, tmp_path):
    message = one_error_line(invoke("board", str(small_run[0] / "small"), "--format", "md", "-o", str(tmp_path)))
    assert "is a folder" in message
    assert not list(tmp_path.glob(".*.tmp"))


def test_cache_clear_refuses_a_folder_xaibench_did_not_make(tmp_path, monkeypatch):
    foreign = tmp_path / "project"
    (foreign / "models").mkdir(parents=True)
    (foreign / "models" / "precious.txt").write_text("keep me")
    monkeypatch.setenv("XAIBENCH_CACHE", str(foreign))
    message = one_error_line(invoke("cache", "clear"))
    assert "CACHEDIR.TAG" in message
    assert (foreign / "models" / "precious.txt").exists()


def test_editing_a_plugin_file_invalidates_its_cached_maps(small_run, cache_root, tmp_path):
    """No stale numbers after a user edits their own method, even without bumping `version`."""
    plugin = tmp_path / "mine.py"
    body = textwrap.dedent(
        '''
        from dataclasses import dataclass
        from typing import ClassVar

        from xaibench.registry import register


        @register("method", "test_editable")
        @dataclass(frozen=True)
        class Editable:
            """A map from the input itself (test only)."""

            version: ClassVar[str] = "1"

            def attribute(self, model, inputs, target, seeds):
                return inputs.clone()
        '''
    )
    plugin.write_text(body)
    env = {**os.environ, "XAIBENCH_CACHE": str(cache_root)}
    args = [sys.executable, "-m", "xaibench.cli", "eval", "--plugin", str(plugin), "--method", "test_editable"]
    args += ["--model", "digits_cnn", "--dataset", "digits", "--metric", "deletion", "--limit", "16", "--no-baseline"]
    args += ["--results", str(tmp_path / "r"), "--format", "csv"]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    plugin.write_text(body.replace("return inputs.clone()", "return 1 - inputs"))
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "16 attributions" in second.stderr, second.stderr
    means = [pd.read_csv(io.StringIO(out.stdout))["mean"].iloc[0] for out in (first, second)]
    assert means[0] != means[1]


def test_board_plot_writes_a_png_with_one_panel_per_cell(small_run, tmp_path):
    out = tmp_path / "board.png"
    result = invoke("board", str(small_run[0] / "small"), "--plot", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    width, height = Image.open(out).size
    assert width > height, "two cells (deletion, insertion) side by side"
