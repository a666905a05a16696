"""The six regional flows of one chunk of residents, as RawTables in the column order of flows.yaml.

Chronic records come from each (resident, pathology) pair: refills of its therapy, its controls and tests, its
admissions, ER visits and exemption. Everyone, chronic or not, also uses services occasionally (acute.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from presa.synth.morbidity import Conditions, frailty_rate_ratio
from presa.synth.population import Residents, Window
from presa.synth.reference import PROVIDERS_PER_ATS, Reference
from presa.synth.sampling import (
    DAYS_PER_YEAR,
    BoolArray,
    FloatArray,
    IntArray,
    beta_around,
    choose,
    choose_within_groups,
    expand_groups,
    poisson_events,
    regular_series,
)
from presa.synth.tables import NO_CODE, NO_DATE, Column, RawTable, concat, sort_by_resident

# Packs handed out at one dispensing (1, 2 or 3): chronic patients often collect two months at once.
PACKS_PER_DISPENSING = (0.80, 0.18, 0.02)
# A refill that never happens: the patient skipped a month.
SKIPPED_REFILL = 0.04
# Chronic patients get tested on most, not all, of their pathology's tests at each draw.
TEST_DONE = 0.9
# Outpatient services bought outside the resident's own ATS.
OTHER_ATS_PROVIDER = 0.08
# Urgent ordinary admissions that came through the emergency room.
URGENT_VIA_ER = 0.85
# Deaths that happen in hospital (their last admission ends with discharge mode 1).
IN_HOSPITAL_DEATH = 0.45
# Mean length of an ordinary stay, days.
MEAN_STAY = 7.5
# Exemptions still open at the reference date with a renewal date already set.
EXEMPTION_WITH_EXPIRY = 0.2
SECONDARY_DX = ("dx_2", "dx_3", "dx_4", "dx_5", "dx_6")

# SDO and EMUR codes (assumed from the national specifications; SOURCES.md)
REGIME_ORDINARY, REGIME_DAY = "1", "2"
ADMISSION_PLANNED, ADMISSION_URGENT, ADMISSION_PRE_ADMITTED = "1", "2", "4"
DISCHARGE_DEAD, DISCHARGE_HOME = "1", "2"
OTHER_DISCHARGE_MODES = (("3", 0.04), ("4", 0.04), ("5", 0.02), ("6", 0.03), ("8", 0.04))


@dataclass(frozen=True)
class Flows:
    residents: RawTable
    prescriptions: RawTable
    outpatient: RawTable
    discharges: RawTable
    er_visits: RawTable
    exemptions: RawTable

    def tables(self) -> tuple[RawTable, ...]:
        return (self.residents, self.prescriptions, self.outpatient, self.discharges, self.er_visits, self.exemptions)


def digit(ref: Reference, value: str) -> int:
    return ref.vocab.enum_digits.index(value)


def service_use(rng: np.random.Generator, ref: Reference, residents: Residents, chronic: BoolArray) -> FloatArray:
    """How much each resident uses services: 0 for non-users (never the chronic), skewed otherwise."""
    n = residents.count
    non_user = ~chronic & (rng.random(n) < ref.acute.non_user_share[residents.band])
    use = rng.gamma(2.0, 0.5, n) * np.exp(0.3 * residents.frailty - 0.045)
    return np.where(non_user, 0.0, use)


def uniform_days(rng: np.random.Generator, start: IntArray, end: IntArray) -> IntArray:
    return (start + rng.random(len(start)) * (end.astype(np.int64) - start + 1)).astype(np.int32)


# --- prescriptions -----------------------------------------------------------------------------------------------


def _prescription_part(
    rng: np.random.Generator,
    ref: Reference,
    person: IntArray,
    day: IntArray,
    atc: IntArray,
    packs: IntArray,
    ddd: FloatArray,
) -> RawTable:
    aic = ref.aic_of_atc[atc, rng.integers(0, ref.aic_of_atc.shape[1], len(atc))]
    return RawTable(
        "prescriptions",
        person,
        {
            "resident_id": Column("id", person),
            "dispensing_date": Column("date", day),
            "atc": Column("code", atc, "atc"),
            "aic": Column("code", aic.astype(np.int32), "aic"),
            "packs": Column("int", packs),
            "ddd": Column("decimal", np.round(packs * ddd, 2)),
        },
    )


def chronic_therapies(rng: np.random.Generator, ref: Reference, cond: Conditions) -> RawTable:
    """Refills of each treated pathology's drugs, about every pack's worth of days divided by adherence."""
    table = ref.pathologies
    pairs = np.flatnonzero(cond.treated).astype(np.int32)
    pathology = cond.pathology[pairs]
    primary = choose_within_groups(rng, pathology, table.drugs.ptr, table.drug_weight)
    row, item = expand_groups(pathology, table.drugs.ptr)
    primary_weight = table.drug_weight[primary[row]]
    spread = table.extra_drugs[pathology[row]] * table.drug_weight[item] / np.maximum(1.0 - primary_weight, 1e-6)
    extra = np.where(table.drug_addon[item] >= 0, table.drug_addon[item], spread)
    taken = (item == primary[row]) | (rng.random(len(item)) < extra)
    row, item = row[taken], item[taken]
    therapy_pair = pairs[row]
    adherence = np.clip(beta_around(rng, table.adherence[cond.pathology[therapy_pair]], 8.0), 0.25, 1.0)
    packs = (choose(rng, PACKS_PER_DISPENSING, len(item)) + 1).astype(np.int32)
    gap = np.clip(table.drug_ddd[item] * packs / adherence, 7.0, 200.0)
    owner, day = regular_series(rng, cond.start[therapy_pair], cond.end[therapy_pair], gap, 0.12)
    kept = rng.random(len(owner)) >= SKIPPED_REFILL
    owner, day = owner[kept], day[kept]
    return _prescription_part(
        rng,
        ref,
        cond.person[therapy_pair[owner]],
        day,
        table.drug_atc[item[owner]],
        packs[owner],
        table.drug_ddd[item[owner]],
    )


def acute_prescriptions(rng: np.random.Generator, ref: Reference, residents: Residents, use: FloatArray) -> RawTable:
    acute = ref.acute
    person, day = poisson_events(
        rng, residents.start, residents.end, acute.prescriptions_per_year[residents.band] * use
    )
    drug = choose(rng, acute.drug_weight, len(person))
    packs = (1 + (rng.random(len(person)) < 0.15)).astype(np.int32)
    return _prescription_part(rng, ref, person, day, acute.drug_atc[drug], packs, acute.drug_ddd[drug])


def one_off_chronic_class_prescriptions(
    rng: np.random.Generator, ref: Reference, residents: Residents, chronic: BoolArray, use: FloatArray
) -> RawTable:
    """A single ACE inhibitor or inhaler dispensed to a non-chronic adult and never renewed."""
    acute = ref.acute
    eligible = ~chronic & (residents.age >= 18) & (use > 0)
    person = np.flatnonzero(eligible & (rng.random(residents.count) < acute.one_off_share)).astype(np.int32)
    day = uniform_days(rng, residents.start[person], residents.end[person])
    drug = choose(rng, acute.one_off_weight, len(person))
    packs = np.ones(len(person), dtype=np.int32)
    return _prescription_part(rng, ref, person, day, acute.one_off_atc[drug], packs, acute.one_off_ddd[drug])


# --- outpatient ----------------------------------------------------------------------------------------------------


def _outpatient_part(
    rng: np.random.Generator,
    residents: Residents,
    person: IntArray,
    day: IntArray,
    code: IntArray,
    discipline: IntArray,
) -> RawTable:
    ats = residents.ats[person].astype(np.int32)
    elsewhere = rng.random(len(person)) < OTHER_ATS_PROVIDER
    ats = np.where(elsewhere, rng.integers(0, 8, len(person)), ats)
    provider = (ats * PROVIDERS_PER_ATS + rng.integers(0, PROVIDERS_PER_ATS, len(person))).astype(np.int32)
    return RawTable(
        "outpatient",
        person,
        {
            "resident_id": Column("id", person),
            "service_date": Column("date", day),
            "service_code": Column("code", code.astype(np.int32), "service"),
            "discipline": Column("code", discipline.astype(np.int32), "discipline"),
            "provider_id": Column("code", provider, "provider"),
        },
    )


def _blood_tests(
    rng: np.random.Generator,
    ref: Reference,
    residents: Residents,
    person: IntArray,
    day: IntArray,
    tests: tuple[IntArray, IntArray],
) -> RawTable:
    """One venous draw (91.49.2) plus its tests, all on the draw's day. `tests` = (draw index, test code)."""
    draw, code = tests
    lab = ref.acute.lab_discipline
    persons = np.concatenate([person, person[draw]]).astype(np.int32)
    days = np.concatenate([day, day[draw]]).astype(np.int32)
    codes = np.concatenate([np.full(len(person), ref.acute.blood_draw_code, dtype=np.int32), code]).astype(np.int32)
    return _outpatient_part(rng, residents, persons, days, codes, np.full(len(persons), lab, dtype=np.int32))


def chronic_controls(
    rng: np.random.Generator, ref: Reference, residents: Residents, cond: Conditions
) -> list[RawTable]:
    """Specialist controls, instrumental exams and blood tests that each followed pathology calls for."""
    table = ref.pathologies
    followed = np.flatnonzero(cond.followed).astype(np.int32)
    row, item = expand_groups(cond.pathology[followed], table.visits.ptr)
    pair = followed[row]
    rate = table.visit_per_year[item] * cond.engagement[pair]
    owner, day = poisson_events(rng, cond.start[pair], cond.end[pair], rate)
    visits = _outpatient_part(
        rng,
        residents,
        cond.person[pair[owner]],
        day,
        table.visit_code[item[owner]],
        table.visit_discipline[item[owner]],
    )
    rate = table.draws_per_year[cond.pathology[followed]] * cond.engagement[followed]
    owner, day = poisson_events(rng, cond.start[followed], cond.end[followed], rate)
    draw_pair = followed[owner]
    draw, test = expand_groups(cond.pathology[draw_pair], table.lab_tests.ptr)
    done = rng.random(len(draw)) < TEST_DONE
    labs = _blood_tests(rng, ref, residents, cond.person[draw_pair], day, (draw[done], table.lab_code[test[done]]))
    return [visits, labs]


def programme_sessions(
    rng: np.random.Generator, ref: Reference, residents: Residents, cond: Conditions
) -> list[RawTable]:
    """Dialysis sessions all year, chemotherapy cycles, radiotherapy courses: the outpatient-identified pathologies."""
    parts: list[RawTable] = []
    for programme, pairs in zip(ref.pathologies.programmes, cond.programme_pairs, strict=True):
        start, end = cond.start[pairs], cond.end[pairs]
        if programme.course_days:
            room = np.maximum(end - start - programme.course_days, 0)
            start = (start + rng.random(len(pairs)) * room).astype(np.int32)
            end = np.minimum(start + programme.course_days, end).astype(np.int32)
        modality = choose(rng, programme.weights, len(pairs))
        gap = np.full(len(pairs), DAYS_PER_YEAR / programme.per_year)
        owner, day = regular_series(rng, start, end, gap, 0.15)
        chosen = modality[owner]
        parts.append(
            _outpatient_part(
                rng, residents, cond.person[pairs[owner]], day, programme.codes[chosen], programme.disciplines[chosen]
            )
        )
    return parts


def occasional_outpatient(
    rng: np.random.Generator, ref: Reference, residents: Residents, use: FloatArray
) -> list[RawTable]:
    acute = ref.acute
    person, day = poisson_events(rng, residents.start, residents.end, acute.visits_per_year[residents.band] * use)
    kind = choose(rng, acute.visit_weight, len(person))
    visits = _outpatient_part(rng, residents, person, day, acute.visit_code[kind], acute.visit_discipline[kind])
    person, day = poisson_events(rng, residents.start, residents.end, acute.draws_per_year[residents.band] * use)
    done = rng.random((len(person), len(acute.test_code))) < acute.test_probability
    draw, test = np.nonzero(done)
    labs = _blood_tests(rng, ref, residents, person, day, (draw.astype(np.int32), acute.test_code[test]))
    return [visits, labs]


# --- discharges and ER visits ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admissions:
    person: IntArray
    own_pair: IntArray  # -1 for acute causes
    admitted: IntArray
    discharged: IntArray
    dx_main: IntArray
    procedure: IntArray
    drg: IntArray
    day_hospital: BoolArray
    urgent: BoolArray
    died: BoolArray


def _admissions(
    rng: np.random.Generator,
    residents: Residents,
    person: IntArray,
    own_pair: IntArray,
    admitted: IntArray,
    fields: tuple[IntArray, IntArray, IntArray, FloatArray, FloatArray],
) -> Admissions:
    dx, procedure, drg, day_share, urgent_share = fields
    n = len(person)
    day_hospital = rng.random(n) < day_share
    stay = np.where(day_hospital, 0, rng.geometric(1.0 / MEAN_STAY, n))
    discharged = np.minimum(admitted + stay, residents.end[person]).astype(np.int32)
    return Admissions(
        person=person.astype(np.int32),
        own_pair=own_pair.astype(np.int32),
        admitted=admitted.astype(np.int32),
        discharged=discharged,
        dx_main=dx.astype(np.int32),
        procedure=procedure.astype(np.int32),
        drg=drg.astype(np.int32),
        day_hospital=day_hospital,
        urgent=~day_hospital & (rng.random(n) < urgent_share),
        died=np.zeros(n, dtype=np.bool_),
    )


def chronic_admissions(rng: np.random.Generator, ref: Reference, residents: Residents, cond: Conditions) -> Admissions:
    table = ref.pathologies
    pair = np.repeat(np.arange(cond.count, dtype=np.int32), cond.admissions)
    pathology = cond.pathology[pair]
    admitted = uniform_days(rng, cond.start[pair], cond.end[pair])
    dx = table.main_dx_code[choose_within_groups(rng, pathology, table.main_dx.ptr, np.ones(len(table.main_dx_code)))]
    fields = (
        dx,
        table.procedure[pathology],
        table.drg[pathology],
        table.day_hospital[pathology],
        table.urgent[pathology],
    )
    return _admissions(rng, residents, cond.person[pair], pair, admitted, fields)


def acute_admissions(rng: np.random.Generator, ref: Reference, residents: Residents, use: FloatArray) -> Admissions:
    acute = ref.acute
    rate = acute.admissions_per_year[residents.band] * frailty_rate_ratio(residents.frailty) * (use > 0)
    person, admitted = poisson_events(rng, residents.start, residents.end, rate)
    cause = choose(rng, acute.cause_weight, len(person))
    fields = (
        acute.cause_dx[cause],
        acute.cause_procedure[cause],
        acute.cause_drg[cause],
        acute.cause_day_hospital[cause],
        acute.cause_urgent[cause],
    )
    return _admissions(rng, residents, person, np.full(len(person), -1), admitted, fields)


def deliveries(rng: np.random.Generator, ref: Reference, residents: Residents) -> Admissions:
    acute = ref.acute
    rate = acute.delivery_per_year[residents.band] * (residents.sex == 1)
    person, admitted = poisson_events(rng, residents.start, residents.end, rate)
    n = len(person)
    fields = (
        np.full(n, acute.delivery_dx),
        np.full(n, acute.delivery_procedure),
        np.full(n, acute.delivery_drg),
        np.zeros(n),
        np.full(n, 0.6),
    )
    return _admissions(rng, residents, person, np.full(n, -1), admitted, fields)


def deaths_in_hospital(rng: np.random.Generator, ref: Reference, residents: Residents, cond: Conditions) -> Admissions:
    """The last admission of residents who die in hospital: it ends on the day of death, discharge mode 1."""
    person = np.flatnonzero((residents.death >= 0) & (rng.random(residents.count) < IN_HOSPITAL_DEATH)).astype(np.int32)
    n = len(person)
    table, acute = ref.pathologies, ref.acute
    has_pair = cond.person_ptr[person + 1] > cond.person_ptr[person]
    first_pair = np.where(has_pair, cond.person_ptr[person], 0)
    pathology = cond.pathology[first_pair] if cond.count else np.zeros(n, dtype=np.int32)
    has_pair &= table.main_dx.sizes()[pathology] > 0  # rare diseases carry no ICD-9-CM code of their own
    pair = np.where(has_pair, first_pair, -1).astype(np.int32)
    chronic_dx = table.main_dx_code[np.minimum(table.main_dx.ptr[pathology], len(table.main_dx_code) - 1)]
    acute_cause = choose(rng, acute.cause_weight, n)
    dx = np.where(has_pair, chronic_dx, acute.cause_dx[acute_cause])
    drg = np.where(has_pair, table.drg[pathology], acute.cause_drg[acute_cause])
    death = residents.death[person]
    stay = rng.geometric(1.0 / MEAN_STAY, n)
    admitted = np.maximum(death - stay, residents.start[person])
    return Admissions(
        person=person,
        own_pair=pair,
        admitted=admitted.astype(np.int32),
        discharged=death.astype(np.int32),
        dx_main=dx.astype(np.int32),
        procedure=np.full(n, -1, dtype=np.int32),
        drg=drg.astype(np.int32),
        day_hospital=np.zeros(n, dtype=np.bool_),
        urgent=np.ones(n, dtype=np.bool_),
        died=np.ones(n, dtype=np.bool_),
    )


def _merge(parts: list[Admissions]) -> Admissions:
    return Admissions(*(np.concatenate([getattr(p, f) for p in parts]) for f in Admissions.__dataclass_fields__))


def secondary_diagnoses(ref: Reference, cond: Conditions, adm: Admissions) -> list[IntArray]:
    """The resident's other chronic pathologies, coded as secondary diagnoses (up to five)."""
    first = cond.person_ptr[adm.person]
    count = cond.person_ptr[adm.person + 1] - first
    own = np.where(adm.own_pair >= 0, adm.own_pair - first, np.iinfo(np.int32).max)
    columns: list[IntArray] = []
    for j in range(len(SECONDARY_DX)):  # five diagnosis positions
        k = np.where(j < own, j, j + 1)
        valid = k < count
        pair = np.where(valid, first + k, 0)
        code = ref.pathologies.secondary_dx[cond.pathology[pair]] if cond.count else np.zeros(len(pair), dtype=np.int32)
        columns.append(np.where(valid, code, NO_CODE).astype(np.int32))
    return columns


def discharge_table(rng: np.random.Generator, ref: Reference, cond: Conditions, adm: Admissions) -> RawTable:
    n = len(adm.person)
    planned = np.where(rng.random(n) < 0.5, digit(ref, ADMISSION_PLANNED), digit(ref, ADMISSION_PRE_ADMITTED))
    admission_type = np.where(adm.urgent, digit(ref, ADMISSION_URGENT), planned)
    other = np.array([digit(ref, m) for m, _ in OTHER_DISCHARGE_MODES], dtype=np.int32)
    other_p = np.array([p for _, p in OTHER_DISCHARGE_MODES])
    mode_draw = choose(rng, np.concatenate([[1.0 - other_p.sum()], other_p]), n)
    mode = np.where(mode_draw == 0, digit(ref, DISCHARGE_HOME), other[np.maximum(mode_draw - 1, 0)])
    mode = np.where(adm.died, digit(ref, DISCHARGE_DEAD), mode)
    regime = np.where(adm.day_hospital, digit(ref, REGIME_DAY), digit(ref, REGIME_ORDINARY))
    columns = {
        "resident_id": Column("id", adm.person),
        "admission_date": Column("date", adm.admitted),
        "discharge_date": Column("date", adm.discharged),
        "dx_main": Column("code", adm.dx_main, "icd9"),
    }
    for name, values in zip(SECONDARY_DX, secondary_diagnoses(ref, cond, adm), strict=True):
        columns[name] = Column("code", values, "icd9")
    columns |= {
        "procedure_main": Column("code", adm.procedure, "procedure"),
        "drg": Column("code", adm.drg, "drg"),
        "regime": Column("code", regime.astype(np.int32), "enum_digits"),
        "admission_type": Column("code", admission_type.astype(np.int32), "enum_digits"),
        "discharge_mode": Column("code", mode.astype(np.int32), "enum_digits"),
    }
    return RawTable("discharges", adm.person, columns)


def _er_part(person: IntArray, day: IntArray, triage: IntArray, outcome: IntArray) -> RawTable:
    return RawTable(
        "er_visits",
        person.astype(np.int32),
        {
            "resident_id": Column("id", person.astype(np.int32)),
            "visit_date": Column("date", day.astype(np.int32)),
            "triage": Column("code", triage.astype(np.int32), "enum_digits"),
            "outcome": Column("code", outcome.astype(np.int32), "enum_digits"),
        },
    )


def er_visits(
    rng: np.random.Generator, ref: Reference, residents: Residents, cond: Conditions, use: FloatArray, adm: Admissions
) -> RawTable:
    acute = ref.acute
    person, day = poisson_events(rng, residents.start, residents.end, acute.er_per_year[residents.band] * use)
    rate = ref.pathologies.er_per_year[cond.pathology] * frailty_rate_ratio(residents.frailty[cond.person])
    pair, pair_day = poisson_events(rng, cond.start, cond.end, rate)
    person = np.concatenate([person, cond.person[pair]])
    day = np.concatenate([day, pair_day])
    triage = acute.triage[choose(rng, acute.triage_weight, len(person))]
    outcome = acute.outcome[choose(rng, acute.outcome_weight, len(person))]
    walk_in = _er_part(person, day, triage, outcome)
    via_er = np.flatnonzero(adm.urgent & (rng.random(len(adm.person)) < URGENT_VIA_ER))
    urgent_triage = np.where(rng.random(len(via_er)) < 0.4, digit(ref, "2"), digit(ref, "3"))
    admitted = _er_part(
        adm.person[via_er], adm.admitted[via_er], urgent_triage, np.full(len(via_er), acute.admitted_outcome)
    )
    return concat([walk_in, admitted])


# --- exemptions and residents ------------------------------------------------------------------------------------


def exemption_table(
    rng: np.random.Generator, ref: Reference, residents: Residents, cond: Conditions, window: Window
) -> RawTable:
    table = ref.pathologies
    pair = np.flatnonzero(cond.exempt).astype(np.int32)
    person = cond.person[pair]
    code = table.exemption_code[
        choose_within_groups(rng, cond.pathology[pair], table.exemptions.ptr, np.ones(len(table.exemption_code)))
    ]
    start = np.maximum(
        cond.onset[pair] + (rng.random(len(pair)) * 180).astype(np.int32), residents.registration[person]
    )
    start = np.minimum(start, residents.end[person]).astype(np.int32)
    renewal = window.last + (365 + rng.random(len(pair)) * 4 * 365).astype(np.int32)
    end = np.where(rng.random(len(pair)) < EXEMPTION_WITH_EXPIRY, renewal, NO_DATE)
    end = np.where(residents.death[person] >= 0, residents.death[person], end).astype(np.int32)
    return RawTable(
        "exemptions",
        person,
        {
            "resident_id": Column("id", person),
            "exemption_code": Column("code", code.astype(np.int32), "exemption"),
            "start_date": Column("date", start),
            "end_date": Column("date", end),
        },
    )


def resident_table(residents: Residents) -> RawTable:
    person = np.arange(residents.count, dtype=np.int32)
    return RawTable(
        "residents",
        person,
        {
            "resident_id": Column("id", person),
            "birth_date": Column("date", residents.birth),
            "sex": Column("code", residents.sex.astype(np.int32), "sex"),
            "municipality": Column("code", residents.municipality.astype(np.int32), "municipality"),
            "ats": Column("code", residents.ats.astype(np.int32), "ats"),
            "gp_id": Column("code", residents.gp.astype(np.int32), tuple(residents.gp_ids)),
            "registration_date": Column("date", residents.registration),
            "death_date": Column("date", np.where(residents.death >= 0, residents.death, NO_DATE).astype(np.int32)),
        },
    )


def generate_flows(
    rng: np.random.Generator, ref: Reference, residents: Residents, cond: Conditions, window: Window
) -> Flows:
    chronic = np.zeros(residents.count, dtype=np.bool_)
    chronic[cond.person] = True
    use = service_use(rng, ref, residents, chronic)
    prescriptions = concat(
        [
            chronic_therapies(rng, ref, cond),
            acute_prescriptions(rng, ref, residents, use),
            one_off_chronic_class_prescriptions(rng, ref, residents, chronic, use),
        ]
    )
    outpatient = concat(
        chronic_controls(rng, ref, residents, cond)
        + programme_sessions(rng, ref, residents, cond)
        + occasional_outpatient(rng, ref, residents, use)
    )
    adm = _merge(
        [
            chronic_admissions(rng, ref, residents, cond),
            acute_admissions(rng, ref, residents, use),
            deliveries(rng, ref, residents),
            deaths_in_hospital(rng, ref, residents, cond),
        ]
    )
    return Flows(
        residents=resident_table(residents),
        prescriptions=sort_by_resident(prescriptions),
        outpatient=sort_by_resident(outpatient),
        discharges=sort_by_resident(discharge_table(rng, ref, cond, adm)),
        er_visits=sort_by_resident(er_visits(rng, ref, residents, cond, use, adm)),
        exemptions=sort_by_resident(exemption_table(rng, ref, residents, cond, window)),
    )
