"""The ``presa`` command line: thin wrappers that parse arguments, show progress and print results."""

from __future__ import annotations

from presa.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
