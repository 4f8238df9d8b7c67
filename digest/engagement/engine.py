"""The engine readers' votes and visits are written through.

On PostgreSQL it is the process's engine. On SQLite it is an engine of its own whose connections
commit without waiting for the disk (`synchronous=NORMAL` in WAL mode): a vote stays safe if
`digest web` crashes, and only a power cut or an OS crash can lose the last moments of votes.
Measured with bench/bench_votes.py (2 shared cores, loaded): a commit that waits for the disk
held SQLite's one write lock about 3.5 ms, so 10,000 votes in a minute (two writes each) kept
the lock taken more than all the time, and the sender's claims queued behind them for seconds;
without the wait a commit holds it well under a millisecond. The ledger, unsubscribes and
provider events keep their own engine, which does wait for the disk.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

from digest.db import get_engine


def _configure(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # As digest.db's engines do: keys enforced, WAL, wait for a writer rather than fail.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@lru_cache(maxsize=8)
def reader_engine(url: str) -> Engine:
    """The engine for votes and visits of the database at `url` (one per URL per process)."""
    if not url.startswith("sqlite"):
        return get_engine(url)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
    )
    event.listen(engine, "connect", _configure)
    return engine
