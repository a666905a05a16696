"""Web sessions and the sign-in lock-out (presa/auth/sessions.py): the browser's session cookie stored as its
SHA-256, and the failed sign-ins per username with the time a lock-out ends; indexes on the episodes' clinical and
case managers, which the pages' lists of a GP's and a case manager's patients start from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=64), nullable=True),
        sa.Column("remote_addr", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.CheckConstraint("expires_at > created_at", name=op.f("ck_web_sessions_expires_after_start")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_web_sessions_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_sessions_token_hash")),
    )
    op.create_index(op.f("ix_web_sessions_account_id"), "web_sessions", ["account_id"], unique=False)
    op.create_table(
        "sign_in_failures",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("failures >= 0", name=op.f("ck_sign_in_failures_failures_not_negative")),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_sign_in_failures")),
    )
    for column in ("clinical_manager_id", "case_manager_id"):
        op.create_index(op.f(f"ix_enrolment_episodes_{column}"), "enrolment_episodes", [column], unique=False)


def downgrade() -> None:
    for column in ("clinical_manager_id", "case_manager_id"):
        op.drop_index(op.f(f"ix_enrolment_episodes_{column}"), table_name="enrolment_episodes")
    op.drop_table("sign_in_failures")
    op.drop_table("web_sessions")
