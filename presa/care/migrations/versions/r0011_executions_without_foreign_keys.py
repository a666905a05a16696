"""The follow-up executions' references (patient, flow load) no longer checked by foreign keys. PostgreSQL checks
them one row at a time, locking the referenced row for each (a WAL record per lock): at a region's month (660,000
services) the two triggers took 17 s of the 21.5 s of the INSERT (EXPLAIN ANALYZE). The table is written by one
statement only, reconciliation's INSERT ... SELECT, which joins each service to its patient and sets the load it
has just inserted in the same transaction; patients and loads are never deleted.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

KEYS = {
    "fk_followup_executions_load_id_followup_flow_loads": ("load_id", "followup_flow_loads"),
    "fk_followup_executions_patient_id_patients": ("patient_id", "patients"),
}


def upgrade() -> None:
    with op.batch_alter_table("followup_executions") as batch:
        for name in KEYS:
            batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("followup_executions") as batch:
        for name, (column, table) in KEYS.items():
            batch.create_foreign_key(name, table, [column], ["id"])
