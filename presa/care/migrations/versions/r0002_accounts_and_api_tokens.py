"""Accounts and API tokens (presa/auth): roles with their scope, argon2 password hashes, hashed bearer tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROLES = ("ats_analyst", "gestore_admin", "clinician", "case_manager", "operator", "patient")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.Enum(*ROLES, name="role", native_enum=False, create_constraint=True), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("external_subject", sa.String(length=255), nullable=True, comment="OIDC issuer|subject"),
        sa.Column("ats_code", sa.String(length=3), nullable=True),
        sa.Column("gestore_id", sa.Integer(), nullable=True),
        sa.Column("practitioner_id", sa.Integer(), nullable=True),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role <> 'ats_analyst' OR ats_code IS NOT NULL", name=op.f("ck_accounts_analyst_has_ats")),
        sa.CheckConstraint("role <> 'patient' OR patient_id IS NOT NULL", name=op.f("ck_accounts_patient_has_record")),
        sa.CheckConstraint(
            "role NOT IN ('clinician', 'case_manager') OR practitioner_id IS NOT NULL",
            name=op.f("ck_accounts_carer_is_practitioner"),
        ),
        sa.CheckConstraint(
            "role NOT IN ('gestore_admin', 'clinician', 'case_manager', 'operator') OR gestore_id IS NOT NULL",
            name=op.f("ck_accounts_staff_has_gestore"),
        ),
        sa.ForeignKeyConstraint(["ats_code"], ["ats.code"], name=op.f("fk_accounts_ats_code_ats")),
        sa.ForeignKeyConstraint(["gestore_id"], ["gestori.id"], name=op.f("fk_accounts_gestore_id_gestori")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_accounts_patient_id_patients")),
        sa.ForeignKeyConstraint(
            ["practitioner_id"], ["practitioners.id"], name=op.f("fk_accounts_practitioner_id_practitioners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("external_subject", name=op.f("uq_accounts_external_subject")),
        sa.UniqueConstraint("username", name=op.f("uq_accounts_username")),
    )
    op.create_index(op.f("ix_accounts_gestore_id"), "accounts", ["gestore_id"], unique=False)
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("expires_at > created_at", name=op.f("ck_api_tokens_expires_after_issue")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_api_tokens_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_account_id"), "api_tokens", ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("accounts")
