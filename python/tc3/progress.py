"""Progress of long work on stderr: a bar with rate and time left on a terminal, plain lines (or nothing) elsewhere.

A log file or a pipe never gets a progress bar's control characters: rich draws only when stderr is a terminal.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text


def terminal_bar(*columns: ProgressColumn, quiet: bool = False, console: Console | None = None) -> Progress:
    """A rich Progress with `columns` on `console` (default: stderr), drawn only when that is a terminal and not
    `quiet`, and cleared when it stops. What is printed to stdout meanwhile goes there untouched (it may be the
    command's output: tc3-generate's JSONL); stderr lines are shown above the bar."""
    console = console or Console(stderr=True)
    return Progress(*columns, console=console, disable=quiet or not console.is_terminal, transient=True,
                    redirect_stdout=False)


class RateColumn(ProgressColumn):
    """Items a second, in the task's unit (`12.5 titles/s`); blank until there is a rate."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s")


class Ticker:
    """Counts of long work (`update(done, total, task)`), as `prog` reports them.

    On a terminal: one bar a task with done/total, the rate in `unit`/s and the time left. Elsewhere: one line a
    call, `PROG: [task] done/total`, when `lines` (a log keeps the count; a task that starts at `done` > 0, work
    kept from an interrupted run, gets its rate from what this run does), or nothing. Use as a context manager.
    """

    def __init__(self, prog: str, unit: str, lines: bool = True, quiet: bool = False, console: Console | None = None):
        self.prog, self.lines, self.quiet = prog, lines, quiet
        self.bar = terminal_bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                RateColumn(unit), TimeRemainingColumn(), quiet=quiet, console=console)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> Ticker:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def update(self, done: int, total: int, task: str = "") -> None:
        if self.bar.disable:
            if self.lines and not self.quiet:
                print(f"{self.prog}: {f'[{task}] ' if task else ''}{done}/{total}", file=sys.stderr, flush=True)
            return
        if task not in self.tasks:
            self.tasks[task] = self.bar.add_task(f"{self.prog} {task}".strip(), total=total, completed=done)
        self.bar.update(self.tasks[task], completed=done, total=total)
