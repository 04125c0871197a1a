"""Helpers shared by the CLI test files: invoke the app in process, read a one-line error."""

from __future__ import annotations

from typer.testing import CliRunner

from xaibench.cli import app


def invoke(*args: str):
    """Run `xaibench ARGS` in process; an exception other than the CLI's exit is re-raised."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def one_error_line(result) -> str:
    """The exit code is 2 and stderr holds exactly one non-empty `error:` line, without a traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
