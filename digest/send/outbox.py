"""A backend that writes one `.eml` file per recipient under `<outbox>/<week>/`.

Files are written to a temporary name and renamed, so a crash never leaves half a message.
A file is named by delivery id, the address's first 64 safe characters and a hash of the whole
address, so any valid address (a local part of 240 characters too) fits a file name.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Self

from digest.config import Settings
from digest.errors import ConfigError
from digest.files import whole_file
from digest.send.base import BaseBackend, BatchResult, OutgoingBatch
from digest.send.buildable import build_all

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
_SHOWN_ADDRESS = 64


def file_stem(email: str) -> str:
    """A short, safe, unique file-name part for an address: readable prefix plus its hash."""
    shown = _UNSAFE.sub("_", email.lower())[:_SHOWN_ADDRESS]
    return f"{shown}-{hashlib.sha256(email.encode('utf-8', 'replace')).hexdigest()[:12]}"


class OutboxBackend(BaseBackend):
    """Delivers to a folder: for local runs, the demo and editors."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def from_settings(cls, settings: Settings, *, interactive: bool = False) -> Self:
        return cls(writable_folder(settings.outbox_dir))

    def send_batch(self, batch: OutgoingBatch) -> BatchResult:
        folder = self.directory / ("test" if batch.is_test else batch.week)
        folder.mkdir(parents=True, exist_ok=True)
        for recipient, _message, data in build_all(batch):  # all built first: see buildable
            stem = file_stem(recipient.email)
            name = f"{recipient.delivery_id:08d}-{stem}.eml"
            if batch.is_test:
                name = f"test-{batch.week}-{stem}.eml"
            with whole_file(folder / name) as out:
                out.write(data)
        return BatchResult(message_id=f"outbox-{batch.week}", accepted=len(batch.recipients))


def writable_folder(folder: Path) -> Path:
    """`folder` once it is known to take files, made on the first write: checked before a run
    claims any row, where a folder that cannot hold a message left rows `sending` (then
    `uncertain`) with nothing written. Nothing is made here."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    why = None
    if not existing.is_dir():
        why = "a file is in the way" if existing != folder else "it is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        why = "this user may not write there"
    if why is not None:
        raise ConfigError(
            f"DIGEST_OUTBOX_DIR={str(folder)!r} cannot hold the outbox's files ({why}). Set it "
            "to a folder this user may write to, or unset it for ./outbox."
        )
    return folder
