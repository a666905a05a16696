"""Run a step in a child process and measure its wall time and the peak memory of its whole process tree."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import psutil

SAMPLE_SECONDS = 0.02
TREE_EVERY = 10


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_bytes: int
    result: Any

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / 1e9


def tree_rss(process: psutil.Process, tree: list[psutil.Process] | None = None) -> int:
    """Resident memory of a process and all its descendants (``tree``: the descendants, when already listed)."""
    total = 0
    for p in (process, *(process.children(recursive=True) if tree is None else tree)):
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def measure(code: str) -> Measurement:
    """Run Python ``code`` in a fresh interpreter; it may print one JSON line as its last output line."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    watched = psutil.Process(child.pid)
    peak, tree, samples = 0, [], 0
    while child.poll() is None:
        try:
            # Listing the descendants reads every process of the machine (1 ms of CPU, most of the sampler's cost
            # on the 2 cores being measured): done every tenth sample, the memory of the known ones every sample.
            if samples % TREE_EVERY == 0:
                tree = watched.children(recursive=True)
            peak = max(peak, tree_rss(watched, tree))
        except psutil.NoSuchProcess:
            break
        samples += 1
        time.sleep(SAMPLE_SECONDS)
    output, _ = child.communicate()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"step failed with exit code {child.returncode}: {code[:200]}")
    lines = [line for line in output.splitlines() if line.strip()]
    return Measurement(seconds, peak, json.loads(lines[-1]) if lines else None)
