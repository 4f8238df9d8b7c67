"""The `digest` command as tests run it.

`run_digest` runs it in this process, through Click's test runner, the way the console script
would run it in a folder with some variables added to the environment: the same entry point
(`flows.cli.main`, so user errors become the same sentence and exit code), fresh settings,
fresh database engines, the Prefect API the environment names, and stdout, stderr and the exit
code returned as a `subprocess.CompletedProcess`. It costs milliseconds where a process costs
seconds. `run_digest_process` runs the real console script, for the tests where the process
itself is what is checked: its start, its exit, a signal, the installed entry point.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import prefect.settings
from click.testing import CliRunner
from prefect.settings import PREFECT_API_URL, temporary_settings

DIGEST = str(Path(sys.executable).with_name("digest"))

# Commands that run the Prefect flow. A process with no PREFECT_API_URL starts a temporary
# Prefect server for them (about 20 s, tested in test_temporary_server.py); in this process they
# use the session's server instead.
_FLOW_COMMANDS = {"run", "demo"}
# The commands that read Prefect's settings (flows/cli.py imports Prefect inside them alone).
# Others run without Prefect's settings being set up for them, which costs 0.1 s a command.
_PREFECT_COMMANDS = {*_FLOW_COMMANDS, "approve", "serve"}

# The session's Prefect API address, started on first use: tests/conftest.py sets it per test.
session_prefect_api: Callable[[], str] | None = None


def run_digest_process(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`digest ARGS` as a subprocess of the installed console script."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    environment.update(env or {})
    return subprocess.run(
        [DIGEST, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_digest(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`digest ARGS` in this process, in folder `cwd`, with `env` added to the environment.

    `timeout` is the process's; in this process pytest-timeout is what stops a command that hangs.
    """
    del timeout
    session_api = _session_api_for(args, env or {})
    runner = CliRunner()
    with (
        _environment_restored(),
        runner.isolation(env=env) as (stdout, stderr, _),
        _in_folder(cwd),
        _fresh_process_state(),
        _logging_to(sys.stderr),
        _prefect_settings(args, env or {}, session_api),
    ):
        code = _main(args)
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = stdout.getvalue(), stderr.getvalue()
    return subprocess.CompletedProcess(
        [DIGEST, *args], code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    )


def _main(args: tuple[str, ...]) -> int:
    """The console script's entry point on `args`; its exit code, as the process would end.

    `flows.cli:main` is `main_with(app)`: the same, with the program name the console script
    has (Click would otherwise derive it from this process's, `python -m pytest`).
    """
    from digest.cli.app import main_with
    from flows.cli import app

    saved_argv = sys.argv
    sys.argv = [DIGEST, *args]
    try:
        main_with(functools.partial(app, prog_name="digest"))  # type: ignore[arg-type]
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except BaseException:
        # What the interpreter prints for an uncaught exception, and its exit code.
        traceback.print_exc(file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
    return 0


@contextlib.contextmanager
def _environment_restored() -> Iterator[None]:
    """Variables the command sets (Prefect's defaults, say) end with it, as with a process."""
    before = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


@contextlib.contextmanager
def _in_folder(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _fresh_process_state() -> Iterator[None]:
    """What a new process starts without: cached settings, engines, and schema checks.

    Engines the command creates are disposed of when it ends, as its exit would close them; the
    test's own engines are left alone.
    """
    import digest.db as db
    from digest.config import get_settings

    created: list[Any] = []
    make_engine = db.create_engine

    def recording(*args: Any, **kwargs: Any) -> Any:
        engine = make_engine(*args, **kwargs)
        created.append(engine)
        return engine

    def forget() -> None:
        get_settings.cache_clear()
        db.get_engine.cache_clear()
        db._SCHEMA_CHECKED.clear()

    forget()
    db.create_engine = recording  # type: ignore[assignment]
    try:
        yield
    finally:
        db.create_engine = make_engine
        for engine in created:
            engine.dispose()
        forget()


def _is_console(handler: logging.Handler) -> bool:
    """A handler that writes to the terminal (not pytest's capture, not a file)."""
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and not type(handler).__module__.startswith("_pytest")
    )


@contextlib.contextmanager
def _logging_to(stream: TextIO) -> Iterator[None]:
    """Log records reach the command's stderr, as they reach a process's.

    Console handlers (Prefect's, once Prefect is imported) write to the stream they were made
    with, so they are pointed at `stream` for the command. With no console handler at all, a
    process prints warnings through logging's last resort: so does this one.
    """
    loggers = [logging.getLogger()] + [
        found for found in logging.Logger.manager.loggerDict.values()
        if isinstance(found, logging.Logger)
    ]  # fmt: skip
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    for logger in loggers:
        for handler in logger.handlers:
            if _is_console(handler) and all(handler is not h for h, _ in swapped):
                assert isinstance(handler, logging.StreamHandler)
                swapped.append((handler, handler.stream))
                _point(handler, stream)
    root = logging.getLogger()
    last_resort: logging.Handler | None = None
    if not any(_is_console(handler) for handler in root.handlers):
        last_resort = logging.StreamHandler(stream)
        last_resort.setLevel(logging.WARNING)
        root.addHandler(last_resort)
    try:
        yield
    finally:
        if last_resort is not None:
            root.removeHandler(last_resort)
        for handler, before in swapped:
            _point(handler, before)


def _point(handler: logging.StreamHandler[Any], stream: Any) -> None:
    handler.setStream(stream)
    console = getattr(handler, "console", None)  # Prefect's handler prints through rich
    if console is not None:
        console.file = stream


def _session_api_for(args: tuple[str, ...], env: dict[str, str]) -> str | None:
    """The session's Prefect API for a flow command whose environment names none."""
    if not args or args[0] not in _FLOW_COMMANDS:
        return None
    if "PREFECT_API_URL" in env or "PREFECT_API_URL" in os.environ:
        return None
    assert session_prefect_api is not None, "no session Prefect server for this test"
    return session_prefect_api()


@contextlib.contextmanager
def _prefect_settings(
    args: tuple[str, ...], env: dict[str, str], session_api: str | None
) -> Iterator[None]:
    """Prefect's settings as a process started with this environment would read them.

    A process reads PREFECT_* variables when it starts; this one read them when Prefect was
    imported (above, before any test changed the environment), so the command's are applied
    over the session's settings, and PREFECT_API_URL is unset unless the environment sets it.
    """
    if not args or args[0] not in _PREFECT_COMMANDS:
        yield
        return
    wanted = {name: value for name, value in env.items() if name.startswith("PREFECT_")}
    if session_api is not None:
        wanted["PREFECT_API_URL"] = session_api
    elif os.environ.get("PREFECT_API_URL"):
        wanted.setdefault("PREFECT_API_URL", os.environ["PREFECT_API_URL"])
    updates = {
        getattr(prefect.settings, name): value
        for name, value in wanted.items()
        if hasattr(prefect.settings, name)
    }
    restore = [] if wanted.get("PREFECT_API_URL") else [PREFECT_API_URL]
    with temporary_settings(updates=updates, restore_defaults=restore):
        yield


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A user's mistake: non-zero exit, a readable message, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
