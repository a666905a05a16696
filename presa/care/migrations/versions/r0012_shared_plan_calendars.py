"""Plan activities stored once per distinct calendar and shared by the versions that have it.

``plan_activities`` held every version's dated activities: 4.07 million rows for a million residents' 324,559
plans, of which 7,555 distinct calendars. Storing them cost more than the rest of plan generation, and the
target of 10,000 plans/s was out of reach even for a plain COPY of those rows (docs/PERFORMANCE.md). Now
``plan_calendars`` (one row per distinct calendar, found by the SHA-256 of its activities) and
``plan_calendar_activities`` (its activities, keyed by calendar and activity id, with their position) hold them,
and ``care_plan_versions.calendar_id`` names each version's calendar.

The upgrade makes the calendars of the versions already stored - the digest computed as
``presa.care.store.calendars.calendar_digest`` computed it when this migration was written, so that later
versions with the same activities share them - and the downgrade copies each version's activities back.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DESCRIBED = (
    "origin",
    "key",
    "code",
    "kind",
    "discipline",
    "provider",
    "description_it",
    "description_en",
    "times_per_year",
    "precedes_visit",
    "pathways",
    "conditions",
)
BATCH = 5_000


def upgrade() -> None:
    op.create_table(
        "plan_calendars",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("activities", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_calendars")),
        sa.UniqueConstraint("digest", name=op.f("uq_plan_calendars_digest")),
    )
    op.create_table(
        "plan_calendar_activities",
        sa.Column("calendar_id", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.String(length=96), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, comment="the activity's place in the plan, from 0"),
        sa.Column("day", sa.Date(), nullable=False),
        *_described_columns(),
        sa.ForeignKeyConstraint(
            ["calendar_id"], ["plan_calendars.id"], name=op.f("fk_plan_calendar_activities_calendar_id_plan_calendars")
        ),
        sa.PrimaryKeyConstraint("calendar_id", "activity_id", name=op.f("pk_plan_calendar_activities")),
    )
    op.create_index(op.f("ix_plan_calendar_activities_day"), "plan_calendar_activities", ["day"], unique=False)
    with op.batch_alter_table("care_plan_versions") as batch:
        batch.add_column(sa.Column("calendar_id", sa.Integer(), nullable=True, comment="the version's activities"))
    _calendars_of_stored_versions()
    # Before the versions' table is rebuilt (SQLite's batch): its rows must have no other table's rows naming them.
    op.drop_index(op.f("ix_plan_activities_day"), table_name="plan_activities")
    op.drop_table("plan_activities")
    with op.batch_alter_table("care_plan_versions") as batch:
        batch.alter_column("calendar_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(
            op.f("fk_care_plan_versions_calendar_id_plan_calendars"), "plan_calendars", ["calendar_id"], ["id"]
        )


def downgrade() -> None:
    op.create_table(
        "plan_activities",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.String(length=96), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *_described_columns(),
        sa.ForeignKeyConstraint(
            ["version_id"], ["care_plan_versions.id"], name=op.f("fk_plan_activities_version_id_care_plan_versions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_activities")),
        sa.UniqueConstraint("version_id", "activity_id", name=op.f("uq_plan_activities_version_id_activity_id")),
    )
    op.create_index(op.f("ix_plan_activities_day"), "plan_activities", ["day"], unique=False)
    # The versions' table is rebuilt on SQLite (batch) while plan_activities is still empty: keep their calendars.
    op.execute("CREATE TABLE version_calendars AS SELECT id AS version_id, calendar_id FROM care_plan_versions")
    with op.batch_alter_table("care_plan_versions") as batch:
        batch.drop_constraint(op.f("fk_care_plan_versions_calendar_id_plan_calendars"), type_="foreignkey")
        batch.drop_column("calendar_id")
    columns = ", ".join(("activity_id", "day", *DESCRIBED))
    op.execute(
        f"INSERT INTO plan_activities (version_id, {columns}) "
        f"SELECT v.version_id, {', '.join('a.' + c for c in ('activity_id', 'day', *DESCRIBED))} "
        "FROM version_calendars v JOIN plan_calendar_activities a ON a.calendar_id = v.calendar_id "
        "ORDER BY v.version_id, a.position"
    )
    op.drop_table("version_calendars")
    op.drop_index(op.f("ix_plan_calendar_activities_day"), table_name="plan_calendar_activities")
    op.drop_table("plan_calendar_activities")
    op.drop_table("plan_calendars")


def _described_columns() -> list[sa.Column[Any]]:
    return [
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
        sa.Column("pathways", JSON, nullable=False),
        sa.Column("conditions", JSON, nullable=False),
    ]


# --- the calendars of the versions stored before ---------------------------------------------------------------


def _calendars_of_stored_versions() -> None:
    """Each stored version's activities, in their stored order, become a calendar (shared when identical)."""
    bind = op.get_bind()
    calendars = sa.table(
        "plan_calendars", sa.column("id", sa.Integer), sa.column("digest", sa.String), sa.column("activities")
    )
    activities = sa.table(
        "plan_calendar_activities",
        *(sa.column(c) for c in ("calendar_id", "activity_id", "position", "day")),
        *(sa.column(c, JSON) if c in ("pathways", "conditions") else sa.column(c) for c in DESCRIBED),
    )
    versions = sa.table("care_plan_versions", sa.column("id", sa.Integer), sa.column("calendar_id", sa.Integer))
    ids: dict[str, int] = {}
    assigned: list[dict[str, int]] = []
    for version_id, rows in _stored_versions(bind):
        digest = _digest(rows)
        if digest not in ids:
            ids[digest] = len(ids) + 1
            bind.execute(calendars.insert(), [{"id": ids[digest], "digest": digest, "activities": len(rows)}])
            bind.execute(
                activities.insert(),
                [{"calendar_id": ids[digest], "position": n, **row} for n, row in enumerate(rows)],
            )
        assigned.append({"version": version_id, "calendar": ids[digest]})
        if len(assigned) >= BATCH:
            _assign(bind, versions, assigned)
    _assign(bind, versions, assigned)
    if ids and bind.dialect.name == "postgresql":  # the ids were given here: the sequence starts after them
        bind.execute(
            sa.text("SELECT setval(pg_get_serial_sequence('plan_calendars', 'id'), :last)"), {"last": len(ids)}
        )
    _versions_without_activities(bind, calendars, versions)


def _stored_versions(bind: sa.Connection) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Each version that has activities, with them in their stored order, read a batch of versions at a time."""
    source = sa.table(
        "plan_activities",
        *(sa.column(c) for c in ("id", "version_id", "activity_id", "day")),
        *(sa.column(c, JSON) if c in ("pathways", "conditions") else sa.column(c) for c in DESCRIBED),
    )
    after = 0
    while True:
        last = bind.execute(
            sa.select(sa.func.max(sa.column("version_id"))).select_from(
                sa.select(source.c.version_id).where(source.c.version_id > after).distinct()
                .order_by(source.c.version_id).limit(BATCH).subquery()
            )
        ).scalar()  # fmt: skip
        if last is None:
            return
        query = (
            sa.select(source.c.version_id, source.c.activity_id, source.c.day, *(source.c[c] for c in DESCRIBED))
            .where(source.c.version_id > after, source.c.version_id <= last)
            .order_by(source.c.version_id, source.c.id)
        )
        current, rows = 0, list[dict[str, Any]]()
        for row in bind.execute(query).mappings():
            if row["version_id"] != current and rows:
                yield current, rows
                rows = []
            current = int(row["version_id"])
            rows.append({k: v for k, v in row.items() if k != "version_id"})
        if rows:
            yield current, rows
        after = int(last)


def _assign(bind: sa.Connection, versions: sa.TableClause, assigned: list[dict[str, int]]) -> None:
    if assigned:
        statement = (
            versions.update()
            .where(versions.c.id == sa.bindparam("version"))
            .values(calendar_id=sa.bindparam("calendar"))
        )
        bind.execute(statement, assigned)
        assigned.clear()


def _versions_without_activities(bind: sa.Connection, calendars: sa.TableClause, versions: sa.TableClause) -> None:
    """A version with no activity at all (every activity dropped) gets the empty calendar."""
    if bind.execute(sa.select(versions.c.id).where(versions.c.calendar_id.is_(None)).limit(1)).first() is None:
        return
    digest = _digest([])
    found = bind.execute(sa.select(calendars.c.id).where(calendars.c.digest == digest)).scalar()
    if found is None:
        found = bind.execute(
            calendars.insert().values(digest=digest, activities=0).returning(calendars.c.id)
        ).scalar_one()
    bind.execute(versions.update().where(versions.c.calendar_id.is_(None)).values(calendar_id=found))


def _digest(rows: list[dict[str, Any]]) -> str:
    """As ``presa.care.store.calendars.calendar_digest`` at revision 0012, from stored rows."""
    canonical = json.dumps([_canonical(row) for row in rows], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _canonical(row: dict[str, Any]) -> list[Any]:
    day = row["day"]
    return [
        row["activity_id"],
        day.isoformat() if isinstance(day, date) else str(day)[:10],
        *(row[c] for c in ("origin", "key", "code", "kind", "discipline", "provider")),
        row["description_it"],
        row["description_en"],
        float(row["times_per_year"]),
        bool(row["precedes_visit"]),
        list(_json_list(row["pathways"])),
        list(_json_list(row["conditions"])),
    ]


def _json_list(value: Any) -> list[Any]:
    return list(json.loads(value) if isinstance(value, str) else value)
