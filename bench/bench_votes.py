"""Vote burst benchmark: 10,000 readers vote within a minute, through the real `digest web`,
while a sender claims and settles batches of another week in the same database.

    .venv/bin/python bench/bench_votes.py [--votes 10000] [--rate 167] [--postgres]

`digest web` runs as its own process (uvicorn, as ops run it) on a SQLite file in WAL mode, or
on PostgreSQL (`--postgres` starts a throwaway cluster, `--database-url` uses yours). Each vote
is what a reader's browser does: GET the link (the page and its CSRF cookie), then POST the
form. Votes start at `--rate` per second (10,000 in a minute is 167/s) on 64 connections, so a
slow server shows as growing latency, not as a slower client. Meanwhile a sender thread claims
batches of 1,000 rows of the next week, holds each 0.2 s as a provider call would, and marks it
sent; it does the same once before the burst for a baseline. Prints the latencies of votes and
of the sender's two transactions, the CPU each side spent per vote, and checks that every vote
was stored once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402  (the health check only)
from sqlalchemy import func, select, update  # noqa: E402

from digest.config import Settings  # noqa: E402
from digest.db import ensure_schema, get_engine  # noqa: E402
from digest.delivery import ledger  # noqa: E402
from digest.links import Links  # noqa: E402
from digest.models import DELIVERY_TABLE, VOTE_TABLE  # noqa: E402
from digest.run import preparation  # noqa: E402
from digest.weeks import IsoWeek  # noqa: E402
from tests.support.ledger_data import make_subscribers  # noqa: E402
from tests.support.scenario import WEEK, seed  # noqa: E402
from tests.support.sent_week import NEXT_WEEK, next_week_tools  # noqa: E402

_CSRF = re.compile(rb'name="csrf" value="([^"]+)"')
SECRET = "bench-secret-key-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare(settings: Settings, folder: Path, readers: int) -> tuple[int, int]:
    """WEEK planned and marked sent to `readers` people; NEXT_WEEK planned, all pending."""
    engine = ensure_schema(settings.database_url)
    seed(settings, folder, subscribers=2)
    make_subscribers(engine, readers, start=100)
    from digest.catalog.importer import import_catalog
    from digest.db import session_scope
    from tests.support.factories import write_catalog

    with session_scope(engine) as session:
        import_catalog(session=session, path=write_catalog(folder / "next.json", next_week_tools()))
    edition = preparation.Edition.from_settings(settings)
    ids = []
    for week in (WEEK, NEXT_WEEK):
        prepared = preparation.prepare_digest(engine, edition, IsoWeek.parse(week), freeze=True)
        assert prepared.digest_id is not None
        preparation.plan(engine, edition, prepared)
        ids.append(prepared.digest_id)
    with engine.begin() as connection:
        connection.execute(
            update(DELIVERY_TABLE)
            .where(DELIVERY_TABLE.c.digest_id == ids[0], DELIVERY_TABLE.c.state == "pending")
            .values(state="sent")
        )
    return ids[0], ids[1]


def vote_links(settings: Settings, digest_id: int, count: int) -> list[str]:
    links = Links.from_settings(settings)
    with get_engine(settings.database_url).connect() as connection:
        rows = connection.execute(
            select(DELIVERY_TABLE.c.id)
            .where(
                DELIVERY_TABLE.c.digest_id == digest_id,
                DELIVERY_TABLE.c.state == "sent",
                DELIVERY_TABLE.c.email != "writer@example.com",  # Writing only: no such tools
            )
            .order_by(DELIVERY_TABLE.c.id)
            .limit(count)
        ).scalars()
        slugs = ["code-llama-4", "mistral-3-8b", "patchpilot", "stackscribe"]
        return [
            links.vote(links.vote_token(int(did)), slugs[i % 4], ("ship", "skip")[i % 2])
            for i, did in enumerate(rows)
        ]


class Sender(threading.Thread):
    """Claims batches of the next week as a sender lane does, timing each transaction."""

    def __init__(self, settings: Settings, digest_id: int, batches: int, hold: float) -> None:
        super().__init__(daemon=True)
        self.engine = get_engine(settings.database_url)
        self.digest_id, self.batches, self.hold = digest_id, batches, hold
        self.claims: list[float] = []
        self.marks: list[float] = []

    def run(self) -> None:
        owner = ledger.new_owner()
        ledger.acquire_lease(self.engine, digest_id=self.digest_id, owner=owner, ttl_seconds=600)
        with self.engine.connect() as connection:
            variant = next(iter(ledger.pending_by_variant(connection, digest_id=self.digest_id)))
        for _ in range(self.batches):
            clock = time.perf_counter()
            with self.engine.begin() as connection:
                claimed = ledger.claim_batch(
                    connection,
                    digest_id=self.digest_id,
                    variant_id=variant,
                    owner=owner,
                    limit=1000,
                    while_leased=True,
                )
            self.claims.append(time.perf_counter() - clock)
            time.sleep(self.hold)  # the provider call
            clock = time.perf_counter()
            with self.engine.begin() as connection:
                ledger.mark_sent(connection, batch=claimed, message_id="bench")
            self.marks.append(time.perf_counter() - clock)
        ledger.release_lease(self.engine, digest_id=self.digest_id, owner=owner)


class Connection:
    """One keep-alive HTTP/1.1 connection, as little client as a browser's request needs: a
    full HTTP library here cost more CPU per vote than the server it measured."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            status_line, headers = await _read_head(reader)
            length = int(headers.get("content-length", "0"))
            content = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.streams = None  # the server closed an idle connection: open a new one
            raise
        if headers.get("connection") == "close":
            writer.close()
            self.streams = None
        return int(status_line.split()[1]), headers, content


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers.setdefault(name.strip().lower(), value.strip())
    return lines[0], headers


async def one_vote(connection: Connection, host: str, path: str) -> None:
    """A reader's browser: GET the link, then POST its form with the cookie it set."""
    status, headers, page = await connection.request(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n")
    found = _CSRF.search(page)
    assert status == 200 and found, status
    cookie = headers.get("set-cookie", "").split(";")[0]
    form = f"csrf={found.group(1).decode()}&choice={path[-4:]}".encode()
    status, _headers, _page = await connection.request(
        f"POST {path.split('?')[0]} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n",
        form,
    )
    assert status == 200, status


async def burst(base: str, links: list[str], rate: float, connections: int) -> dict[str, object]:
    """Start one vote every 1/rate s on the next free connection of `connections`."""
    host = base.removeprefix("http://")
    name, _, port = host.partition(":")
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection(name, int(port)))
    latencies: list[float] = []
    failures: dict[str, int] = {}

    async def vote(link: str) -> None:
        connection = await pool.get()
        started = time.perf_counter()
        try:
            await one_vote(connection, host, link[len(base) :])
            latencies.append(time.perf_counter() - started)
        except (AssertionError, OSError, asyncio.IncompleteReadError) as exc:
            kind = f"{type(exc).__name__} {exc}"[:60]
            failures[kind] = failures.get(kind, 0) + 1
        finally:
            pool.put_nowait(connection)

    started = time.perf_counter()
    tasks = []
    for index, link in enumerate(links):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(vote(link)))
    await asyncio.gather(*tasks)
    return {"elapsed": time.perf_counter() - started, "latencies": latencies, "failures": failures}


def quantiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return (
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {pick(0.95):.1f} ms, "
        f"p99 {pick(0.99):.1f} ms, max {ordered[-1] * 1000:.1f} ms"
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_web(env: dict[str, str], folder: Path, port: int) -> subprocess.Popen[bytes]:
    web = subprocess.Popen(
        [str(Path(sys.executable).with_name("digest")), "web", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=(folder / "web.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return web
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or web.poll() is not None:
            raise RuntimeError((folder / "web.log").read_text()[-3000:])
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=10_000 / 60)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--postgres", action="store_true", help="on a throwaway PostgreSQL cluster (initdb)"
    )
    arguments = parser.parse_args()
    if arguments.postgres:
        from tests.support.postgres import start_postgres

        server = start_postgres()
        try:
            arguments.database_url = server.create_database()
            run(arguments)
        finally:
            server.stop()
        return
    run(arguments)


def run(arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        port = free_port()
        url = arguments.database_url or f"sqlite:///{folder}/bench.db"
        env = {
            **os.environ,
            "DIGEST_DATABASE_URL": url,
            "DIGEST_SECRET_KEY": SECRET,
            "DIGEST_SITE_URL": f"http://127.0.0.1:{port}",
            # Ten thousand readers come from ten thousand addresses; here all come from
            # 127.0.0.1, so the per-client limits are lifted to the server-wide one.
            "DIGEST_WEB_CONNECTIONS_PER_CLIENT": "1000",
            "DIGEST_WEB_BODIES_PER_CLIENT": "1000",
        }
        os.environ.update(env)
        os.chdir(folder)
        settings = Settings()
        clock = time.perf_counter()
        sent_week, next_week = prepare(settings, folder, arguments.votes + 30_000)
        print(f"prepared {arguments.votes + 30_002} readers in {time.perf_counter() - clock:.0f} s")
        links = vote_links(settings, sent_week, arguments.votes)
        baseline = Sender(settings, next_week, batches=10, hold=0.2)
        baseline.run()
        web = start_web(env, folder, port)
        try:
            during = Sender(settings, next_week, batches=20, hold=0.2)
            during.start()
            web_cpu, own_cpu = cpu_seconds(web.pid), time.process_time()
            result = asyncio.run(
                burst(f"http://127.0.0.1:{port}", links, arguments.rate, arguments.connections)
            )
            web_cpu, own_cpu = cpu_seconds(web.pid) - web_cpu, time.process_time() - own_cpu
            during.join()
        finally:
            web.terminate()
            web.wait(timeout=30)
        with get_engine(url).connect() as connection:
            stored = connection.execute(select(func.count()).select_from(VOTE_TABLE)).scalar()
        latencies = result["latencies"]
        assert isinstance(latencies, list)
        print(f"database: {url.split(':')[0]}; load average {os.getloadavg()[0]:.1f} on 2 cores")
        print(
            f"votes: {len(latencies)} of {len(links)} in {result['elapsed']:.1f} s "
            f"(offered {arguments.rate:.0f}/s); stored {stored}; failures {result['failures']}"
        )
        print(f"vote (GET + POST): {quantiles(latencies)}")
        print(
            f"CPU per vote: digest web {web_cpu / max(len(latencies), 1) * 1000:.1f} ms, "
            f"this client (and the sender) {own_cpu / max(len(latencies), 1) * 1000:.1f} ms"
        )
        print(f"sender claim, at rest:     {quantiles(baseline.claims)}")
        print(f"sender claim, during:      {quantiles(during.claims)}")
        print(f"sender mark sent, at rest: {quantiles(baseline.marks)}")
        print(f"sender mark sent, during:  {quantiles(during.marks)}")


if __name__ == "__main__":
    main()
