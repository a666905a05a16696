"""Every table of the store - the care models and the accounts - for the migrations and the schema test."""

from presa.auth import models as _accounts  # noqa: F401  (registers the accounts' tables on the metadata)
from presa.care.store.models import Base
from presa.followup import store as _followup  # noqa: F401  (registers the follow-up tables on the metadata)

metadata = Base.metadata
