"""Progress display for long runs: one rich bar over tasks, quiet off a terminal.

Tasks finish in any order on Dask, so the bar counts finished tasks and shows the last one;
fits and failures are logged as lines above it.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """Receives the runner's (event, info) callbacks. Off a terminal it shows nothing but logs."""

    def __init__(self, console: Console):
        self.console = console
        self.enabled = console.is_terminal
        self.bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
            transient=True,
        )
        self.tasks_bar = None

    def __enter__(self) -> RichProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def update(self, event: str, info: dict) -> None:
        if event == "start":
            work = info["work"]
            self.tasks_bar = self.bar.add_task(
                f"tasks ({work['fits']} fits, {work['attributions']} maps, {work['scores']} items to score)",
                total=info["tasks"],
            )
        elif event == "task" and self.tasks_bar is not None:
            task = info["task"]
            if task.kind == "fit" and info["summary"].get("models_trained"):
                self.log(f"trained: {task.label[4:]} in {info['summary'].get('seconds', 0):.1f}s")
            self.bar.update(self.tasks_bar, advance=1, description=f"{task.kind}: {task.label[:70]}")
