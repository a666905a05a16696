"""The enrolment (presa in carico) state machine, pure: which state may follow which, and when.

An enrolment episode (FHIR ``EpisodeOfCare``) goes::

    eligible → invited → gestore_chosen → pact_signed → pai_active ⇄ suspended
                                                                    ↘ withdrawn / deceased / ended

Every open state may also end as ``withdrawn`` (the patient declines or leaves; not from ``eligible``, where
nothing was offered yet), ``deceased`` or ``ended`` (no longer eligible, moved away, the programme closed). The
three final states admit no transition: a patient who comes back gets a new episode.

A transition carries a reason, an author and an effective date. The date may be back-dated by at most
:data:`MAX_BACKDATE_DAYS` days (a call made last week is recorded today), never into the future, and never before
the current state took effect, so the history stays in order. Everything refused raises
:class:`TransitionError`, whose message names the current state and the states allowed from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

MAX_BACKDATE_DAYS = 30
"""How far back an effective date may go: a month covers a letter returned late or a call logged late."""


class EpisodeState(StrEnum):
    ELIGIBLE = "eligible"
    INVITED = "invited"
    GESTORE_CHOSEN = "gestore_chosen"
    PACT_SIGNED = "pact_signed"
    PAI_ACTIVE = "pai_active"
    SUSPENDED = "suspended"
    WITHDRAWN = "withdrawn"
    DECEASED = "deceased"
    ENDED = "ended"


S = EpisodeState
FINAL_STATES: frozenset[EpisodeState] = frozenset({S.WITHDRAWN, S.DECEASED, S.ENDED})
OPEN_STATES: frozenset[EpisodeState] = frozenset(S) - FINAL_STATES
TAKEN_IN_CHARGE: frozenset[EpisodeState] = frozenset({S.GESTORE_CHOSEN, S.PACT_SIGNED, S.PAI_ACTIVE, S.SUSPENDED})
"""The states in which the episode counts against its gestore's capacity."""

_EXITS = frozenset({S.WITHDRAWN, S.DECEASED, S.ENDED})
TRANSITIONS: Mapping[EpisodeState, frozenset[EpisodeState]] = {
    S.ELIGIBLE: frozenset({S.INVITED, S.DECEASED, S.ENDED}),
    S.INVITED: frozenset({S.GESTORE_CHOSEN}) | _EXITS,
    S.GESTORE_CHOSEN: frozenset({S.PACT_SIGNED}) | _EXITS,
    S.PACT_SIGNED: frozenset({S.PAI_ACTIVE}) | _EXITS,
    S.PAI_ACTIVE: frozenset({S.SUSPENDED}) | _EXITS,
    S.SUSPENDED: frozenset({S.PAI_ACTIVE}) | _EXITS,
    S.WITHDRAWN: frozenset(),
    S.DECEASED: frozenset(),
    S.ENDED: frozenset(),
}

NO_LONGER_ELIGIBLE_ENDS: tuple[EpisodeState, ...] = (S.ELIGIBLE, S.INVITED)
"""Open states that a new stratification run ends by itself when the patient is no longer eligible; from
``gestore_chosen`` on the patient is in someone's care and only a person closes the episode."""


class TransitionError(ValueError):
    """A transition refused, with the state the episode is in and the states it may go to."""

    def __init__(self, message: str, *, current: EpisodeState, allowed: tuple[EpisodeState, ...]) -> None:
        self.current, self.allowed = current, allowed
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Transition:
    """A checked transition, ready to be recorded."""

    from_state: EpisodeState
    to_state: EpisodeState
    effective_on: date
    reason: str
    author: str


def allowed_from(state: EpisodeState) -> tuple[EpisodeState, ...]:
    """The states that may follow ``state``, in lifecycle order."""
    return tuple(s for s in EpisodeState if s in TRANSITIONS[state])


def describe_allowed(state: EpisodeState) -> str:
    allowed = allowed_from(state)
    if not allowed:
        return f"'{state}' is a final state: no transition is allowed (a returning patient gets a new episode)"
    return f"from '{state}' the allowed states are: " + ", ".join(allowed)


def check_transition(
    current: EpisodeState,
    current_since: date,
    target: EpisodeState | str,
    *,
    effective_on: date,
    today: date,
    reason: str,
    author: str,
    max_backdate_days: int = MAX_BACKDATE_DAYS,
) -> Transition:
    """Check that an episode in ``current`` since ``current_since`` may go to ``target`` on ``effective_on``."""
    allowed = allowed_from(current)

    def refuse(message: str) -> TransitionError:
        return TransitionError(message, current=current, allowed=allowed)

    try:
        to_state = EpisodeState(target)
    except ValueError:
        known = ", ".join(EpisodeState)
        raise refuse(f"unknown state '{target}' (the states are: {known}); {describe_allowed(current)}") from None
    if to_state not in allowed:
        raise refuse(f"cannot go from '{current}' to '{to_state}': {describe_allowed(current)}")
    if not reason.strip():
        raise refuse(f"the transition from '{current}' to '{to_state}' needs a reason")
    if not author.strip():
        raise refuse(f"the transition from '{current}' to '{to_state}' needs an author")
    if effective_on > today:
        raise refuse(f"effective date {effective_on.isoformat()} is in the future (today is {today.isoformat()})")
    earliest = today - timedelta(days=max_backdate_days)
    if effective_on < earliest:
        raise refuse(
            f"effective date {effective_on.isoformat()} is more than {max_backdate_days} days back: "
            f"the earliest allowed today is {earliest.isoformat()}"
        )
    if effective_on < current_since:
        raise refuse(
            f"effective date {effective_on.isoformat()} is before the current state '{current}' took effect "
            f"on {current_since.isoformat()}"
        )
    return Transition(current, to_state, effective_on, reason.strip(), author.strip())
