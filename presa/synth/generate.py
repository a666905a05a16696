"""generate(): a synthetic regional population with its six raw flows, the ground truth and a manifest.

Residents are generated in chunks of CHUNK_RESIDENTS with a random stream per chunk (SeedSequence(seed,
spawn_key=(chunk,))), so the output depends on the seed and the number of residents only, and memory stays flat
however large the population.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa

from presa.synth.config import SynthConfig, SynthReport
from presa.synth.morbidity import Conditions, draw_conditions
from presa.synth.noise import UNKNOWN_IDS, add_malformed_rows, coding_slips
from presa.synth.population import Residents, Window, draw_residents
from presa.synth.records import Flows, generate_flows
from presa.synth.reference import Reference, load_reference
from presa.synth.sampling import DAYS_PER_YEAR
from presa.synth.tables import EPOCH, DateText, RawTable, to_arrow, to_csv_arrow
from presa.synth.writer import BackgroundWriter, CsvSink, ParquetSink, TableSink

CHUNK_RESIDENTS = 250_000
FLOW_TABLES = ("residents", "prescriptions", "outpatient", "discharges", "er_visits", "exemptions")
# Pseudonymous ids: "LO" and ten digits, increasing with the resident so that files sorted by resident are also
# sorted by id; the gaps make the numbering look like a pseudonymisation rather than a count.
ID_PREFIX = "LO"
ID_STRIDE = 7
UNKNOWN_ID_BASE = 9_000_000_000
GHOST_ID_BASE = 8_000_000_000
# Residents generated after the last exemption renewal or before the oldest birth need no date text.
OLDEST_AGE_YEARS = 106
LATEST_RENEWAL_DAYS = 6 * 366

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class Tally:
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLOW_TABLES, 0))
    malformed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLOW_TABLES, 0))
    truth_rows: int = 0
    levels: dict[str, int] = field(default_factory=lambda: {"1": 0, "2": 0, "3": 0, "non_chronic": 0})
    deaths: int = 0


def study_window(config: SynthConfig) -> Window:
    last = (config.reference_date - EPOCH).days
    return Window(first=last - round(config.years * DAYS_PER_YEAR) + 1, last=last)


def chunk_ids(rng: np.random.Generator, offset: int, chunk: int, size: int, ghosts: int) -> pa.Array:
    """The chunk's resident ids, then ids that exist nowhere (for malformed rows), then ghost residents."""
    number = np.arange(offset, offset + size, dtype=np.int64) * ID_STRIDE + rng.integers(0, ID_STRIDE, size)
    unknown = UNKNOWN_ID_BASE + chunk * UNKNOWN_IDS + np.arange(UNKNOWN_IDS, dtype=np.int64)
    ghost = GHOST_ID_BASE + chunk * 100_000 + np.arange(ghosts, dtype=np.int64)
    digits = pa.array(np.concatenate([number + 1_000_000_000, unknown, ghost])).cast(pa.string())
    return pa.compute.binary_join_element_wise(ID_PREFIX, pa.compute.utf8_lpad(digits, 10, "0"), "")


def truth_table(ref: Reference, cond: Conditions, ids: pa.Array) -> pa.Table:
    pathology_ids = pa.array(ref.pathologies.ids, type=pa.string())
    return pa.table(
        {
            "resident_id": ids.take(pa.array(cond.person)),
            "pathology_id": pathology_ids.take(pa.array(cond.pathology)),
        }
    )


def count_levels(tally: Tally, residents: Residents, cond: Conditions) -> None:
    per_resident = np.bincount(cond.person, minlength=residents.count)
    tally.levels["1"] += int((per_resident >= 4).sum())
    tally.levels["2"] += int(((per_resident >= 2) & (per_resident <= 3)).sum())
    tally.levels["3"] += int((per_resident == 1).sum())
    tally.levels["non_chronic"] += int((per_resident == 0).sum())
    tally.deaths += int((residents.death >= 0).sum())


def ghost_count(residents_table: RawTable, size: int) -> int:
    ids = residents_table.columns["resident_id"].values
    ghosts = ids[ids >= size + UNKNOWN_IDS]
    return int(ghosts.max() - (size + UNKNOWN_IDS) + 1) if len(ghosts) else 0


def open_sinks(config: SynthConfig, out_dir: Path) -> dict[str, TableSink]:
    sinks: dict[str, TableSink] = {}
    for name in FLOW_TABLES:
        if config.format == "parquet":
            sinks[name] = ParquetSink(out_dir / f"{name}.parquet")
        else:
            sinks[name] = CsvSink(out_dir / f"{name}.csv", config.encoding)
    sinks["truth"] = ParquetSink(out_dir / "truth.parquet")
    return sinks


@dataclass(frozen=True)
class Chunk:
    residents: Residents
    conditions: Conditions
    flows: Flows
    ids: pa.Array
    malformed: dict[str, int]


def make_chunk(config: SynthConfig, ref: Reference, chunk: int, window: Window) -> Chunk:
    offset = chunk * CHUNK_RESIDENTS
    size = min(CHUNK_RESIDENTS, config.residents - offset)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(chunk,)))
    residents = draw_residents(rng, ref, size, offset, chunk, window)
    cond = draw_conditions(rng, ref, residents, window)
    flows = generate_flows(rng, ref, residents, cond, window)
    flows = replace(flows, discharges=coding_slips(rng, ref, flows.discharges))
    clean_rows = {t.name: t.rows for t in flows.tables()}
    flows = add_malformed_rows(rng, ref, flows, config.malformed_rate, size)
    ids = chunk_ids(rng, offset, chunk, size, ghost_count(flows.residents, size))
    malformed = {t.name: t.rows - clean_rows[t.name] for t in flows.tables()}
    return Chunk(residents, cond, flows, ids, malformed)


def truth_job(ref: Reference, chunk: Chunk) -> Callable[[], pa.Table]:
    cond, ids = chunk.conditions, chunk.ids
    return lambda: truth_table(ref, cond, ids)


def converter(
    config: SynthConfig, ref: Reference, table: RawTable, ids: pa.Array, dates: DateText
) -> Callable[[], pa.Table]:
    if config.format == "parquet":
        return lambda: to_arrow(ref, table, ids)
    return lambda: to_csv_arrow(ref, table, ids, dates)


def write_manifest(config: SynthConfig, out_dir: Path, tally: Tally, window: Window) -> None:
    settings = asdict(config)
    settings["reference_date"] = config.reference_date.isoformat()
    manifest = {
        "generator": "presa.synth",
        "config": settings,
        "period": {"first_day": _iso(window.first), "last_day": _iso(window.last)},
        "files": {name: f"{name}.{config.format}" for name in FLOW_TABLES} | {"truth": "truth.parquet"},
        "rows": tally.rows,
        "malformed_rows": tally.malformed,
        "truth_rows": tally.truth_rows,
        "truth_levels": tally.levels,
        "deaths": tally.deaths,
    }
    (out_dir / "synth.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _iso(day: int) -> str:
    return date.fromordinal(EPOCH.toordinal() + day).isoformat()


def generate(config: SynthConfig, out_dir: Path, *, on_progress: ProgressCallback | None = None) -> SynthReport:
    """Writes the six flows, truth.parquet and synth.json into `out_dir`; same config, same bytes."""
    started = time.perf_counter()
    ref = load_reference()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    window = study_window(config)
    dates = DateText(window.last - round(OLDEST_AGE_YEARS * DAYS_PER_YEAR), window.last + LATEST_RENEWAL_DAYS)
    chunks = math.ceil(config.residents / CHUNK_RESIDENTS)
    tally = Tally()
    writer = BackgroundWriter(open_sinks(config, out_dir))
    try:
        for index in range(chunks):
            chunk = make_chunk(config, ref, index, window)
            for table in chunk.flows.tables():
                writer.submit(table.name, converter(config, ref, table, chunk.ids, dates))
                tally.rows[table.name] += table.rows
                tally.malformed[table.name] += chunk.malformed[table.name]
            writer.submit("truth", truth_job(ref, chunk))
            tally.truth_rows += chunk.conditions.count
            count_levels(tally, chunk.residents, chunk.conditions)
            del chunk
            if on_progress is not None:
                on_progress("residents", min((index + 1) * CHUNK_RESIDENTS, config.residents), config.residents)
    finally:
        writer.close()
    write_manifest(config, out_dir, tally, window)
    if on_progress is not None:
        on_progress("written", config.residents, config.residents)
    return SynthReport(out_dir=out_dir, rows=dict(tally.rows), seconds=time.perf_counter() - started)
