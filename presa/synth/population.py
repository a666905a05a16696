"""Residents: age and sex, where they live, their GP, when they registered and whether they died."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from presa.synth.reference import AGE_BAND_LOWER, ATS_CODES, Reference
from presa.synth.sampling import DAYS_PER_YEAR, FloatArray, IntArray, choose

# GP list sizes: the brief asks for about 1,300-1,500 patients per GP, all within one ATS.
GP_LIST_MIN, GP_LIST_TARGET, GP_LIST_MAX = 1300, 1400, 1500
# Share of residents who moved into the region (or changed registration) during the period.
MOVED_IN_SHARE = 0.03
# Average years since registration for residents registered before the period (registrations follow moves).
YEARS_SINCE_REGISTRATION = 12.0
# How strongly frailty raises the risk of dying (hazard ratio per standard deviation).
FRAILTY_DEATH_LOG_HR = 0.6


@dataclass(frozen=True)
class Window:
    """The period the flows cover: `first` to `last` day inclusive (days since 1970-01-01)."""

    first: int
    last: int


@dataclass(frozen=True)
class Residents:
    offset: int  # global index of the first resident of the chunk
    chunk: int
    sex: IntArray  # 0 male, 1 female
    age: IntArray  # completed years at the reference date
    band: IntArray  # age band of prevalence.csv / acute.yaml
    birth: IntArray
    municipality: IntArray  # municipality vocabulary index
    ats: IntArray  # index into ATS_CODES
    gp: IntArray  # index into gp_ids
    gp_ids: list[str]
    registration: IntArray
    death: IntArray  # -1: alive at the reference date
    frailty: FloatArray
    start: IntArray  # first day their records can carry
    end: IntArray  # last day their records can carry (death or reference date)

    @property
    def count(self) -> int:
        return len(self.sex)


def age_band(age: IntArray) -> IntArray:
    return (np.searchsorted(AGE_BAND_LOWER, age, side="right") - 1).astype(np.int32)


def draw_age_and_sex(rng: np.random.Generator, ref: Reference, n: int) -> tuple[IntArray, IntArray]:
    cell = choose(rng, ref.population_weight, n)
    band5 = cell // 2
    sex = (cell % 2).astype(np.int32)
    age = ref.band5_lower[band5] + (rng.random(n) * ref.band5_width[band5]).astype(np.int32)
    return age.astype(np.int32), sex


def draw_birth_dates(rng: np.random.Generator, age: IntArray, reference_day: int) -> IntArray:
    # Uniform within the year of age: born between (age+1) years and age years before the reference date.
    years = age + rng.random(len(age))
    return (reference_day - np.floor(years * DAYS_PER_YEAR)).astype(np.int32)


def draw_municipalities(rng: np.random.Generator, ref: Reference, n: int) -> tuple[IntArray, IntArray]:
    municipality = choose(rng, ref.municipality_weight, n)
    return municipality, ref.municipality_ats[municipality]


def draw_registration(rng: np.random.Generator, birth: IntArray, window: Window) -> IntArray:
    """Registration with the regional service: shortly after birth, after a move, or inside the period."""
    n = len(birth)
    after_birth = birth + (rng.random(n) * 60).astype(np.int32)
    moved = window.first - (rng.exponential(YEARS_SINCE_REGISTRATION, n) * DAYS_PER_YEAR).astype(np.int32)
    registration = np.maximum(after_birth, moved)
    moved_in = rng.random(n) < MOVED_IN_SHARE
    inside = window.first + (rng.random(n) * (window.last - window.first - 30)).astype(np.int32)
    registration = np.where(moved_in, np.maximum(inside, after_birth), registration)
    return np.minimum(registration, window.last).astype(np.int32)


def draw_deaths(
    rng: np.random.Generator,
    ref: Reference,
    age: IntArray,
    sex: IntArray,
    frailty: FloatArray,
    registration: IntArray,
    window: Window,
) -> IntArray:
    """Deaths during the period: ISTAT-like yearly probabilities raised for the frail."""
    band5 = np.minimum(age // 5, ref.death_probability.shape[1] - 1)
    yearly = ref.death_probability[sex, band5]
    hazard = np.exp(FRAILTY_DEATH_LOG_HR * frailty - FRAILTY_DEATH_LOG_HR**2 / 2)
    years = (window.last - window.first + 1) / DAYS_PER_YEAR
    p_death = 1.0 - np.power(np.clip(1.0 - yearly * hazard, 0.0, 1.0), years)
    dies = rng.random(len(age)) < p_death
    lower = np.maximum(registration, window.first)
    day = lower + (rng.random(len(age)) * (window.last - lower + 1)).astype(np.int32)
    return np.where(dies, np.minimum(day, window.last), -1).astype(np.int32)


def gp_count(list_total: int) -> int:
    """How many GPs share `list_total` residents so that lists stay within 1,300-1,500 when possible."""
    low = -(-list_total // GP_LIST_MAX)
    high = max(list_total // GP_LIST_MIN, low)
    return int(min(max(round(list_total / GP_LIST_TARGET), low), high)) or 1


def assign_gps(
    rng: np.random.Generator, ats: IntArray, municipality: IntArray, chunk: int
) -> tuple[IntArray, list[str]]:
    """GP lists within each ATS, filled town by town so that a GP's patients live close to each other."""
    order = np.lexsort((municipality, ats))
    sorted_ats = ats[order]
    gp_of_sorted = np.empty(len(order), dtype=np.int32)
    gp_ids: list[str] = []
    bounds = np.searchsorted(sorted_ats, np.arange(len(ATS_CODES) + 1))
    for a, code in enumerate(ATS_CODES):  # eight ATS, not a loop over residents
        lo, hi = int(bounds[a]), int(bounds[a + 1])
        size = hi - lo
        if size == 0:
            continue
        k = gp_count(size)
        cuts = np.arange(1, k) * (size / k) + rng.uniform(-40, 40, k - 1) * (size >= k * GP_LIST_MIN)
        local = np.searchsorted(np.sort(cuts), np.arange(size), side="right").astype(np.int32)
        gp_of_sorted[lo:hi] = len(gp_ids) + local
        gp_ids.extend(f"MMG{code}{chunk:03d}{j:04d}" for j in range(k))
    gp = np.empty(len(order), dtype=np.int32)
    gp[order] = gp_of_sorted
    return gp, gp_ids


def draw_residents(
    rng: np.random.Generator, ref: Reference, n: int, offset: int, chunk: int, window: Window
) -> Residents:
    age, sex = draw_age_and_sex(rng, ref, n)
    birth = draw_birth_dates(rng, age, window.last)
    municipality, ats = draw_municipalities(rng, ref, n)
    frailty = rng.standard_normal(n)
    registration = draw_registration(rng, birth, window)
    death = draw_deaths(rng, ref, age, sex, frailty, registration, window)
    gp, gp_ids = assign_gps(rng, ats, municipality, chunk)
    start = np.maximum(registration, window.first).astype(np.int32)
    end = np.where(death >= 0, death, window.last).astype(np.int32)
    return Residents(
        offset=offset,
        chunk=chunk,
        sex=sex,
        age=age,
        band=age_band(age),
        birth=birth,
        municipality=municipality,
        ats=ats,
        gp=gp,
        gp_ids=gp_ids,
        registration=registration,
        death=death,
        frailty=frailty,
        start=start,
        end=end,
    )
