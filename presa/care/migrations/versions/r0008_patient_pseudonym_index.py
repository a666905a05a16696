"""Analysts' lookups by pseudonym as an index: ``patients.pseudonym_index``, a keyed 64-bit digest of each
patient's pseudonym (presa/care/service/pseudonyms.py), filled after each load and refilled when the key changes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(
            sa.Column(
                "pseudonym_index",
                sa.BigInteger(),
                nullable=True,
                comment="keyed digest of the pseudonym, for analysts' lookups (presa.care.service.pseudonyms)",
            )
        )
    op.create_index(op.f("ix_patients_pseudonym_index"), "patients", ["pseudonym_index"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_patients_pseudonym_index"), table_name="patients")
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("pseudonym_index")
