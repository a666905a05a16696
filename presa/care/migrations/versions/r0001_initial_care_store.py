"""The initial care store: organisations, people, patients and their strata, enrolment, pacts, PAI, audit.

Also seeds the 8 ATS of Lombardy (codes of the national registry of local health units, docs/DATA.md) and makes
``audit_events`` append-only with triggers that refuse UPDATE and DELETE (and, on PostgreSQL, TRUNCATE).

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ATS = (
    ("321", "ATS della Città Metropolitana di Milano"),
    ("322", "ATS dell'Insubria"),
    ("323", "ATS della Montagna"),
    ("324", "ATS della Brianza"),
    ("325", "ATS di Bergamo"),
    ("326", "ATS di Brescia"),
    ("327", "ATS della Val Padana"),
    ("328", "ATS di Pavia"),
)

APPEND_ONLY_POSTGRESQL = (
    """
    CREATE FUNCTION presa_refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
    "FOR EACH ROW EXECUTE FUNCTION presa_refuse_audit_change()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION presa_refuse_audit_change()",
)
APPEND_ONLY_SQLITE = tuple(
    f"CREATE TRIGGER audit_events_no_{operation.lower()} BEFORE {operation} ON audit_events "
    f"BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: {operation} refused'); END"
    for operation in ("UPDATE", "DELETE")
)


def upgrade() -> None:
    op.create_table(
        "ats",
        sa.Column("code", sa.String(length=3), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_ats")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("entity", sa.String(length=40), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=True),
        sa.Column("patient_id", sa.Integer(), nullable=True, comment="no foreign key: the trail outlives rows"),
        sa.Column("remote_addr", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_actor"), "audit_events", ["actor"], unique=False)
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"], unique=False)
    op.create_index(op.f("ix_audit_events_patient_id"), "audit_events", ["patient_id"], unique=False)
    op.create_table(
        "gestori",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "gp_cooperative", "asst", "private_accredited", name="kind", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("accredited_from", sa.Date(), nullable=False),
        sa.Column("accredited_until", sa.Date(), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=False, comment="patients it can take in charge at once"),
        sa.Column("phone", sa.String(length=40), nullable=True),
        sa.Column("email", sa.String(length=200), nullable=True),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "accredited_until IS NULL OR accredited_until >= accredited_from",
            name=op.f("ck_gestori_accreditation_ordered"),
        ),
        sa.CheckConstraint("capacity >= 0", name=op.f("ck_gestori_capacity_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gestori")),
        sa.UniqueConstraint("code", name=op.f("uq_gestori_code")),
    )
    op.create_table(
        "stratification_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False, comment="the run directory it was loaded from"),
        sa.Column("run_digest", sa.String(length=64), nullable=False, comment="SHA-256 of its run.json"),
        sa.Column("catalog_name", sa.String(length=200), nullable=False),
        sa.Column("catalog_version", sa.String(length=64), nullable=False),
        sa.Column("catalog_digest", sa.String(length=64), nullable=False),
        sa.Column("reference_date", sa.Date(), nullable=False),
        sa.Column("population", sa.Integer(), nullable=False),
        sa.Column("eligible", sa.Integer(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("loaded_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stratification_runs")),
        sa.UniqueConstraint("run_digest", name=op.f("uq_stratification_runs_run_digest")),
    )
    op.create_table(
        "gestore_ats",
        sa.Column("gestore_id", sa.Integer(), nullable=False),
        sa.Column("ats_code", sa.String(length=3), nullable=False),
        sa.ForeignKeyConstraint(["ats_code"], ["ats.code"], name=op.f("fk_gestore_ats_ats_code_ats")),
        sa.ForeignKeyConstraint(
            ["gestore_id"], ["gestori.id"], name=op.f("fk_gestore_ats_gestore_id_gestori"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("gestore_id", "ats_code", name=op.f("pk_gestore_ats")),
    )
    op.create_index(op.f("ix_gestore_ats_ats_code"), "gestore_ats", ["ats_code"], unique=False)
    op.create_table(
        "invitation_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ats_code", sa.String(length=3), nullable=False),
        sa.Column("letter_date", sa.Date(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["ats_code"], ["ats.code"], name=op.f("fk_invitation_batches_ats_code_ats")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitation_batches")),
    )
    op.create_table(
        "patient_strata",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("sex", sa.String(length=1), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("age", sa.SmallInteger(), nullable=False),
        sa.Column("ats_code", sa.String(length=3), nullable=False),
        sa.Column("gp_id", sa.String(length=32), nullable=True),
        sa.Column("municipality", sa.String(length=6), nullable=True),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("pathologies", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["stratification_runs.id"], name=op.f("fk_patient_strata_run_id_stratification_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", "resident_id", name=op.f("pk_patient_strata")),
    )
    op.create_index(op.f("ix_patient_strata_resident_id"), "patient_strata", ["resident_id"], unique=False)
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("sex", sa.String(length=1), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("municipality", sa.String(length=6), nullable=True),
        sa.Column("ats_code", sa.String(length=3), nullable=False),
        sa.Column("gp_id", sa.String(length=32), nullable=True),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column(
            "pathologies",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
            comment="catalog pathology ids, main first",
        ),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("sex IN ('M', 'F')", name=op.f("ck_patients_sex")),
        sa.CheckConstraint("level BETWEEN 1 AND 5", name=op.f("ck_patients_level")),
        sa.ForeignKeyConstraint(["ats_code"], ["ats.code"], name=op.f("fk_patients_ats_code_ats")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["stratification_runs.id"], name=op.f("fk_patients_run_id_stratification_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("resident_id", name=op.f("uq_patients_resident_id")),
    )
    op.create_index(op.f("ix_patients_ats_code"), "patients", ["ats_code"], unique=False)
    op.create_index(op.f("ix_patients_gp_id"), "patients", ["gp_id"], unique=False)
    op.create_table(
        "practitioners",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("family_name", sa.String(length=100), nullable=False),
        sa.Column("given_name", sa.String(length=100), nullable=False),
        sa.Column(
            "profession",
            sa.Enum(
                "gp", "specialist", "nurse", "operator", name="profession", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("discipline", sa.String(length=64), nullable=True),
        sa.Column("ats_code", sa.String(length=3), nullable=True),
        sa.Column("phone", sa.String(length=40), nullable=True),
        sa.Column("email", sa.String(length=200), nullable=True),
        sa.Column("opted_out_on", sa.Date(), nullable=True),
        sa.CheckConstraint("opted_out_on IS NULL OR profession = 'gp'", name=op.f("ck_practitioners_only_gps_opt_out")),
        sa.ForeignKeyConstraint(["ats_code"], ["ats.code"], name=op.f("fk_practitioners_ats_code_ats")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_practitioners")),
        sa.UniqueConstraint("code", name=op.f("uq_practitioners_code")),
    )
    op.create_table(
        "providers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "hospital",
                "outpatient_clinic",
                "laboratory",
                "imaging",
                "pharmacy",
                "other",
                name="kind",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("ats_code", sa.String(length=3), nullable=True),
        sa.Column("municipality", sa.String(length=6), nullable=True),
        sa.ForeignKeyConstraint(["ats_code"], ["ats.code"], name=op.f("fk_providers_ats_code_ats")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_providers")),
        sa.UniqueConstraint("code", name=op.f("uq_providers_code")),
    )
    op.create_table(
        "enrolment_episodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "eligible",
                "invited",
                "gestore_chosen",
                "pact_signed",
                "pai_active",
                "suspended",
                "withdrawn",
                "deceased",
                "ended",
                name="state",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("state_since", sa.Date(), nullable=False, comment="effective date of the current state"),
        sa.Column("gestore_id", sa.Integer(), nullable=True),
        sa.Column("clinical_manager_id", sa.Integer(), nullable=True),
        sa.Column("case_manager_id", sa.Integer(), nullable=True),
        sa.Column("opened_run_id", sa.Integer(), nullable=True),
        sa.Column("level_at_opening", sa.SmallInteger(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_on", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_manager_id"], ["practitioners.id"], name=op.f("fk_enrolment_episodes_case_manager_id_practitioners")
        ),
        sa.ForeignKeyConstraint(
            ["clinical_manager_id"],
            ["practitioners.id"],
            name=op.f("fk_enrolment_episodes_clinical_manager_id_practitioners"),
        ),
        sa.ForeignKeyConstraint(["gestore_id"], ["gestori.id"], name=op.f("fk_enrolment_episodes_gestore_id_gestori")),
        sa.ForeignKeyConstraint(
            ["opened_run_id"],
            ["stratification_runs.id"],
            name=op.f("fk_enrolment_episodes_opened_run_id_stratification_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_enrolment_episodes_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment_episodes")),
    )
    op.create_index("ix_enrolment_episodes_gestore_state", "enrolment_episodes", ["gestore_id", "state"], unique=False)
    op.create_index(op.f("ix_enrolment_episodes_patient_id"), "enrolment_episodes", ["patient_id"], unique=False)
    op.create_index(op.f("ix_enrolment_episodes_state"), "enrolment_episodes", ["state"], unique=False)
    op.create_index(
        "uq_enrolment_episodes_open_patient",
        "enrolment_episodes",
        ["patient_id"],
        unique=True,
        postgresql_where=sa.text("closed_on IS NULL"),
        sqlite_where=sa.text("closed_on IS NULL"),
    )
    op.create_table(
        "gestore_network",
        sa.Column("gestore_id", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("joined_on", sa.Date(), nullable=False),
        sa.Column("left_on", sa.Date(), nullable=True),
        sa.CheckConstraint("left_on IS NULL OR left_on >= joined_on", name=op.f("ck_gestore_network_period_ordered")),
        sa.ForeignKeyConstraint(
            ["gestore_id"], ["gestori.id"], name=op.f("fk_gestore_network_gestore_id_gestori"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_gestore_network_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("gestore_id", "provider_id", name=op.f("pk_gestore_network")),
    )
    op.create_index(op.f("ix_gestore_network_provider_id"), "gestore_network", ["provider_id"], unique=False)
    op.create_table(
        "practitioner_roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practitioner_id", sa.Integer(), nullable=False),
        sa.Column("gestore_id", sa.Integer(), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "clinical_manager",
                "case_manager",
                "operator",
                "specialist",
                name="role",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("start_on", sa.Date(), nullable=False),
        sa.Column("end_on", sa.Date(), nullable=True),
        sa.CheckConstraint("end_on IS NULL OR end_on >= start_on", name=op.f("ck_practitioner_roles_period_ordered")),
        sa.ForeignKeyConstraint(["gestore_id"], ["gestori.id"], name=op.f("fk_practitioner_roles_gestore_id_gestori")),
        sa.ForeignKeyConstraint(
            ["practitioner_id"], ["practitioners.id"], name=op.f("fk_practitioner_roles_practitioner_id_practitioners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_practitioner_roles")),
    )
    op.create_index("ix_practitioner_roles_gestore_role", "practitioner_roles", ["gestore_id", "role"], unique=False)
    op.create_index(
        op.f("ix_practitioner_roles_practitioner_id"), "practitioner_roles", ["practitioner_id"], unique=False
    )
    op.create_table(
        "provider_services",
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("service_code", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_provider_services_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("provider_id", "service_code", name=op.f("pk_provider_services")),
    )
    op.create_index(op.f("ix_provider_services_service_code"), "provider_services", ["service_code"], unique=False)
    op.create_table(
        "care_pacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("gestore_id", sa.Integer(), nullable=False),
        sa.Column("clinical_manager_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "draft", "signed", "superseded", "revoked", name="status", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("drafted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drafted_by", sa.String(length=100), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=100), nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status <> 'revoked' OR (revoked_at IS NOT NULL AND revoked_by IS NOT NULL "
            "AND revocation_reason IS NOT NULL)",
            name=op.f("ck_care_pacts_revocation_recorded"),
        ),
        sa.CheckConstraint("status = 'draft' OR signed_at IS NOT NULL", name=op.f("ck_care_pacts_signature_recorded")),
        sa.ForeignKeyConstraint(
            ["clinical_manager_id"], ["practitioners.id"], name=op.f("fk_care_pacts_clinical_manager_id_practitioners")
        ),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["enrolment_episodes.id"], name=op.f("fk_care_pacts_episode_id_enrolment_episodes")
        ),
        sa.ForeignKeyConstraint(["gestore_id"], ["gestori.id"], name=op.f("fk_care_pacts_gestore_id_gestori")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_care_pacts_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_pacts")),
        sa.UniqueConstraint("episode_id", "version", name=op.f("uq_care_pacts_episode_id_version")),
    )
    op.create_index(op.f("ix_care_pacts_patient_id"), "care_pacts", ["patient_id"], unique=False)
    op.create_table(
        "enrolment_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column(
            "from_state",
            sa.Enum(
                "eligible",
                "invited",
                "gestore_chosen",
                "pact_signed",
                "pai_active",
                "suspended",
                "withdrawn",
                "deceased",
                "ended",
                name="from_state",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=True,
        ),
        sa.Column(
            "to_state",
            sa.Enum(
                "eligible",
                "invited",
                "gestore_chosen",
                "pact_signed",
                "pai_active",
                "suspended",
                "withdrawn",
                "deceased",
                "ended",
                name="to_state",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("effective_on", sa.Date(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["enrolment_episodes.id"], name=op.f("fk_enrolment_events_episode_id_enrolment_episodes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment_events")),
        sa.UniqueConstraint("episode_id", "seq", name=op.f("uq_enrolment_events_episode_id_seq")),
    )
    op.create_table(
        "invitations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["invitation_batches.id"], name=op.f("fk_invitations_batch_id_invitation_batches")
        ),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["enrolment_episodes.id"], name=op.f("fk_invitations_episode_id_enrolment_episodes")
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_invitations_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("episode_id", name=op.f("uq_invitations_episode_id")),
    )
    op.create_index(op.f("ix_invitations_batch_id"), "invitations", ["batch_id"], unique=False)
    op.create_index(op.f("ix_invitations_patient_id"), "invitations", ["patient_id"], unique=False)
    op.create_table(
        "care_pact_scopes",
        sa.Column("pact_id", sa.Integer(), nullable=False),
        sa.Column(
            "scope",
            sa.Enum(
                "care",
                "data_sharing",
                "reminders_sms",
                "reminders_email",
                "telemonitoring",
                name="scope",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["pact_id"], ["care_pacts.id"], name=op.f("fk_care_pact_scopes_pact_id_care_pacts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pact_id", "scope", name=op.f("pk_care_pact_scopes")),
    )
    op.create_table(
        "care_pact_signatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pact_id", sa.Integer(), nullable=False),
        sa.Column(
            "signer_role",
            sa.Enum(
                "patient",
                "legal_representative",
                "clinical_manager",
                name="signer_role",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("signer_name", sa.String(length=200), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["pact_id"], ["care_pacts.id"], name=op.f("fk_care_pact_signatures_pact_id_care_pacts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_pact_signatures")),
        sa.UniqueConstraint("pact_id", "signer_role", name=op.f("uq_care_pact_signatures_pact_id_signer_role")),
    )
    op.create_table(
        "care_plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("pact_id", sa.Integer(), nullable=False),
        sa.Column("start_on", sa.Date(), nullable=False),
        sa.Column("end_on", sa.Date(), nullable=False),
        sa.Column("municipality", sa.String(length=6), nullable=True),
        sa.Column(
            "status",
            sa.Enum("draft", "active", "completed", name="status", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("age", sa.SmallInteger(), nullable=False),
        sa.Column("sex", sa.String(length=1), nullable=False),
        sa.Column("pathologies", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column(
            "pathways",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
            comment="the PDTA templates merged",
        ),
        sa.Column(
            "generic_follow_up",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
            comment="pathologies without a template: the clinician completes the plan",
        ),
        sa.Column("templates_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activated_by", sa.String(length=100), nullable=True),
        sa.CheckConstraint("current_version >= 1", name=op.f("ck_care_plans_version_positive")),
        sa.CheckConstraint("end_on > start_on", name=op.f("ck_care_plans_period_ordered")),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["enrolment_episodes.id"], name=op.f("fk_care_plans_episode_id_enrolment_episodes")
        ),
        sa.ForeignKeyConstraint(["pact_id"], ["care_pacts.id"], name=op.f("fk_care_plans_pact_id_care_pacts")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_care_plans_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_plans")),
    )
    op.create_index(op.f("ix_care_plans_episode_id"), "care_plans", ["episode_id"], unique=False)
    op.create_index(op.f("ix_care_plans_patient_id"), "care_plans", ["patient_id"], unique=False)
    op.create_table(
        "care_plan_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=True, comment="add, drop or move; null for version 1"),
        sa.Column("activity_id", sa.String(length=96), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("from_day", sa.Date(), nullable=True),
        sa.Column("to_day", sa.Date(), nullable=True),
        sa.CheckConstraint(
            "version = 1 OR (action IS NOT NULL AND reason IS NOT NULL)",
            name=op.f("ck_care_plan_versions_change_explained"),
        ),
        sa.ForeignKeyConstraint(["plan_id"], ["care_plans.id"], name=op.f("fk_care_plan_versions_plan_id_care_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_plan_versions")),
        sa.UniqueConstraint("plan_id", "version", name=op.f("uq_care_plan_versions_plan_id_version")),
    )
    op.create_table(
        "plan_activities",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.String(length=96), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("origin", sa.String(length=12), nullable=False),
        sa.Column("key", sa.String(length=96), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("discipline", sa.String(length=64), nullable=True),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("description_it", sa.Text(), nullable=False),
        sa.Column("description_en", sa.Text(), nullable=False),
        sa.Column("times_per_year", sa.Double(), nullable=False),
        sa.Column("precedes_visit", sa.Boolean(), nullable=False),
        sa.Column("pathways", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("conditions", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["care_plan_versions.id"], name=op.f("fk_plan_activities_version_id_care_plan_versions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_activities")),
        sa.UniqueConstraint("version_id", "activity_id", name=op.f("uq_plan_activities_version_id_activity_id")),
    )
    op.create_index(op.f("ix_plan_activities_day"), "plan_activities", ["day"], unique=False)

    ats = sa.table("ats", sa.column("code", sa.String), sa.column("name", sa.String))
    op.bulk_insert(ats, [{"code": code, "name": name} for code, name in ATS])
    dialect = op.get_bind().dialect.name
    for statement in APPEND_ONLY_POSTGRESQL if dialect == "postgresql" else APPEND_ONLY_SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION presa_refuse_audit_change()")
    for table in TABLES_NEWEST_FIRST:
        op.drop_table(table)


TABLES_NEWEST_FIRST = (
    "plan_activities",
    "care_plan_versions",
    "care_plans",
    "care_pact_signatures",
    "care_pact_scopes",
    "invitations",
    "enrolment_events",
    "care_pacts",
    "provider_services",
    "practitioner_roles",
    "gestore_network",
    "enrolment_episodes",
    "providers",
    "practitioners",
    "patients",
    "patient_strata",
    "invitation_batches",
    "gestore_ats",
    "stratification_runs",
    "gestori",
    "audit_events",
    "ats",
)
