"""Two indexes of the follow-up executions dropped: a month's hundreds of thousands of services paid for them on
every load and no query used them (reconciliation reads a load's services from its own temporary table, and the
unique constraint, which starts with the patient, already serves lookups by patient).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_followup_executions_patient_day", table_name="followup_executions")
    op.drop_index(op.f("ix_followup_executions_load_id"), table_name="followup_executions")


def downgrade() -> None:
    op.create_index(op.f("ix_followup_executions_load_id"), "followup_executions", ["load_id"], unique=False)
    op.create_index("ix_followup_executions_patient_day", "followup_executions", ["patient_id", "day"], unique=False)
