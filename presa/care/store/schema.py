"""Every table of the store - the care models and the accounts - for the migrations and the schema test."""

from presa.auth import models as _accounts  # noqa: F401  (registers the accounts' tables on the metadata)
from presa.care.store.models import Base

metadata = Base.metadata
