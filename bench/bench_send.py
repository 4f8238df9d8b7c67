"""Send benchmark on a real list's shape: the weekly flow against the machine's ceiling.

For each size, a fresh process seeds a list of 64 content variants (tests/support/list_shape.py),
runs the whole weekly flow under Prefect's ephemeral API against the project's fake SendGrid in
a process of its own, and reports its planning and send phases and its peak RSS. Then, in the
same run and against the same fake, a bare client (httpx, kept-alive connections, as many
requests in flight as the sender) posts the project's own request bodies, serialised
beforehand: the ceiling the machine allows, which the send phase is measured against.

    .venv/bin/python bench/bench_send.py [--sizes 100000,1000000] [--slow 0.3]
        [--connect-delay 0.2] [--far-size 100000]

`--far-size` repeats that size with SendGrid `--slow` seconds away and each new connection
costing `--connect-delay` (a TLS handshake), which is what keep-alive saves.

Each size is measured `--repeat` times (3 by default), each flow run followed by its own ceiling
run: on this 2-core machine one ratio moves by a third between runs minutes apart (the ceiling,
a run of a second or so, most of all). The table shows the run with the median ratio, and each
run's figures below it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle, islice
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from digest.delivery.sending import IN_FLIGHT  # noqa: E402
from tests.fakes.fake_sendgrid import FakeSendGridProcess  # noqa: E402

API_KEY = "SG.bench-key"


def run_flow(size: int, fake: FakeSendGridProcess, folder: str) -> dict[str, float]:
    env = {
        **os.environ,
        "DIGEST_DATABASE_URL": f"sqlite:///{folder}/bench.db",
        "DIGEST_EMAIL_BACKEND": "sendgrid",
        "SENDGRID_API_KEY": API_KEY,
        "DIGEST_SENDGRID_HOST": fake.url,
        "DIGEST_SECRET_KEY": "bench-secret-0123456789-0123456789",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_HOME": f"{folder}/prefect",
    }
    worker = Path(__file__).with_name("send_worker.py")
    output = subprocess.run(
        [sys.executable, str(worker), str(size), f"{folder}/bodies.jsonl"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if output.returncode != 0:
        raise RuntimeError(f"flow {size} failed:\n{output.stderr[-4000:]}")
    result: dict[str, float] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def ceiling(url: str, bodies_path: Path, recipients: int) -> float:
    """Recipients per second a bare client gets through the fake with the same bodies."""
    bodies = bodies_path.read_bytes().splitlines()
    per_request = len(json.loads(bodies[0])["personalizations"])
    requests = -(-recipients // per_request)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    with httpx.Client(base_url=url, headers=headers, limits=limits, timeout=60) as client:

        def post(body: bytes) -> None:
            answer = client.post("/v3/mail/send", content=body)
            if answer.status_code != 202:
                raise RuntimeError(f"the fake refused a ceiling request: {answer.text[:500]}")

        clock = time.perf_counter()
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(post, islice(cycle(bodies), requests)))
        elapsed = time.perf_counter() - clock
    return requests * per_request / elapsed


def measure(size: int, *, slow: float = 0.0, connect_delay: float = 0.0) -> dict[str, float]:
    # The fake only counts what it accepts: recording every message would bill its own disk
    # writes to the same two cores. What is sent is checked by the tests, not here.
    with (
        tempfile.TemporaryDirectory() as folder,
        FakeSendGridProcess(API_KEY, None, delay=slow, connect_delay=connect_delay) as fake,
    ):
        result = run_flow(size, fake, folder)
        stats = fake.control.stats()
        result["accepted_by_fake"] = float(stats.get("accepted", -1))
        result["connections"] = float(stats.get("connections", -1))
        result["ceiling"] = ceiling(fake.url, Path(folder) / "bodies.jsonl", size)
    return result


def measure_repeated(size: int, repeat: int, **far: float) -> list[dict[str, float]]:
    """`repeat` measurements of `size`, the one with the median ratio first."""
    runs = [measure(size, **far) for _ in range(repeat)]
    for run in runs:
        run["ratio"] = run["emails_per_second"] / run["ceiling"]
    by_ratio = sorted(runs, key=lambda run: run["ratio"])
    median = by_ratio[(len(by_ratio) - 1) // 2]
    return [median, *(run for run in runs if run is not median)]


def main() -> None:
    parser = argparse.ArgumentParser(description="verdict-digest send benchmark")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--far-size", type=int, default=100000)
    parser.add_argument("--slow", type=float, default=0.3)
    parser.add_argument("--connect-delay", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = [(f"{size:,}", measure_repeated(size, args.repeat)) for size in sizes]
    if args.far_size:
        far = {"slow": args.slow, "connect_delay": args.connect_delay}
        rows.append((f"{args.far_size:,} far", measure_repeated(args.far_size, args.repeat, **far)))
    header = (
        f"{'list':<12} {'plan s':>7} {'send s':>7} {'emails/s':>9} {'ceiling/s':>10} "
        f"{'ratio':>6} {'peak MB':>8} {'requests':>9} {'batch ids':>9} {'conns':>6}"
    )
    print(f"fake SendGrid far: {args.slow} s a request, {args.connect_delay} s a new connection")
    print(header)
    print("-" * len(header))
    for name, runs in rows:
        r = runs[0]
        print(
            f"{name:<12} {r['plan_seconds']:>7.2f} {r['send_seconds']:>7.2f} "
            f"{r['emails_per_second']:>9,.0f} {r['ceiling']:>10,.0f} "
            f"{r['ratio']:>6.3f} {r['peak_mb']:>8.0f} "
            f"{int(r['requests']):>9,} {int(r['batch_ids']):>9} {int(r['connections']):>6}"
        )
        each = "; ".join(
            f"plan {run['plan_seconds']:.2f} s, send {run['send_seconds']:.2f} s, "
            f"ceiling {run['ceiling']:,.0f}/s, ratio {run['ratio']:.3f}"
            for run in sorted(runs, key=lambda run: run["ratio"])
        )
        print(f"{'':<12} runs: {each}")


if __name__ == "__main__":
    main()
