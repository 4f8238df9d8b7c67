"""A Prefect API for `digest run` when none is configured: a temporary server that dies with us.

Prefect's own temporary server outlives a `digest run` killed with SIGKILL (it is reparented to
init and keeps about 200 MB until someone kills it). The server started here asks the kernel for
SIGTERM when its parent dies (Linux `PR_SET_PDEATHSIG`), so no kill of ours leaves it behind,
and it is stopped in the ordinary way when the run ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from digest.errors import ConfigError

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """The child's first act: ask for SIGTERM when the parent dies, or leave if it already has."""

    def arrange() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before the request was made
            os._exit(1)

    return arrange


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def _wait_until_up(process: subprocess.Popen[bytes], api_url: str, log: Path) -> None:
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _answers(api_url):
            return
        time.sleep(0.2)
    process.kill()
    process.wait()
    tail = log.read_text(errors="replace")[-1500:]
    raise ConfigError(
        f"The temporary Prefect server for this run did not start within {timeout:.0f} s. "
        "Point the run at a running server instead (PREFECT_API_URL, as `prefect server "
        f"start` prints it), or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS. Its "
        f"last output:\n{tail}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _deliver_pending_logs_and_events() -> None:
    """Prefect sends logs and events from background workers: let them finish while the server
    still answers, or each would print a connection error after the run."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)


@contextmanager
def prefect_api(echo: Callable[[str], None]) -> Iterator[None]:
    """Run the body against the configured Prefect API, or a temporary server tied to us."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    configured = get_current_settings().api.url
    if configured:
        if not _answers(configured):
            raise ConfigError(
                f"No Prefect server answers at PREFECT_API_URL={configured}. Start it (`prefect "
                "server start`), correct the address (the UI's address followed by /api), or "
                "unset PREFECT_API_URL so that `digest run` starts a temporary server of its own."
            )
        yield
        return
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    prefect = str(Path(sys.executable).with_name("prefect"))
    command = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-services", "--analytics-off", "--log-level", "WARNING"]
    env = {**os.environ, "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false"}
    echo(f"Starting a temporary Prefect server on 127.0.0.1:{port} for this run.")
    with tempfile.TemporaryDirectory(prefix="digest-prefect-") as folder:
        log = Path(folder) / "server.log"
        with log.open("wb") as output:
            # preexec_fn is safe here: nothing in this process has started a thread yet.
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(os.getpid()),
                # Its own session: a terminal's Ctrl-C reaches the run, which then stops the
                # server after its last logs, instead of the server dying under the run.
                start_new_session=True,
            )
        try:
            _wait_until_up(process, api_url, log)
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                try:
                    yield
                finally:
                    _deliver_pending_logs_and_events()
        finally:
            if process.poll() is None:
                _stop(process)
