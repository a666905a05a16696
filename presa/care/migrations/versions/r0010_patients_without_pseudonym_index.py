"""Patients still without a pseudonym digest, by ATS: a partial index, empty once every patient is indexed, so that
an analyst's lookup that finds nobody checks for unindexed patients of the ATS without scanning them
(presa/care/service/pseudonyms.py).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_patients_without_pseudonym_index",
        "patients",
        ["ats_code", "id"],
        unique=False,
        postgresql_where=sa.text("pseudonym_index IS NULL"),
        sqlite_where=sa.text("pseudonym_index IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_patients_without_pseudonym_index", table_name="patients")
