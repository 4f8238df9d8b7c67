"""Import speed and memory: `digest subscribers import` of a large CSV and `digest catalog import`
of a large catalog, each a fresh process, as ops runs them.

Generates (into a temporary folder, or --keep DIR) a subscriber CSV shaped like a real list: 60+
distinct category mixes, names in many scripts, one row in 200 repeating an earlier address in
another case; and a catalog of N tools with descriptions and four to six reviews each (100k
tools is about 190 MB). Each import runs twice, into an empty database and again over its own
result (every row unchanged), and prints wall and CPU seconds (user + system, of the import's
process: the figure a loaded machine disturbs least), rows/s and the process's peak RSS.

Usage: python bench/bench_import.py [--subscribers 1000000] [--tools 100000]
       [--database-url URL] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGEST = str(ROOT / ".venv" / "bin" / "digest")
CATEGORIES = [
    "Developer Tools",
    "Writing",
    "Image Generation",
    "Video",
    "Audio",
    "Productivity",
    "Research",
    "Data Analysis",
    "Customer Support",
    "Marketing",
    "Education",
    "Security",
]
FIRST = ["Ada", "Zoë", "José", "Łukasz", "Søren", "Aylin", "Mei", "Ravi", "Olu", "Anaïs", "Björn"]
FIRST += ["陈", "Мария", "محمد", "דוד", "Γιώργος", "Nguyễn", "O'Brien", "Kim", "Ana", "Sam"]
LAST = ["Lovelace", "Müller", "García", "Nowak", "Öztürk", "Wang", "Sharma", "Okafor", "伟"]
LAST += ["Иванова", "Haddad", "Cohen", "Papadopoulos", "Trần", "Smith", "Dubois", "Jensen"]
DOMAINS = ["example.com", "mail.example.org", "example.net", "post.example", "inbox.example.co"]
PEAK_SCRIPT = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(done.stderr[-2000:])\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(usage.ru_utime + usage.ru_stime, usage.ru_maxrss)\n"
    "sys.exit(done.returncode)\n"
)


def category_mixes() -> list[str]:
    """64 distinct choices: every category alone, some pairs and triples, and "all" (empty)."""
    mixes = ["", *CATEGORIES]
    mixes += [";".join(pair) for pair in list(combinations(CATEGORIES, 2))[:36]]
    mixes += [";".join(trio) for trio in list(combinations(CATEGORIES, 3))[:15]]
    return mixes


def write_subscribers(path: Path, count: int, rng: random.Random) -> None:
    mixes = category_mixes()
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["email", "name", "categories", "subscribed_at", "consent_source"])
        for n in range(count):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            local = f"reader.{n}"
            if n % 200 == 199:  # the same mailbox as an earlier row, written in capitals
                local = f"Reader.{rng.randrange(n)}"
            day = rng.randrange(1, 29)
            writer.writerow(
                [
                    f"{local}@{DOMAINS[n % len(DOMAINS)]}",
                    f"{first} {last}",
                    rng.choice(mixes),
                    f"2025-{rng.randrange(1, 13):02d}-{day:02d}T{rng.randrange(24):02d}:30:00Z",
                    rng.choice(["import", "web-form", "conference-2025"]),
                ]
            )


def _tool(n: int, rng: random.Random) -> dict[str, object]:
    words = ["fast", "open", "agentic", "private", "local", "multimodal", "cheap", "accurate"]
    slug = f"tool-{n}"
    return {
        "slug": slug,
        "name": f"Tool {n} {rng.choice(['Pro', 'Lite', 'Studio', 'Labs'])}",
        "vendor": f"Vendor {n % 997}",
        "category": CATEGORIES[n % len(CATEGORIES)],
        "tagline": " ".join(rng.choices(words, k=8)).capitalize(),
        "description": " ".join(rng.choices(words, k=60)).capitalize() + ".",
        "url": f"https://example.com/tools/{slug}",
        "pricing": rng.choice(["free", "freemium", "paid", "unknown"]),
        "license": "Apache-2.0",
        "open_weights": rng.random() < 0.3,
        "tags": rng.sample(words, 3),
        "best_for": " ".join(rng.choices(words, k=6)),
        "added_at": f"2026-{rng.randrange(1, 12):02d}-{rng.randrange(1, 28):02d}T10:00:00Z",
        "community": {"ship": rng.randrange(500), "skip": rng.randrange(500)},
        "reviews": [
            {
                "reviewer": rng.choice(["Builder", "Skeptic", "Editor", "Guardian", "Analyst"]),
                "lens": rng.choice(["developer-experience", "security", "cost", "quality"]),
                "verdict": "ship" if (score := rng.randrange(101)) >= 60 else "skip",
                "score": score,
                "quote": " ".join(rng.choices(words, k=16)).capitalize() + ".",
            }
            for _ in range(rng.randrange(4, 7))
        ],
    }


def write_catalog(path: Path, count: int, rng: random.Random) -> None:
    with path.open("w", encoding="utf-8") as stream:
        stream.write('{"format": "verdict-digest/catalog@1", "tools": [\n')
        for n in range(count):
            stream.write(("," if n else "") + json.dumps(_tool(n, rng), ensure_ascii=False) + "\n")
        stream.write("]}\n")


def run(args: list[str], folder: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one `digest` command in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, DIGEST, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"digest {' '.join(args)} failed:\n{done.stderr}")
    cpu, peak = done.stdout.strip().splitlines()[-1].split()
    return seconds, float(cpu), int(peak) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--tools", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    parser.add_argument("--keep", type=Path, default=None, help="write the files here, keep them")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = options.keep or Path(name)
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(26)
        people, catalog = folder / "subscribers.csv", folder / "catalog.json"
        if options.subscribers and not people.exists():
            write_subscribers(people, options.subscribers, rng)
        if options.tools and not catalog.exists():
            write_catalog(catalog, options.tools, rng)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
            "DIGEST_DATABASE_URL": options.database_url or f"sqlite:///{folder / 'bench.db'}",
        }
        run(["db", "upgrade"], folder, env)
        print(f"{'import':<40} {'rows':>9} {'wall s':>7} {'CPU s':>6} {'rows/s':>8} {'peak MB':>7}")
        # The catalog first, as ops would: the subscriber import checks categories against it.
        jobs = [("catalog", catalog, options.tools), ("subscribers", people, options.subscribers)]
        for kind, path, rows in jobs:
            if not rows:
                continue
            size = path.stat().st_size / 1e6
            for label in ("into an empty database", "again, nothing changed"):
                seconds, cpu, peak = run([kind, "import", str(path)], folder, env)
                shown = f"{kind} ({size:.0f} MB), {label}"
                print(
                    f"{shown:<40} {rows:>9,} {seconds:>7.1f} {cpu:>6.1f} "
                    f"{rows / seconds:>8,.0f} {peak:>7}"
                )


if __name__ == "__main__":
    main()
