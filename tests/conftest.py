"""Shared fixtures: an isolated working folder and settings per test, SQLite and a real
PostgreSQL server, and one real Prefect server for the session."""

from __future__ import annotations

import os
import shutil

# Prefect reads these at import time: no analytics, and room for a slow first server start.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# `digest serve` and `prefect worker start` look for their runs every second, not every 10 s:
# each run a test hands them would otherwise wait 5 s on average to be picked up.
os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", "1")

from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.config import Settings, get_settings
from digest.db import get_engine, upgrade
from tests.support import cli
from tests.support.postgres import PostgresServer, server_from_env, start_postgres
from tests.support.prefect_server import (
    PrefectServer,
    deliver_queued_logs_and_events,
    migrated_prefect_database,
    seed_prefect_home,
    start_prefect_server,
)

TEST_SECRET = "test-signing-key-not-for-production-0123456789"

_DIGEST_ENV = [
    name for name in os.environ if name.startswith("DIGEST_") or name == "SENDGRID_API_KEY"
]


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test runs in its own folder with default settings and a fixed signing key."""
    for name in _DIGEST_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGEST_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{tmp_path / 'digest.db'}")
    monkeypatch.setenv("DIGEST_OUTBOX_DIR", str(tmp_path / "outbox"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def session_prefect_for_cli(request: pytest.FixtureRequest) -> Iterator[None]:
    """`run_digest("run", ...)` in this process uses the session's Prefect server, started on
    first use, where a process would start a temporary one of its own."""
    cli.session_prefect_api = lambda: request.getfixturevalue("prefect_server").api_url
    yield
    cli.session_prefect_api = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    external = server_from_env()
    if external is not None:
        yield external
        return
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'digest.db'}"


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database at the newest migration: a test that wants a schema gets a copy, which
    costs nothing where Alembic takes 45 ms a test."""
    path = tmp_path_factory.mktemp("schema") / "migrated.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    # Its last connection closed, SQLite moves the write-ahead log into the file: copying the
    # file alone would otherwise miss the tables still in the log.
    get_engine(url).dispose()
    assert not path.with_name("migrated.db-wal").exists()
    return path


@pytest.fixture(scope="session")
def migrated_postgres(postgres_server: PostgresServer) -> str:
    """The name of a PostgreSQL database at the newest migration, the template of the databases
    of tests that want a schema (a new database migrated by Alembic takes 140 ms a test there,
    a copy of this one 50)."""
    url = postgres_server.create_database()
    upgrade(url)
    get_engine(url).dispose()  # PostgreSQL copies no template that has a connection open
    return url.rsplit("/", 1)[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on PostgreSQL: an empty database, or one at the newest
    migration when the test asks for `settings`."""
    with_schema = "settings" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "digest.db"
        if with_schema:
            shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        return f"sqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("migrated_postgres") if with_schema else None
    return server.create_database(template=template)


@pytest.fixture
def settings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings pointing at `database_url`, whose schema is at the newest migration."""
    monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(scope="session")
def migrated_prefect_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Prefect database, made once for the run and shared by the xdist workers."""
    run_folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_folder = run_folder.parent  # the workers' folders sit side by side in the run's
    return migrated_prefect_database(run_folder)


@pytest.fixture(scope="session")
def prefect_server(
    tmp_path_factory: pytest.TempPathFactory, migrated_prefect_db: Path
) -> Iterator[PrefectServer]:
    """The session's Prefect API: a real `prefect server start` on 127.0.0.1, started on first use.

    Flows run in this process, `digest` commands run in this process and those run as processes
    all use it; only the tests of `digest run`'s own temporary server start another.
    """
    home = seed_prefect_home(tmp_path_factory.mktemp("prefect-home"), migrated_prefect_db)
    server = start_prefect_server(home)
    try:
        yield server
    finally:
        # Logs and events still queued for it are delivered while it answers: left for the
        # interpreter's exit, each would be retried against a server already gone.
        deliver_queued_logs_and_events()
        server.stop()


@pytest.fixture(scope="session")
def prefect_harness(prefect_server: PrefectServer) -> Iterator[None]:
    """Flows called in this process talk to the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use PostgreSQL `postgres`, so `-m "not postgres"` leaves them out."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            "postgres_server" in names
            or "postgres_url" in names
            or params.get("database_url") == "postgresql"
        ):
            item.add_marker(pytest.mark.postgres)
