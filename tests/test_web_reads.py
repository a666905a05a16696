"""The work list answered on the event loop (``presa.web.reads``), on PostgreSQL: through its own pool of psycopg
connections, a page and its audit rows in one statement; a rested connection closed meanwhile is replaced. On
SQLite the same requests run in the thread pool; both write one audit row per patient shown, and only for them.
Without its database the API answers 503, by either way."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from presa.care.store import make_engine
from presa.care.store.database import normalise_url
from presa.web.app import create_app
from presa.web.reads import ReadPool
from tests.conftest import Api
from tests.liveserver import KEY, LiveServer
from tests.pgserver import PgServer, free_port

FOLLOWUP_WORLD = True


def _list_audit_rows(database: str, actor: str) -> list[int]:
    engine = make_engine(database)
    try:
        with engine.connect() as connection:
            query = "SELECT patient_id FROM audit_events WHERE actor = :actor AND action = 'list' ORDER BY id"
            return list(connection.execute(text(query), {"actor": actor}).scalars())
    finally:
        engine.dispose()


def test_a_page_writes_an_audit_row_per_patient_shown(api: Api, api_database: str) -> None:
    w = api.world
    before = _list_audit_rows(api_database, "case1")
    everything = api.http.get("/api/work-items", params={"limit": 500}, headers=w.headers("case1")).json()["items"]
    shown = {item["patient_id"] for item in everything}
    assert len(everything) >= 2 and shown == {w.patients["A1"]}  # several items, one patient: one row
    first = api.http.get("/api/work-items", params={"limit": 1}, headers=w.headers("case1")).json()
    assert first["next_cursor"] and len(first["items"]) == 1  # the row read to know more follow is not shown
    nothing = api.http.get("/api/work-items", params={"kind": "plan_renewal"}, headers=w.headers("case1")).json()
    assert nothing["items"] == []
    assert _list_audit_rows(api_database, "case1")[len(before) :] == [w.patients["A1"], w.patients["A1"]]

    refused = api.http.get("/api/work-items", headers={"Authorization": "Bearer presa_nonsense"})
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert api.http.get("/api/work-items", headers=w.headers("patient1")).status_code == 403


def test_on_postgresql_the_list_is_read_by_the_event_loops_connections(
    api: Api, api_database: str, backend: str
) -> None:
    if backend != "postgresql":  # SQLite has no read pool: the thread pool answers there
        assert create_app(api_database, key=KEY).state.presa.reads is None
        return
    response = api.http.get(
        "/api/work-items", params={"kind": ["overdue", "not_booked"]}, headers=api.world.headers("case1")
    )
    assert response.status_code == 200
    engine = make_engine(api_database)
    try:
        with engine.connect() as connection:
            queries = (
                connection.execute(
                    text(
                        "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = 'presa-reads'"
                    )
                )
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert any(query.startswith("WITH page AS") for query in queries)  # the page with its audit rows (the text
    # shown is cut short by the server)


def test_a_rested_read_connection_closed_meanwhile_is_replaced(pg_server: PgServer) -> None:
    url = normalise_url(pg_server.url(pg_server.maintenance_db))

    async def backends() -> tuple[int, int]:
        pool = ReadPool(url, size=1, rest=0.0)  # every connection has rested long enough to be tried
        await pool.open()
        try:
            async with pool.connection() as connection:
                first = (await (await connection.execute("SELECT pg_backend_pid()")).fetchone())[0]
            admin = make_engine(url)
            with admin.connect() as other:  # the pooled connection's backend ends, unseen by the pool
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            admin.dispose()
            async with pool.connection() as connection:
                second = (await (await connection.execute("SELECT pg_backend_pid()")).fetchone())[0]
            return first, second
        finally:
            await pool.close()

    first, second = asyncio.run(backends())
    assert second != first


def test_without_its_database_the_api_answers_503_not_500() -> None:
    """The database unreachable: every request, by either way to the database, says so (503, Retry-After), and
    nothing is carried out."""
    server = LiveServer(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/presa_nowhere")
    state = server.server.config.app.state.presa
    state.reads = ReadPool(state.engine.url, size=2, rest=5.0, timeout=0.5)  # not 10 s, for the test
    with server, server.client() as http:
        headers = {"Authorization": "Bearer presa_anything"}
        for path in ("/api/me", "/api/work-items"):
            response = http.get(path, headers=headers)
            assert response.status_code == 503, (path, response.text)
            assert "database is unavailable" in response.json()["detail"] and response.headers["Retry-After"] == "5"
