"""The care services: each takes a SQLAlchemy session, checks the domain rules, writes, audits, and never commits.

- ``organisations``: gestori, providers and networks, practitioners and roles, a GP's opt-out
- ``population``: :func:`load_run`, a stratification run into patients, strata and episodes
- ``episodes``: :func:`transition`, :func:`choose_gestore`, the history
- ``invitations``: :func:`invite`, one batch of letters per ATS
- ``pacts``: :func:`draft_pact`, :func:`sign_pact`, :func:`revoke_pact`, :func:`can_process`
- ``plans``: :func:`generate_plan`, :func:`add_to_plan` / :func:`drop_from_plan` / :func:`move_in_plan`,
  :func:`activate_plan`, :func:`load_plan`
"""

from presa.care.service.common import CareError, NotFoundError
from presa.care.service.episodes import choose_gestore, history, open_episode, transition
from presa.care.service.invitations import invite
from presa.care.service.pacts import (
    ProcessingRefusedError,
    can_process,
    draft_pact,
    require_processing,
    revoke_pact,
    sign_pact,
)
from presa.care.service.plans import (
    activate_plan,
    add_to_plan,
    drop_from_plan,
    generate_plan,
    load_plan,
    move_in_plan,
)
from presa.care.service.population import RunLoad, load_run

__all__ = [
    "CareError",
    "NotFoundError",
    "ProcessingRefusedError",
    "RunLoad",
    "activate_plan",
    "add_to_plan",
    "can_process",
    "choose_gestore",
    "draft_pact",
    "drop_from_plan",
    "generate_plan",
    "history",
    "invite",
    "load_plan",
    "load_run",
    "move_in_plan",
    "open_episode",
    "require_processing",
    "revoke_pact",
    "sign_pact",
    "transition",
]
