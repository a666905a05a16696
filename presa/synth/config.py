"""What a synthetic-population run is asked for, and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

OutputFormat = Literal["parquet", "csv"]
TextEncoding = Literal["utf-8", "latin-1"]


@dataclass(frozen=True)
class SynthConfig:
    residents: int
    seed: int = 42
    reference_date: date = date(2025, 12, 31)
    years: int = 2
    malformed_rate: float = 0.001
    format: OutputFormat = "parquet"
    encoding: TextEncoding = "utf-8"

    def __post_init__(self) -> None:
        if self.residents < 1:
            raise ValueError(f"residents must be at least 1, got {self.residents}")
        if not 1 <= self.years <= 10:
            raise ValueError(f"years must be between 1 and 10, got {self.years}")
        if not 0.0 <= self.malformed_rate <= 0.2:
            raise ValueError(f"malformed_rate must be between 0 and 0.2, got {self.malformed_rate}")
        if self.format not in ("parquet", "csv"):
            raise ValueError(f"format must be 'parquet' or 'csv', got {self.format!r}")
        if self.encoding not in ("utf-8", "latin-1"):
            raise ValueError(f"encoding must be 'utf-8' or 'latin-1', got {self.encoding!r}")


@dataclass(frozen=True)
class SynthReport:
    out_dir: Path
    rows: dict[str, int]
    seconds: float
