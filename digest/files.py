"""Files written whole: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def whole_file(target: Path, *, text: bool = False, mode: int = 0o644) -> Iterator[IO[Any]]:
    """A stream whose content replaces `target` when the block ends without error.

    It is written to a temporary file of its own beside `target` (two writers of one name each
    replace it, neither loses its file: a shared temporary name lost confirmations), removed if
    the block fails. `mode` is the file's, mkstemp making 0600."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        os.fchmod(handle, mode)
        opened = "w" if text else "wb"
        encoding = "utf-8" if text else None
        with os.fdopen(handle, opened, newline="" if text else None, encoding=encoding) as out:
            yield out
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
