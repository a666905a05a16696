"""What every command shares: the consoles, progress bars and the one-line error exit."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from presa.flows.load import FlowError
from presa.stratify.catalog import CatalogError
from presa.stratify.engine import EngineError

console = Console()
errors = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

# The failures a user can cause and fix; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    FlowError,
    CatalogError,
    EngineError,
    FileNotFoundError,
    FileExistsError,
    ValueError,
)


def fail_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a user error into a one-line reason on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            errors.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper


class Steps:
    """One live progress display; each phase of a command gets its own bar, driven by ``on_progress`` callbacks."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def phase(self, description: str) -> Callable[[str, int, int], None]:
        task = self._progress.add_task(description, total=None, step="")

        def advance(step: str, done: int, total: int) -> None:
            self._progress.update(task, completed=done, total=total, step=step)

        return advance


@contextmanager
def progress_steps() -> Iterator[Steps]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        yield Steps(progress)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[str, int, int], None]]:
    """A single progress bar driven by ``on_progress(step, done, total)`` callbacks."""
    with progress_steps() as steps:
        yield steps.phase(description)
