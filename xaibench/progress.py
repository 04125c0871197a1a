"""Progress display for long runs: a rich bar for jobs and one for items, quiet off a terminal."""

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
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
            transient=True,
        )
        self.jobs_task = None
        self.items_task = None

    def __enter__(self) -> RichProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def update(self, event: str, info: dict) -> None:
        if event == "start":
            self.jobs_task = self.bar.add_task("jobs", total=info["jobs"])
        elif event == "pair":
            if self.items_task is not None:
                self.bar.remove_task(self.items_task)
            label = f"items · {info['label']} ({info['jobs']} jobs)"
            self.items_task = self.bar.add_task(label, total=info["items"])
        elif event == "advance":
            self.bar.advance(self.items_task, info["items"])
        elif event == "pair_done":
            self.bar.advance(self.jobs_task, info["jobs"])
