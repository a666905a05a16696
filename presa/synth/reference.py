"""The facts the synthetic population is drawn from, loaded once from presa/synth/data into arrays.

Files (sources in data/SOURCES.md): population_lombardy_2024.csv (5-year bands by sex), mortality.csv,
municipalities.csv (ISTAT codes, ATS, residents), prevalence.csv (per pathology, sex and age band),
profiles.yaml (how each pathology shows in the flows) and acute.yaml (occasional use by everyone).
Code lists come from presa/codes/data. Every code vocabulary used in the output is built here so that the
generator only moves integer indices around.
"""

from __future__ import annotations

import csv
import statistics
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from presa.synth.sampling import BoolArray, FloatArray, IntArray

DATA_DIR = Path(__file__).parent / "data"
CODES_DIR = Path(__file__).parent.parent / "codes" / "data"

# Prevalence, acute-use and mortality bands: lower bounds of the age bands in prevalence.csv and acute.yaml.
AGE_BAND_LOWER = np.array([0, 15, 25, 35, 45, 55, 65, 75, 85], dtype=np.int32)
ATS_CODES = ("321", "322", "323", "324", "325", "326", "327", "328")
SEXES = ("M", "F")


class Vocabulary:
    """Strings of one output column, addressed by int32 index; malformed variants can be appended."""

    def __init__(self, values: list[str] | None = None) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}
        for v in values or []:
            self.add(v)

    def add(self, value: str) -> int:
        found = self._index.get(value)
        if found is None:
            found = len(self.values)
            self.values.append(value)
            self._index[value] = found
        return found

    def index(self, value: str) -> int:
        return self._index[value]

    def indices(self, values: list[str]) -> IntArray:
        return np.array([self.add(v) for v in values], dtype=np.int32)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Csr:
    """Items grouped by owner: owner g owns items ptr[g]:ptr[g+1]."""

    ptr: IntArray

    def sizes(self) -> IntArray:
        return np.diff(self.ptr).astype(np.int32)


@dataclass(frozen=True)
class Programme:
    """A run of repeated outpatient sessions (dialysis, chemotherapy, a radiotherapy course)."""

    pathology: int
    share: float
    per_year: float
    course_days: int  # 0: the whole period, otherwise one course of that many days
    codes: IntArray
    disciplines: IntArray
    weights: FloatArray


@dataclass(frozen=True)
class PathologyTable:
    ids: tuple[str, ...]
    names: dict[str, Any]
    thresholds: FloatArray  # [sex, band, pathology]: probit of the prevalence
    excluded_by: list[tuple[int, int]]  # (pathology, the pathology that removes it)
    treated: FloatArray
    adherence: FloatArray
    extra_drugs: FloatArray
    exemption_share: FloatArray
    followed: FloatArray
    er_per_year: FloatArray
    admissions_per_year: FloatArray
    day_hospital: FloatArray
    urgent: FloatArray
    drg: IntArray
    procedure: IntArray  # -1: none
    drugs: Csr
    drug_atc: IntArray
    drug_weight: FloatArray
    drug_ddd: FloatArray
    drug_addon: FloatArray  # chance of joining another first-choice drug; -1: spread extra_drugs by weight
    exemptions: Csr
    exemption_code: IntArray
    visits: Csr
    visit_code: IntArray
    visit_discipline: IntArray
    visit_per_year: FloatArray
    draws_per_year: FloatArray
    lab_tests: Csr
    lab_code: IntArray
    main_dx: Csr
    main_dx_code: IntArray
    secondary_dx: IntArray
    programmes: tuple[Programme, ...]
    prefixes: dict[str, dict[str, list[str]]]

    @property
    def count(self) -> int:
        return len(self.ids)

    def has_drugs(self) -> BoolArray:
        return self.drugs.sizes() > 0

    def has_exemptions(self) -> BoolArray:
        return self.exemptions.sizes() > 0


@dataclass(frozen=True)
class AcuteUse:
    non_user_share: FloatArray
    prescriptions_per_year: FloatArray
    drug_atc: IntArray
    drug_weight: FloatArray
    drug_ddd: FloatArray
    one_off_share: float
    one_off_atc: IntArray
    one_off_weight: FloatArray
    one_off_ddd: FloatArray
    visits_per_year: FloatArray
    visit_code: IntArray
    visit_discipline: IntArray
    visit_weight: FloatArray
    draws_per_year: FloatArray
    test_code: IntArray
    test_probability: FloatArray
    blood_draw_code: int
    lab_discipline: int
    er_per_year: FloatArray
    triage: IntArray
    triage_weight: FloatArray
    outcome: IntArray
    outcome_weight: FloatArray
    admitted_outcome: int
    admissions_per_year: FloatArray
    cause_dx: IntArray
    cause_drg: IntArray
    cause_weight: FloatArray
    cause_procedure: IntArray
    cause_day_hospital: FloatArray
    cause_urgent: FloatArray
    delivery_per_year: FloatArray
    delivery_dx: int
    delivery_drg: int
    delivery_procedure: int


@dataclass(frozen=True)
class Vocabularies:
    atc: Vocabulary
    aic: Vocabulary
    service: Vocabulary
    discipline: Vocabulary
    icd9: Vocabulary
    drg: Vocabulary
    procedure: Vocabulary
    exemption: Vocabulary
    municipality: Vocabulary
    ats: Vocabulary
    enum_digits: Vocabulary  # '1'..'9': regime, admission type, discharge mode, triage, outcome
    sex: Vocabulary
    provider: Vocabulary


@dataclass(frozen=True)
class Reference:
    population_weight: FloatArray  # [band5 * 2 + sex]
    band5_lower: IntArray
    band5_width: IntArray
    death_probability: FloatArray  # [sex, band5] per year
    municipality_weight: FloatArray
    municipality_ats: IntArray  # index into ATS_CODES
    pathologies: PathologyTable
    acute: AcuteUse
    vocab: Vocabularies
    aic_of_atc: IntArray  # [atc vocabulary index, package] -> aic vocabulary index
    icd9_neighbour: IntArray  # icd9 vocabulary index -> a neighbouring code of the same pathology
    chronic_atc: BoolArray  # atc vocabulary index -> is within some pathology's ATC prefixes
    malformed: dict[str, IntArray]  # vocabulary name -> indices of malformed variants


def _read_csv(name: str) -> list[dict[str, str]]:
    with (DATA_DIR / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _read_yaml(name: str) -> Any:
    with (DATA_DIR / name).open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def official_icd9_codes() -> list[str]:
    """The Italian ICD-9-CM 2007 diagnosis list, without dots as the SDO flow ships it."""
    with (CODES_DIR / "icd9cm_diagnoses_it.csv").open(encoding="utf-8", newline="") as f:
        return [row["code"].replace(".", "") for row in csv.DictReader(f)]


def official_outpatient_codes() -> set[str]:
    with (CODES_DIR / "outpatient_catalog_dpcm2017.csv").open(encoding="utf-8", newline="") as f:
        return {row["code"] for row in csv.DictReader(f)}


def synthetic_aic(atc: str, package: int) -> str:
    """A stable 9-digit AIC-like package code per drug; real AIC codes are not in the reference data."""
    return f"0{zlib.crc32(f'{atc}/{package}'.encode()) % 100_000_000:08d}"


def _probit(p: float) -> float:
    if p <= 0.0:
        return -40.0
    return statistics.NormalDist().inv_cdf(min(p, 0.999))


def _population() -> tuple[FloatArray, IntArray, IntArray]:
    rows = _read_csv("population_lombardy_2024.csv")
    weight = np.array([[int(r["males"]), int(r["females"])] for r in rows], dtype=np.float64).reshape(-1)
    lower = np.array([int(r["age_min"]) for r in rows], dtype=np.int32)
    width = np.array([int(r["age_max"]) - int(r["age_min"]) + 1 for r in rows], dtype=np.int32)
    return weight / weight.sum(), lower, width


def _mortality() -> FloatArray:
    rows = _read_csv("mortality.csv")
    return np.array([[float(r["q_males"]) for r in rows], [float(r["q_females"]) for r in rows]])


def _municipalities(vocab: Vocabularies) -> tuple[FloatArray, IntArray]:
    rows = _read_csv("municipalities.csv")
    residents = np.array([int(r["residents_2021"]) for r in rows], dtype=np.float64)
    ats = np.array([ATS_CODES.index(r["ats"]) for r in rows], dtype=np.int32)
    for r in rows:
        vocab.municipality.add(r["istat_code"])
    return residents / residents.sum(), ats


def _thresholds(ids: tuple[str, ...]) -> FloatArray:
    out = np.full((2, len(AGE_BAND_LOWER), len(ids)), -40.0)
    for r in _read_csv("prevalence.csv"):
        p = ids.index(r["pathology_id"])
        s = SEXES.index(r["sex"])
        values = [float(v) for k, v in r.items() if k.startswith("p_")]
        out[s, :, p] = [_probit(v) for v in values]
    return out


def _csr(lists: list[list[Any]]) -> Csr:
    return Csr(np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int32))


def _flat(lists: list[list[Any]], column: int) -> list[Any]:
    return [item[column] for group in lists for item in group]


def _pathologies(vocab: Vocabularies) -> PathologyTable:
    spec = _read_yaml("profiles.yaml")
    defaults: dict[str, Any] = spec["defaults"]
    profiles: dict[str, dict[str, Any]] = spec["pathologies"]
    ids = tuple(profiles)

    def value(p: dict[str, Any], key: str) -> float:
        return float(p.get(key, defaults[key]))

    drugs = [p.get("drugs", []) for p in profiles.values()]
    exemptions = [p.get("exemption", {}).get("codes", []) for p in profiles.values()]
    visits = [p.get("visits", []) for p in profiles.values()]
    tests = [p.get("labs", {}).get("tests", []) for p in profiles.values()]
    dx = [p.get("admissions", {}).get("dx", []) or p["prefixes"].get("icd9", [])[:1] for p in profiles.values()]
    admissions = [p.get("admissions", {}) for p in profiles.values()]
    programmes: list[Programme] = []
    for i, p in enumerate(profiles.values()):
        for key, course_days in (("sessions", 0), ("chemo", 0), ("radiotherapy", 30)):
            if key in p:
                prog = p[key]
                programmes.append(
                    Programme(
                        pathology=i,
                        share=float(prog.get("share", 1.0)),
                        per_year=float(prog["per_year"]),
                        course_days=course_days,
                        codes=vocab.service.indices([c[0] for c in prog["codes"]]),
                        disciplines=vocab.discipline.indices([c[1] for c in prog["codes"]]),
                        weights=np.array([float(c[2]) for c in prog["codes"]]),
                    )
                )
    excluded_by = [
        (ids.index(pid), ids.index(other)) for pid, p in profiles.items() for other in p.get("excluded_by", [])
    ]
    secondary = [
        (p.get("secondary_dx") or dx[i])[0] if (p.get("secondary_dx") or dx[i]) else ""
        for i, p in enumerate(profiles.values())
    ]
    return PathologyTable(
        ids=ids,
        names={pid: p.get("notes", "") for pid, p in profiles.items()},
        thresholds=_thresholds(ids),
        excluded_by=excluded_by,
        treated=np.array([value(p, "treated") if p.get("drugs") else 0.0 for p in profiles.values()]),
        adherence=np.array([value(p, "adherence") for p in profiles.values()]),
        extra_drugs=np.array([value(p, "extra_drugs") for p in profiles.values()]),
        exemption_share=np.array([float(p.get("exemption", {}).get("share", 0.0)) for p in profiles.values()]),
        followed=np.array([value(p, "followed") for p in profiles.values()]),
        er_per_year=np.array([value(p, "er") for p in profiles.values()]),
        admissions_per_year=np.array([float(a.get("rate", 0.0)) for a in admissions]),
        day_hospital=np.array([float(a.get("day_hospital", defaults["day_hospital"])) for a in admissions]),
        urgent=np.array([float(a.get("urgent", defaults["urgent"])) for a in admissions]),
        drg=vocab.drg.indices([str(a.get("drg", "467")) for a in admissions]),
        procedure=np.array(
            [vocab.procedure.add(a["procedure"]) if a.get("procedure") else -1 for a in admissions], dtype=np.int32
        ),
        drugs=_csr(drugs),
        drug_atc=vocab.atc.indices(_flat(drugs, 0)),
        drug_weight=np.array(_flat(drugs, 1), dtype=np.float64),
        drug_ddd=np.array(_flat(drugs, 2), dtype=np.float64),
        drug_addon=np.array([float(d[3]) if len(d) > 3 else -1.0 for group in drugs for d in group]),
        exemptions=_csr(exemptions),
        exemption_code=vocab.exemption.indices([c for group in exemptions for c in group]),
        visits=_csr(visits),
        visit_code=vocab.service.indices(_flat(visits, 0)),
        visit_discipline=vocab.discipline.indices(_flat(visits, 1)),
        visit_per_year=np.array(_flat(visits, 2), dtype=np.float64),
        draws_per_year=np.array([float(p.get("labs", {}).get("draws", 0.0)) for p in profiles.values()]),
        lab_tests=_csr(tests),
        lab_code=vocab.service.indices([c for group in tests for c in group]),
        main_dx=_csr(dx),
        main_dx_code=vocab.icd9.indices([c for group in dx for c in group]),
        secondary_dx=np.array([vocab.icd9.add(c) if c else -1 for c in secondary], dtype=np.int32),
        programmes=tuple(programmes),
        prefixes={pid: p["prefixes"] for pid, p in profiles.items()},
    )


def _acute(vocab: Vocabularies) -> AcuteUse:
    a = _read_yaml("acute.yaml")
    rx, op, er, adm = a["prescriptions"], a["outpatient"], a["er_visits"], a["admissions"]
    digits = vocab.enum_digits
    return AcuteUse(
        non_user_share=np.array(a["non_user_share"], dtype=np.float64),
        prescriptions_per_year=np.array(rx["per_year"], dtype=np.float64),
        drug_atc=vocab.atc.indices([d[0] for d in rx["drugs"]]),
        drug_weight=np.array([d[1] for d in rx["drugs"]], dtype=np.float64),
        drug_ddd=np.array([d[2] for d in rx["drugs"]], dtype=np.float64),
        one_off_share=float(rx["one_off_share"]),
        one_off_atc=vocab.atc.indices([d[0] for d in rx["one_off_drugs"]]),
        one_off_weight=np.array([d[1] for d in rx["one_off_drugs"]], dtype=np.float64),
        one_off_ddd=np.array([d[2] for d in rx["one_off_drugs"]], dtype=np.float64),
        visits_per_year=np.array(op["visits_per_year"], dtype=np.float64),
        visit_code=vocab.service.indices([v[0] for v in op["visits"]]),
        visit_discipline=vocab.discipline.indices([v[1] for v in op["visits"]]),
        visit_weight=np.array([v[2] for v in op["visits"]], dtype=np.float64),
        draws_per_year=np.array(op["draws_per_year"], dtype=np.float64),
        test_code=vocab.service.indices([t[0] for t in op["tests"]]),
        test_probability=np.array([t[1] for t in op["tests"]], dtype=np.float64),
        blood_draw_code=vocab.service.add(op["blood_draw"][0]),
        lab_discipline=vocab.discipline.add(op["lab_discipline"]),
        er_per_year=np.array(er["per_year"], dtype=np.float64),
        triage=digits.indices([t[0] for t in er["triage"]]),
        triage_weight=np.array([t[1] for t in er["triage"]], dtype=np.float64),
        outcome=digits.indices([o[0] for o in er["outcome"]]),
        outcome_weight=np.array([o[1] for o in er["outcome"]], dtype=np.float64),
        admitted_outcome=digits.add(er["admitted_outcome"]),
        admissions_per_year=np.array(adm["per_year"], dtype=np.float64),
        cause_dx=vocab.icd9.indices([c[0] for c in adm["causes"]]),
        cause_drg=vocab.drg.indices([c[1] for c in adm["causes"]]),
        cause_weight=np.array([c[2] for c in adm["causes"]], dtype=np.float64),
        cause_procedure=np.array([vocab.procedure.add(c[3]) if c[3] else -1 for c in adm["causes"]], dtype=np.int32),
        cause_day_hospital=np.array([c[4] for c in adm["causes"]], dtype=np.float64),
        cause_urgent=np.array([c[5] for c in adm["causes"]], dtype=np.float64),
        delivery_per_year=np.array(adm["delivery_per_year"], dtype=np.float64),
        delivery_dx=vocab.icd9.add(adm["delivery"][0]),
        delivery_drg=vocab.drg.add(adm["delivery"][1]),
        delivery_procedure=vocab.procedure.add(adm["delivery"][2]),
    )


def _icd9_neighbours(vocab: Vocabulary, table: PathologyTable) -> IntArray:
    """Maps each diagnosis used to a neighbouring official code coders confuse it with.

    The neighbour shares the 3-character category and falls within the same pathologies' prefixes (or, for an
    acute cause, within none), so a coding slip changes the code but not who is chronic.
    """
    official = sorted(set(official_icd9_codes()))
    all_prefixes = [(pid, x) for pid, pre in table.prefixes.items() for x in pre.get("icd9", [])]

    def owners(code: str) -> frozenset[str]:
        return frozenset(pid for pid, x in all_prefixes if code.startswith(x))

    by_category: dict[str, list[str]] = {}
    for code in official:
        by_category.setdefault(code[:3], []).append(code)
    mapping = np.arange(len(vocab), dtype=np.int32)
    for i, code in enumerate(list(vocab.values)):
        siblings = [c for c in by_category.get(code[:3], []) if c != code and owners(c) == owners(code)]
        if siblings:
            later = [c for c in siblings if c > code]
            mapping[i] = vocab.add((later or siblings)[0])
    if len(mapping) < len(vocab):  # neighbours appended to the vocabulary map to themselves
        mapping = np.concatenate([mapping, np.arange(len(mapping), len(vocab), dtype=np.int32)])
    return mapping


# Values that break each column's rule in flows.yaml, as clerical slips and broken exports produce them. Some carry
# accented letters: the text encoding of a CSV export has to carry them. None begins with a chronic pathology's
# prefix, so even a loader that skipped validation would not find a pathology in them.
MALFORMED_VALUES: dict[str, tuple[str, ...]] = {
    "atc": ("J01CA4", "J1CA04", "AMOXICILLINA", "J01CA04X", "N02BÈ01"),
    "aic": ("12345678", "0A2345678", "0123456789"),
    "service": ("8952", "89,52", "ECG", "90.27.1.XXXX", "89.01.è"),
    "discipline": ("2A", "123", "X"),
    "icd9": ("7802X", "Z999", "DIAB", "4°86"),
    "drg": ("12", "12A", "9999"),
    "exemption": ("ESENTE", "0A!2", "13", "13-250", "Esenzione pàtologia"),
    "municipality": ("15146", "0151460", "MILANO", "Cantù"),
    "enum_digits": ("0", "R", "10"),
}


def _add_malformed(vocab: Vocabularies) -> dict[str, IntArray]:
    return {name: getattr(vocab, name).indices(list(values)) for name, values in MALFORMED_VALUES.items()}


def _aics(vocab: Vocabularies, per_atc: int) -> IntArray:
    return np.array(
        [[vocab.aic.add(synthetic_aic(atc, k)) for k in range(per_atc)] for atc in vocab.atc.values], dtype=np.int32
    )


# Outpatient providers (hospitals, clinics, labs) per ATS; ids are synthetic.
PROVIDERS_PER_ATS = 40


def _providers(vocab: Vocabularies) -> None:
    for code in ATS_CODES:
        for k in range(PROVIDERS_PER_ATS):
            vocab.provider.add(f"STR{code}{k:03d}")


@cache
def load_reference() -> Reference:
    vocab = Vocabularies(*(Vocabulary() for _ in range(13)))
    for code in ATS_CODES:
        vocab.ats.add(code)
    for d in "123456789":
        vocab.enum_digits.add(d)
    for s in SEXES:
        vocab.sex.add(s)
    _providers(vocab)
    population_weight, band5_lower, band5_width = _population()
    municipality_weight, municipality_ats = _municipalities(vocab)
    table = _pathologies(vocab)
    acute = _acute(vocab)
    neighbour = _icd9_neighbours(vocab.icd9, table)
    aic_of_atc = _aics(vocab, 2)
    malformed = _add_malformed(vocab)
    atc_prefixes = [x for pre in table.prefixes.values() for x in pre.get("atc", [])]
    chronic_atc = np.array([any(a.startswith(x) for x in atc_prefixes) for a in vocab.atc.values], dtype=np.bool_)
    return Reference(
        population_weight=population_weight,
        band5_lower=band5_lower,
        band5_width=band5_width,
        death_probability=_mortality(),
        municipality_weight=municipality_weight,
        municipality_ats=municipality_ats,
        pathologies=table,
        acute=acute,
        vocab=vocab,
        aic_of_atc=aic_of_atc,
        icd9_neighbour=neighbour,
        chronic_atc=chronic_atc,
        malformed=malformed,
    )
