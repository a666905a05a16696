"""Files of a synthetic run: one per table, written by a background thread while the next chunk is generated.

Parquet: snappy, typed dates, row groups of ROW_GROUP_ROWS rows (the last one shorter). CSV: ';' separated,
header row, DD/MM/YYYY dates, UTF-8 or Latin-1. Tables arrive in chunk order and each file is written by one
thread in that order, so the bytes depend only on the seed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 1_000_000
# Chunks queued ahead of the writer: bounds memory while generation and writing overlap.
QUEUE_DEPTH = 2


class TableSink(Protocol):
    def write(self, table: pa.Table) -> None: ...

    def close(self) -> None: ...


class ParquetSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= ROW_GROUP_ROWS:
            merged = pa.concat_tables(self._pending)
            self._write_group(merged.slice(0, ROW_GROUP_ROWS))
            rest = merged.slice(ROW_GROUP_ROWS)
            self._pending, self._pending_rows = [rest], rest.num_rows

    def _write_group(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="snappy")
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def close(self) -> None:
        if self._pending_rows or self._writer is None:
            self._write_group(pa.concat_tables(self._pending))
        assert self._writer is not None
        self._writer.close()


class CsvSink:
    def __init__(self, path: Path, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        self._file = path.open("wb")
        self._header = True

    def write(self, table: pa.Table) -> None:
        buffer = pa.BufferOutputStream()
        options = pacsv.WriteOptions(include_header=self._header, delimiter=";", quoting_style="none")
        pacsv.write_csv(table, buffer, write_options=options)
        data = buffer.getvalue().to_pybytes()
        if self.encoding != "utf-8":
            data = data.decode("utf-8").encode(self.encoding)
        self._file.write(data)
        self._header = False

    def close(self) -> None:
        self._file.close()


Job = tuple[str, Callable[[], pa.Table]]


class BackgroundWriter:
    """Runs table conversions and writes on one thread, in submission order; re-raises its errors."""

    def __init__(self, sinks: dict[str, TableSink]) -> None:
        self.sinks = sinks
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=QUEUE_DEPTH * (len(sinks) + 1))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="presa-synth-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is not None:
                continue
            name, build = job
            try:
                self.sinks[name].write(build())
            except BaseException as exc:  # handed back to the caller in submit/close
                self._error = exc

    def submit(self, name: str, build: Callable[[], pa.Table]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((name, build))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        for sink in self.sinks.values():
            sink.close()
