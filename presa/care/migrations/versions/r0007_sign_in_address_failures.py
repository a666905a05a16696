"""The API's sign-in lock-out per client address (presa/auth/sessions.py): failed sign-ins from one address, any
usernames, counted like those of one username in ``sign_in_failures``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_address_failures",
        sa.Column("remote_addr", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("failures >= 0", name=op.f("ck_sign_in_address_failures_failures_not_negative")),
        sa.PrimaryKeyConstraint("remote_addr", name=op.f("pk_sign_in_address_failures")),
    )


def downgrade() -> None:
    op.drop_table("sign_in_address_failures")
