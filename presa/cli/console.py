"""What every command shares: the consoles, progress bars and the one-line error exit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from presa.stratify.catalog import CatalogError

console = Console()
errors = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

# The failures a user can cause and fix; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (CatalogError, FileNotFoundError, FileExistsError, ValueError)
# The same, of modules the CLI does not import at start (DuckDB, PyArrow behind them): (module, class).
LAZY_USER_ERRORS = (("presa.flows.load", "FlowError"), ("presa.stratify.engine", "EngineError"))


def user_errors() -> tuple[type[Exception], ...]:
    """:data:`USER_ERRORS` and those of :data:`LAZY_USER_ERRORS` whose module is loaded: an error can only have
    been raised by a module that was imported, so the check itself imports nothing."""
    loaded = tuple(getattr(sys.modules[module], name) for module, name in LAZY_USER_ERRORS if module in sys.modules)
    return (*USER_ERRORS, *loaded)


def fail_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a user error into a one-line reason on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, user_errors()):
                raise
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
