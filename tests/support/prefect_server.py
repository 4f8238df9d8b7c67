"""A real `prefect server start` on 127.0.0.1 for tests that need a long-lived API.

Subprocesses pointed at it with PREFECT_API_URL skip the ephemeral server's start-up, and the
deployment tests talk to it exactly as ops do.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The prefect command installed beside this interpreter.
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PrefectServer:
    api_url: str
    home: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def migrated_prefect_database(shared: Path) -> Path:
    """A Prefect database with every migration applied, made once for the whole test run.

    Prefect migrates a new database when its server starts: 6.5 of the 10.5 s of CPU a server
    start costs here. Every pytest-xdist worker gets `shared` (the run's own temporary folder);
    the first to ask migrates, under a lock, and the others copy its result.
    """
    folder = shared / "prefect-migrated"
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "prefect.db"
    with (folder / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "ready").exists():
            env = {**os.environ, "PREFECT_HOME": str(folder)}
            env.pop("PREFECT_API_URL", None)
            done = subprocess.run(
                [PREFECT, "server", "database", "upgrade", "-y"],
                env=env,
                check=False,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"prefect could not migrate a database:\n{done.stderr[-3000:]}")
            (folder / "ready").touch()
    return database


def seed_prefect_home(home: Path, database: Path) -> Path:
    """`home` as it is after Prefect's first start: its database already migrated."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(database, home / "prefect.db")
    # Nothing has it open any more, so a write-ahead log left beside it goes with it.
    log = database.with_name("prefect.db-wal")
    if log.exists():
        shutil.copyfile(log, home / "prefect.db-wal")
    return home


def start_prefect_server(home: Path) -> PrefectServer:
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api_url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited early:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return PrefectServer(
                        api_url=api_url, home=home, process=process, log_path=log_path
                    )
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"prefect server did not answer in 180 s:\n{log_path.read_text()[-3000:]}")


def deliver_queued_logs_and_events() -> None:
    """Let this process's Prefect log and event workers send what they hold, a few seconds at
    most: Prefect sends both from background threads that otherwise drain at interpreter exit."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def wait_for_deployment(client: Any, serve: subprocess.Popen[bytes], log: Path) -> Any:
    """The deployment `digest serve` registers, once it has; fails with serve's log if it dies."""
    deadline = time.monotonic() + 120
    while True:
        assert serve.poll() is None, log.read_text()[-3000:]
        try:
            return client.read_deployment_by_name("weekly-digest/weekly")
        except Exception:
            assert time.monotonic() < deadline, "digest serve did not register the deployment"
            time.sleep(1)


def delete_deployments(api_url: str, *names: str) -> None:
    """Delete the deployments named `flow/deployment` that exist on the server at `api_url`,
    through the client: a `prefect deployment delete` process costs 4 s of CPU for the same."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        for name in names:
            try:
                deployment = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            client.delete_deployment(deployment.id)
