"""A feed body's content encoding undone piece by piece, never past a cap.

httpx decodes a body one network chunk at a time, but inflates each chunk whole: 64 kB of gzip'd
zeros become 64 MB at once, and a body encoded twice (`Content-Encoding: gzip, gzip`) turns a
5 kB request into gigabytes before any cap is looked at. Here every inflation step is asked for
at most `PIECE_BYTES` of output (zlib's `max_length`), and the caller counts each piece against
its cap as it comes, so memory stays within the cap plus one piece whatever the ratio.

One coding is read: gzip (or x-gzip) or deflate (zlib-wrapped, or raw as some servers send it);
`identity` is none. Stacked codings, and any other coding (br, zstd, compress), are refused: no
catalog feed needs them, and refusing is simpler to trust than capping each layer.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

PIECE_BYTES = 64 * 1024
_GZIP = 16 + zlib.MAX_WBITS


class EncodingError(Exception):
    """The body's content encoding is one we do not read, or the body does not decode."""


def coding_of(header: str | None) -> str | None:
    """The one coding a Content-Encoding header names ("gzip", "deflate") or None for none."""
    codings = [c.strip().lower() for c in (header or "").split(",")]
    named = [c for c in codings if c and c != "identity"]
    if len(named) > 1:
        raise EncodingError(f"it is encoded more than once (Content-Encoding: {', '.join(named)})")
    if not named:
        return None
    coding = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}.get(named[0])
    if coding is None:
        raise EncodingError(f"it uses Content-Encoding {named[0][:40]!r}, which is not read here")
    return coding


class _Inflater:
    """One zlib stream (gzip members one after another are read as one body)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._wbits = _GZIP if coding == "gzip" else zlib.MAX_WBITS
        self._stream = zlib.decompressobj(self._wbits)
        self._started = False

    def pieces(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                piece = self._stream.decompress(data, PIECE_BYTES)
            except zlib.error:
                if self._started or self.coding != "deflate" or self._wbits < 0:
                    raise EncodingError(f"its body is not valid {self.coding}") from None
                self._wbits = -zlib.MAX_WBITS  # raw deflate, without the zlib wrapper
                self._stream = zlib.decompressobj(self._wbits)
                continue
            self._started = True
            data = self._stream.unconsumed_tail
            if self._stream.eof and self._stream.unused_data:
                data = self._stream.unused_data  # the next gzip member
                self._stream = zlib.decompressobj(self._wbits)
            if piece:
                yield piece

    def rest(self) -> Iterator[bytes]:
        """What zlib still holds once the input has ended; `EncodingError` if it was cut."""
        while piece := self._stream.decompress(b"", PIECE_BYTES):
            yield piece
        if self._started and not self._stream.eof:
            raise EncodingError(f"its body is cut short (the {self.coding} stream does not end)")


def decoded(chunks: Iterable[bytes], coding: str | None) -> Iterator[bytes]:
    """The body's bytes with the coding undone, in pieces of at most `PIECE_BYTES` each (the
    chunks as they are when there is no coding)."""
    if coding is None:
        yield from chunks
        return
    inflater = _Inflater(coding)
    for chunk in chunks:
        yield from inflater.pieces(chunk)
    yield from inflater.rest()
