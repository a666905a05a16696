"""The pact's own consent scope for caregivers' reminders: ``caregiver_reminders`` joins the values of
``care_pact_scopes.scope`` (its CHECK constraint and its length).

No pact is given the new scope: until now a caregiver was reminded when the pact gave ``data_sharing``, which the
patient signed as sharing with the gestore's network, not with a third person. Caregivers are reminded again once
a pact version that gives ``caregiver_reminders`` is signed; the worker cancels what is pending for them meanwhile.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BEFORE = ("care", "data_sharing", "reminders_sms", "reminders_email", "telemonitoring")
AFTER = (*BEFORE, "caregiver_reminders")


def _scopes(values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name="scope", native_enum=False, create_constraint=True, length=max(map(len, values)))


def _table(values: tuple[str, ...]) -> sa.Table:
    """The table as it stands before the change (batch mode on SQLite copies it from this, not from reflection)."""
    return sa.Table(
        "care_pact_scopes",
        sa.MetaData(naming_convention={"ck": "ck_%(table_name)s_%(constraint_name)s"}),
        sa.Column("pact_id", sa.Integer(), sa.ForeignKey("care_pacts.id", ondelete="CASCADE",
                                                         name="fk_care_pact_scopes_pact_id_care_pacts"),
                  primary_key=True),
        sa.Column("scope", _scopes(values), primary_key=True),
        sa.PrimaryKeyConstraint("pact_id", "scope", name="pk_care_pact_scopes"),
    )  # fmt: skip


def _change(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_care_pact_scopes_scope"), "care_pact_scopes", type_="check")
        if max(map(len, new)) > max(map(len, old)):
            op.alter_column("care_pact_scopes", "scope", type_=sa.String(max(map(len, new))),
                            existing_type=sa.String(max(map(len, old))), existing_nullable=False)  # fmt: skip
        op.create_check_constraint(op.f("ck_care_pact_scopes_scope"), "care_pact_scopes", sa.column("scope").in_(new))
        if max(map(len, new)) < max(map(len, old)):
            op.alter_column("care_pact_scopes", "scope", type_=sa.String(max(map(len, new))),
                            existing_type=sa.String(max(map(len, old))), existing_nullable=False)  # fmt: skip
        return
    with op.batch_alter_table("care_pact_scopes", copy_from=_table(old), recreate="always") as batch:
        batch.alter_column("scope", type_=_scopes(new), existing_type=_scopes(old), existing_nullable=False)


def upgrade() -> None:
    _change(BEFORE, AFTER)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM care_pact_scopes WHERE scope = 'caregiver_reminders'"))
    _change(AFTER, BEFORE)
