"""The fuzz corpus (``fuzz_corpus.py``) through the real CLI: `check` and `run` refuse every case.

Each generated case is certainly invalid; both commands must exit 2 with exactly one `error:`
line on stderr that names what was mutated, print nothing on stdout, show no traceback, create
no results folder, and return quickly: `run` is bounded by an alarm, so a case that slipped past
validation and started training fails here instead of hanging. YAML over the size cap or with
runaway aliases is refused in under a second. A deterministic eighth of the corpus runs by
default; the whole corpus with ``-m slow``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fuzz_corpus import Case, corpus, shipped
from typer.testing import CliRunner

from xaibench import manifest
from xaibench.cli import app
from xaibench.errors import UserError
from xaibench.manifest_yaml import MAX_BYTES

CASES = corpus()
RUN_SECONDS = 60  # generous on a loaded 2-core machine; a refused case takes well under one

# Cases still accepted or mishandled because of plugin files this suite does not own: each is a
# missing range check in the plugin's __post_init__. Matched by the end of the case id
# (plugin-parameter-mutation), so it holds whichever manifest lists the plugin. Empty now: the
# ground-truth models, bam data_seed, gradients, rise, xrai, extremal, generated datasets and
# road gained their checks; add a pattern here (strict xfail) when a new gap is found.
KNOWN: dict[str, str] = {}


def known_failure(case: Case) -> str | None:
    for pattern, reason in KNOWN.items():
        if re.search(pattern, case.id):
            return reason
    return None


def marks(index: int, case: Case) -> list:
    out = [] if index % 8 == 0 else [pytest.mark.slow]
    reason = known_failure(case)
    if reason:
        out.append(pytest.mark.xfail(reason=reason, strict=True))
    return out


PARAMS = [pytest.param(case, id=case.id, marks=marks(i, case)) for i, case in enumerate(CASES)]


class TookTooLong(Exception):
    pass


def _alarm(signum, frame):
    raise TookTooLong()


def refused(result, case: Case, command: str) -> str:
    """The one error line, after checking everything the contract says about a refusal."""
    error = result.exception
    assert error is None or isinstance(error, SystemExit), f"{command}: traceback: {type(error).__name__}: {error}"
    assert result.exit_code == 2, (command, result.exit_code, result.stdout[-300:], result.stderr[-300:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, (command, result.stderr[:1000])
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    for fragment in case.expect:
        assert fragment in lines[0], (command, fragment, lines[0][:500])
    assert result.stdout == "", (command, result.stdout[:300])
    return lines[0]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("case", PARAMS)
def test_check_and_run_refuse_the_case_in_one_line(workdir: Path, case: Case):
    (workdir / "case.yaml").write_bytes(case.text)
    refused(CliRunner().invoke(app, ["check", "case.yaml"]), case, "check")
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(RUN_SECONDS)
    try:
        result = CliRunner().invoke(app, ["run", "case.yaml", "--results", "results"])
    except TookTooLong:
        pytest.fail(f"run did not stop within {RUN_SECONDS} s: it started work that validation should refuse")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if isinstance(result.exception, TookTooLong):
        pytest.fail(f"run did not stop within {RUN_SECONDS} s: it started work that validation should refuse")
    refused(result, case, "run")
    assert not (workdir / "results").exists(), "a refused run must not create its results folder"


def test_the_corpus_covers_every_shipped_manifest_and_every_kind_of_mistake():
    assert len(CASES) >= 300
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({c.text for c in CASES}) == len(CASES)
    for path in shipped():
        assert sum(c.id.startswith(f"{path.stem}-") for c in CASES) >= 100, path.name
    for kind in (
        "missing-",
        "misspelt",
        "top-level-",
        "-empty",
        "-duplicate",
        "-negative",
        "-huge",
        "-nan",
        "option-limit-",
        "option-batch_size-",
        "syntax-",
        "non-utf8-",
        "huge-",
        "alias-bomb",
        "anchor-",
        "deep-garbage",
        "-str",
    ):
        assert any(kind in c.id for c in CASES), kind
    assert sum(1 for p in PARAMS if not any(m.name == "slow" for m in p.marks)) >= 300 // 8


@pytest.mark.parametrize("path", shipped(), ids=lambda p: p.name)
def test_each_shipped_manifest_is_valid_before_mutation(path: Path):
    """A mutation of a manifest that was already invalid would prove nothing."""
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output


def _bomb(levels: int = 9) -> str:
    """The issue's billion-laughs shape: 9 levels of 9 aliases, 9^9 values from 468 bytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_bomb().encode(), id="alias-bomb-9-levels-468-bytes"),
        pytest.param(
            ("a0: &a0 [x, x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, 50))).encode(),
            id="alias-chain-2-pow-50",
        ),
        pytest.param(b"name: x\n#" + b"x" * MAX_BYTES, id="one-byte-over-the-cap"),
        pytest.param(b"# padding\n" * (10 << 20 >> 3), id="ten-megabytes"),
    ],
)
def test_oversized_yaml_is_refused_in_under_a_second(workdir: Path, text: bytes):
    started = time.perf_counter()
    with pytest.raises(UserError):
        manifest.parse(text, source="bomb.yaml")
    assert time.perf_counter() - started < 1.0
    (workdir / "bomb.yaml").write_bytes(text)
    for command in (["check", "bomb.yaml"], ["run", "bomb.yaml", "--results", "results"]):
        started = time.perf_counter()
        result = CliRunner().invoke(app, command)
        took = time.perf_counter() - started
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert took < 1.0, (command[0], took)
    assert not (workdir / "results").exists()


SUBPROCESS_CASES = (
    "quickstart-alias-bomb-inside",
    "ci-non-utf8-inside",
    "quickstart-option-limit--1",
    "ci-syntax-list-key",
)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_a_handful_of_cases_through_a_real_process(workdir: Path, case_id: str):
    [case] = [c for c in CASES if c.id == case_id]
    (workdir / "case.yaml").write_bytes(case.text)
    for command in (["check", "case.yaml"], ["run", "case.yaml", "--results", "results"]):
        done = subprocess.run(
            [sys.executable, "-m", "xaibench.cli", *command], capture_output=True, text=True, timeout=300
        )
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2, (command, done.returncode, done.stderr[-500:])
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-1000:]
        assert all(fragment in lines[0] for fragment in case.expect), (case.expect, lines[0])
        assert done.stdout == ""
    assert not (workdir / "results").exists()
