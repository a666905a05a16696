"""Who has which chronic pathology, since when, and through which channels it shows in the flows.

Pathologies are drawn with a one-factor Gaussian copula: each resident's frailty is a standard normal shared by
all 65 pathologies, so multimorbidity clusters in the frail and rises with age while each pathology keeps its
age- and sex-specific prevalence (prevalence.csv) exactly in expectation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from presa.synth.population import Residents, Window
from presa.synth.reference import Reference
from presa.synth.sampling import DAYS_PER_YEAR, BoolArray, FloatArray, IntArray

# Loading of every pathology on the shared frailty factor. With prevalence.csv as scaled, 0.2 gives about a third
# of residents chronic and levels 1/2/3 near 1.5% / 11% / 21% (Lombardy: 1.5% / 13% / 19%; SOURCES.md).
FRAILTY_LOADING = 0.2
# Share of pathologies that begin during the period rather than before it.
INCIDENT_SHARE = 0.12
# Years a prevalent pathology has lasted before the period, on average.
YEARS_SINCE_ONSET = 8.0
# Incident cases start at least this many days before the reference date, so they have time to show.
INCIDENT_MARGIN_DAYS = 150
# Admissions and ER visits rise with frailty (rate ratio per standard deviation).
FRAILTY_USE_LOG_RR = 0.4


@dataclass(frozen=True)
class Conditions:
    """One row per (resident, pathology), ordered by resident."""

    person: IntArray
    pathology: IntArray
    person_ptr: IntArray  # resident i owns pairs person_ptr[i]:person_ptr[i+1]
    onset: IntArray
    start: IntArray  # first day the pathology can leave records
    end: IntArray
    treated: BoolArray
    exempt: BoolArray
    followed: BoolArray
    admissions: IntArray
    programme_pairs: tuple[IntArray, ...]  # per reference programme, the pairs that follow it
    engagement: FloatArray  # how closely the patient follows visits and tests

    @property
    def count(self) -> int:
        return len(self.person)


def frailty_rate_ratio(frailty: FloatArray) -> FloatArray:
    return np.exp(FRAILTY_USE_LOG_RR * frailty - FRAILTY_USE_LOG_RR**2 / 2)


def draw_pathology_matrix(rng: np.random.Generator, ref: Reference, residents: Residents) -> BoolArray:
    table = ref.pathologies
    thresholds = table.thresholds.astype(np.float32)[residents.sex, residents.band]
    noise = rng.standard_normal((residents.count, table.count), dtype=np.float32)
    noise *= np.float32(np.sqrt(1.0 - FRAILTY_LOADING**2))
    noise += (FRAILTY_LOADING * residents.frailty).astype(np.float32)[:, None]
    has: BoolArray = noise < thresholds
    for pathology, excluder in table.excluded_by:  # a handful of rules, e.g. dialysis replaces CKD
        has[:, pathology] &= ~has[:, excluder]
    return has


def draw_onsets(rng: np.random.Generator, person: IntArray, residents: Residents, window: Window) -> IntArray:
    n = len(person)
    before = window.first - 1 - (rng.exponential(YEARS_SINCE_ONSET, n) * DAYS_PER_YEAR).astype(np.int32)
    during = window.first + (rng.random(n) * max(window.last - INCIDENT_MARGIN_DAYS - window.first, 1)).astype(np.int32)
    onset = np.where(rng.random(n) < INCIDENT_SHARE, during, before)
    return np.maximum(onset, residents.birth[person]).astype(np.int32)


def draw_conditions(rng: np.random.Generator, ref: Reference, residents: Residents, window: Window) -> Conditions:
    table = ref.pathologies
    has = draw_pathology_matrix(rng, ref, residents)
    person_, pathology_ = np.nonzero(has)  # row-major: ordered by resident
    person = person_.astype(np.int32)
    pathology = pathology_.astype(np.int32)
    person_ptr = np.searchsorted(person, np.arange(residents.count + 1)).astype(np.int32)
    n = len(person)

    onset = draw_onsets(rng, person, residents, window)
    end = residents.end[person]
    start = np.minimum(np.maximum(onset, residents.start[person]), end).astype(np.int32)
    years = (end - start + 1) / DAYS_PER_YEAR

    treated = rng.random(n) < table.treated[pathology]
    exempt = rng.random(n) < table.exemption_share[pathology]
    followed = rng.random(n) < table.followed[pathology]
    rate = table.admissions_per_year[pathology] * frailty_rate_ratio(residents.frailty[person])
    admissions = rng.poisson(rate * years).astype(np.int32)

    programme_pairs: list[IntArray] = []
    in_programme = np.zeros(n, dtype=np.bool_)
    for programme in table.programmes:  # three programmes: dialysis, chemotherapy, radiotherapy
        chosen = (pathology == programme.pathology) & (rng.random(n) < programme.share)
        in_programme |= chosen
        programme_pairs.append(np.flatnonzero(chosen).astype(np.int32))

    # Every true pathology must leave at least one trace a catalog can find: an exemption where the pathology
    # has one, else therapy, else an admission that carries the diagnosis.
    silent = ~(treated | exempt | (admissions > 0) | in_programme)
    can_exempt = table.has_exemptions()[pathology]
    can_treat = table.has_drugs()[pathology]
    exempt |= silent & can_exempt
    treated |= silent & ~can_exempt & can_treat
    admissions += (silent & ~can_exempt & ~can_treat).astype(np.int32)

    engagement = rng.gamma(3.0, 1.0 / 3.0, n)
    return Conditions(
        person=person,
        pathology=pathology,
        person_ptr=person_ptr,
        onset=onset,
        start=start,
        end=end,
        treated=treated,
        exempt=exempt,
        followed=followed,
        admissions=admissions,
        programme_pairs=tuple(programme_pairs),
        engagement=engagement,
    )
