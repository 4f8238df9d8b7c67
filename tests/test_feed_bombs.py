"""Compressed feeds that inflate without end: refused within the cap, in bounded memory, by a real
`digest catalog sync --url` process."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from digest.catalog.decoding import PIECE_BYTES, EncodingError, coding_of, decoded
from tests.support.cli import DIGEST

GIB = 1 << 30
# Peak memory allowed to the whole `digest catalog sync` process, imports included.
PEAK_LIMIT_KB = 300 * 1024


def _gzip_of_zeros(size: int) -> bytes:
    """gzip of `size` zero bytes (a whole number of megabytes), in under a second.

    After a full flush the compressor starts afresh, so each megabyte of zeros compresses to
    the same bytes: one piece, repeated, between gzip's header and its trailer (CRC-32 and size
    of the whole). Compressing 3 GiB outright took 9 s of CPU for the same stream's worth.
    """
    block = bytes(1 << 20)
    count = size // len(block)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate
    piece = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    end = packer.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, no time
    trailer = struct.pack("<II", crc, (count * len(block)) & 0xFFFFFFFF)
    return header + piece * count + end + trailer


def test_the_bomb_is_a_valid_gzip_of_zeros() -> None:
    # The fixture's shortcut must make what gzip makes: decoded whole, its CRC and size checked.
    body = _gzip_of_zeros(64 << 20)
    assert gzip.decompress(body) == bytes(64 << 20)


@pytest.fixture(scope="module")
def bombs() -> dict[str, tuple[bytes, str]]:
    """Body and Content-Encoding of each bomb: 3 GiB of zeros gzipped once, and twice."""
    once = _gzip_of_zeros(3 * GIB)
    return {"once": (once, "gzip"), "twice": (gzip.compress(once, 9), "gzip, gzip")}


@pytest.fixture
def bomb_server(bombs: dict[str, tuple[bytes, str]]) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, coding = bombs[self.path.strip("/")]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", coding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _sync_peak(url: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run `digest catalog sync --url URL` in a fresh process; its result and peak RSS (kB)."""
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(done.stdout)\n"
        "sys.stderr.write(done.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(done.returncode)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["DIGEST_DATABASE_URL"] = f"sqlite:///{tmp_path / 'digest.db'}"
    result = subprocess.run(
        [sys.executable, "-c", measure, DIGEST, "catalog", "sync", "--url", url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    *_, peak = result.stdout.strip().splitlines()
    return result, int(peak)


@pytest.mark.parametrize(
    ("bomb", "reason"),
    [("twice", "encoded more than once"), ("once", "larger than DIGEST_CATALOG_MAX_BYTES")],
)
def test_a_gzip_bomb_is_refused_in_bounded_memory(
    bomb_server: int, tmp_path: Path, bomb: str, reason: str
) -> None:
    # 3 GiB of zeros, gzipped once (3 MB) or twice (5 kB): a sentence, nothing imported, and the
    # process never holds more than the cap plus its own code.
    result, peak_kb = _sync_peak(f"http://127.0.0.1:{bomb_server}/{bomb}", tmp_path)
    assert result.returncode == 2, result.stderr
    assert reason in result.stderr
    assert "nothing was imported" in result.stderr
    assert "Traceback" not in result.stderr
    assert peak_kb < PEAK_LIMIT_KB, f"peak RSS {peak_kb} kB"


def test_inflating_never_yields_more_than_a_piece_at_a_time() -> None:
    # The memory bound rests on this: every step of inflation is at most PIECE_BYTES long.
    body = _gzip_of_zeros(64 << 20)
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    sizes = [len(piece) for piece in decoded(chunks, "gzip")]
    assert max(sizes) <= PIECE_BYTES
    assert sum(sizes) == 64 << 20


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("identity", None),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        ("deflate", "deflate"),
        ("gzip, identity", "gzip"),
    ],
)
def test_one_coding_is_read(header: str | None, expected: str | None) -> None:
    # A single gzip or deflate coding is undone; identity is no coding.
    assert coding_of(header) == expected


@pytest.mark.parametrize("header", ["gzip, gzip", "deflate, gzip", "br", "zstd", "compress"])
def test_stacked_and_unknown_codings_are_refused(header: str) -> None:
    # Nothing is inflated twice, and nothing we cannot bound is inflated at all.
    with pytest.raises(EncodingError):
        coding_of(header)


@pytest.mark.parametrize("wrapped", [True, False])
def test_deflate_with_or_without_its_zlib_wrapper_decodes(wrapped: bool) -> None:
    # Servers send both forms under the one name.
    document = json.dumps({"format": "verdict-digest/catalog@1", "tools": []}).encode()
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    body = packer.compress(document) + packer.flush()
    assert b"".join(decoded([body[:7], body[7:]], "deflate")) == document


def test_a_cut_gzip_body_is_an_error() -> None:
    # A body that ends inside its gzip stream is not taken for the whole feed.
    body = gzip.compress(b"x" * 10000)
    with pytest.raises(EncodingError, match="cut short"):
        list(decoded([body[: len(body) // 2]], "gzip"))
