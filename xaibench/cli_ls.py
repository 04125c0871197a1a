"""`xaibench ls`: the registered plugins with their parameters, defaults, direction and docs."""

from __future__ import annotations

import typer

from xaibench.cli import app, out, user_errors
from xaibench.errors import UserError


@app.command("ls")
@user_errors
def ls(
    kind: str | None = typer.Argument(None, help="model, dataset, method or metric (default: all)."),
):
    """List registered plugins with their parameters, defaults and a one-line description."""
    import typing

    from rich.markup import escape
    from rich.table import Table

    from xaibench import registry
    from xaibench.api import KINDS

    if kind is not None and kind not in KINDS:
        plural = kind.rstrip("s")
        if plural in KINDS:
            kind = plural
        else:
            raise UserError(f"unknown plugin kind {kind!r}{registry.suggest(kind, KINDS)}; kinds: {', '.join(KINDS)}")
    for k in [kind] if kind else KINDS:
        table = Table(title=f"{k}s", title_justify="left", header_style="bold", show_lines=False)
        table.add_column("name", style="bold")
        table.add_column("parameters (default)")
        table.add_column("description")
        for name in registry.names(k):
            cls = registry.get(k, name)
            hints = typing.get_type_hints(cls)
            params = ", ".join(
                f"{f.name}: {registry.type_name(hints[f.name])} = {registry.default_of(f)!r}"
                for f in registry.parameters(cls)
            )
            description = registry.summary(cls)
            if k == "metric":
                direction = cls.higher_is_better
                if isinstance(direction, dict):
                    parts = [f"{k}: {'higher' if v else 'lower'} is better" for k, v in direction.items()]
                    description += " [" + "; ".join(parts) + "]"
                else:
                    description += f" [{'higher' if direction else 'lower'} is better]"
            # Plain text, not rich markup: "[lower is better]" and "list[float]" must show as written.
            table.add_row(escape(name), escape(params or "–"), escape(description))
        out.print(table)
