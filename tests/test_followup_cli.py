"""The follow-up's commands on a real store: ``presa reconcile`` and ``presa worklist-refresh``."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from presa.cli import app
from presa.followup.store import ActivityOutcome, WorkItem
from tests.followupbuilder import Flows
from tests.test_followup_worker import committed_patient


def test_reconcile_and_refresh_from_the_command_line(empty_database: str, tmp_path: Path) -> None:
    engine, patient = committed_patient(empty_database, tmp_path)
    flows = (
        Flows()
        .resident("R1")
        .service("R1", patient.activity("90.27.1-01") + timedelta(days=3), "90.27.1")
        .write(tmp_path / "flows")
    )
    url = engine.url.render_as_string(hide_password=False)
    runner = CliRunner()

    first = runner.invoke(app, ["reconcile", str(flows), "--database", url, "--max-date", "2026-09-01"])
    again = runner.invoke(app, ["reconcile", str(flows), "--database", url, "--max-date", "2026-09-01"])
    refresh = runner.invoke(app, ["worklist-refresh", "--database", url, "--today", "2026-06-15"])
    bad = runner.invoke(app, ["worker", "--database", url])

    assert first.exit_code == 0, first.output
    assert "1 services stored" in first.output and "0 rows rejected" in first.output
    assert "reconciled before" in again.output
    assert refresh.exit_code == 0 and "new" in refresh.output
    assert bad.exit_code == 1 and "nothing to send with" in bad.output
    with Session(engine) as db:
        assert db.scalar(select(func.count()).select_from(ActivityOutcome)) == 1
        assert (db.scalar(select(func.count()).select_from(WorkItem)) or 0) > 0
        assert db.scalar(select(func.min(WorkItem.due_on))) < date(2026, 6, 15)  # type: ignore[operator]
    engine.dispose()
