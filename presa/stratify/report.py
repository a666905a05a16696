"""What a finished run shows an analyst: the summary in the terminal, summary.json and the charts."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from presa.stratify.charts import ChartFiles, write_charts
from presa.stratify.layout import RunPaths
from presa.stratify.summary import Summary, write_summary
from presa.stratify.terminal import print_summary


def report_run(run_dir: Path, console: Console, *, charts: bool = True) -> tuple[Summary, ChartFiles | None]:
    """Write summary.json (and the charts), then print the summary tables."""
    summary = write_summary(run_dir)
    files = write_charts(summary, RunPaths(run_dir).charts) if charts else None
    print_summary(summary, console)
    if files is not None:
        console.print(f"Charts: {', '.join(p.name for p in files.pngs)} and {files.report} (open it in a browser)")
    return summary, files
