"""The follow-up at a region's scale: each execution's code family (stem) stored, so that reconciliation joins
services to planned activities by equality; the version of each plan the outcomes were last computed on
(``followup_reconciled_plans``), so that a later month recomputes only what changed; the work lists' order as
partial indexes of the items not closed, per gestore and per ATS (replacing ``ix_followup_work_items_list``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

QUEUES = {"gestore": "gestore_id", "ats": "ats_code"}


def _stem(code: str) -> str:
    """presa.followup.rules.code_stem, frozen here as the migration's own copy."""
    return ".".join(code.strip().upper().split(".")[:2])


def upgrade() -> None:
    op.add_column(
        "followup_executions",
        sa.Column(
            "stem", sa.String(length=16), nullable=True, comment="the code's DM 1996 stem (rules.code_stem): its family"
        ),
    )
    connection = op.get_bind()
    executions = sa.table("followup_executions", sa.column("id", sa.BigInteger()), sa.column("code", sa.String()),
                          sa.column("stem", sa.String()))  # fmt: skip
    rows = connection.execute(sa.select(executions.c.id, executions.c.code)).all()
    if rows:
        connection.execute(
            executions.update().where(executions.c.id == sa.bindparam("b_id")).values(stem=sa.bindparam("b_stem")),
            [{"b_id": i, "b_stem": _stem(code)} for i, code in rows],
        )
    with op.batch_alter_table("followup_executions") as batch:
        batch.alter_column("stem", existing_type=sa.String(length=16), nullable=False)
    op.create_table(
        "followup_reconciled_plans",
        sa.Column("plan_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["care_plans.id"], name=op.f("fk_followup_reconciled_plans_plan_id_care_plans")
        ),
        sa.PrimaryKeyConstraint("plan_id", name=op.f("pk_followup_reconciled_plans")),
    )
    op.drop_index("ix_followup_work_items_list", table_name="followup_work_items")
    for name, column in QUEUES.items():
        op.create_index(
            f"ix_followup_work_items_{name}_queue",
            "followup_work_items",
            [column, sa.text("priority_score DESC"), "due_on", "id"],
            unique=False,
            postgresql_where=sa.text("status <> 'closed'"),
            sqlite_where=sa.text("status <> 'closed'"),
        )


def downgrade() -> None:
    for name in QUEUES:
        op.drop_index(f"ix_followup_work_items_{name}_queue", table_name="followup_work_items")
    op.create_index(
        "ix_followup_work_items_list",
        "followup_work_items",
        ["gestore_id", "status", "priority_score", "due_on", "id"],
        unique=False,
    )
    op.drop_table("followup_reconciled_plans")
    with op.batch_alter_table("followup_executions") as batch:
        batch.drop_column("stem")
