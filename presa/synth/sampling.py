"""Vectorised sampling primitives: every function works on whole arrays, never on one resident at a time.

Days are int32 counts since 1970-01-01. An "owner" is whatever an event belongs to (a resident, a
resident-pathology pair, a drug therapy); functions return the owner of each generated row so callers can
gather any attribute with fancy indexing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int32]
Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DAYS_PER_YEAR = 365.25


def choose(rng: np.random.Generator, weights: npt.ArrayLike, size: int) -> IntArray:
    """Indices drawn from a categorical distribution (weights need not sum to 1)."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    draws = rng.random(size) * cumulative[-1]
    index: IntArray = np.minimum(np.searchsorted(cumulative, draws, side="right"), len(cumulative) - 1).astype(np.int32)
    return index


def choose_within_groups(
    rng: np.random.Generator, group: IntArray, group_ptr: IntArray, weights: FloatArray
) -> IntArray:
    """For each row, an item of its group drawn by weight; groups are CSR ranges over `weights`.

    Every group must be non-empty. Works for all rows at once through one global cumulative sum.
    """
    cumulative = np.cumsum(weights)
    base = np.where(group_ptr[:-1] > 0, cumulative[group_ptr[:-1] - 1], 0.0)
    total = cumulative[group_ptr[1:] - 1] - base
    target = base[group] + rng.random(len(group)) * total[group]
    item = np.searchsorted(cumulative, target, side="right")
    return np.clip(item, group_ptr[group], group_ptr[group + 1] - 1).astype(np.int32)


def expand_groups(group: IntArray, group_ptr: IntArray) -> tuple[IntArray, IntArray]:
    """Pairs (row, item) for every item of every row's group: the cross join of rows with their CSR ranges."""
    sizes = (group_ptr[group + 1] - group_ptr[group]).astype(np.int64)
    row = np.repeat(np.arange(len(group), dtype=np.int32), sizes)
    item = (np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)).astype(
        np.int32
    ) + np.repeat(group_ptr[group], sizes).astype(np.int32)
    return row, item


def position_in_run(counts: Int64Array) -> Int64Array:
    """0, 1, ... k-1 for each run of `counts` rows laid end to end."""
    total = int(counts.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)


def poisson_events(
    rng: np.random.Generator, start: IntArray, end: IntArray, per_year: FloatArray
) -> tuple[IntArray, IntArray]:
    """Events at a yearly rate, uniform over each owner's [start, end]; returns (owner, day)."""
    span = np.maximum(end.astype(np.int64) - start + 1, 0)
    counts = rng.poisson(np.maximum(per_year, 0.0) * span / DAYS_PER_YEAR)
    owner = np.repeat(np.arange(len(start), dtype=np.int32), counts)
    offset = (rng.random(len(owner)) * span[owner]).astype(np.int32)
    return owner, start[owner] + offset


def regular_series(
    rng: np.random.Generator, start: IntArray, end: IntArray, gap: FloatArray, jitter: float
) -> tuple[IntArray, IntArray]:
    """Roughly periodic events (refills, dialysis sessions) every `gap` days from a random phase.

    Each event moves by a normal jitter of `jitter` x gap days and is clipped into [start, end].
    """
    span = end.astype(np.float64) - start
    phase = rng.random(len(start)) * gap
    counts = np.where(span >= phase, np.floor((span - phase) / gap) + 1, 0).astype(np.int64)
    owner = np.repeat(np.arange(len(start), dtype=np.int32), counts)
    k = position_in_run(counts)
    g = gap[owner]
    offset = phase[owner] + k * g + rng.standard_normal(len(owner)) * (jitter * g)
    day = start[owner] + np.clip(np.rint(offset), 0, span[owner]).astype(np.int32)
    return owner, day


def beta_around(rng: np.random.Generator, mean: FloatArray, concentration: float) -> FloatArray:
    """Beta draws with the given means: per-patient adherence and similar shares."""
    m = np.clip(mean, 0.02, 0.98)
    return rng.beta(m * concentration, (1.0 - m) * concentration)
