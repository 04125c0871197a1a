"""Bad manifests through the real CLI: `xaibench check` and `xaibench run` exit 2 with one line.

Every case is a mistake a user makes in a YAML manifest. Both commands must reject it before any
model work, with exactly one non-empty line on stderr (no traceback) that names the file, the
line where there is one, and the valid name the user probably meant. A rejected run must leave
the results already written under the manifest's name untouched.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from cli_helpers import invoke, one_error_line

from xaibench import results

LINEAR_MODEL_PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from xaibench.registry import register


@register("model", "test_linear")
@dataclass(frozen=True)
class TestLinear:
    """A linear classifier of 8x8 grey images: no Conv2d layer, nothing to train."""

    version: ClassVar[str] = "1"

    @property
    def revision(self) -> str:
        return "untrained"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, 8, 8)

    def build(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
'''

BROKEN_PLUGIN = "import torch\nVALUE = 1 / 0\n"

# A valid manifest; each case below changes one thing in it. Line numbers are 1-based.
GOOD = """\
name: bad
options: {limit: 8, batch_size: 8}
models: [digits_cnn]
datasets: [digits]
methods: [random, saliency]
metrics: [deletion]
"""


def edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


# id -> (manifest text, fragments the error line must contain, line number it must name or None)
CASES: dict[str, tuple[str, list[str], int | None]] = {
    "invalid_yaml": (
        edit("datasets: [digits]", "datasets: digits: 8"),
        ["invalid YAML", "mapping values are not allowed"],
        4,
    ),
    "top_level_not_mapping": ("- digits_cnn\n- digits\n", ["a manifest is a mapping", "name"], 1),
    "unknown_top_level_key": (
        edit("methods:", "methds:"),
        ["unknown key 'methds'", "did you mean 'methods'"],
        5,
    ),
    "missing_required_key": (edit("metrics: [deletion]\n", ""), ["missing required key 'metrics'"], 1),
    "unknown_method": (
        edit("[random, saliency]", "[random, salency]"),
        ["unknown method 'salency'", "did you mean 'saliency'"],
        5,
    ),
    "unknown_parameter": (
        edit("methods: [random, saliency]", "methods:\n  - random\n  - integrated_gradients:\n      n_step: 8"),
        ["unknown parameter 'n_step'", "integrated_gradients", "did you mean 'n_steps'"],
        7,
    ),
    "wrong_parameter_type": (
        edit("methods: [random, saliency]", 'methods:\n  - random\n  - integrated_gradients: {n_steps: "many"}'),
        ["n_steps", "expected an integer", "'many'"],
        7,
    ),
    "literal_parameter_value": (
        edit("metrics: [deletion]", "metrics:\n  - deletion: {fill: purple}"),
        ["metrics[0].deletion.fill", "'purple' is not one of", "'black'"],
        7,
    ),
    "literal_parameter_typo": (
        edit("metrics: [deletion]", "metrics:\n  - deletion: {reduce: max_ab}"),
        ["reduce", "did you mean 'max_abs'"],
        7,
    ),
    "parameter_out_of_range": (
        edit("metrics: [deletion]", "metrics:\n  - deletion: {steps: 0}"),
        ["deletion", "steps must be between 1 and 1000"],
        7,
    ),
    "unknown_option": (
        edit("batch_size: 8", "batchsize: 8"),
        ["unknown option 'batchsize'", "did you mean 'batch_size'"],
        2,
    ),
    "option_target": (edit("limit: 8", "limit: 8, target: foo"), ["target", "'predicted' or 'label'", "foo"], 2),
    "option_negative_limit": (edit("limit: 8", "limit: -3"), ["limit", "between 1 and", "-3"], 2),
    "option_seeds_not_integers": (edit("limit: 8", "limit: 8, seeds: [a]"), ["seeds", "integers"], 2),
    "options_not_mapping": (edit("{limit: 8, batch_size: 8}", "[limit, 8]"), ["options", "mapping"], 2),
    "empty_methods": (edit("[random, saliency]", "[]"), ["methods", "non-empty list"], 5),
    "duplicate_method": (
        edit("methods: [random, saliency]", "methods:\n  - random\n  - saliency\n  - saliency"),
        ["method 'saliency' is listed twice"],
        8,
    ),
    "unsupported_version": (edit("name: bad\n", "name: bad\nversion: 2\n"), ["version 2", "use 1"], 2),
    "bad_name": (edit("name: bad", "name: ../bad"), ["name must be", "results folder"], 1),
    "plugin_file_missing": (
        edit("name: bad\n", "name: bad\nplugins: [missing.py]\n"),
        ["plugins[0]", "plugin file not found", "missing.py"],
        2,
    ),
    "plugin_file_raises": (
        edit("name: bad\n", "name: bad\nplugins: [broken.py]\n"),
        ["plugins[0]", "broken.py", "ZeroDivisionError"],
        2,
    ),
    "plugin_module_missing": (
        edit("name: bad\n", "name: bad\nplugins: ['nonexistent_mod:thing']\n"),
        ["plugins[0]", "cannot import module 'nonexistent_mod'", "PYTHONPATH"],
        2,
    ),
    "gate_unknown_metric": (
        GOOD + "gates:\n  - {rule: beats_random, metric: deletio}\n",
        ["gate metric 'deletio' is not among the manifest's metrics", "did you mean 'deletion'"],
        8,
    ),
    "gate_unknown_rule": (
        GOOD + "gates:\n  - {rule: beat_random, metric: deletion}\n",
        ["unknown rule 'beat_random'", "did you mean 'beats_random'"],
        8,
    ),
    "gate_unknown_method": (
        GOOD + "gates:\n  - rule: beats_random\n    metric: deletion\n    methods: [salincy]\n",
        ["gate method 'salincy'", "did you mean 'saliency'"],
        10,
    ),
    "incompatible_model_dataset": (
        edit("datasets: [digits]", "datasets:\n  - digits: {size: 16}"),
        ["(1, 16, 16)", "digits_cnn", "(1, 8, 8)"],
        5,
    ),
    "gate_value_not_a_number": (
        GOOD + "gates:\n  - {rule: max_mean, metric: deletion, value: abc}\n",
        ["gates[0].value", "expected a number", "'abc'"],
        8,
    ),
    "device_not_here": (edit("limit: 8", "limit: 8, device: mps"), ["options.device", "'mps'", "use cpu"], 2),
    "seed_too_large": (
        edit("limit: 8", "limit: 8, seeds: [9223372036854775808]"),
        ["seeds", "between 0 and 2**63 - 1"],
        2,
    ),
    "duplicate_yaml_key": (GOOD + "methods: [random]\n", ["invalid YAML", "'methods' appears twice"], 7),
    "split_does_not_exist": (
        edit("limit: 8", "limit: 8, split: validation"),
        ["datasets[0]", "no split 'validation'", "train, test"],
        4,
    ),
    "dataset_differs_from_training_data": (
        edit("datasets: [digits]", "datasets:\n  - digits: {split_seed: 1}"),
        ["split_seed: 1 (model trained with 0)", "digits_cnn"],
        5,
    ),
    "metric_needs_masks": (
        edit("metrics: [deletion]", "metrics: [deletion, mass_in_mask]"),
        ["metric 'mass_in_mask' requires masks", "dataset 'digits' does not provide"],
        6,
    ),
    "pairing_typo": (
        edit("limit: 8", "limit: 8, pairing: matchng"),
        ["options.pairing", "'product' or 'matching'", "did you mean 'matching'"],
        2,
    ),
    "matching_leaves_a_model_alone": (
        edit("limit: 8", "limit: 8, pairing: matching").replace("[digits]", "[synthetic]"),
        ["model 'digits_cnn' suits none of the manifest's datasets", "trained on 'digits', not 'synthetic'"],
        3,
    ),
    "matching_leaves_a_metric_alone": (
        edit("limit: 8", "limit: 8, pairing: matching").replace("[deletion]", "[deletion, pointing_game]"),
        ["no dataset in the manifest suits this metric", "'pointing_game' requires masks"],
        6,
    ),
    "occlusion_negative_window": (
        edit("methods: [random, saliency]", "methods:\n  - random\n  - occlusion: {window: -3}"),
        ["occlusion", "window must be between 0 (automatic) and 4096 pixels, got -3"],
        7,
    ),
    "blur_sigma_nan": (
        edit("metrics: [deletion]", "metrics:\n  - insertion: {blur_sigma: .nan}"),
        ["insertion", "blur_sigma must be between 0 (automatic) and 1000 pixels, got nan"],
        7,
    ),
    "grad_cam_without_conv": (
        edit("name: bad\n", "name: bad\nplugins: [linear_model.py]\n")
        .replace("[digits_cnn]", "[test_linear]")
        .replace("[random, saliency]", "[random, grad_cam]"),
        ["grad_cam", "test_linear", "Conv2d"],
        6,
    ),
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder: the current directory, with plugin files beside the manifests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "linear_model.py").write_text(LINEAR_MODEL_PLUGIN)
    (tmp_path / "broken.py").write_text(BROKEN_PLUGIN)
    return tmp_path


def run_args(command: str, path: str, results_root: Path) -> list[str]:
    return [command, path] if command == "check" else [command, path, "--results", str(results_root)]


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_manifest_is_one_located_line(workdir: Path, command: str, case: str):
    text, fragments, line = CASES[case]
    (workdir / "bad.yaml").write_text(text)
    result = invoke(*run_args(command, "bad.yaml", workdir / "results"))
    message = one_error_line(result)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    if line is None:
        assert "bad.yaml" in message, message
    else:
        assert re.search(rf"\bbad\.yaml:{line}\b", message), (line, message)
    assert not (workdir / "results").exists(), "a rejected manifest must not create a results folder"
    assert result.stdout == "", "nothing but the error may be printed"


@pytest.mark.parametrize("command", ["check", "run"])
def test_missing_manifest_file_suggests_a_neighbour(workdir: Path, command: str):
    (workdir / "quickstart.yaml").write_text(GOOD)
    message = one_error_line(invoke(*run_args(command, "quickstrat.yaml", workdir / "results")))
    assert "manifest not found: quickstrat.yaml" in message
    assert "did you mean 'quickstart.yaml'" in message

    message = one_error_line(invoke(*run_args(command, "nowhere/else.yaml", workdir / "results")))
    assert "manifest not found: nowhere/else.yaml" in message


def test_check_stops_at_the_first_bad_manifest_of_several(workdir: Path):
    (workdir / "good.yaml").write_text(GOOD)
    (workdir / "bad.yaml").write_text(CASES["unknown_method"][0])
    result = invoke("check", "good.yaml", "bad.yaml")
    message = one_error_line(result)
    assert message.startswith("error: bad.yaml:5:")
    assert "good.yaml: ok" in result.stdout


def test_run_limit_option_must_be_positive(workdir: Path):
    (workdir / "good.yaml").write_text(GOOD)
    message = one_error_line(invoke("run", "good.yaml", "--limit", "0", "--results", str(workdir / "results")))
    assert "--limit must be between 1 and 10,000,000, got 0" in message


def test_a_rejected_run_leaves_written_results_untouched(workdir: Path):
    good = textwrap.dedent(
        """\
        name: keep
        plugins: [linear_model.py]
        options: {limit: 16, batch_size: 8}
        models: [test_linear]
        datasets: [digits]
        methods: [random, saliency]
        metrics: [deletion: {steps: 4}]
        """
    )
    (workdir / "keep.yaml").write_text(good)
    root = workdir / "results"
    first = invoke("run", "keep.yaml", "--results", str(root))
    assert first.exit_code == 0, first.output
    folder = root / "keep"
    before = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    parquet = [p for p in before if p.suffix == ".parquet"]
    assert parquet, "the good manifest must have written result files"
    rows_before = results.read(folder)
    assert len(rows_before) == 16 * 2  # items x methods (deletion has one score)

    bad_at_load = good.replace("[random, saliency]", "[random, salency]")
    bad_at_preflight = good.replace("[random, saliency]", "[random, saliency, grad_cam]")
    for bad in (bad_at_load, bad_at_preflight):
        (workdir / "keep.yaml").write_text(bad)
        one_error_line(invoke("run", "keep.yaml", "--results", str(root)))
        after = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        assert after == before, "a rejected run changed the results folder"
    assert results.read(folder).equals(rows_before)


BAD_METHODS_PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar

import torch

from xaibench.registry import register


@register("method", "test_half_size")
@dataclass(frozen=True)
class HalfSize:
    """Returns maps of half the input's side: a wrong shape."""

    version: ClassVar[str] = "1"

    def attribute(self, model, inputs, target, seeds):
        return inputs[..., ::2, ::2].clone()


@register("method", "test_integer_map")
@dataclass(frozen=True)
class IntegerMap:
    """Returns an integer tensor of the right shape: a wrong dtype."""

    version: ClassVar[str] = "1"

    def attribute(self, model, inputs, target, seeds):
        return torch.ones_like(inputs, dtype=torch.int64)


@register("method", "test_numpy_map")
@dataclass(frozen=True)
class NumpyMap:
    """Returns a numpy array instead of a tensor."""

    version: ClassVar[str] = "1"

    def attribute(self, model, inputs, target, seeds):
        return inputs.numpy()
'''

PLUGIN_WITHOUT_VERSION = LINEAR_MODEL_PLUGIN.replace('    version: ClassVar[str] = "1"\n', "").replace(
    "test_linear", "test_unversioned"
)

# plugin file -> (its text, fragments of the one-line error at check and run time)
BROKEN_PLUGINS = {
    "exits_zero.py": ("import sys\nsys.exit(0)\n", ["plugins[0]", "exits_zero.py", "called sys.exit(0)"]),
    "exits_message.py": ("raise SystemExit('bye\\nnow')\n", ["exits_message.py", "sys.exit('bye\\nnow')"]),
    "raises_multiline.py": ("raise RuntimeError('one\\ntwo')\n", ["raises_multiline.py", "RuntimeError: one two"]),
    "unversioned.py": (PLUGIN_WITHOUT_VERSION, ["unversioned.py", "model 'test_unversioned'", "has no `version`"]),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("plugin", list(BROKEN_PLUGINS))
def test_a_plugin_that_exits_raises_or_lacks_version_is_one_line(workdir: Path, command: str, plugin: str):
    text, fragments = BROKEN_PLUGINS[plugin]
    (workdir / plugin).write_text(text)
    (workdir / "bad.yaml").write_text(edit("name: bad\n", f"name: bad\nplugins: [{plugin}]\n"))
    message = one_error_line(invoke(*run_args(command, "bad.yaml", workdir / "results")))
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert message.startswith("error: bad.yaml:2: plugins[0]:"), message
    assert not (workdir / "results").exists()


def test_a_method_with_a_wrong_shape_or_dtype_fails_its_jobs_with_exit_3(workdir: Path):
    """Seen only when the method runs: its jobs fail (exit 3) with a line naming the method and
    what it returned; the other methods' rows are written."""
    (workdir / "bad_methods.py").write_text(BAD_METHODS_PLUGIN)
    manifest = textwrap.dedent(
        """\
        name: shapes
        plugins: [linear_model.py, bad_methods.py]
        options: {limit: 8, batch_size: 8}
        models: [test_linear]
        datasets: [digits]
        methods: [random, test_half_size, test_integer_map, test_numpy_map]
        metrics: [deletion: {steps: 2}]
        """
    )
    (workdir / "shapes.yaml").write_text(manifest)
    assert invoke("check", "shapes.yaml").exit_code == 0, "a method's output is not visible to check"
    result = invoke("run", "shapes.yaml", "--results", str(workdir / "results"), "--no-board")
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    expected = {
        "test_half_size": "returned (8, 1, 4, 4) torch.float32; expected a float tensor of the input's shape",
        "test_integer_map": "returned (8, 1, 8, 8) torch.int64; expected a float tensor",
        "test_numpy_map": "returned ndarray; expected a float tensor",
    }
    failure_lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(failure_lines) == 3, result.stderr
    for method, fragment in expected.items():
        [line] = [line for line in failure_lines if method in line]
        assert fragment in line, (fragment, line)
    rows = results.read(workdir / "results" / "shapes")
    assert set(rows["method"]) == {"random"} and len(rows) == 8, "the good method's rows are kept"
