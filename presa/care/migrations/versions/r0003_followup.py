"""The follow-up: executed services reconciled from later flows, work-list items, schedules, slots and bookings,
contact points and the reminder outbox, contacts, transitions of care (presa/followup/store.py).

Two partial unique indexes forbid double booking: one live booking per slot, one per planned activity.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "followup_flow_loads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False, comment="SHA-256 of the store's accepted rows"),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("covered_until", sa.Date(), nullable=True, comment="the last day the flows cover"),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("loaded_by", sa.String(length=100), nullable=False),
        sa.Column(
            "counts",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
            comment="read / accepted / rejected per table",
        ),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("executions", sa.Integer(), nullable=False, comment="new executed services stored"),
        sa.Column("outcome_changes", sa.Integer(), nullable=False),
        sa.Column("transitions", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_flow_loads")),
        sa.UniqueConstraint("digest", name=op.f("uq_followup_flow_loads_digest")),
    )
    op.create_table(
        "followup_contact_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum("email", "sms", name="channel", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("address", sa.String(length=200), nullable=False),
        sa.Column(
            "role",
            sa.Enum("patient", "caregiver", name="role", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_followup_contact_points_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_contact_points")),
        sa.UniqueConstraint(
            "patient_id", "channel", "address", name=op.f("uq_followup_contact_points_patient_id_channel_address")
        ),
    )
    op.create_index(
        op.f("ix_followup_contact_points_patient_id"), "followup_contact_points", ["patient_id"], unique=False
    )
    op.create_table(
        "followup_executions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column(
            "source",
            sa.Enum("outpatient", "discharge", "er_visit", name="source", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("day", sa.Date(), nullable=False, comment="service, discharge or visit date"),
        sa.Column("started_on", sa.Date(), nullable=True, comment="admission date of a discharge"),
        sa.Column(
            "code",
            sa.String(length=16),
            nullable=False,
            comment="service code; main diagnosis of a discharge; '' for ER",
        ),
        sa.Column("discipline", sa.String(length=8), nullable=False),
        sa.Column("provider_code", sa.String(length=32), nullable=False),
        sa.Column("load_id", sa.Integer(), nullable=False),
        sa.Column("source_file", sa.String(length=200), nullable=False),
        sa.Column("source_line", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["load_id"], ["followup_flow_loads.id"], name=op.f("fk_followup_executions_load_id_followup_flow_loads")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_followup_executions_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_executions")),
        sa.UniqueConstraint(
            "patient_id",
            "source",
            "day",
            "code",
            "provider_code",
            name=op.f("uq_followup_executions_patient_id_source_day_code_provider_code"),
        ),
    )
    op.create_index(op.f("ix_followup_executions_load_id"), "followup_executions", ["load_id"], unique=False)
    op.create_index("ix_followup_executions_patient_day", "followup_executions", ["patient_id", "day"], unique=False)
    op.create_table(
        "followup_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("service_code", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slot_minutes", sa.SmallInteger(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("closed_on_holidays", sa.Boolean(), nullable=False, comment="no slot on Italian national holidays"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.CheckConstraint("slot_minutes BETWEEN 5 AND 480", name=op.f("ck_followup_schedules_slot_length")),
        sa.CheckConstraint(
            "valid_until IS NULL OR valid_until >= valid_from", name=op.f("ck_followup_schedules_validity_ordered")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_followup_schedules_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_schedules")),
        sa.UniqueConstraint("provider_id", "service_code", name=op.f("uq_followup_schedules_provider_id_service_code")),
    )
    op.create_index(op.f("ix_followup_schedules_service_code"), "followup_schedules", ["service_code"], unique=False)
    op.create_table(
        "followup_availability",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("starts", sa.Time(), nullable=False),
        sa.Column("ends", sa.Time(), nullable=False),
        sa.CheckConstraint("ends > starts", name=op.f("ck_followup_availability_span_ordered")),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name=op.f("ck_followup_availability_weekday")),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["followup_schedules.id"],
            name=op.f("fk_followup_availability_schedule_id_followup_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_availability")),
    )
    op.create_index(
        op.f("ix_followup_availability_schedule_id"), "followup_availability", ["schedule_id"], unique=False
    )
    op.create_table(
        "followup_schedule_exceptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("starts", sa.Time(), nullable=True),
        sa.Column("ends", sa.Time(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.CheckConstraint(
            "(starts IS NULL) = (ends IS NULL)", name=op.f("ck_followup_schedule_exceptions_span_complete")
        ),
        sa.CheckConstraint(
            "starts IS NULL OR ends > starts", name=op.f("ck_followup_schedule_exceptions_span_ordered")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_followup_schedule_exceptions_provider_id_providers")
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["followup_schedules.id"],
            name=op.f("fk_followup_schedule_exceptions_schedule_id_followup_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_schedule_exceptions")),
    )
    op.create_index(
        op.f("ix_followup_schedule_exceptions_provider_id"),
        "followup_schedule_exceptions",
        ["provider_id"],
        unique=False,
    )
    op.create_table(
        "followup_slots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False, comment="the Italian day of starts_at"),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn", sa.Boolean(), nullable=False),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_followup_slots_span_ordered")),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["followup_schedules.id"],
            name=op.f("fk_followup_slots_schedule_id_followup_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_slots")),
        sa.UniqueConstraint("schedule_id", "starts_at", name=op.f("uq_followup_slots_schedule_id_starts_at")),
    )
    op.create_index("ix_followup_slots_schedule_day", "followup_slots", ["schedule_id", "day"], unique=False)
    op.create_table(
        "followup_activity_outcomes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.String(length=96), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum("done_on_time", "done_late", "missed", name="outcome", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("window_from", sa.Date(), nullable=False),
        sa.Column("window_until", sa.Date(), nullable=False),
        sa.Column("done_on", sa.Date(), nullable=True),
        sa.Column("execution_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "source",
            sa.Enum("flows", "manual", name="source", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome = 'missed' OR done_on IS NOT NULL", name=op.f("ck_followup_activity_outcomes_done_has_date")
        ),
        sa.CheckConstraint(
            "source <> 'manual' OR note IS NOT NULL", name=op.f("ck_followup_activity_outcomes_manual_has_note")
        ),
        sa.CheckConstraint("window_until >= window_from", name=op.f("ck_followup_activity_outcomes_window_ordered")),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["followup_executions.id"],
            name=op.f("fk_followup_activity_outcomes_execution_id_followup_executions"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_followup_activity_outcomes_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["care_plans.id"], name=op.f("fk_followup_activity_outcomes_plan_id_care_plans")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_activity_outcomes")),
        sa.UniqueConstraint("plan_id", "activity_id", name=op.f("uq_followup_activity_outcomes_plan_id_activity_id")),
    )
    op.create_index(
        op.f("ix_followup_activity_outcomes_patient_id"), "followup_activity_outcomes", ["patient_id"], unique=False
    )
    op.create_table(
        "followup_bookings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("slot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.String(length=96), nullable=False),
        sa.Column(
            "status",
            sa.Enum("booked", "cancelled", "rescheduled", name="status", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("booked_by", sa.String(length=100), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=100), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("replaces_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint(
            "status = 'booked' OR (ended_at IS NOT NULL AND ended_by IS NOT NULL AND end_reason IS NOT NULL)",
            name=op.f("ck_followup_bookings_end_recorded"),
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_followup_bookings_patient_id_patients")),
        sa.ForeignKeyConstraint(["plan_id"], ["care_plans.id"], name=op.f("fk_followup_bookings_plan_id_care_plans")),
        sa.ForeignKeyConstraint(
            ["replaces_id"], ["followup_bookings.id"], name=op.f("fk_followup_bookings_replaces_id_followup_bookings")
        ),
        sa.ForeignKeyConstraint(
            ["slot_id"], ["followup_slots.id"], name=op.f("fk_followup_bookings_slot_id_followup_slots")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_bookings")),
    )
    op.create_index(op.f("ix_followup_bookings_patient_id"), "followup_bookings", ["patient_id"], unique=False)
    op.create_index(op.f("ix_followup_bookings_slot_id"), "followup_bookings", ["slot_id"], unique=False)
    op.create_index(
        "uq_followup_bookings_live_activity",
        "followup_bookings",
        ["plan_id", "activity_id"],
        unique=True,
        postgresql_where=sa.text("status = 'booked'"),
        sqlite_where=sa.text("status = 'booked'"),
    )
    op.create_index(
        "uq_followup_bookings_live_slot",
        "followup_bookings",
        ["slot_id"],
        unique=True,
        postgresql_where=sa.text("status = 'booked'"),
        sqlite_where=sa.text("status = 'booked'"),
    )
    op.create_table(
        "followup_work_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False, comment="what the item is about: one item per key"),
        sa.Column(
            "kind",
            sa.Enum(
                "due_soon",
                "overdue",
                "not_booked",
                "invited_no_answer",
                "plan_renewal",
                "pact_renewal",
                "post_discharge",
                "pai_review",
                "call_back",
                name="kind",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum("open", "snoozed", "closed", name="status", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("gestore_id", sa.Integer(), nullable=True),
        sa.Column("ats_code", sa.String(length=3), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("plan_id", sa.Integer(), nullable=True),
        sa.Column("activity_id", sa.String(length=96), nullable=True),
        sa.Column("activity_kind", sa.String(length=16), nullable=True, comment="gp_visit, lab, ... of the activity"),
        sa.Column("due_on", sa.Date(), nullable=False, comment="the Italian day it is due"),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True, comment="the instant, for call-backs"),
        sa.Column("priority_score", sa.Integer(), nullable=False),
        sa.Column(
            "priority",
            sa.Enum("routine", "urgent", "asap", name="priority", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False, comment="refresh, transition or contact"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("snooze_reason", sa.Text(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=100), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status <> 'closed' OR (closed_at IS NOT NULL AND closed_by IS NOT NULL AND outcome IS NOT NULL)",
            name=op.f("ck_followup_work_items_closure_recorded"),
        ),
        sa.CheckConstraint(
            "status <> 'snoozed' OR (snoozed_until IS NOT NULL AND snooze_reason IS NOT NULL)",
            name=op.f("ck_followup_work_items_snooze_explained"),
        ),
        sa.ForeignKeyConstraint(["ats_code"], ["ats.code"], name=op.f("fk_followup_work_items_ats_code_ats")),
        sa.ForeignKeyConstraint(["gestore_id"], ["gestori.id"], name=op.f("fk_followup_work_items_gestore_id_gestori")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["practitioners.id"], name=op.f("fk_followup_work_items_owner_id_practitioners")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_followup_work_items_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(["plan_id"], ["care_plans.id"], name=op.f("fk_followup_work_items_plan_id_care_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_work_items")),
        sa.UniqueConstraint("key", name=op.f("uq_followup_work_items_key")),
    )
    op.create_index(
        "ix_followup_work_items_list",
        "followup_work_items",
        ["gestore_id", "status", "priority_score", "due_on", "id"],
        unique=False,
    )
    op.create_index("ix_followup_work_items_owner", "followup_work_items", ["owner_id", "status"], unique=False)
    op.create_index(op.f("ix_followup_work_items_patient_id"), "followup_work_items", ["patient_id"], unique=False)
    op.create_table(
        "followup_care_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("discharge", "er_visit", name="kind", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("event_on", sa.Date(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False, comment="flows or api"),
        sa.Column("follow_up_item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("review_item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["follow_up_item_id"],
            ["followup_work_items.id"],
            name=op.f("fk_followup_care_transitions_follow_up_item_id_followup_work_items"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_followup_care_transitions_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["review_item_id"],
            ["followup_work_items.id"],
            name=op.f("fk_followup_care_transitions_review_item_id_followup_work_items"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_care_transitions")),
        sa.UniqueConstraint(
            "patient_id", "kind", "event_on", name=op.f("uq_followup_care_transitions_patient_id_kind_event_on")
        ),
    )
    op.create_table(
        "followup_contacts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column(
            "direction",
            sa.Enum("inbound", "outbound", name="direction", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator", sa.String(length=100), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum(
                "reached",
                "no_answer",
                "wrong_number",
                "refused",
                "call_back",
                name="outcome",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("call_back_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "item_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
            comment="the item it answered",
        ),
        sa.Column("call_back_item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint(
            "(outcome = 'call_back') = (call_back_at IS NOT NULL)", name=op.f("ck_followup_contacts_call_back_has_time")
        ),
        sa.ForeignKeyConstraint(
            ["call_back_item_id"],
            ["followup_work_items.id"],
            name=op.f("fk_followup_contacts_call_back_item_id_followup_work_items"),
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["followup_work_items.id"], name=op.f("fk_followup_contacts_item_id_followup_work_items")
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_followup_contacts_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_contacts")),
    )
    op.create_index(op.f("ix_followup_contacts_patient_id"), "followup_contacts", ["patient_id"], unique=False)
    op.create_table(
        "followup_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False, comment="what the message is: enqueued once"),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("booking_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("template", sa.String(length=32), nullable=False),
        sa.Column(
            "channel",
            sa.Enum("email", "sms", name="channel", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column(
            "role",
            sa.Enum("patient", "caregiver", name="role", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "sending",
                "sent",
                "cancelled",
                "failed",
                name="status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gateway_id", sa.String(length=200), nullable=True, comment="the transport's id of the message"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status <> 'sending' OR (claimed_by IS NOT NULL AND lease_until IS NOT NULL)",
            name=op.f("ck_followup_outbox_claim"),
        ),
        sa.CheckConstraint("status <> 'sent' OR sent_at IS NOT NULL", name=op.f("ck_followup_outbox_sent_has_time")),
        sa.ForeignKeyConstraint(
            ["booking_id"], ["followup_bookings.id"], name=op.f("fk_followup_outbox_booking_id_followup_bookings")
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_followup_outbox_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_outbox")),
        sa.UniqueConstraint("key", name=op.f("uq_followup_outbox_key")),
    )
    op.create_index("ix_followup_outbox_due", "followup_outbox", ["status", "not_before"], unique=False)
    op.create_index(op.f("ix_followup_outbox_patient_id"), "followup_outbox", ["patient_id"], unique=False)


def downgrade() -> None:
    op.drop_table("followup_outbox")
    op.drop_table("followup_contacts")
    op.drop_table("followup_care_transitions")
    op.drop_table("followup_work_items")
    op.drop_table("followup_bookings")
    op.drop_table("followup_activity_outcomes")
    op.drop_table("followup_slots")
    op.drop_table("followup_schedule_exceptions")
    op.drop_table("followup_availability")
    op.drop_table("followup_schedules")
    op.drop_table("followup_executions")
    op.drop_table("followup_contact_points")
    op.drop_table("followup_flow_loads")
