"""Wall time of everyday `digest` commands, each a fresh process, as an editor or ops runs them.

Seeds a temporary folder with the shipped sample catalog and subscribers, then runs each command
N times and prints the best and median seconds. Usage: python bench/bench_commands.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGEST = str(ROOT / ".venv" / "bin" / "digest")
SAMPLES = ROOT / "digest" / "samples"
WEEK = "2026-W10"  # the sample catalog's newest week
PREVIOUS_WEEK = "2026-W09"  # new tools, never sent
EMPTY_WEEK = "2026-W30"  # no new tools
COMMANDS = [
    ["--help"],
    ["status", "--week", WEEK, "--json"],
    ["preview", "--week", WEEK, "--format", "json"],
    ["subscribers", "export"],
    ["edit", "--week", WEEK, "--show"],
    ["votes", "--week", WEEK],
    ["report", "--week", WEEK, "--format", "json"],
    # No run waits for it (no Prefect server is reached): the answer is recorded for the next run.
    ["approve", "--week", PREVIOUS_WEEK, "--note", "Fine", "--by", "Ada"],
    # Nothing new in the week: answered from the database, with no Prefect server.
    ["run", "--week", EMPTY_WEEK, "--dry-run"],
    # The week was sent while seeding: a rerun answers from the ledger, with no Prefect server.
    ["run", "--week", WEEK],
]


def _run(args: list[str], folder: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([DIGEST, *args], cwd=folder, env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
            "DIGEST_DATABASE_URL": f"sqlite:///{folder / 'digest.db'}",
            "DIGEST_OUTBOX_DIR": str(folder / "outbox"),
            "PREFECT_HOME": str(folder / "prefect"),
        }
        for seed in (
            ["catalog", "import", str(SAMPLES / "catalog.json")],
            ["subscribers", "import", str(SAMPLES / "subscribers.csv")],
            ["run", "--week", WEEK],
        ):
            _run(seed, folder, env)
        print(f"{'command':<56} {'best':>7} {'median':>7}")
        for args in COMMANDS:
            times = [_run(args, folder, env) for _ in range(runs)]
            shown = "digest " + " ".join(args)
            print(f"{shown:<56} {min(times):>6.2f}s {statistics.median(times):>6.2f}s")


if __name__ == "__main__":
    main()
