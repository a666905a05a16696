"""Standard code lists shipped with presa (sources: data/SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"

# Code lists a flows.yaml column can name in `codelist`, each a CSV with a `code` column.
CODE_LISTS: dict[str, Path] = {
    "icd9cm_diagnoses": DATA_DIR / "icd9cm_diagnoses_it.csv",
    "outpatient_catalog": DATA_DIR / "outpatient_catalog_dpcm2017.csv",
}


def code_list_path(name: str) -> Path:
    try:
        return CODE_LISTS[name]
    except KeyError:
        raise ValueError(f"unknown code list '{name}' (known: {', '.join(sorted(CODE_LISTS))})") from None
