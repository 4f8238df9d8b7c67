"""Send benchmark: the whole weekly flow for 1k, 10k and 100k subscribers, and a naive baseline.

Each measurement runs in a fresh process (so peak memory is its own) against the project's fake
SendGrid in another process on 127.0.0.1 (so the fake's work does not count against the sender).

    .venv/bin/python bench/bench_send.py [--sizes 1000,10000,100000] [--naive-sizes 1000]

Prints one table: emails/s of the send phase, the send phase, the flow without and with Prefect
start-up, peak RSS, and what the fake accepted (messages, and the scheduled-send batch ids the
run made); the README quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.fake_sendgrid import FakeSendGridProcess  # noqa: E402

API_KEY = "SG.bench-key"


def measure(mode: str, size: int) -> dict[str, float]:
    # The fake only counts what it accepts: recording every message would bill its own disk
    # writes to the same two cores. What is sent is checked by the tests, not here.
    with tempfile.TemporaryDirectory() as folder, FakeSendGridProcess(API_KEY, None) as fake:
        env = {
            **os.environ,
            "DIGEST_DATABASE_URL": f"sqlite:///{folder}/bench.db",
            "DIGEST_EMAIL_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": API_KEY,
            "DIGEST_SENDGRID_HOST": fake.url,
            "DIGEST_SECRET_KEY": "bench-secret",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_HOME": f"{folder}/prefect",
        }
        output = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("send_worker.py")), mode, str(size)],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if output.returncode != 0:
            raise RuntimeError(f"{mode} {size} failed:\n{output.stderr[-4000:]}")
        result: dict[str, float] = json.loads(output.stdout.strip().splitlines()[-1])
        stats = fake.control.stats()
        result["accepted_by_fake"] = float(stats.get("accepted", -1))
        result["batch_ids"] = float(stats.get("batch_ids", -1))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description="verdict-digest send benchmark")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--naive-sizes", default="1000")
    args = parser.parse_args()
    rows = []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        rows.append(("flow", size, measure("flow", size)))
    for size in [int(s) for s in args.naive_sizes.split(",") if s]:
        rows.append(("naive", size, measure("naive", size)))
    header = (
        f"{'mode':<6} {'subscribers':>11} {'emails/s':>10} {'send s':>8} {'flow s':>8} "
        f"{'+startup s':>10} {'peak MB':>8} {'accepted':>9} {'batch ids':>9}"
    )
    print(header)
    print("-" * len(header))
    for mode, size, r in rows:
        print(
            f"{mode:<6} {size:>11,} {r['emails_per_second']:>10,.0f} {r['send_seconds']:>8.2f} "
            f"{r['flow_seconds']:>8.2f} {r['flow_seconds'] + r['startup_seconds']:>10.2f} "
            f"{r['peak_mb']:>8.1f} {int(r['accepted_by_fake']):>9,} {int(r['batch_ids']):>9,}"
        )
    flows = {size: r for mode, size, r in rows if mode == "flow"}
    naive = {size: r for mode, size, r in rows if mode == "naive"}
    for size in sorted(set(flows) & set(naive)):
        ratio = flows[size]["emails_per_second"] / naive[size]["emails_per_second"]
        print(f"speed-up over the naive baseline at {size:,}: {ratio:,.0f}x")
    if 10000 in flows and 100000 in flows:
        print(
            "peak memory growth 10k -> 100k: "
            f"{flows[100000]['peak_mb'] - flows[10000]['peak_mb']:+.1f} MB"
        )


if __name__ == "__main__":
    main()
