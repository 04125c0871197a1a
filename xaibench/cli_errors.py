"""Command-line mistakes (an unknown option, a value of the wrong type, a missing argument) as
one line on stderr and exit 2, like every other user error; never click's boxed usage panel.

Used as the root command class: ``typer.Typer(cls=OneLineErrors)``. Only the root group's
``main`` runs, so this covers every subcommand.
"""

from __future__ import annotations

import sys

from typer.core import TyperGroup

try:  # Typer 0.2x vendors its own click; its exceptions are not click's
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover - older Typer on the real click
    from click import exceptions as click

# Ctrl-C during a prompt or a command: click's Abort, which the vendored click moved to typer.
Abort = getattr(click, "Abort", None) or __import__("typer").Abort

EXIT_USER = 2


def describe(error: click.ClickException) -> str:
    """``error: MESSAGE (see 'xaibench run -h')`` on one line."""
    message = " ".join(error.format_message().split()).rstrip(".")
    context = getattr(error, "ctx", None)
    hint = f" (see '{context.command_path} -h')" if isinstance(error, click.UsageError) and context else ""
    return f"error: {message}{hint}"


class OneLineErrors(TyperGroup):
    """The root group: runs in non-standalone mode so usage errors come back to be printed as
    one line; exit codes are those the commands chose."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            if not standalone_mode:
                raise
            if isinstance(error, getattr(click, "NoArgsIsHelpError", ())) and getattr(error, "ctx", None):
                print(error.ctx.get_help())  # `xaibench` or `xaibench cache` alone: the help, as before
                sys.exit(EXIT_USER)
            print(describe(error), file=sys.stderr)
            sys.exit(error.exit_code if error.exit_code != 1 else EXIT_USER)
        except Abort:
            if not standalone_mode:
                raise
            print("aborted", file=sys.stderr)
            sys.exit(1)
        if not standalone_mode:
            return code
        # A command that returns normally gives None; `typer.Exit(n)` comes back as n.
        sys.exit(code if isinstance(code, int) else 0)
