"""Faults injected into the real code: one call of a real function raises, the others run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def fail_call(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, *, call: int, error: Exception
) -> None:
    """Make the `call`th call (from 1) of `owner.name` raise `error`; every other call runs the
    real function."""
    real: Callable[..., Any] = getattr(owner, name)
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
