"""Running the real `digest` console script in a subprocess, as users and ops do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DIGEST = str(Path(sys.executable).with_name("digest"))


def run_digest(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
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


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A user's mistake: non-zero exit, a readable message, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
