"""Benchmark: a batch's merged invitation letters PDF, peak memory as the batch grows.

For each batch size, in a fresh process each (``bench/measure.py``: wall time, peak RSS of the process tree):

- **streamed**: ``presa.care.documents.write_invitation_letters`` into a file, the letters generated one by one as
  they would come from the store (``letter_entries`` reads them a thousand rows at a time): drawn
  ``LETTERS_PER_PART`` at a time and joined into the file as it goes;
- **one document** (peer, ``--peer``): every letter as one reportlab document built in memory and returned as
  bytes, as the merged PDF was built before.

Usage: ``python -m bench.letters [--sizes 1000,10000] [--peer]``. It prints letters/s, peak memory and the size of
the PDF; "flat" means the streamed peak does not grow with the batch.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.measure import Measurement, measure

console = Console()

LETTERS = """
import json, os, time
from datetime import date
from presa.care.documents import GestoreContact, InvitationLetter
GESTORI = (
    GestoreContact("Cooperativa Medici Milano Centro", "gp_cooperative", "Via Roma 1, 20121 Milano", "02 1234567",
                   "info@coop.example.org"),
    GestoreContact("ASST Santi Paolo e Carlo", "asst", "Via di Rudinì 8, 20142 Milano", "02 81841", None),
    GestoreContact("Centro Medico Lombardo", "private_accredited", None, "02 7654321", "cml@example.org"),
)
def letters(n):
    for i in range(1, n + 1):
        yield InvitationLetter("321", "ATS della Città Metropolitana di Milano", date(2026, 3, 2),
                               f"{i}-ABCDEFGH", "F" if i % 2 else "M", "015146", 1 + i % 3, GESTORI)
"""

STREAMED = (
    LETTERS
    + """
from presa.care.documents import write_invitation_letters
started = time.perf_counter()
with open(PATH, "wb") as out:
    count = write_invitation_letters(letters(N), out, title="Lettere di invito, lotto 1")
print(json.dumps({"seconds": time.perf_counter() - started, "bytes": os.path.getsize(PATH)}))
"""
)

ONE_DOCUMENT = (
    LETTERS
    + """
from presa.care.documents import _letters_part
started = time.perf_counter()
content = _letters_part(list(letters(N)), title="Lettere di invito, lotto 1")
with open(PATH, "wb") as out:
    out.write(content)
print(json.dumps({"seconds": time.perf_counter() - started, "bytes": len(content)}))
"""
)


def run(mode: str, n: int, directory: Path) -> Measurement:
    path = directory / f"{mode}-{n}.pdf"
    code = f"N, PATH = {n}, {str(path)!r}\n" + (STREAMED if mode == "streamed" else ONE_DOCUMENT)
    result = measure(code)
    path.unlink()
    return result


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="Batch sizes, comma-separated (default 1000,10000).")
    parser.add_argument("--peer", action="store_true", help="Also build each batch as one document in memory.")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = ["streamed", "one document"] if args.peer else ["streamed"]
    console.print(
        f"commit {commit()}, {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    table = Table("letters", "mode", "wall s", "letters/s", "peak MB", "PDF MB")
    with tempfile.TemporaryDirectory(prefix="presa-letters-") as directory:
        for n in sizes:
            for mode in modes:
                m = run(mode, n, Path(directory))
                row = (
                    f"{n:,}",
                    mode,
                    f"{m.seconds:.1f}",
                    f"{n / m.result['seconds']:.0f}",
                    f"{m.peak_bytes / 1e6:.0f}",
                    f"{m.result['bytes'] / 1e6:.1f}",
                )
                console.print(" | ".join(row))
                table.add_row(*row)
    console.print(table)
    console.print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
