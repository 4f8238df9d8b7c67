"""One recipient whose message cannot be built fails alone; the rest of the batch goes once."""

from __future__ import annotations

import hashlib
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlmodel import col

from digest.config import get_settings
from digest.db import get_engine
from digest.models import Delivery
from digest.send.base import OutgoingBatch, Recipient
from digest.send.memory import MemoryBackend
from digest.send.outbox import OutboxBackend
from tests.support.ledger_data import state_counts_of
from tests.support.scenario import WEEK
from tests.support.send_path import begin_new_run, prepare_batched_week, send_plan_of
from tests.support.senders import send_of


def _break_row(url: str, digest_id: int, planned: str, **values: Any) -> int:
    """Legacy data: a planned row whose address or name no message can carry."""
    with get_engine(url).begin() as connection:
        connection.execute(
            update(Delivery)
            .where(col(Delivery.digest_id) == digest_id, col(Delivery.email) == planned)
            .values(**values)
        )
        found = connection.execute(
            select(col(Delivery.id)).where(
                col(Delivery.digest_id) == digest_id,
                col(Delivery.email) == values.get("email", planned),
            )
        ).scalar_one()
        assert found is not None
        return found


@pytest.mark.parametrize(
    "values",
    [
        {"email": "jös@example.com"},
        {"email": "reader2@exa\r\nmple.com"},
    ],
    ids=["non-ascii-local-part", "crlf-in-address"],
)
def test_an_unbuildable_message_fails_its_row_and_the_rest_are_written_once(
    tmp_path: Path, values: dict[str, str]
) -> None:
    # A bad recipient never keeps its batch in `sending`: it fails with its reason, others go once.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=1000)
    bad_id = _break_row(settings.database_url, digest_id, "reader2@example.com", **values)
    owner = begin_new_run(settings, digest_id)
    outbox = tmp_path / "refusals-outbox"
    send_of(settings, send_plan_of(settings, digest_id, owner), backend=OutboxBackend(outbox))
    assert state_counts_of(settings, digest_id) == {"sent": 5, "failed": 1}
    files = sorted((outbox / WEEK).glob("*.eml"))
    assert len(files) == 5
    written = {
        message_from_bytes(p.read_bytes(), policy=policy.default)["To"].addresses[0].addr_spec
        for p in files
    }
    assert "reader2@example.com" not in written and len(written) == 5
    with get_engine(settings.database_url).connect() as connection:
        reason = connection.execute(
            select(col(Delivery.last_error)).where(col(Delivery.id) == bad_id)
        ).scalar_one()
    assert reason and "cannot be built" in reason


def _batch(email: str) -> OutgoingBatch:
    return OutgoingBatch(
        digest_id=1,
        week=WEEK,
        subject="S",
        html="<p>h</p>",
        text="h",
        recipients=[Recipient(delivery_id=7, email=email, name=None, substitutions={}, headers={})],
        from_email="digest@verdicts.example.com",
        from_name="Verdict Digest",
    )


def test_a_memory_backend_refuses_only_the_unbuildable_recipient() -> None:
    # The memory backend builds like the outbox: a bad recipient is named in `refused`.
    from digest.send.base import PermanentSendError

    with pytest.raises(PermanentSendError) as caught:
        MemoryBackend(sent=[]).send_batch(_batch("jös@example.com"))
    assert list(caught.value.refused) == [7]


def test_any_valid_address_fits_an_outbox_file_name(tmp_path: Path) -> None:
    # A 240-character local part (valid up to 64 by RFC, but stored ones exist) still gets a file.
    email = "a" * 240 + "@example.com"
    OutboxBackend(tmp_path).send_batch(_batch(email))
    (path,) = (tmp_path / WEEK).glob("*.eml")
    assert len(path.name) < 120
    assert hashlib.sha256(email.encode()).hexdigest()[:12] in path.name


@pytest.mark.parametrize("under", ["", "outbox"])
def test_an_outbox_folder_that_cannot_hold_files_is_refused_before_any_row_is_claimed(
    under: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checked when the backend is made, before a run claims rows: a folder that could not take
    # the first message left rows `sending`, and the next run called them `uncertain`.
    from digest.errors import ConfigError

    plain = tmp_path / "plain"
    plain.write_text("x", encoding="utf-8")
    monkeypatch.setenv("DIGEST_OUTBOX_DIR", str(plain / under))
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match=r"DIGEST_OUTBOX_DIR=.*cannot hold the outbox's files"):
        OutboxBackend.from_settings(get_settings())
    get_settings.cache_clear()
