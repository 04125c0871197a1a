"""The CLI stays instant: `ls`, `check`, `plan`, `board` and a warm `run` never import torch.

Each command runs in a fresh interpreter (the import state of this test process is no guide);
the child reports which heavy packages ended up in ``sys.modules``. The measured wall times are
in benchmarks/cli_latency.py, never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "captum", "sklearn", "skimage", "matplotlib")

PROBE = """
import json, sys
from xaibench.cli import main
HEAVY = json.loads(sys.argv[2])
sys.argv = ["xaibench", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exit:
    code = exit.code
else:
    code = 0
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))
print("PROBE", json.dumps({"code": code, "heavy": heavy}))
"""

MANIFEST = """
name: lazy
models: [digits_cnn]
datasets: [digits]
methods: [random, saliency, grad_cam]
metrics: [deletion]
options: {split: test, limit: 16, batch_size: 16, seeds: [0]}
"""


def probe(args: list[str], cwd: Path, env: dict[str, str]) -> dict:
    command = [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    line = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    assert line, done.stdout + done.stderr
    return json.loads(line[-1][len("PROBE ") :])


@pytest.fixture(scope="module")
def warm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lazy")
    (folder / "lazy.yaml").write_text(MANIFEST)
    env = {**os.environ, "XAIBENCH_CACHE": str(folder / "cache")}
    cold = probe(["run", "lazy.yaml", "--results", "results"], folder, env)
    assert cold["code"] == 0, cold
    assert "torch" in cold["heavy"]  # the probe can see an import: a cold run must train and attribute
    return folder, env


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["ls"],
        ["ls", "method"],
        ["check", "lazy.yaml"],
        ["plan", "lazy.yaml", "--results", "results"],
        ["board", "results/lazy"],
        ["run", "lazy.yaml", "--results", "results"],
    ],
    ids=lambda args: " ".join(args),
)
def test_command_imports_no_torch(warm_folder, args):
    folder, env = warm_folder
    result = probe(args, folder, env)
    assert result["code"] in (0, None), result
    assert result["heavy"] == [], f"`xaibench {' '.join(args)}` imported {result['heavy']}"


def test_check_of_a_new_pair_builds_the_model_once(tmp_path):
    """A (model, method) pair never checked before is checked by building the model (torch);
    the verdict is remembered, so the next check of the same manifest needs no torch."""
    (tmp_path / "m.yaml").write_text(MANIFEST.replace("grad_cam", "eigen_cam"))
    env = {**os.environ, "XAIBENCH_CACHE": str(tmp_path / "cache")}
    first = probe(["check", "m.yaml"], tmp_path, env)
    second = probe(["check", "m.yaml"], tmp_path, env)
    assert first["code"] in (0, None) and "torch" in first["heavy"]
    assert second["code"] in (0, None) and second["heavy"] == []
