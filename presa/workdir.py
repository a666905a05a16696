"""Directories written whole or not at all: a validated store, a run, a merged run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def built_in_place_of(target: Path) -> Iterator[Path]:
    """A fresh work directory beside ``target`` that replaces ``target`` when the block ends and is deleted when it
    fails, so that nobody ever reads a half-written directory (callers refuse an existing ``target`` first, where
    they must)."""
    work = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        yield work
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
