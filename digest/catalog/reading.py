"""Reading a catalog file as a stream: its header keys, and its tools one record at a time.

A catalog of 100,000 tools is about 190 MB of JSON, and `json.load` would hold all of it as
Python objects (well over a gigabyte) before the first record is checked. This reader holds the
text of one megabyte of the file plus the record being read: it walks the top-level object
itself and hands each value to the standard library's `raw_decode`, so every value is parsed by
the same C parser as before. One record may be at most `RECORD_LIMIT` of JSON text (a record
with every field at its longest is a few hundred kilobytes); a longer one stops the import with
a sentence rather than a gigabyte-long wait.

Errors are `ImportFileError`s that name the file and what is wrong, with the line and column
of a JSON syntax error counted in the whole file.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Iterator
from typing import IO, Any

from digest.errors import ImportFileError

CHUNK_BYTES = 1 << 20
RECORD_LIMIT = 8 << 20
# Integers longer than this are no count or score; the parser would choke on 4,300 digits.
_MAX_DIGITS = 20
_SPACE = re.compile(r"[ \t\n\r]*")
_NOTHING_IMPORTED = "nothing was imported"


def _bounded_int(text: str) -> int | float:
    """A JSON integer; one too long for any count is infinity, which its field then refuses."""
    return int(text) if len(text) <= _MAX_DIGITS else math.inf


class CatalogReader:
    """One pass over a catalog document: `records()` yields (index, value) for each element of
    its `tools` array, and `header` holds every other top-level key once the pass is done."""

    def __init__(self, stream: IO[bytes], *, source: str, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.source = source
        self.header: dict[str, Any] = {}
        self.tools_seen = False
        self._stream = stream
        self._chunk = chunk_bytes
        self._decoder: codecs.IncrementalDecoder | None = None
        self._json = json.JSONDecoder(parse_int=_bounded_int, object_pairs_hook=_unrepeated)
        self._text = ""
        self._pos = 0
        self._line = 1  # the line of self._text[0] in the whole file
        self._column = 0  # and its place in that line (a minified file is one long line)
        self._eof = False

    # -- the text buffer -------------------------------------------------------------------------

    def _more(self) -> bool:
        """Read the next chunk into the buffer, dropping what was parsed; False at the end."""
        if self._eof:
            return False
        data = self._stream.read(self._chunk)
        if self._decoder is None:
            encoding = json.detect_encoding(data) if data else "utf-8"
            self._decoder = codecs.getincrementaldecoder(encoding)()
        try:
            text = self._decoder.decode(data, final=not data)
        except UnicodeDecodeError:
            raise self._error("is not valid JSON (it is not UTF-8 text)") from None
        self._eof = not data
        self._line += self._text.count("\n", 0, self._pos)
        newline = self._text.rfind("\n", 0, self._pos)
        self._column = self._pos - newline - 1 if newline >= 0 else self._column + self._pos
        self._text = self._text[self._pos :] + text
        self._pos = 0
        return True

    def _peek(self) -> str:
        """The next character that is not white space ("" at the end), without taking it."""
        while True:
            self._pos = _SPACE.match(self._text, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._text) or not self._more():
                return self._text[self._pos : self._pos + 1]

    def _take(self, expected: str) -> None:
        if self._peek() != expected:
            self._syntax_error(f"Expecting {expected!r}", self._pos)
        self._pos += 1

    def _value(self) -> Any:
        """The JSON value at the cursor, read further into the file as long as it needs."""
        self._peek()
        while True:
            try:
                value, end = self._json.raw_decode(self._text, self._pos)
            except json.JSONDecodeError as exc:
                if len(self._text) - self._pos > RECORD_LIMIT:
                    raise self._too_large() from None
                if not self._more():
                    self._syntax_error(exc.msg, exc.pos)
                continue
            except _RepeatedKey as repeated:
                raise self._error(
                    f"gives the key {repeated.key[:80]!r} twice in one object (in the value at "
                    f"{self._where(self._pos)}). Keep one of them and import it again"
                ) from None
            except RecursionError:
                raise self._error(
                    "nests arrays or objects too deeply to be a catalog. Fix the file and "
                    "import it again"
                ) from None
            # A number may go on in the next chunk; anything else ends where it says.
            if end == len(self._text) and self._more():
                continue
            self._pos = end
            return value

    # -- the document ----------------------------------------------------------------------------

    def records(self) -> Iterator[tuple[int, Any]]:
        """Each element of the `tools` array in order; the other keys go to `header`."""
        first = self._peek()
        if first != "{":
            self._not_an_object(first)
        self._pos += 1
        if self._peek() == "}":
            self._pos += 1
        else:
            yield from self._members()
        if self._peek() != "":
            self._syntax_error("Extra data", self._pos)

    def _members(self) -> Iterator[tuple[int, Any]]:
        while True:
            if self._peek() != '"':
                self._syntax_error("Expecting property name enclosed in double quotes", self._pos)
            key = self._value()
            self._take(":")
            if key in self.header:
                raise self._error(f"has two {key[:80]!r} keys. Keep one")
            if key == "tools" and self._peek() == "[":
                if self.tools_seen:
                    raise self._error('has two "tools" lists. Keep one')
                self.tools_seen = True
                yield from self._array()
            else:
                self.header[key] = self._value()
            following = self._peek()
            self._pos += 1
            if following == "}":
                return
            if following != ",":
                self._syntax_error("Expecting ',' delimiter", self._pos - 1)

    def _array(self) -> Iterator[tuple[int, Any]]:
        self._pos += 1
        if self._peek() == "]":
            self._pos += 1
            return
        index = 0
        while True:
            yield index, self._value()
            index += 1
            following = self._peek()
            self._pos += 1
            if following == "]":
                return
            if following != ",":
                self._syntax_error("Expecting ',' delimiter", self._pos - 1)

    def _not_an_object(self, first: str) -> None:
        """A document that is not a JSON object: say whether it is JSON at all."""
        if first == "[":
            raise NotAnObjectError()
        try:
            self._json.raw_decode(self._text, self._pos)
        except (json.JSONDecodeError, RecursionError):
            self._syntax_error("Expecting value", self._pos)
        raise NotAnObjectError()

    # -- errors ----------------------------------------------------------------------------------

    def _error(self, what: str) -> ImportFileError:
        return ImportFileError(f"{self.source} {what}; {_NOTHING_IMPORTED}.")

    def _where(self, position: int) -> str:
        """Line and column of a place in the buffer, counted in the whole file."""
        line = self._line + self._text.count("\n", 0, position)
        newline = self._text.rfind("\n", 0, position)
        column = position - newline if newline >= 0 else self._column + position + 1
        return f"line {line} column {column}"

    def _syntax_error(self, message: str, position: int) -> None:
        raise self._error(
            f"is not valid JSON ({message}: {self._where(position)}). Fix the file and import "
            "it again"
        )

    def _too_large(self) -> ImportFileError:
        return self._error(
            f"holds a value longer than {RECORD_LIMIT // (1 << 20)} MB of JSON text, far more "
            "than any catalog record. Check that this is the catalog file"
        )


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unrepeated(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members; a key given twice is refused, where `json` keeps the last silently
    (0.3 s more on a 100,000-tool catalog, measured)."""
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return members


class NotAnObjectError(Exception):
    """The document is JSON but not an object: not a catalog (the caller says what is needed)."""
